"""cnndsl: a compiler and analyzer for a compact language that describes convolutional networks."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .errors import CnnDslError, InternalError, LimitError, ParseError, ShapeError, Span
from .gcpause import gc_paused
from .ir import Graph, Node, verify
from .report import Report

__version__ = "0.1.0"
__all__ = ["parse", "compile", "analyze", "format_spec", "read_spec", "to_torch", "load_torchvision", "Graph", "Node", "Report",
           "CnnDslError", "ParseError", "ShapeError", "LimitError", "InternalError", "Span", "verify"]


def decode_spec(data: bytes, filename: str = "<spec>") -> str:
    """Spec bytes as UTF-8 text; undecodable bytes become a diagnostic with a position."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        from .errors import SyntaxError_
        from .syntax import _offset_span
        text = data[:e.start].decode("utf-8", "replace")
        err = SyntaxError_(f"byte 0x{data[e.start]:02x} is not UTF-8 text", _offset_span(text + "?", len(text)),
                           "is this a binary file? specs are UTF-8 text")
        raise err.attach(text, filename) from None


def read_bounded(stream, filename: str) -> bytes:
    """At most the bytes a spec may have (4 per character), refusing a larger file without reading it all."""
    from . import limits
    most = 4 * limits.MAX_SOURCE_CHARS
    from .files import read_at_most
    data = read_at_most(stream, most)
    if len(data) > most:
        err = LimitError(f"the spec is larger than {most:,} bytes", None,
                         f"specs may be at most {limits.MAX_SOURCE_CHARS:,} characters")
        raise err.attach(None, filename)
    return data


def read_spec(path: Union[str, Path]) -> str:
    """Read a spec file as UTF-8 text (see decode_spec); a file too large for a spec is refused unread."""
    with open(path, "rb") as f:
        return decode_spec(read_bounded(f, str(path)), str(path))


@gc_paused
def parse(text: str, filename: str = "<spec>"):
    """Parse spec text into its frozen syntax tree."""
    from .syntax import parse as _parse
    try:
        return _parse(text)
    except CnnDslError as e:
        raise e.attach(text, filename) from None


@gc_paused
def compile(spec: Union[str, Path], *, input_shape: Optional[tuple[int, int, int]] = None,
            filename: Optional[str] = None) -> Graph:
    """Compile spec text, or a path to a .cnn file, into a verified IR graph.

    `input_shape` is (H, W, C) and overrides the spec's `input` line.
    """
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and spec.endswith(".cnn")
                                  and Path(spec).is_file()):
        filename = filename or str(spec)
        text = read_spec(spec)
    else:
        text = spec
        filename = filename or "<spec>"
    from .lower import lower
    tree = parse(text, filename)
    try:
        return lower(tree, text, filename, input_shape)
    except CnnDslError as e:
        raise e.attach(text, filename) from None


def analyze(graph: Union[Graph, str, Path], *, batch: int = 1, dtype: str = "float32") -> Report:
    """Run every analysis pass over a graph (or spec text/path) and return the report."""
    if not isinstance(graph, Graph):
        graph = compile(graph)
    return Report(graph, batch=batch, dtype=dtype)


def format_spec(text: str, filename: str = "<spec>") -> str:
    """Pretty-print spec text in canonical form (parse -> print); the IR is unchanged."""
    from .formatter import format_tree
    return format_tree(parse(text, filename))


def to_torch(graph: Graph, **kwargs):
    """Build a torch.nn.Module from a graph (imports torch). See cnndsl.torch_backend.to_torch."""
    from .torch_backend import to_torch as _to_torch
    return _to_torch(graph, **kwargs)


def load_torchvision(model, source, *, strict: bool = True):
    """Copy a torchvision model's (or state dict's) weights into a module built by to_torch, by structure."""
    from .interchange import load_torchvision as _load
    return _load(model, source, strict=strict)
