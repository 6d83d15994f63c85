"""How gradients flow: per-layer gradient norms at initialization, and after a few training steps.

Each conv and fc layer's gradient (its weights and bias) is measured on one seeded batch in training mode with
the cross-entropy loss of the network's logits. A layer is compared by its gradient per parameter (the RMS,
norm / sqrt(parameters)), so wide and narrow layers compare fairly. The reference is the median RMS of the last
quarter of the weight layers (the classifier end, where the loss's gradient arrives undiminished): a layer
whose RMS is below `ratio` times it is vanishing, one above 1/`ratio` times it is exploding (or not finite), and
one whose gradient is exactly zero is dead.
"""
from __future__ import annotations

import math
import numpy as np

from ..ir import Graph
from ..ir.ops import OPS
from .common import InstrumentError, label, render

DATA = ("synthetic", "digits", "fashion-mnist")
MAX_STEPS = 100_000
RATIO = 1e-3


def _module(model, path):
    m = model
    for part in path:
        m = m._modules[part]
    return m


def _batch(graph: Graph, data: str, batch: int, seed: int, classes: int):
    """A seeded training stream: (inputs, labels) batches for `data` brought to the spec's input."""
    import torch
    shape = graph.input_shape
    rng = np.random.default_rng(seed)
    if data == "synthetic":
        def draw():
            x = rng.standard_normal((batch,) + tuple(shape)).astype(np.float32)
            y = rng.integers(0, classes, batch)
            return torch.from_numpy(x), torch.from_numpy(y)
        return draw
    from ..preprocess import Preprocessing, statistics
    from ..train.data import load
    if len(shape) != 3:
        raise InstrumentError(f"--data {data} needs an image input (HxWxC); this spec's input is a vector")
    ds = load(data)
    if ds.num_classes > classes:
        raise InstrumentError(f"{data} has {ds.num_classes} classes but the network gives {classes} outputs",
                              hint="use --data synthetic, or a spec whose classifier has enough outputs")
    images, labels = ds.train.images, ds.train.labels
    mean, std = statistics(images, shape[0], sample=2000)
    prep = Preprocessing(input=tuple(shape), source=tuple(images.shape[1:]), mean=mean, std=std)

    def draw():
        index = rng.choice(len(labels), size=batch, replace=len(labels) < batch)
        return torch.from_numpy(prep.apply(images[index])), torch.from_numpy(labels[index].astype(np.int64))
    return draw


def _loss(model, x, y):
    import torch.nn.functional as F
    out = model(x)
    if out.dim() > 2:           # a dense output: a class per position
        out = out.reshape(out.shape[0], out.shape[1], -1)
        y = y[:, None].expand(-1, out.shape[2])
    return F.cross_entropy(out, y)


def _norms(model, layers, x, y):
    model.zero_grad(set_to_none=True)
    loss = _loss(model, x, y)
    loss.backward()
    out = []
    for name, path in layers:
        total, count = 0.0, 0
        for p in _module(model, path).parameters():
            count += p.numel()
            if p.grad is not None:
                total += float(p.grad.double().pow(2).sum())
        out.append((math.sqrt(total), count))
    return float(loss.detach()), out


def _flags(rms: list[float], ratio: float) -> tuple[list[str], float, float]:
    finite = [r for r in rms if math.isfinite(r)]
    if not finite:
        return ["exploding"] * len(rms), math.nan, math.nan
    tail = finite[-max(1, len(finite) // 4):]
    reference = float(np.median(tail))
    median = float(np.median(finite))
    flags = []
    for r in rms:
        if not math.isfinite(r) or (reference > 0 and r > reference / ratio):
            flags.append("exploding")
        elif r == 0:
            flags.append("dead")
        elif r < ratio * reference:
            flags.append("vanishing")
        else:
            flags.append("ok")
    return flags, reference, median


def diagnose(graph: Graph, data: str = "synthetic", steps: int = 0, batch: int = 16, seed: int = 0,
             lr: float = 0.01, ratio: float = RATIO) -> dict:
    """Per-layer gradient norms (and flags) at initialization and, with `steps`, after that many SGD steps."""
    import torch

    from ..backends.to_torch import to_torch
    if data not in DATA:
        raise InstrumentError(f"unknown data {label(data, 40)!r}", hint="use " + ", ".join(DATA))
    if not 0 <= steps <= MAX_STEPS:
        raise InstrumentError(f"--steps must be from 0 to {MAX_STEPS:,}, not {steps}")
    if not 0 < ratio < 1:
        raise InstrumentError(f"the ratio must lie between 0 and 1, not {ratio}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = to_torch(graph, logits=True).train()
        paths = model.cnndsl_paths
        layers = [(n.name, paths[n.name]) for n in graph.nodes if OPS[n.op].weight]
        if not layers:
            raise InstrumentError("the network has no conv or fc layer, so no gradients to measure")
        out_shape = graph.output.shape
        classes = out_shape[0]
        draw = _batch(graph, data, batch, seed, classes)
        x0, y0 = draw()
        loss0, first = _norms(model, layers, x0, y0)
        result = {"spec": graph.filename, "data": data, "steps": steps, "batch": batch, "seed": seed,
                  "ratio": ratio, "loss": loss0}
        rows = [{"name": name, "op": graph[name].op, "params": count, "grad_norm": norm,
                 "grad_rms": norm / math.sqrt(count) if count else 0.0} for (name, _), (norm, count)
                in zip(layers, first)]
        flags, reference, median = _flags([r["grad_rms"] for r in rows], ratio)
        for r, f in zip(rows, flags):
            r["flag"] = f
        result.update(reference_rms=reference, median_rms=median)
        if steps:
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            for _ in range(steps):
                x, y = draw()
                optimizer.zero_grad(set_to_none=True)
                loss = _loss(model, x, y)
                loss.backward()
                optimizer.step()
            loss1, after = _norms(model, layers, x0, y0)
            flags1, reference1, _ = _flags([n / math.sqrt(c) if c else 0.0 for n, c in after], ratio)
            for r, (norm, count), f in zip(rows, after, flags1):
                r["trained"] = {"grad_norm": norm, "grad_rms": norm / math.sqrt(count) if count else 0.0, "flag": f}
            result.update(trained_loss=loss1, trained_reference_rms=reference1, lr=lr)
    result["layers"] = rows
    result["vanishing"] = [r["name"] for r in rows if r["flag"] in ("vanishing", "dead")]
    result["exploding"] = [r["name"] for r in rows if r["flag"] == "exploding"]
    last = rows[-1]["grad_rms"]
    result["first_to_last"] = rows[0]["grad_rms"] / last if last else math.inf
    return result


# ----------------------------------------------------------------------------------------------- drawing

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
_FLAG_MARK = {"vanishing": ("v", "#d62728"), "dead": ("X", "#d62728"), "exploding": ("^", "#8c2d04")}


def _draw(results: list[dict], names: list[str]):
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter, MaxNLocator

    from ..train.pictures import _figure
    fig = _figure((9.5, 4.8))
    ax = fig.subplots()
    flagged_any = set()
    for k, (res, name) in enumerate(zip(results, names)):
        colour = _COLOURS[k % len(_COLOURS)]
        rows = res["layers"]
        idx = np.arange(1, len(rows) + 1)
        series = [("init", [r["grad_rms"] for r in rows], [r["flag"] for r in rows], "-")]
        if res["steps"]:
            series.append((f"after {res['steps']} steps", [r["trained"]["grad_rms"] for r in rows],
                           [r["trained"]["flag"] for r in rows], "--"))
        for when, values, flags, style in series:
            v = np.array(values, dtype=float)
            v = np.where(v > 0, v, np.nan)
            ax.plot(idx, v, linestyle=style, marker="o", markersize=3.5, color=colour, linewidth=1.6,
                    label=f"{name}, {when}" if len(series) > 1 else name)
            for flag, (marker, c) in _FLAG_MARK.items():
                at = [i for i, f in enumerate(flags) if f == flag]
                if at:
                    flagged_any.add(flag)
                    y = [v[i] if np.isfinite(v[i]) else np.nanmin(v) for i in at]
                    ax.plot(idx[at], y, linestyle="none", marker=marker, markersize=9, markerfacecolor="none",
                            markeredgecolor=c, markeredgewidth=1.5)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("conv / fc layer (1 = first, input side)")
    ax.set_ylabel("gradient per parameter, ||g|| / sqrt(n) (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    handles, labels_ = ax.get_legend_handles_labels()
    for flag in sorted(flagged_any):
        marker, c = _FLAG_MARK[flag]
        handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=9, markerfacecolor="none",
                              markeredgecolor=c, markeredgewidth=1.5))
        labels_.append(f"flagged {flag} (< {results[0]['ratio']:g} x the last layers')" if flag != "exploding"
                       else "flagged exploding")
    ax.legend(handles, labels_, fontsize=8.5, loc="best")
    data = results[0]["data"]
    steps = results[0]["steps"]
    when = "at initialization" + (f" and after {steps} SGD steps" if steps else "")
    ax.set_title(f"gradient per conv / fc layer {when}\n({data} data, batch {results[0]['batch']}, "
                 f"seed {results[0]['seed']}; residual projections count as layers)", fontsize=10)
    return fig


def gradient_picture(results: list[dict], names: list[str], fmt: str) -> bytes:
    """The bytes of a picture of the gradient per parameter per layer of one or more diagnoses."""
    names = [label(n, 40) for n in names]
    return render(lambda: _draw(results, names), fmt)
