"""The library's entry points: compile a spec file or spec text, analyze, format, build a module."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

from .analysis.report import Report
from .errors import CnnDslError, Span
from .gcpause import gc_paused
from .ir import Graph


class SpecFileError(CnnDslError):
    """`compile` was given something that is not a readable spec file."""

    kind = "error"


@gc_paused
def parse(text: str, filename: str = "<spec>"):
    """Parse spec text into its frozen syntax tree."""
    from .frontend.parser import line_ends, parse as _parse
    text = line_ends(text)      # the text diagnostics show is the text the parser read
    try:
        return _parse(text)
    except CnnDslError as e:
        raise e.attach(text, filename) from None


def compile_text(text: str, *, input_shape: Optional[tuple[int, int, int]] = None,
                 filename: str = "<spec>", base: Union[str, Path, None] = None,
                 overrides: Optional[Mapping[str, Union[int, float]]] = None) -> Graph:
    """Compile spec text into a verified IR graph; `filename` names it in diagnostics.

    `input_shape` is (H, W, C) and overrides the spec's `input` line. `base` is the folder that the spec's
    `use` statements read from (without it, text with `use` is refused: text has no folder). `overrides`
    maps `param` names to the values that replace the spec's (what `--set width=1.2` gives).
    """
    if not isinstance(text, str):
        raise TypeError(f"compile_text takes spec text, not a {type(text).__name__}; "
                        "for a file, call cnndsl.compile(path)")
    return _compile(text, filename, input_shape, None if base is None else str(base), overrides, None)


@gc_paused
def _compile(text: str, filename: str, input_shape, base: Optional[str], overrides, path: Optional[str]) -> Graph:
    """Compile spec text whose `use` paths are relative to `base` (the folder of `path`, its file, if any)."""
    from .frontend.lower import lower
    from .frontend.parser import line_ends
    from .frontend.uses import Sources, resolve
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides is a mapping of param names to numbers, not a {type(overrides).__name__}")
    text = line_ends(text)
    tree = parse(text, filename)
    sources = Sources(text, filename)
    try:
        tree = resolve(tree, sources, base, path)
        return lower(tree, text, filename, input_shape, overrides, sources if len(sources.files) > 1 else None)
    except CnnDslError as e:
        raise sources.attach(e) from None


def compile_source(text: str, filename: str, *, input_shape=None, overrides=None, path: Optional[str] = None) -> Graph:
    """Compile the text of the spec file `path` (its `use` paths relative to its folder); standard input
    (`path` None) has no folder. For the command line, which reads the file itself."""
    base = None if path is None else (os.path.dirname(path) or ".")
    return _compile(text, filename, input_shape, base, overrides, path)


def compile(path: Union[str, Path], *, input_shape: Optional[tuple[int, int, int]] = None,
            overrides: Optional[Mapping[str, Union[int, float]]] = None) -> Graph:
    """Compile the spec file at `path` (a Path or a string naming a file) into a verified IR graph.

    Relative paths are relative to the working folder, and the spec's `use` paths to its own folder.
    `overrides` maps `param` names to values (as `--set` does). Spec text is compiled by `compile_text`.
    """
    from .files import open_regular
    from .frontend.source import decode_spec, read_bounded
    if not isinstance(path, (str, Path)):
        raise TypeError(f"compile takes the path of a spec file, not a {type(path).__name__}")
    name = str(path)
    try:
        with open_regular(path) as f:
            text = decode_spec(read_bounded(f, name), name)
    except OSError as e:
        looks_like_text = isinstance(path, str) and ("\n" in name or not name.endswith(".cnn"))
        hint = ("this looks like spec text: call cnndsl.compile_text(text) for text"
                if looks_like_text else f"the working folder is {Path.cwd()}")
        raise SpecFileError(f"cannot read spec file {name[:80]!r}: {e.strerror or e}", hint=hint) from None
    return compile_source(text, name, input_shape=input_shape, overrides=overrides, path=name)


def analyze(graph: Union[Graph, str, Path], *, batch: int = 1, dtype: str = "float32") -> Report:
    """Run every analysis pass over a graph (or the spec file at a path) and return the report."""
    if not isinstance(graph, Graph):
        graph = compile(graph)
    return Report(graph, batch=batch, dtype=dtype)


def format_spec(text: str, filename: str = "<spec>") -> str:
    """Spec text in canonical form, comments and blank lines kept (parse -> print); the IR is unchanged."""
    from .frontend.formatter import format_source
    from .frontend.parser import line_ends
    tree = parse(text, filename)
    try:
        return format_source(line_ends(text), tree)
    except TypeError:           # syntax the printer does not know yet: a diagnostic, not a crash
        from .frontend.parser import line_ends
        node, what = _unprintable(tree)
        raise CnnDslError(f"cnndsl fmt cannot print {what} yet", getattr(node, "span", None),
                          "the spec is unchanged; compile it as it is").attach(line_ends(text), filename) from None


def _unprintable(tree):
    """The first node of a syntax tree that the printer does not know (a walk without recursion)."""
    from .frontend import syntax as A
    what = {A.UseStmt: "'use'", A.ParamStmt: "'param'", A.InputExpr: "an input with expressions",
            A.Func: "functions in arithmetic"}
    stack = [tree]
    while stack:
        node = stack.pop()
        if type(node) in what:
            return node, what[type(node)]
        if isinstance(node, tuple) and not isinstance(node, Span):
            stack.extend(reversed(node))
    return None, "this spec"


def to_torch(graph: Graph, **kwargs):
    """Build a torch.nn.Module from a graph (imports torch). See cnndsl.backends.to_torch.to_torch."""
    from .backends.to_torch import to_torch as _to_torch
    return _to_torch(graph, **kwargs)


def load_torchvision(model, source, *, strict: bool = True):
    """Copy a torchvision model's (or state dict's) weights into a module built by to_torch, by structure."""
    from .backends.torchvision import load_torchvision as _load
    return _load(model, source, strict=strict)
