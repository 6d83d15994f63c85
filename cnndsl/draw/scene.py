"""A picture as plain shapes in px: frames, edges, boxes (each with its lines of text and details), a header
and a legend. The SVG and PNG writers draw the same scene."""
from __future__ import annotations

from typing import Optional

from ..ir.ops import OPS
from . import style
from .layout import LABEL_INSET, layout
from .model import MAX_INSTANCES_SHOWN, Diagram

MARGIN = 24.0
BOX_H = 54.0
MIN_W, MAX_W = 130.0, 320.0
PAD_X = 10.0
ARROW = 7.0                    # arrowhead length
MAX_LABEL = 360.0              # px of a frame's label
_LABEL_FONT = ((11.5, True), (10.5, False))     # a frame label's size and weight, per level
EDGE = "#5b6472"
SKIP = "#d9822b"


class Text:
    __slots__ = ("x", "y", "text", "size", "bold", "fill", "anchor")

    def __init__(self, x, y, text, size=style.TEXT_SIZE, bold=False, fill="#1a1a1a", anchor="middle"):
        self.x, self.y, self.text, self.size, self.bold, self.fill, self.anchor = \
            x, y, text, size, bold, fill, anchor


class Box:
    __slots__ = ("item", "x", "y", "w", "h", "fill", "stroke", "stroke_width", "texts", "tooltip")


class Edge:
    __slots__ = ("src", "dst", "points", "skip")


class FrameShape:
    __slots__ = ("frame", "x", "y", "w", "h", "label")


class Scene:
    def __init__(self):
        self.width = self.height = 0.0
        self.title = ""
        self.frames: list = []
        self.edges: list = []
        self.boxes: list = []
        self.texts: list = []          # header and legend texts
        self.swatches: list = []       # legend: (x, y, w, h, fill, stroke)
        self.gradient: Optional[tuple] = None   # legend: (x, y, w, h, [colours])
        self.legend_lines: list = []   # legend: (x1, y1, x2, y2, colour)
        self.method = ""


def _lines(item, heat: Optional[str]) -> list:
    """The text lines of a box: title, shape (or a stage's contents), a metric."""
    m = item.metrics
    title = style.clean(item.title) + (f" x{item.count}" if item.count > 1 else "")
    shape = style.shape_text(m["shape"])
    if item.kind == "input":
        return [title, shape]
    if heat == "memory":
        metric = f"{style.size_bytes(m['memory'])} activations"
    elif heat == "rf":
        (h, w), (jh, jw) = m["rf_size"], m["rf_jump"]
        metric = f"RF {h}x{w}" if h != w else f"RF {h}"
        metric += f" /{jh}" if jh == jw else f" /{jh}x{jw}"
    else:
        parts = []
        if m["params"]:
            parts.append(f"{style.si(m['params'])} params")
        if m["macs"]:
            parts.append(f"{style.si(m['macs'])} MACs")
        metric = " · ".join(parts) or "no params"
    second = f"{style.clean(item.subtitle)} · {shape}" if item.kind == "stage" else shape
    return [title, second, metric]


def _tooltip(item, diagram: Diagram) -> str:
    g = diagram.graph
    m = item.metrics
    lines = []
    if item.kind == "stage":
        lines.append(f"stage {item.title}: {item.subtitle} ({len(item.nodes)} layers)")
    elif item.kind == "block":
        lines.append(f"block {item.title}" + (f" x{item.count}" if item.count > 1 else ""))
    else:
        first = g[item.instances[0][0]]
        lines.append(" + ".join(OPS[g[n].op].describe(g[n].attrs) for n in item.instances[0]))
        if first.label:
            lines.append(f"label {first.label}")
    if item.count > 1:
        names = [_instance_name(inst, g) for inst in item.instances]
        shown = ", ".join(names[:MAX_INSTANCES_SHOWN]) + (", ..." if len(names) > MAX_INSTANCES_SHOWN else "")
        lines.append(f"{item.count} instances of the same structure: {shown}")
    elif item.kind != "stage":
        lines.append(_instance_name(item.instances[0], g))
    lines.append(f"output {style.shape_text(m['shape'])}")
    each = " in all" if item.count > 1 else ""
    lines.append(f"params {m['params']:,} · MACs {m['macs']:,}{each}")
    lines.append(f"activations {style.size_bytes(m['memory'])}{each} (float32, batch 1)")
    (h, w), (jh, jw) = m["rf_size"], m["rf_jump"]
    lines.append(f"receptive field {h}x{w}, jump {jh}x{jw}")
    node = g[item.first]
    if node.span is not None:
        lines.append(f"line {node.span.line}")
    return "\n".join(style.clean(line, 300) for line in lines)


def _instance_name(names: list, g) -> str:
    if len(names) == 1:
        return names[0]
    first = names[0]
    stage = g[first].stage
    rel = first[len(stage) + 1:] if first.startswith(stage + ".") else first
    head = rel.split(".", 1)[0]
    return f"{stage}.{head}" if first.startswith(stage + ".") else head


def build_scene(diagram: Diagram, heat: Optional[str] = None) -> Scene:
    items = diagram.items
    lines = [_lines(it, heat) for it in items]
    widest = max(max(style.text_width(ls[0], style.TITLE_SIZE, True),
                     *(style.text_width(t, style.TEXT_SIZE) for t in ls[1:])) for ls in lines)
    box_w = min(MAX_W, max(MIN_W, round(widest + 2 * PAD_X)))
    labels = {f.id: style.fit(style.clean(f.label), MAX_LABEL, *_LABEL_FONT[min(f.level, 1)]) for f in diagram.frames}
    widths = {f.id: style.text_width(labels[f.id], *_LABEL_FONT[min(f.level, 1)]) for f in diagram.frames}
    geo = layout(diagram, box_w, BOX_H, widths)
    scene = Scene()
    scene.method = geo.method
    scale = None
    if heat:
        scale = style.Heat(heat, [it.metrics[heat] for it in items if it.kind != "input"])
    # header
    g = diagram.graph
    rep = diagram.report
    title = style.clean(g.filename)
    facts = (f"input {style.shape_text(g.input_shape)} · output {style.shape_text(g.output.shape)} · "
             f"{style.si(rep.totals['params'])} params · {style.si(rep.totals['macs'])} MACs · "
             f"{len(g.nodes) - 1} layers · depth {diagram.depth}")
    header = [Text(MARGIN, MARGIN + 14, style.fit(title, 1400, 15, True), 15, True, "#1a1a1a", "start"),
              Text(MARGIN, MARGIN + 32, facts, style.TEXT_SIZE, False, "#555555", "start")]
    y = MARGIN + 46
    legend_texts, swatches, legend_lines = [], [], []
    gradient = None
    x = MARGIN
    if scale is not None:
        caption = style.METRIC_TITLE[heat] + (" (log scale)" if scale.log else "")
        legend_texts.append(Text(x, y + 11, caption, style.TEXT_SIZE, True, "#333333", "start"))
        y += 18
        gradient = (x, y, 240.0, 12.0, list(style.scale_stops()))
        for t in (0.0, 0.5, 1.0):
            tx = x + 240 * t
            legend_lines.append((tx, y + 12, tx, y + 16, "#555555"))
            legend_texts.append(Text(tx, y + 27, style.metric_text(heat, scale.value_at(t)) if scale.high else "0",
                                     10.0, False, "#333333", {0.0: "start", 0.5: "middle", 1.0: "end"}[t]))
        if any(it.metrics[heat] <= 0 for it in items if it.kind != "input"):
            swatches.append((x + 262, y, 16.0, 12.0, style.ZERO_FILL, "#999999"))
            legend_texts.append(Text(x + 282, y + 10, "none (0)", 10.0, False, "#333333", "start"))
        y += 34
    else:
        present = []
        for it in items:
            if it.category not in present and it.category != "input":
                present.append(it.category)
        order = ["block", "conv", "fc", "pool", "merge", "other"]
        for cat in sorted(present, key=order.index):
            fill, stroke = style.CATEGORY[cat]
            swatches.append((x, y + 2, 16.0, 12.0, fill, stroke))
            name = style.CATEGORY_NAME[cat]
            legend_texts.append(Text(x + 21, y + 12, name, 10.0, False, "#333333", "start"))
            x += 21 + style.text_width(name, 10.0) + 16
        if any(isinstance(e, tuple) and e[3] for e in geo.edges):
            legend_lines.append((x, y + 8, x + 22, y + 8, SKIP))
            legend_texts.append(Text(x + 27, y + 12, "skip connection", 10.0, False, "#333333", "start"))
            x += 27 + style.text_width("skip connection", 10.0) + 16
        y += 22
    content_top = y + 14
    legend_w = max([t.x + style.text_width(t.text, t.size, t.bold) for t in header + legend_texts] +
                   [s[0] + s[2] for s in swatches] + [MARGIN + 300]) + MARGIN
    width = max(geo.width + 2 * MARGIN, legend_w)
    geo.shift((width - geo.width) / 2, content_top)
    scene.width, scene.height = round(width), round(content_top + geo.height + MARGIN)
    scene.title = title
    scene.texts = header + legend_texts
    scene.swatches, scene.gradient, scene.legend_lines = swatches, gradient, legend_lines
    # frames
    for f, (fx, fy, fw, fh) in geo.frames:
        s = FrameShape()
        s.frame, s.x, s.y, s.w, s.h = f, fx, fy, fw, fh
        s.label = style.fit(labels[f.id], fw - 2 * LABEL_INSET, *_LABEL_FONT[min(f.level, 1)])
        scene.frames.append(s)
    # edges
    for a, b, pts, skip in geo.edges:
        e = Edge()
        e.src, e.dst, e.points, e.skip = items[a], items[b], pts, skip
        scene.edges.append(e)
    # boxes
    for it, ls, (bx, by, bw, bh) in zip(items, lines, geo.boxes):
        box = Box()
        box.item, box.x, box.y, box.w, box.h = it, bx, by, bw, bh
        if scale is not None and it.kind != "input":
            box.fill, box.stroke = scale.fill(it.metrics[heat]), style.HEAT_STROKE
        else:
            box.fill, box.stroke = style.CATEGORY[it.category]
        box.stroke_width = 2.2 if it.count > 1 else 1.2
        colour = style.ink(box.fill)
        cx = bx + bw / 2
        room = bw - 2 * PAD_X + 4
        if len(ls) == 2:
            box.texts = [Text(cx, by + 23, style.fit(ls[0], room, style.TITLE_SIZE, True), style.TITLE_SIZE, True,
                              colour),
                         Text(cx, by + 40, style.fit(ls[1], room, style.TEXT_SIZE), style.TEXT_SIZE, False, colour)]
        else:
            box.texts = [Text(cx, by + 18, style.fit(ls[0], room, style.TITLE_SIZE, True), style.TITLE_SIZE, True,
                              colour),
                         Text(cx, by + 33, style.fit(ls[1], room, style.TEXT_SIZE), style.TEXT_SIZE, False, colour),
                         Text(cx, by + 47, style.fit(ls[2], room, style.TEXT_SIZE), style.TEXT_SIZE, False, colour)]
        box.tooltip = _tooltip(it, diagram)
        scene.boxes.append(box)
    return scene
