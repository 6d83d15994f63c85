"""PNG: the scene drawn with matplotlib's Agg renderer (no browser, no Cairo, no Graphviz). matplotlib is imported
here only, when a PNG is asked for (`pip install matplotlib`, or the `train` extra)."""
from __future__ import annotations

import io
import math

from . import style
from .layout import LABEL_INSET
from .scene import ARROW, EDGE, SKIP, Scene

MAX_SIDE = 30000          # px: Agg refuses images of 2^16 px a side; stay well below
MAX_PIXELS = 40_000_000   # about 160 MB of RGBA while drawing
SCALE = 2.0               # px per SVG unit for pictures small enough (crisp on high-density screens)
MIN_TEXT_PX = 4.0         # box text smaller than this (in a huge picture) is not drawn


def scale_for(width: float, height: float) -> float:
    return min(SCALE, MAX_SIDE / max(width, height), math.sqrt(MAX_PIXELS / (width * height)))


def png(scene: Scene) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, Polygon, Rectangle

    w, h = scene.width, scene.height
    scale = scale_for(w, h)
    # one SVG px = one point: the figure is w/72 inches wide, drawn at 72 * scale dpi
    fig = Figure(figsize=(w / 72, h / 72), dpi=72 * scale, facecolor="#ffffff")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    font = "DejaVu Sans"

    def text(t, z=5):
        ax.text(t.x, t.y, t.text, fontsize=t.size, fontweight="bold" if t.bold else "normal", color=t.fill,
                ha={"start": "left", "middle": "center", "end": "right"}[t.anchor], va="baseline",
                fontfamily=font, zorder=z, clip_on=False)

    for f in scene.frames:
        if f.frame.level == 0:
            ax.add_patch(FancyBboxPatch((f.x, f.y), f.w, f.h, boxstyle="round,pad=0,rounding_size=8",
                                        facecolor="#f6f8fb", edgecolor="#9aa9bd", linewidth=1, zorder=1))
            ax.text(f.x + LABEL_INSET, f.y + 15, f.label, fontsize=11.5, fontweight="bold", color="#3d5a80", ha="left",
                    va="baseline", fontfamily=font, zorder=1.5)
        else:
            ax.add_patch(FancyBboxPatch((f.x, f.y), f.w, f.h, boxstyle="round,pad=0,rounding_size=6",
                                        facecolor="#ffffff", alpha=0.6, edgecolor="#b3bfcf", linewidth=1,
                                        linestyle=(0, (4, 3)), zorder=1.2))
            ax.text(f.x + LABEL_INSET, f.y + 13, f.label, fontsize=10.5, color="#5a6b80", ha="left", va="baseline",
                    fontfamily=font, zorder=1.5)
    for skip in (False, True):
        edges = [e for e in scene.edges if e.skip == skip]
        colour = SKIP if skip else EDGE
        lines, heads = [], []
        for e in edges:
            pts = e.points
            (x1, y1), (x2, y2) = pts[-2], pts[-1]
            d = math.hypot(x2 - x1, y2 - y1) or 1.0
            ux, uy = (x2 - x1) / d, (y2 - y1) / d
            bx, by = x2 - ux * ARROW, y2 - uy * ARROW
            lines.append(pts[:-1] + [(bx, by)])
            heads.append(Polygon([(x2, y2), (bx - uy * ARROW / 2, by + ux * ARROW / 2),
                                  (bx + uy * ARROW / 2, by - ux * ARROW / 2)], closed=True))
        ax.add_collection(LineCollection(lines, colors=colour, linewidths=1.6 if skip else 1.3, zorder=2,
                                         joinstyle="round"))
        ax.add_collection(PatchCollection(heads, facecolor=colour, edgecolor="none", zorder=2))
    ax.add_collection(PatchCollection(
        [FancyBboxPatch((b.x, b.y), b.w, b.h, boxstyle="round,pad=0,rounding_size=5") for b in scene.boxes],
        facecolors=[b.fill for b in scene.boxes], edgecolors=[b.stroke for b in scene.boxes],
        linewidths=[b.stroke_width for b in scene.boxes], zorder=3))
    if style.TEXT_SIZE * scale >= MIN_TEXT_PX:       # text too small to read is left out (the SVG has it)
        for b in scene.boxes:
            for t in b.texts:
                text(t)
    for t in scene.texts:
        text(t)
    for x, y, sw, sh, fill, stroke in scene.swatches:
        ax.add_patch(Rectangle((x, y), sw, sh, facecolor=fill, edgecolor=stroke, linewidth=1, zorder=4))
    if scene.gradient is not None:
        x, y, gw, gh, _ = scene.gradient
        steps = 60
        for i in range(steps):
            ax.add_patch(Rectangle((x + gw * i / steps, y), gw / steps + 0.3, gh, linewidth=0,
                                   facecolor=style.scale_colour((i + 0.5) / steps), zorder=4))
        ax.add_patch(Rectangle((x, y), gw, gh, facecolor="none", edgecolor="#999999", linewidth=0.6, zorder=4))
    for x1, y1, x2, y2, colour in scene.legend_lines:
        ax.plot([x1, x2], [y1, y2], color=colour, linewidth=1.6, zorder=4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72 * scale, facecolor="#ffffff", metadata={"Software": None})
    return buf.getvalue()
