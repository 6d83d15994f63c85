"""Bad input: every case gives file:line:col, the line, a caret and a non-zero exit; never a traceback."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.cli import main

# (spec text, line, column, words the message must contain)
CORPUS = [
    ("conv3-64 + maxpol", 1, 12, "unknown layer 'maxpol'"),
    ("conv3-64 + convv3-8", 1, 12, "unknown layer"),
    ("(conv3-64 + maxpool", 1, 1, "never closed"),
    ("conv3-64 + maxpool)", 1, 19, "unmatched ')'"),
    ("input 32x32x3\nconv3-64 + [maxpool", 2, 12, "never closed"),
    ("conv3-0", 1, 7, "at least 1"),
    ("conv3--4", 1, 7, "unexpected token '-'"),
    ("conv0-4", 1, 5, "at least 1"),
    ("input 32x32x0\nconv3-8", 1, 1, "at least 1"),
    ("input 8x8x3\nconv3-8 + maxpool x4", 2, 11, "collapses below 1"),
    ("input 8x8x3\nconv9-8[valid]", 2, 1, "collapses below 1"),
    ("block b(c) = res(conv3-c/2 + conv3-c, conv1-c)\ninput 8x8x3\nb(4)", 1, 14, "residual shapes cannot be joined"),
    ("input 9x9x3\nres(conv3-8 + maxpool3/1)", 2, 1, "cannot be joined"),
    ("cat(conv1-8, maxpool)", 1, 1, "mismatched sizes"),
    ("block b(c, s=1) = conv3-c/s\nb(1, 2, 3)", 2, 1, "takes at most 2 arguments"),
    ("block b(c, s=1) = conv3-c/s\nb(q=2)", 2, 3, "no parameter 'q'"),
    ("block b(c, s=1) = conv3-c/s\nb(s=2)", 2, 1, "needs a value for 'c'"),
    ("conv3-64 + bottleneck(64)", 1, 12, "unknown block 'bottleneck'"),
    ("conv3-64 x1000000000", 1, 10, "beyond the limit"),
    ("(" * 10_000 + "conv3-8" + ")" * 10_000, 1, 65, "nested more than"),
    ("\x00\x01\x02garbage\xff", 1, 1, "binary"),
    ("", 1, 1, "no layers"),
    ("# nothing but a comment\n", 1, 1, "no layers"),
    ("conv3-64[pdd=1]", 1, 10, "unknown option 'pdd'"),
    ("input 99999999x8x3\nconv3-8", 1, 1, "beyond the limit"),
    ("conv99999999999999-8", 1, 5, "digits"),
    ("conv3-99999999", 1, 7, "beyond the limit"),
    ("fc10 | conv3-8", 1, 8, "needs a CxHxW feature map"),
    ("conv3-c", 1, 7, "unknown name 'c'"),
    ("conv3-64 bn x2 | fc10\nfc5 xyz", 2, 5, "unknown layer 'xyz'"),
    ("dropout1.5", 1, 8, "dropout rate"),
    ("conv3-8[groups=3]", 1, 1, "groups=3"),
    ("block b() = b()\nb()", 1, 13, "calls itself"),
    ("conv3-8 x{2/0}", 1, 13, "division by zero"),
    ("input 32x32x3\nconv3-8 x100000", 2, 1, "nodes"),
    ("input 32x32\nconv3-8", 1, 1, "height, width and channels"),
    ("activation sofmax\nconv3-8", 1, 12, "not an activation"),
    ("conv3-8 +\n\n", 1, 9, "end of input"),
    ("conv3-8 + + fc10", 1, 11, "unexpected token '+'"),
    ("conv3-8 $ fc10", 1, 9, "unexpected character '$'"),
    ("maxpool3-64", 1, 10, "not a channel count"),
    ("conv3-8 x0", 1, 9, "at least 1"),
    ("block conv(c) = conv3-c\nconv(3)", 1, 7, "built-in layer"),
    ("block b(c) = conv3-c\nblock b(c) = conv5-c\nb(3)", 2, 7, "defined twice"),
    ("x: conv3-8 + x: conv3-8", 1, 14, "already used"),
    ("maxpool3/2[pad=2]", 1, 1, "more than half"),
    ("input 16x16x3\ngap | maxpool", 2, 7, "collapses"),
]


@pytest.mark.parametrize("text,line,col,words", CORPUS, ids=[repr(c[0][:24]) for c in CORPUS])
def test_library_error_points_at_the_culprit(text, line, col, words):
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.compile_text(text, filename="bad.cnn")
    err = info.value
    assert (err.line, err.column) == (line, col), err.render()
    assert words.lower() in err.render().lower()


@pytest.mark.parametrize("text,line,col,words", CORPUS[:20], ids=[repr(c[0][:24]) for c in CORPUS[:20]])
def test_cli_diagnostic_format(tmp_path, text, line, col, words):
    from click.testing import CliRunner
    path = tmp_path / "bad.cnn"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text else text.encode("latin-1"))
    result = CliRunner().invoke(main, ["analyze", str(path)], catch_exceptions=False)
    out = result.output
    assert result.exit_code == 1
    assert "Traceback" not in out
    first = out.splitlines()[0]
    assert first.startswith(f"{path}:{line}:"), out
    if "binary" not in words:
        assert first.startswith(f"{path}:{line}:{col}:"), out
        assert "^" in out


def test_invalid_utf8_file_names_the_byte(tmp_path, cli):
    path = tmp_path / "bin.cnn"
    path.write_bytes(b"conv3-8\n\x89PNG\r\n\x1a\n\x00\x00")
    result = cli("check", str(path))
    assert result.exit_code == 1 and "not UTF-8" in result.output and f"{path}:2:1:" in result.output


def test_missing_file_is_a_clean_error(cli):
    result = cli("analyze", "no/such/file.cnn")
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_hostile_input_is_refused_quickly():
    hostile = [
        "input 32x32x3\n((conv3-8 x1000) x1000) x1000",
        "input 1048576x1048576x3\nconv3-1048576 x50",
        "conv3-8 " * 50_000,
        "block a(c) = conv3-c x100000\na(3) x100000",
        "input 32x32x3\nconv3-{999999999999*999999999999*999999999999}",
    ]
    for text in hostile:
        start = time.perf_counter()
        try:
            cnndsl.analyze(cnndsl.compile_text(text))
        except cnndsl.CnnDslError:
            pass
        assert time.perf_counter() - start < 15, text[:60]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("conv3-64x2+|()[]{}=,:/.#\n maxpoolfcbnresgap_0123456789") + ["\x00", "é"]),
               max_size=80))
def test_fuzz_only_our_errors(text):
    try:
        cnndsl.analyze(cnndsl.compile_text(text))
    except cnndsl.CnnDslError as e:
        assert e.render()
    except Exception as e:  # pragma: no cover - a failure to report
        raise AssertionError(f"{type(e).__name__}: {e} on {text!r}")


TOKENS = ["conv3-8", "conv1-4/2", "maxpool", "avgpool3/1[pad=1]", "fc10", "bn", "relu", "+", "|", "x2", "(",
          ")", "res(", "cat(", ",", "gap", "softmax", "input 16x16x3\n", "\n", "block b(c) = ", "b(3)", "conv3-c",
          "dropout0.5", "lbl:", "[valid]", "x{2}", "{", "}"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=20))
def test_fuzz_token_soup_only_our_errors(tokens):
    text = " ".join(tokens)
    try:
        cnndsl.analyze(cnndsl.compile_text(text))
    except cnndsl.CnnDslError as e:
        assert e.line >= 1 and e.column >= 1
    except Exception as e:  # pragma: no cover - a failure to report
        raise AssertionError(f"{type(e).__name__}: {e} on {text!r}")


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_byte_order_mark_and_line_ends_keep_positions(tmp_path, cli, sep):
    path = tmp_path / "win.cnn"
    path.write_bytes(("\ufeff" + sep.join(["input 8x8x3", "conv3-8 # c", "fc10 maxpol"]) + sep).encode())
    result = cli("check", str(path))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{path}:3:6: error: unknown layer 'maxpol'"), result.output
    assert lines[1].endswith("| fc10 maxpol") and lines[2].endswith("|      ^~~~~~"), result.output
    # on line 1 columns count from the character after the byte order mark, as an editor shows them
    path.write_bytes("\ufeffconv3-8 + maxpol".encode())
    result = cli("check", str(path))
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{path}:1:11: error: unknown layer 'maxpol'"), result.output
    assert lines[1].endswith("| conv3-8 + maxpol") and lines[2].endswith("|           ^~~~~~"), result.output


def test_a_byte_order_mark_elsewhere_is_still_refused():
    with pytest.raises(cnndsl.CnnDslError, match="U\\+FEFF") as info:
        cnndsl.compile_text("conv3-8\n\ufeffrelu")
    assert (info.value.line, info.value.column) == (2, 1)
