"""SVG (plain XML built as text, every text from the spec escaped) and HTML (the SVG inline in a page)."""
from __future__ import annotations

from . import style
from .layout import LABEL_INSET
from .scene import ARROW, EDGE, SKIP, Scene
from .style import num, xml_attr, xml_text


def _text(t, out: list) -> None:
    attrs = [f'x="{num(t.x)}" y="{num(t.y)}"']
    if t.size != style.TEXT_SIZE:
        attrs.append(f'font-size="{num(t.size)}"')
    if t.bold:
        attrs.append('font-weight="bold"')
    if t.anchor != "middle":
        attrs.append(f'text-anchor="{t.anchor}"')
    if t.fill != "#1a1a1a":
        attrs.append(f'fill="{t.fill}"')
    out.append(f'<text {" ".join(attrs)}>{xml_text(t.text)}</text>')


def _ident(name: str) -> str:
    """A node name as a data attribute: whole (names are unique ids), non-printables escaped, XML-escaped."""
    return xml_attr(style.clean(name, 1 << 20))


def _points(pts) -> str:
    return "M" + " L".join(f"{num(x)} {num(y)}" for x, y in pts)


def svg(scene: Scene, depth: str) -> str:
    w, h = scene.width, scene.height
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="{style.FONT}" font-size="{num(style.TEXT_SIZE)}" text-anchor="middle" '
           f'data-generator="cnndsl draw" data-depth="{depth}" data-layout="{scene.method}">',
           f"<title>{xml_text(scene.title)}</title>",
           "<defs>"]
    for name, colour in (("arrow", EDGE), ("arrow-skip", SKIP)):
        out.append(f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="{num(ARROW)}" '
                   f'markerHeight="{num(ARROW)}" markerUnits="userSpaceOnUse" orient="auto">'
                   f'<path d="M0 0 L10 5 L0 10 z" fill="{colour}"/></marker>')
    if scene.gradient is not None:
        stops = scene.gradient[4]
        out.append('<linearGradient id="heat-scale" x1="0" y1="0" x2="1" y2="0">')
        for i, c in enumerate(stops):
            out.append(f'<stop offset="{num(100 * i / (len(stops) - 1))}%" stop-color="{c}"/>')
        out.append("</linearGradient>")
    out.append("</defs>")
    out.append(f'<rect width="{w}" height="{h}" fill="#ffffff"/>')
    out.append('<g class="legend">')
    for t in scene.texts:
        _text(t, out)
    for x, y, sw, sh, fill, stroke in scene.swatches:
        out.append(f'<rect x="{num(x)}" y="{num(y)}" width="{num(sw)}" height="{num(sh)}" rx="2" fill="{fill}" '
                   f'stroke="{stroke}"/>')
    if scene.gradient is not None:
        x, y, gw, gh, _ = scene.gradient
        out.append(f'<rect x="{num(x)}" y="{num(y)}" width="{num(gw)}" height="{num(gh)}" '
                   f'fill="url(#heat-scale)" stroke="#999999" stroke-width="0.6"/>')
    for x1, y1, x2, y2, colour in scene.legend_lines:
        out.append(f'<path d="M{num(x1)} {num(y1)} L{num(x2)} {num(y2)}" stroke="{colour}" stroke-width="1.6"/>')
    out.append("</g>")
    out.append('<g class="frames">')
    for f in scene.frames:
        lv = f.frame.level
        out.append(f'<g class="frame" data-frame="{_ident(f.frame.id)}" data-level="{lv}">')
        if lv == 0:
            out.append(f'<rect x="{num(f.x)}" y="{num(f.y)}" width="{num(f.w)}" height="{num(f.h)}" rx="8" '
                       f'fill="#f6f8fb" stroke="#9aa9bd"/>')
            out.append(f'<text x="{num(f.x + LABEL_INSET)}" y="{num(f.y + 15)}" font-size="11.5" font-weight="bold" '
                       f'text-anchor="start" fill="#3d5a80">{xml_text(f.label)}</text>')
        else:
            out.append(f'<rect x="{num(f.x)}" y="{num(f.y)}" width="{num(f.w)}" height="{num(f.h)}" rx="6" '
                       f'fill="#ffffff" fill-opacity="0.6" stroke="#b3bfcf" stroke-dasharray="4 3"/>')
            out.append(f'<text x="{num(f.x + LABEL_INSET)}" y="{num(f.y + 13)}" font-size="10.5" text-anchor="start" '
                       f'fill="#5a6b80">{xml_text(f.label)}</text>')
        out.append("</g>")
    out.append("</g>")
    out.append(f'<g class="edges" fill="none" stroke="{EDGE}" stroke-width="1.3" stroke-linejoin="round">')
    for e in scene.edges:
        extra = f' stroke="{SKIP}" stroke-width="1.6" marker-end="url(#arrow-skip)"' if e.skip else \
            ' marker-end="url(#arrow)"'
        out.append(f'<path class="edge{" skip" if e.skip else ""}" data-from="{_ident(e.src.id)}" '
                   f'data-to="{_ident(e.dst.id)}" d="{_points(e.points)}"{extra}/>')
    out.append("</g>")
    out.append('<g class="boxes">')
    for b in scene.boxes:
        it = b.item
        out.append(f'<g class="box" data-node="{_ident(it.id)}" '
                   f'data-last="{_ident(it.last)}" data-kind="{it.kind}" '
                   f'data-count="{it.count}" data-layers="{len(it.nodes)}">')
        out.append(f"<title>{xml_text(b.tooltip)}</title>")
        out.append(f'<rect class="body" x="{num(b.x)}" y="{num(b.y)}" width="{num(b.w)}" height="{num(b.h)}" '
                   f'rx="5" fill="{b.fill}" stroke="{b.stroke}" stroke-width="{num(b.stroke_width)}"/>')
        for t in b.texts:
            _text(t, out)
        out.append("</g>")
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def html(scene: Scene, depth: str) -> str:
    body = svg(scene, depth).split("\n", 1)[1]       # without the XML declaration
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{xml_text(scene.title)}</title>\n"
            "<style>body{margin:0;background:#ffffff}svg{display:block;margin:0 auto;max-width:100%;height:auto}"
            "</style>\n</head>\n<body>\n" + body + "</body>\n</html>\n")
