"""`cnndsl fmt`: canonical text that keeps every comment and blank line, wraps long lines, and changes nothing
the compiler sees; --check and --write for real files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from conftest import ROOT
from strategies import spec as random_spec

SPECS = sorted((ROOT / "specs").rglob("*.cnn"))


def comments_of(text: str) -> list[str]:
    return [m.group().rstrip() for m in re.finditer(r'"[^"\n]*"|#[^\n]*', text) if m.group().startswith("#")]


def same_graph(a: str, b: str, base: Path = ROOT / "specs") -> bool:
    return cnndsl.compile_text(a, base=base).same_as(cnndsl.compile_text(b, base=base))


@pytest.mark.parametrize("path", SPECS, ids=[str(p.relative_to(ROOT / "specs")) for p in SPECS])
def test_bundled_specs_keep_comments_and_meaning(path):
    text = path.read_text()
    printed = cnndsl.format_spec(text)
    assert comments_of(printed) == comments_of(text)
    assert cnndsl.format_spec(printed) == printed
    assert "\n\n\n" not in printed
    if "use " not in text and path.parent.name not in ("lib", "families") and "block" in text or "|" in text:
        assert cnndsl.compile_text(printed, base=path.parent).same_as(cnndsl.compile_text(text, base=path.parent))


def test_comments_stay_beside_what_they_described():
    text = ("# header\n\n\n# about the block\nblock b(c) = conv3-c bn   # trailing on the block\n"
            "input 32x32x3  # the input\n"
            "stem: conv3-8\n  # before stage two\n  | b(16)   # stage two\n| gap | fc10  # the head\n# the end\n")
    printed = cnndsl.format_spec(text)
    assert printed == ("# header\n\n# about the block\nblock b(c) = conv3-c + bn  # trailing on the block\n"
                       "input 32x32x3  # the input\nstem: conv3-8\n# before stage two\n| b(16)  # stage two\n"
                       "| gap\n| fc10  # the head\n# the end\n")
    assert same_graph(text, printed)


def test_a_comment_inside_a_one_line_statement_moves_before_it():
    text = "input 8x8x3\nblock b(c) = cat(   # branches\n  conv1-c,   # one\n  conv3-c)\nb(4)\n"
    printed = cnndsl.format_spec(text)
    assert printed == "input 8x8x3\n# branches\n# one\nblock b(c) = cat(conv1-c, conv3-c)\nb(4)\n"
    assert cnndsl.format_spec(printed) == printed and same_graph(text, printed)


def test_long_lines_wrap_where_the_parser_continues():
    widths = ", ".join(str(8 + i) for i in range(40))
    text = ("input 16x16x3\nblock many(" + ", ".join(f"w{i}" for i in range(40)) + ") = " +
            " + ".join(f"conv1-w{i}" for i in range(40)) + "\nmany(" + widths + ") | gap | fc10\n")
    printed = cnndsl.format_spec(text)
    assert max(map(len, printed.splitlines())) <= 100
    assert len(printed.splitlines()) > 6
    assert cnndsl.format_spec(printed) == printed and same_graph(text, printed)


@st.composite
def commented(draw):
    text = draw(random_spec())
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if draw(st.booleans()) and draw(st.booleans()):
            out.append(f"# own {i}")
        if draw(st.booleans()) and draw(st.booleans()):
            out.append("")
        out.append(line + (f"  # end {i}" if line.strip() and draw(st.booleans()) else ""))
    return "\n".join(out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commented())
def test_generated_specs_with_comments(text):
    try:
        original = cnndsl.compile_text(text)
    except cnndsl.CnnDslError:
        return     # random_spec makes specs that compile; a comment never changes that, but stay safe
    printed = cnndsl.format_spec(text)
    assert cnndsl.compile_text(printed).same_as(original)
    assert cnndsl.format_spec(printed) == printed
    assert sorted(comments_of(printed)) == sorted(comments_of(text))


def test_check_and_write(tmp_path, cli):
    messy = tmp_path / "messy.cnn"
    messy.write_text("input 8x8x3   # in\nconv3-8 bn   |  gap|fc10\n")
    clean = tmp_path / "clean.cnn"
    clean.write_text(cnndsl.format_spec(messy.read_text()))
    before = messy.read_text()
    res = cli("fmt", "--check", str(messy), str(clean))
    assert res.exit_code == 1 and "would reformat" in res.output and str(messy) in res.output
    assert str(clean) not in res.output and messy.read_text() == before
    assert cli("fmt", "--check", str(clean)).exit_code == 0
    res = cli("fmt", "--write", str(messy), str(clean))
    assert res.exit_code == 0 and messy.read_text() == clean.read_text()
    assert "# in" in messy.read_text()
    assert cli("fmt", "--check", str(messy)).exit_code == 0
    assert cli("fmt", "--check", "--write", str(messy)).exit_code == 2
    assert cli("fmt", str(messy), str(clean)).exit_code == 2


def test_write_refuses_a_broken_spec_and_leaves_it(tmp_path, cli):
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 8x8x3\nconv3-8 +\n")
    res = cli("fmt", "--write", str(bad))
    assert res.exit_code != 0 and "bad.cnn:" in res.output and "Traceback" not in res.output
    assert bad.read_text() == "input 8x8x3\nconv3-8 +\n"
