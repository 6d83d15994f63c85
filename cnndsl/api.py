"""The library's entry points: compile a spec file or spec text, analyze, format, build a module."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .analysis.report import Report
from .errors import CnnDslError
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


@gc_paused
def compile_text(text: str, *, input_shape: Optional[tuple[int, int, int]] = None,
                 filename: str = "<spec>") -> Graph:
    """Compile spec text into a verified IR graph; `filename` names it in diagnostics.

    `input_shape` is (H, W, C) and overrides the spec's `input` line.
    """
    if not isinstance(text, str):
        raise TypeError(f"compile_text takes spec text, not a {type(text).__name__}; "
                        "for a file, call cnndsl.compile(path)")
    from .frontend.lower import lower
    from .frontend.parser import line_ends
    text = line_ends(text)
    tree = parse(text, filename)
    try:
        return lower(tree, text, filename, input_shape)
    except CnnDslError as e:
        raise e.attach(text, filename) from None


def compile(path: Union[str, Path], *, input_shape: Optional[tuple[int, int, int]] = None) -> Graph:
    """Compile the spec file at `path` (a Path or a string naming a file) into a verified IR graph.

    Relative paths are relative to the working folder. Spec text is compiled by `compile_text`.
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
    return compile_text(text, input_shape=input_shape, filename=name)


def analyze(graph: Union[Graph, str, Path], *, batch: int = 1, dtype: str = "float32") -> Report:
    """Run every analysis pass over a graph (or the spec file at a path) and return the report."""
    if not isinstance(graph, Graph):
        graph = compile(graph)
    return Report(graph, batch=batch, dtype=dtype)


def format_spec(text: str, filename: str = "<spec>") -> str:
    """Pretty-print spec text in canonical form (parse -> print); the IR is unchanged."""
    from .frontend.formatter import format_tree
    return format_tree(parse(text, filename))


def to_torch(graph: Graph, **kwargs):
    """Build a torch.nn.Module from a graph (imports torch). See cnndsl.backends.to_torch.to_torch."""
    from .backends.to_torch import to_torch as _to_torch
    return _to_torch(graph, **kwargs)


def load_torchvision(model, source, *, strict: bool = True):
    """Copy a torchvision model's (or state dict's) weights into a module built by to_torch, by structure."""
    from .backends.torchvision import load_torchvision as _load
    return _load(model, source, strict=strict)
