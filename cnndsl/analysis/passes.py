"""Analyses over the IR; each reads the graph and returns a table keyed by node name."""
from __future__ import annotations

from math import prod
from typing import NamedTuple, Optional

from ..ir import Graph
from ..ir.ops import GLOBAL, OPS, fmt_shape

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
               "float64": 8, "fp64": 8, "int8": 1}


def require_buildable(g: Graph, itemsize: int = 4) -> int:
    """The parameters + buffers a backend would allocate for `g`; refused (LimitError) above
    limits.MAX_BUILD_PARAMS or above this machine's physical memory, before anything is allocated."""
    import os

    from .. import limits
    from ..errors import LimitError
    params, buffers, _ = counts(g)
    total = sum(params.values()) + sum(buffers.values())
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = None
    if total > limits.MAX_BUILD_PARAMS or (memory and total * itemsize > memory):
        biggest = max(params, key=params.__getitem__)
        raise LimitError(f"the network has {total:,} weights ({total * itemsize / 2**30:,.1f} GiB), more than "
                         f"cnndsl builds (at most {limits.MAX_BUILD_PARAMS:,}, within this machine's memory); "
                         f"the largest layer is '{biggest}' with {params[biggest]:,}", g[biggest].span,
                         "cnndsl analyze reports on networks of any size; building one allocates its weights"
                         ).attach(g.source or None, g.filename)
    return total


def shapes(g: Graph) -> dict[str, tuple]:
    """Output shape of each node (channels-first, no batch dimension)."""
    return {n.name: n.shape for n in g.nodes}


def counts(g: Graph) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Parameters, buffers and MACs of each node, in one walk over the graph."""
    shape: dict[str, tuple] = {}
    params, buffers, macs = {}, {}, {}
    for n in g.nodes:
        shape[n.name] = n.shape
        if not n.inputs:
            params[n.name] = buffers[n.name] = macs[n.name] = 0
            continue
        op = OPS[n.op]
        ins = [shape[i] for i in n.inputs]
        params[n.name] = op.params(n.attrs, ins)
        buffers[n.name] = op.buffers(n.attrs, ins)
        macs[n.name] = op.macs(n.attrs, ins, n.shape)
    return params, buffers, macs


def params(g: Graph) -> dict[str, int]:
    """Trainable parameters of each node (conv/fc weights and biases, batch-norm gamma and beta)."""
    return counts(g)[0]


def buffers(g: Graph) -> dict[str, int]:
    """Non-trainable state of each node (batch-norm running mean, variance and batch counter)."""
    return counts(g)[1]


def macs(g: Graph) -> dict[str, int]:
    """Multiply-accumulates of each node for one image (conv and fc; FLOPs are 2x this)."""
    return counts(g)[2]


def activation_bytes(g: Graph, batch: int = 1, dtype: str = "float32") -> dict[str, int]:
    """Bytes of each node's output for a batch."""
    size = DTYPE_BYTES[dtype]
    return {n.name: prod(n.shape) * batch * size for n in g.nodes}


def peak_activation_bytes(g: Graph, batch: int = 1, dtype: str = "float32",
                          sizes: dict[str, int] | None = None) -> int:
    """Inference peak: outputs live from their producer to their last consumer, walked in order.

    `sizes` is activation_bytes(g, batch, dtype) when the caller already has it.
    """
    sizes = sizes or activation_bytes(g, batch, dtype)
    nodes = g.nodes
    last_use = {}
    for i, n in enumerate(nodes):
        for src in n.inputs:
            last_use[src] = i
    freed: list[list[str]] = [[] for _ in nodes]
    for src, i in last_use.items():
        freed[i].append(src)
    live = peak = 0
    for n, done in zip(nodes, freed):
        live += sizes[n.name]
        if live > peak:
            peak = live
        for src in done:
            live -= sizes[src]
    return peak


class RF(NamedTuple):
    """Receptive field per axis (h, w): size, effective stride (jump), effective padding; grid under it.

    `uniform` is False where the units do not form one grid (after uneven or enlarging adaptive pooling, or
    a merge of inputs with different jumps): `size` is then the largest unit's field, and Report.rf_box gives
    each unit's exact bounds.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    grid: tuple[int, int]       # spatial size of the feature map this field belongs to
    uniform: bool = True

    def to_dict(self) -> dict:
        return {"size": list(self.size), "stride": list(self.stride), "padding": list(self.padding),
                "uniform": self.uniform}


class Misalignment(NamedTuple):
    node: str
    message: str


def receptive_fields(g: Graph) -> tuple[dict[str, RF], list[Misalignment]]:
    """Forward RF: r += (k-1)*j, P += p*j, j *= s; at a merge, the union of the fields (reported if unaligned)."""
    rf: dict[str, RF] = {}
    bad: list[Misalignment] = []
    shape = {}
    for n in g.nodes:
        shape[n.name] = n.shape
        if not n.inputs:
            rf[n.name] = RF((1, 1), (1, 1), (0, 0), n.shape[1:3] if len(n.shape) == 3 else (1, 1))
            continue
        if len(n.inputs) > 1:
            grid = n.shape[1:3] if len(n.shape) == 3 else (1, 1)
            rf[n.name] = _merge(n.name, [rf[i] for i in n.inputs], bad, grid)
            continue
        src = rf[n.inputs[0]]
        op = OPS[n.op]
        if not op.windowed:
            rf[n.name] = src      # pointwise, or a reshape: every unit sees what its input unit saw
            continue
        win = op.window(n.attrs, [shape[n.inputs[0]]])
        if win == GLOBAL:
            gh, gw = src.grid
            win = ((gh, gh, 0), (gw, gw, 0))
            grid = (1, 1)
        else:
            grid = n.shape[1:3]
        (kh, sh, ph), (kw, sw, pw) = win
        (rh, rw), (jh, jw), (qh, qw) = src.size, src.stride, src.padding
        rf[n.name] = RF((rh + (kh - 1) * jh, rw + (kw - 1) * jw), (jh * sh, jw * sw), (qh + ph * jh, qw + pw * jw),
                        grid)
    return rf, bad


EMPTY = (1 << 62, -(1 << 62))   # the field of a unit whose window lies wholly in padding: it sees nothing


def unit_fields(g: Graph) -> dict[str, tuple[tuple[list, list], tuple[list, list]]]:
    """The exact field of every unit, per axis: node -> ((lo, hi) over rows, (lo, hi) over columns), where
    lo[i]..hi[i] are the inclusive input-image rows (columns) that unit row (column) i depends on.

    Fields are separable (every op acts on rows and columns independently), so two lists per axis describe
    every unit. Walked forward in graph order: a window's unit takes the lowest `lo` and highest `hi` of the
    cells it reads (fields grow monotonically with the index), padding cells of a feature map hold no
    input, and the image's own padding extends the bounds past its edges (bounds before clipping to the
    image). A vector (after flatten, fc or global pooling) has one unit per axis covering all of its input.
    """
    fields: dict = {}
    for n in g.nodes:
        if not n.inputs:
            _, h, w = n.shape if len(n.shape) == 3 else (n.shape[0], 1, 1)
            fields[n.name] = ((list(range(h)), list(range(h))), (list(range(w)), list(range(w))))
            continue
        srcs = [g[i] for i in n.inputs]
        if len(srcs) > 1:          # a merge: the union of its inputs' fields, unit by unit
            axes = []
            for axis in (0, 1):
                # an input with one unit along the axis (a C x 1 x 1 gate) is broadcast to every unit
                count = max(len(fields[s.name][axis][0]) for s in srcs)
                lo = [min(vals) for vals in zip(*(_broadcast(fields[s.name][axis][0], count) for s in srcs))]
                hi = [max(vals) for vals in zip(*(_broadcast(fields[s.name][axis][1], count) for s in srcs))]
                axes.append((lo, hi))
            fields[n.name] = tuple(axes)
            continue
        src = srcs[0]
        image = not src.inputs
        (lh, hh), (lw, hw) = fields[src.name]
        spans = OPS[n.op].unit_spans(n.attrs, src.shape, n.shape)
        if spans is None:          # pointwise: the same field
            fields[n.name] = fields[src.name]
            continue
        axes = []
        for (lo_in, hi_in), cells in zip(((lh, hh), (lw, hw)), spans):
            last = len(lo_in) - 1
            lo, hi = [], []
            for first, final, step in cells:    # unit i reads first, first+step, ..., final (maybe padding)
                a = first if first >= 0 else first + -(first // step) * step      # the first and last real cells
                b = final if final <= last else final - -(-(final - last) // step) * step
                if a > b:                   # a window wholly in padding reads nothing
                    lo.append(EMPTY[0])
                    hi.append(EMPTY[1])
                elif image:  # bounds may reach into the image's padding, unless a dilated kernel steps past it
                    lo.append(first if a == 0 else a)
                    hi.append(final if b == last else b)
                else:        # a feature map's padding holds no input; units that see nothing (EMPTY) drop out
                    lo.append(min(lo_in[i] for i in range(a, b + 1, step)))
                    hi.append(max(hi_in[i] for i in range(a, b + 1, step)))
            axes.append((lo, hi))
        fields[n.name] = tuple(axes)
    return fields


def _broadcast(values: list, count: int) -> list:
    return values * count if len(values) == 1 else values


def exact_fields(g: Graph, rf: dict[str, RF], misaligned: list[Misalignment]) -> tuple[dict[str, RF], Optional[dict]]:
    """The receptive-field table made exact where its units are not one grid.

    Layers whose windows are uneven or enlarging (adaptive pooling: `op.irregular`) and merges of inputs with
    different jumps make the field differ from unit to unit; from there on, the formula's one field per layer
    is replaced by the exact fields of unit_fields: `size` the largest unit's field, `padding` how far the
    first unit's field starts before the image, `uniform` whether the units still form one grid. Returns the
    table and the unit fields (None when every layer is a grid, which costs nothing to find out).
    """
    odd = {m.node for m in misaligned}
    for n in g.nodes:
        if n.inputs and OPS[n.op].irregular(n.attrs, g[n.inputs[0]].shape):
            odd.add(n.name)
        elif len(n.inputs) > 1 and any(g[i].shape[1:] != n.shape[1:] for i in n.inputs):
            odd.add(n.name)      # a merge that broadcasts a C x 1 x 1 input: each unit joins its own field to it
    if not odd:
        return rf, None
    fields = unit_fields(g)
    after = set(odd)
    out = dict(rf)
    for n in g.nodes:
        if n.name not in after and not any(i in after for i in n.inputs):
            continue
        after.add(n.name)
        size, pad, jump, grid_like = [], [], [], True
        for axis, (lo, hi) in enumerate(fields[n.name]):
            seen = [(a, b) for a, b in zip(lo, hi) if a <= b]     # units that see nothing (EMPTY) left out
            widths = {b - a for a, b in seen} or {-1}
            steps = {q[0] - p[0] for p, q in zip(seen, seen[1:])} | {q[1] - p[1] for p, q in zip(seen, seen[1:])}
            grid_like = grid_like and len(seen) == len(lo) and len(widths) == 1 and len(steps) <= 1
            size.append(max(widths) + 1)
            pad.append(-seen[0][0] if seen else 0)
            jump.append(max(steps) if steps else out[n.name].stride[axis])
        out[n.name] = out[n.name]._replace(size=tuple(size), stride=tuple(jump), padding=tuple(pad),
                                           uniform=grid_like)
    return out, fields


def _merge(name: str, ins: list[RF], bad: list[Misalignment], grid: tuple[int, int]) -> RF:
    """The union of the inputs' fields. An input of one unit broadcast over a larger grid (a gate) joins every
    unit: no misalignment, and exact_fields gives each unit its field."""
    size, jump, pad = [], [], []
    gates = [r for r in ins if r.grid == (1, 1) != grid]
    ins = [r for r in ins if r.grid != (1, 1) or grid == (1, 1)]
    for i in (0, 1):
        starts = [-r.padding[i] for r in ins]
        ends = [-r.padding[i] + r.size[i] - 1 for r in ins]
        jumps = {r.stride[i] for r in ins}
        centres = {s + e for s, e in zip(starts, ends)}
        if len(jumps) > 1 or len(centres) > 1:
            axis = "height" if i == 0 else "width"
            what = f"strides {sorted(jumps)}" if len(jumps) > 1 else \
                f"fields centred {sorted(c / 2 for c in centres)} px apart along the {axis}"
            bad.append(Misalignment(name, f"merge '{name}' joins unaligned inputs ({what})"))
        start = min(starts + [-r.padding[i] for r in gates])
        end = max(ends + [-r.padding[i] + r.size[i] - 1 for r in gates])
        size.append(end - start + 1)
        pad.append(-start)
        jump.append(max(jumps))
    return RF(tuple(size), tuple(jump), tuple(pad), grid)


def warnings(g: Graph, param_table: dict[str, int], rf: dict[str, RF], misaligned: list[Misalignment]) -> list[dict]:
    """What a designer wants to hear: truncating pools, FC-heavy parameter budgets, small fields, unaligned merges."""
    out: list[dict] = []

    def warn(node, message):
        span = g[node].span if node in g else None
        out.append({"node": node, "message": message,
                    "line": span.line if span else None, "column": span.column if span else None})

    for n in g.nodes:
        if OPS[n.op].slides and len(n.shape) == 3:
            src = g[n.inputs[0]].shape
            a = n.attrs
            win = OPS[n.op].window(a, [src])
            lost = []
            for i, axis in ((0, "rows"), (1, "columns")):
                keff, stride, pad = win[i]
                last = (n.shape[i + 1] - 1) * stride - pad + keff - 1
                if src[i + 1] - 1 > last:
                    lost.append(f"{src[i + 1] - 1 - last} {axis}")
            reads_all = all(keff >= stride for keff, stride, _ in win)
            if lost and reads_all:  # a 1x1/2 projection skips rows by design; only report real truncation
                warn(n.name, f"{n.op} {fmt_shape(a['kernel'])}/{fmt_shape(a['stride'])} on a "
                     f"{fmt_shape(src[1:])} map never reads the last {' and '.join(lost)} "
                     f"(output {fmt_shape(n.shape[1:])})")
    total = sum(param_table.values())
    dense = [n.name for n in g.nodes if OPS[n.op].weight and len(n.shape) == 1]    # fully connected
    fc = sum(param_table[k] for k in dense)
    if total and fc / total > 0.5:
        warn(dense[0],
             f"fully-connected layers hold {100 * fc / total:.1f}% of the parameters "
             f"({fc:,} of {total:,})")
    head = _classifier_input(g)
    if head is not None:
        field = rf[head]
        want = g.input_shape[1:3]
        if field.size[0] < want[0] or field.size[1] < want[1]:
            warn(head, f"receptive field {fmt_shape(field.size)} at '{head}', where the classifier starts, is "
                 f"smaller than the {fmt_shape(want)} input")
    for m in misaligned:
        warn(m.node, m.message)
    return out


def _classifier_input(g: Graph):
    """The last spatial node before the network collapses space for good (flatten, fc or global pooling with no
    feature map larger than 1x1 after it: the pooling of a squeeze-and-excitation gate, whose product is a feature
    map again, is no classifier)."""
    nodes = g.nodes
    last_map = max((i for i, n in enumerate(nodes) if len(n.shape) == 3 and n.shape[1] * n.shape[2] > 1), default=-1)
    for n in nodes[last_map + 1:]:
        if OPS[n.op].starts_classifier(n.attrs):
            src = g[n.inputs[0]]
            return src.name if len(src.shape) == 3 else None
    return None
