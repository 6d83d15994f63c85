"""Where a unit looks: its theoretical receptive field over an image, the layer's stride grid, how the field
grows along the path to the layer, and (with torch) the effective receptive field.

The theoretical box is `Report.rf_box` exactly. The effective receptive field (Luo, Li, Urtasun & Zemel,
"Understanding the Effective Receptive Field in Deep Convolutional Neural Networks", NIPS 2016) is the mean
|d unit / d input| over a few random inputs and random initializations, in eval mode (batch norm with its
initial statistics, so no unit reads another image position through the batch statistics): its non-zero
support lies inside the theoretical box, which the tests hold it to.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..analysis.report import Report
from ..ir import Graph
from ..ir.ops import OPS
from .common import InstrumentError, find_layer, label, picture_format, render

MAX_GRID_POINTS = 4096       # stride-grid dots drawn at most (a larger grid is subsampled evenly)
MAX_ERF_SAMPLES = 64


def spatial(node) -> bool:
    return len(node.shape) == 3


def default_layer(graph: Graph) -> str:
    """The last node whose map is larger than 1x1, else the last 3-D node, else the output."""
    last3d = None
    for n in reversed(graph.nodes[1:]):
        if spatial(n):
            if n.shape[1] > 1 or n.shape[2] > 1:
                return n.name
            last3d = last3d or n.name
    return last3d or graph.output.name


def parse_unit(text: Optional[str], node) -> tuple[int, int]:
    """`Y,X` as a unit of `node`'s map (the centre when None); a vector node has the one unit (0, 0)."""
    h, w = (node.shape[1], node.shape[2]) if spatial(node) else (1, 1)
    if text is None:
        return (h - 1) // 2, (w - 1) // 2
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        raise InstrumentError(f"--unit expects Y,X such as 3,4, got {label(text, 40)!r}")
    y, x = int(parts[0]), int(parts[1])
    if not (y < h and x < w):
        raise InstrumentError(f"unit ({y}, {x}) is outside {label(node.name)}'s {h}x{w} map",
                              hint=f"give Y from 0 to {h - 1} and X from 0 to {w - 1}")
    return y, x


def path_to(graph: Graph, report: Report, name: str) -> list[str]:
    """The nodes from the input to `name` along the path of largest fields (a residual's branch, not its skip)."""
    path = [name]
    while graph[path[-1]].inputs:
        inputs = graph[path[-1]].inputs
        path.append(max(inputs, key=lambda i: (report.rf[i].size[0] * report.rf[i].size[1], -inputs.index(i))))
    return path[::-1]


def fitted_image(path: str, shape) -> np.ndarray:
    """An image file brought to the spec's input (C x H x W) by the project's preprocessing fit (zero-padding a
    slightly smaller image, else triangle-filter resampling), as H x W x 3 or H x W floats in [0, 1]."""
    from ..preprocess import axis_matrix, fit_kind
    from ..train.data import read_image
    _, th, tw = shape
    img = read_image(path, channels=1 if shape[0] == 1 else 3).astype(np.float64) / 255.0
    kind = fit_kind(img.shape[1:], (th, tw))
    rows, cols = axis_matrix(img.shape[1], th, kind), axis_matrix(img.shape[2], tw, kind).T
    out = np.clip(rows @ img @ cols, 0.0, 1.0)
    return out[0] if out.shape[0] == 1 else out.transpose(1, 2, 0)


def checkerboard(h: int, w: int) -> np.ndarray:
    cell = max(1, min(h, w) // 16)
    yy, xx = np.meshgrid(np.arange(h) // cell, np.arange(w) // cell, indexing="ij")
    return np.where((yy + xx) % 2 == 0, 0.92, 0.78)


def effective_field(graph: Graph, name: str, y: int, x: int, samples: int = 4, seed: int = 0) -> np.ndarray:
    """Mean |gradient| of unit (y, x) of `name` (summed over its channels) with respect to the input, over
    `samples` random inputs, each with a fresh random initialization: an H x W array (input channels summed)."""
    import torch

    from ..backends.to_torch import to_torch
    if not 1 <= samples <= MAX_ERF_SAMPLES:
        raise InstrumentError(f"the effective field takes 1 to {MAX_ERF_SAMPLES} samples, not {samples}")
    c, h, w = graph.input_shape if len(graph.input_shape) == 3 else (graph.input_shape[0], 1, 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = to_torch(graph, return_nodes=[name]).eval()
        total = torch.zeros(h, w, dtype=torch.float64)
        for s in range(samples):
            if s:
                model.reset_parameters()
            inp = torch.randn(1, c, h, w, generator=gen).requires_grad_(True)
            out = model(inp.reshape(1, -1) if len(graph.input_shape) == 1 else inp)[name]
            unit = out[0, :, y, x] if out.dim() == 4 else out[0]
            unit.sum().backward()
            grad = inp.grad.reshape(1, c, h, w)[0]
            total += grad.abs().sum(0).double()
    return (total / samples).numpy()


def support_inside(erf: np.ndarray, box) -> bool:
    """Whether every non-zero of `erf` lies inside `box` ((top, bottom), (left, right)), inclusive."""
    (top, bottom), (left, right) = box
    ys, xs = np.nonzero(erf)
    return bool(((ys >= top) & (ys <= bottom) & (xs >= left) & (xs <= right)).all())


def analyse(graph: Graph, layer: Optional[str] = None, unit: Optional[str] = None, erf: bool = True,
            samples: int = 4, seed: int = 0) -> dict:
    """Everything the picture shows, as numbers: the layer, unit, box, field, growth path, and the ERF."""
    if len(graph.input_shape) != 3:
        raise InstrumentError("a receptive field needs an image input (HxWxC); this spec's input is a vector")
    name = default_layer(graph) if layer is None else find_layer(graph, layer).name
    node = graph[name]
    y, x = parse_unit(unit, node)
    report = Report(graph)
    box = report.rf_box(name, y, x)
    mh, mw = (node.shape[1], node.shape[2]) if spatial(node) else (1, 1)
    rf = report.rf[name]
    if rf.uniform:      # the window's centre, i * jump - padding + (size - 1) / 2, even where padding clips the box
        centres_y = [i * rf.stride[0] - rf.padding[0] + (rf.size[0] - 1) / 2 for i in range(mh)]
        centres_x = [j * rf.stride[1] - rf.padding[1] + (rf.size[1] - 1) / 2 for j in range(mw)]
    else:               # units off one grid: the middle of each unit's exact box
        centres_y = [sum(report.rf_box(name, i, 0)[0]) / 2 for i in range(mh)]
        centres_x = [sum(report.rf_box(name, 0, j)[1]) / 2 for j in range(mw)]
    path = path_to(graph, report, name)
    growth = [{"name": p, "op": graph[p].op, "size": list(report.rf[p].size), "jump": list(report.rf[p].stride)}
              for p in path]
    out = {"spec": graph.filename, "layer": name, "op": node.op, "unit": [y, x], "map": [mh, mw],
           "input": list(graph.input_shape), "box": [list(box[0]), list(box[1])],
           "rf": report.rf[name].to_dict(), "centres": [centres_y, centres_x], "growth": growth}
    if erf:
        heat = effective_field(graph, name, y, x, samples, seed)
        (top, bottom), (left, right) = box
        inside = support_inside(heat, box)
        total = float(heat.sum())
        ys, xs = np.nonzero(heat)
        out["erf"] = {"samples": samples, "seed": seed, "heat": heat, "support_inside_box": inside,
                      "support": [[int(ys.min()), int(ys.max())], [int(xs.min()), int(xs.max())]] if len(ys) else None,
                      "share_in_half_box": _share_near(heat, box, total)}
    return out


def _share_near(heat, box, total) -> float:
    """The share of the ERF's mass in the middle half (each side) of the theoretical box: Luo et al.'s point is
    that it concentrates there (Gaussian-like), far more than the box's area suggests."""
    if total <= 0:
        return 0.0
    (top, bottom), (left, right) = box
    cy, cx, hh, hw = (top + bottom) / 2, (left + right) / 2, (bottom - top + 1) / 4, (right - left + 1) / 4
    h, w = heat.shape
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    mask = (np.abs(ys - cy) < hh) & (np.abs(xs - cx) < hw)
    return float(heat[mask].sum() / total)


# ----------------------------------------------------------------------------------------------- drawing

def _box_patch(ax, box, **kw):
    from matplotlib.patches import Rectangle
    (top, bottom), (left, right) = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False, **kw))


def _frame(ax, box, h, w):
    """Axis limits showing the image and the whole box (a field may reach into the padding), y downward."""
    (top, bottom), (left, right) = box
    lo_x, hi_x = min(-0.5, left - 0.5), max(w - 0.5, right + 0.5)
    lo_y, hi_y = min(-0.5, top - 0.5), max(h - 0.5, bottom + 0.5)
    pad = 0.03 * max(hi_x - lo_x, hi_y - lo_y)
    ax.set_xlim(lo_x - pad, hi_x + pad)
    ax.set_ylim(hi_y + pad, lo_y - pad)
    ax.set_aspect("equal")
    if lo_x < -0.5 or lo_y < -0.5 or hi_x > w - 0.5 or hi_y > h - 0.5:
        from matplotlib.patches import Rectangle
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="0.35", linewidth=0.8, linestyle=":"))


def _draw(info, image: Optional[np.ndarray], image_name: str):
    from matplotlib.ticker import MaxNLocator

    from ..train.pictures import _figure
    has_erf = "erf" in info
    fig = _figure((15.5 if has_erf else 10.5, 5.0))
    axes = fig.subplots(1, 3 if has_erf else 2, width_ratios=[1, 1, 1.15] if has_erf else [1, 1.15])
    c, h, w = info["input"]
    box = tuple(tuple(b) for b in info["box"])
    (top, bottom), (left, right) = box
    name, (y, x) = label(info["layer"]), info["unit"]
    size, jump = info["rf"]["size"], info["rf"]["jump"]

    ax = axes[0]
    if image is None:
        ax.imshow(checkerboard(h, w), cmap="gray", vmin=0, vmax=1, interpolation="nearest",
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    else:
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    cy, cx = info["centres"]
    step_y = max(1, int(np.ceil(len(cy) * len(cx) / MAX_GRID_POINTS) ** 0.5))
    gy, gx = np.meshgrid(cy[::step_y], cx[::step_y], indexing="ij")
    ax.plot(gx.ravel(), gy.ravel(), linestyle="none", marker="o", markersize=3 if gx.size > 400 else 5,
            color="#1f77b4", markeredgecolor="white", markeredgewidth=0.6, label=f"unit centres ({len(cy)}x{len(cx)}, jump {jump[0]}x{jump[1]})")
    _box_patch(ax, box, edgecolor="#d62728", linewidth=2.0, label=f"field of unit ({y}, {x}): {size[0]}x{size[1]}")
    ax.plot([cx[x]], [cy[y]], marker="+", markersize=16, markeredgewidth=2.2, color="#d62728", linestyle="none")
    _frame(ax, box, h, w)
    ax.set_title(f"{name}: unit ({y}, {x}) sees rows {top}..{bottom}, cols {left}..{right}\n"
                 f"over {label(image_name, 40) if image is not None else 'a checkerboard'} ({h}x{w})",
                 fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=8.5, frameon=False, ncol=1)

    if has_erf:
        e = info["erf"]
        ax = axes[1]
        heat = e["heat"]
        peak = float(heat.max()) or 1.0
        ax.imshow(heat / peak, cmap="magma", vmin=0, vmax=1, interpolation="nearest",
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        _box_patch(ax, box, edgecolor="#2ca02c", linewidth=2.0, linestyle="--",
                   label="theoretical field (Report.rf_box)")
        _frame(ax, box, h, w)
        inside = "inside" if e["support_inside_box"] else "NOT inside"
        ax.set_title(f"effective field: mean |d unit / d input|, {e['samples']} draws\n"
                     f"support {inside} the box; {e['share_in_half_box']:.0%} of it in the box's middle half",
                     fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=8.5, frameon=False)

    ax = axes[-1]
    growth = info["growth"]
    idx = np.arange(len(growth))
    sizes = np.array([g["size"][0] for g in growth], dtype=float)
    jumps = np.array([g["jump"][0] for g in growth], dtype=float)
    weight = np.array([OPS[g["op"]].weight for g in growth]) if growth else np.array([], bool)
    ax.step(idx, sizes, where="post", color="#d62728", linewidth=1.8, label="field size (rows)")
    ax.plot(idx[weight], sizes[weight], "o", color="#d62728", markersize=4, label="after a conv / fc layer")
    ax.axhline(h, color="0.5", linewidth=0.8, linestyle=":")
    ax.text(idx[-1], h, f"input height {h}", va="bottom", ha="right", fontsize=8, color="0.35")
    ax.set_xlabel("node along the path from the input (index)")
    ax.set_ylabel("receptive field size (pixels)", color="#d62728")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    twin = ax.twinx()
    twin.step(idx, jumps, where="post", color="#1f77b4", linewidth=1.5, linestyle="--", label="jump (rows)")
    twin.set_ylabel("jump: input pixels between neighbouring units", color="#1f77b4")
    twin.set_ylim(0, max(jumps.max() * 1.15, 1))
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8.5)
    ax.set_title(f"growth of the field along {len(growth)} nodes to {name}\n"
                 f"final {size[0]}x{size[1]}, jump {jump[0]}x{jump[1]}", fontsize=10)
    return fig


def field_picture(graph: Graph, fmt: str, layer: Optional[str] = None, unit: Optional[str] = None,
                  image: Optional[str] = None, erf: bool = True, samples: int = 4, seed: int = 0):
    """(picture bytes, the numbers) of the receptive field of one unit of `layer`."""
    info = analyse(graph, layer, unit, erf, samples, seed)
    picture = fitted_image(image, graph.input_shape) if image is not None else None
    data = render(lambda: _draw(info, picture, image or ""), fmt)
    return data, info


__all__ = ["analyse", "field_picture", "default_layer", "effective_field", "support_inside", "picture_format"]
