"""The layout's rules, checked from the module graph: the analysis path imports neither torch, onnx nor
training code, nothing inside the package imports its facade, and the API says whether it wants a path or text."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cnndsl

PACKAGE = Path(cnndsl.__file__).resolve().parent
ANALYSIS_PATH = ("cnndsl.frontend", "cnndsl.ir", "cnndsl.analysis", "cnndsl.errors", "cnndsl.limits",
                 "cnndsl.files", "cnndsl.gcpause", "cnndsl.version")
FORBIDDEN = ("torch", "torchvision", "onnx", "onnxruntime", "cnndsl.train", "cnndsl.backends", "cnndsl.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: dict) -> set[str]:
    """Every module `name` imports anywhere in its file (function-level imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            for a in node.names:       # `from pkg import submodule` depends on the submodule, not the package
                found.add(f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin)
    return found


def test_analysis_imports_neither_torch_onnx_nor_training_code():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    for start in (m for m in known if m.startswith(ANALYSIS_PATH)):
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for dep in graph.get(current, ()):
                assert not dep.startswith(FORBIDDEN), f"{start} reaches {dep} (through {current})"
                if dep in known and dep not in seen:
                    seen.add(dep)
                    todo.append(dep)


def test_nothing_inside_imports_the_facade():
    known = modules()
    for name, path in known.items():
        if name == "cnndsl":
            continue
        assert "cnndsl" not in imports(name, path, known), f"{name} imports the package facade"


def test_analyze_in_a_fresh_interpreter_loads_no_torch_or_onnx():
    code = ("import sys, cnndsl\nr = cnndsl.analyze(cnndsl.compile(sys.argv[1]))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'numpy')"
            " or m.startswith(('cnndsl.train', 'cnndsl.backends'))))")
    spec = PACKAGE.parent / "specs" / "resnet50.cnn"
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_compile_takes_paths_and_compile_text_takes_text(tmp_path, monkeypatch):
    spec = tmp_path / "net.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    monkeypatch.chdir(tmp_path.parent)          # a relative path from another folder
    for path in (spec, str(spec), f"{tmp_path.name}/net.cnn"):
        assert cnndsl.compile(path).filename == str(path)
    assert cnndsl.compile_text(spec.read_text()).same_as(cnndsl.compile(spec))
    with pytest.raises(cnndsl.SpecFileError, match="compile_text"):
        cnndsl.compile("input 8x8x1\nconv3-4 | gap | fc3\n")
    with pytest.raises(cnndsl.SpecFileError, match="working folder"):
        cnndsl.compile("missing.cnn")
    with pytest.raises(TypeError, match="cnndsl.compile"):
        cnndsl.compile_text(spec)


def test_verify_holds_attributes_to_each_ops_schema():
    from types import MappingProxyType

    from cnndsl.ir import Graph, verify
    graph = cnndsl.compile_text("input 8x8x1\nconv3-4 | gap | fc3")
    conv = graph.nodes[1]
    for bad in ({**conv.attrs, "kernel": (3, 0)}, {**conv.attrs, "bias": 1}, {k: v for k, v in conv.attrs.items()
                                                                             if k != "groups"},
                {**conv.attrs, "extra": 1}):
        nodes = list(graph.nodes)
        nodes[1] = conv._replace(attrs=MappingProxyType(bad))
        with pytest.raises(cnndsl.InternalError, match="attribute|schema"):
            verify(Graph(tuple(nodes)))
