"""The README's examples cannot rot: its ```python blocks run, its `$ cnndsl ...` sessions (analyze, check, ir,
fmt and diff on bundled specs) print what it shows, and every class and `cnndsl.` name it mentions exists."""
from __future__ import annotations

import builtins
import importlib
import re
import shlex

import pytest

import cnndsl
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CHEAP = {"analyze", "check", "ir", "fmt", "diff"}      # the commands a session may run here (fast, no torch)
OPTIONAL = re.compile(r"^\s*(?:import|from)\s+(torch|torchvision|onnx|onnxruntime)\b", re.M)


def fenced(lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(README) if m.group(1) == lang]


PYTHON = fenced("python")
SESSIONS = [body for body in fenced("") if body.startswith("$ cnndsl")]


def test_the_readme_has_examples():
    assert len(PYTHON) >= 2 and len(SESSIONS) >= 4


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_blocks_run(index, monkeypatch):
    """Block i runs after the blocks before it, in one namespace, from the repository's root."""
    for module in {m for block in PYTHON[:index + 1] for m in OPTIONAL.findall(block)}:
        pytest.importorskip(module)
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(PYTHON[:index + 1]):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)


def commands(session: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines the README shows for it) for each `$ ` line of a session."""
    out: list[tuple[str, list[str]]] = []
    for line in session.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line.rstrip())
    return out


def shows(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` is what `expected` shows: its parts between `...` lines appear in order, the first at
    the start (unless the README starts with `...`)."""
    parts: list[list[str]] = [[]]
    for line in expected:
        if line.strip() == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    at = 0
    for i, part in enumerate(parts):
        if not part:
            continue
        found = next((j for j in range(at, len(actual) - len(part) + 1) if actual[j:j + len(part)] == part), None)
        if found is None or (i == 0 and found != 0):
            return False
        at = found + len(part)
    return True


@pytest.mark.parametrize("session", SESSIONS, ids=[s.split("\n", 1)[0][2:50] for s in SESSIONS])
def test_shell_sessions_print_what_the_readme_shows(session, cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    status = None
    ran = 0
    for command, expected in commands(session):
        if command == "echo $?":
            if status is not None:
                assert [str(status)] == expected, command
            continue
        args = shlex.split(command)
        status = None
        if args[0] != "cnndsl" or args[1] not in CHEAP:
            continue
        result = cli(*args[1:])
        status = result.exit_code
        actual = [line.rstrip() for line in result.stdout.rstrip("\n").split("\n")]
        assert shows(expected, actual), f"{command}\n--- the README shows:\n" + "\n".join(expected) + \
            "\n--- it prints:\n" + "\n".join(actual)
        ran += 1
    assert ran


def test_shows_matches_parts_in_order():
    assert shows(["a", "  ...", "c"], ["a", "b", "c", "d"])
    assert not shows(["b", "  ...", "c"], ["a", "b", "c"])
    assert not shows(["a", "...", "c", "...", "b"], ["a", "b", "c"])
    assert shows(["  ...", "c"], ["a", "b", "c"])


def test_every_error_class_the_readme_names_exists():
    names = set(re.findall(r"\b([A-Z][A-Za-z]*Error)\b", README))
    assert names, "the README names the error classes"
    for name in sorted(names):
        found = getattr(cnndsl, name, None) or getattr(builtins, name, None)
        assert isinstance(found, type) and issubclass(found, Exception), f"README names {name}, which cnndsl lacks"
    assert issubclass(cnndsl.ParseError, cnndsl.CnnDslError) and issubclass(cnndsl.SpecFileError, cnndsl.CnnDslError)


# `cnndsl.preprocessing` and `cnndsl.output` are keys of an exported ONNX model's metadata, not Python names
METADATA_KEYS = {"cnndsl.preprocessing", "cnndsl.output"}


def test_every_cnndsl_name_the_readme_mentions_exists():
    # dotted names, not file names (`completions/cnndsl.fish`)
    names = set(re.findall(r"(?<![\w/.-])cnndsl(?:\.[A-Za-z_][A-Za-z0-9_]*)+", README)) - METADATA_KEYS
    assert "cnndsl.compile" in names
    for name in sorted(names):
        parts = name.split(".")
        obj = cnndsl
        for i, part in enumerate(parts[1:], 1):
            if not hasattr(obj, part):
                try:
                    obj = importlib.import_module(".".join(parts[:i + 1]))
                    continue
                except ModuleNotFoundError as e:
                    if e.name and e.name.split(".")[0] in ("torch", "torchvision", "onnx", "onnxruntime"):
                        pytest.skip(f"{name} needs {e.name}")
                    raise AssertionError(f"README names {name}, which does not exist") from None
            obj = getattr(obj, part)
    for method in re.findall(r"`Report\.([a-z_]+)", README):
        assert hasattr(cnndsl.Report, method), f"README names Report.{method}"
