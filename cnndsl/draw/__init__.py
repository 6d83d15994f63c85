"""`cnndsl draw`: a picture of a network drawn from its IR, with no system dependency.

    from cnndsl.draw import draw
    svg_bytes = draw(graph, "svg", depth="block", heat="macs")

model   groups the IR into boxes at a depth (stage, block, layer), collapses repeated blocks, makes frames;
layout  places them (series-parallel decomposition, or a layered layout for other graphs) and routes edges;
scene   turns both into shapes with text; svg / png / text write SVG and HTML, PNG (matplotlib), mermaid and dot.
"""
from __future__ import annotations

from typing import Optional

from .model import DEPTHS, METRICS, MAX_BOXES, DrawError, build

FORMATS = ("svg", "png", "html", "mermaid", "dot")
SUFFIXES = {".svg": "svg", ".png": "png", ".html": "html", ".htm": "html", ".mmd": "mermaid",
            ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot"}

__all__ = ["DEPTHS", "FORMATS", "METRICS", "MAX_BOXES", "SUFFIXES", "DrawError", "draw", "diagram"]


def diagram(graph, depth: str = "block", report=None, max_boxes: int = MAX_BOXES):
    """The boxes, edges and frames of `graph` at `depth` (no geometry)."""
    return build(graph, depth, report, max_boxes)


def draw(graph, fmt: str = "svg", depth: str = "block", heat: Optional[str] = None, report=None,
         max_boxes: int = MAX_BOXES) -> bytes:
    """The picture of `graph` as bytes in `fmt` (svg, png, html, mermaid, dot); the same bytes every run."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if heat is not None and heat not in METRICS:
        raise ValueError(f"heat must be one of {METRICS}, got {heat!r}")
    d = build(graph, depth, report, max_boxes)
    if fmt in ("mermaid", "dot"):
        from . import text
        return (text.mermaid if fmt == "mermaid" else text.dot)(d, heat).encode("utf-8")
    from .scene import build_scene
    scene = build_scene(d, heat)
    if fmt == "png":
        from .png import png
        return png(scene)
    from . import svg
    return (svg.svg if fmt == "svg" else svg.html)(scene, depth).encode("utf-8")
