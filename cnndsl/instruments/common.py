"""What the instruments share: their error, looking up a layer by name, pictures through train.pictures."""
from __future__ import annotations

import difflib

from ..errors import CnnDslError, printable
from ..ir import Graph

FORMATS = ("svg", "png", "pdf")


class InstrumentError(CnnDslError):
    """An instrument cannot run on this spec or with these options."""

    kind = "error"


def find_layer(graph: Graph, name: str):
    """The node named `name`, or an InstrumentError listing the closest names the graph has."""
    if name in graph:
        return graph[name]
    names = [n.name for n in graph.nodes]
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    lowered = name.lower()
    close += [n for n in names if lowered and lowered in n.lower() and n not in close][:6 - len(close)]
    hint = ("close names: " + ", ".join(printable(c, 60) for c in close)) if close else \
        f"`cnndsl ir {printable(graph.filename, 80)}` lists the {len(names)} node names"
    raise InstrumentError(f"no layer named {printable(name, 80)!r} in {printable(graph.filename, 80)}", hint=hint)


def picture_format(path: str) -> str:
    import os
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix not in FORMATS:
        raise InstrumentError(f"cannot tell the picture format from {printable(path, 80)!r}",
                              hint="name the output .svg, .png or .pdf")
    return suffix


def render(draw, fmt: str) -> bytes:
    """One figure drawn by `draw()` in train.pictures' fixed style (deterministic bytes), saved as `fmt`."""
    from ..train.pictures import _render
    return _render(draw, [fmt], tight=True)[fmt]


def label(text, limit: int = 60) -> str:
    """A user-given name safe to draw (escaped controls, shortened; figures draw with parse_math off)."""
    return printable("" if text is None else text, limit)
