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
        # `jump` is what the table's "RF /jump" column shows; `stride` is the same numbers under its older name
        # (deprecated, kept for readers written against it)
        return {"size": list(self.size), "jump": list(self.stride), "stride": list(self.stride),
                "padding": list(self.padding), "uniform": self.uniform}


class Misalignment(NamedTuple):
    node: str
    message: str


def receptive_fields(g: Graph) -> tuple[dict[str, RF], list[Misalignment]]:
    """Forward RF: r += (k-1)*j, P += p*j, j *= s; at a merge, the union of the fields (reported if unaligned)."""
    rf: dict[str, RF] = {}
    bad: list[Misalignment] = []
    shape = {}
    # Nodes whose every unit sees the whole of the input's field: global pooling, fc and whatever follows them,
    # and the product of a gate (a C x 1 x 1 map broadcast over a larger one) and what follows it. Their
    # formula field is the union of two different things (one unit's window and the whole field), so a merge
    # with them is never unaligned: each of its units sees it all.
    whole: set[str] = set()
    for n in g.nodes:
        shape[n.name] = n.shape
        if not n.inputs:
            rf[n.name] = RF((1, 1), (1, 1), (0, 0), n.shape[1:3] if len(n.shape) == 3 else (1, 1))
            continue
        if len(n.inputs) > 1:
            grid = n.shape[1:3] if len(n.shape) == 3 else (1, 1)
            rf[n.name] = _merge(n.name, [rf[i] for i in n.inputs], bad, grid,
                                [i in whole for i in n.inputs])
            if any(i in whole for i in n.inputs) or any(rf[i].grid == (1, 1) != grid for i in n.inputs):
                whole.add(n.name)
            continue
        src = rf[n.inputs[0]]
        if n.inputs[0] in whole:
            whole.add(n.name)
        op = OPS[n.op]
        if not op.windowed:
            rf[n.name] = src      # pointwise, or a reshape: every unit sees what its input unit saw
            continue
        win = op.window(n.attrs, [shape[n.inputs[0]]])
        if win == GLOBAL:
            whole.add(n.name)
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


def _merge(name: str, ins: list[RF], bad: list[Misalignment], grid: tuple[int, int],
           whole: Optional[list[bool]] = None) -> RF:
    """The union of the inputs' fields. An input of one unit broadcast over a larger grid (a gate) joins every
    unit: no misalignment, and exact_fields gives each unit its field. Neither is a merge with an input whose
    every unit sees the whole field (`whole`, per input: after a gate or global pooling) unaligned."""
    size, jump, pad = [], [], []
    whole = whole or [False] * len(ins)
    seen_all = any(whole)
    gates = [r for r in ins if r.grid == (1, 1) != grid]
    ins = [r for r in ins if r.grid != (1, 1) or grid == (1, 1)]
    what = []                   # (what differs, axis) per unaligned axis
    for i in (0, 1):
        starts = [-r.padding[i] for r in ins]
        ends = [-r.padding[i] + r.size[i] - 1 for r in ins]
        jumps = {r.stride[i] for r in ins}
        centres = {s + e for s, e in zip(starts, ends)}
        if (len(jumps) > 1 or len(centres) > 1) and not seen_all:
            differs = f"jumps {sorted(jumps)}" if len(jumps) > 1 else \
                f"fields centred {(max(centres) - min(centres)) / 2:g} px apart"
            what.append((differs, "height" if i == 0 else "width"))
        start = min(starts + [-r.padding[i] for r in gates])
        end = max(ends + [-r.padding[i] + r.size[i] - 1 for r in gates])
        size.append(end - start + 1)
        pad.append(-start)
        jump.append(max(jumps))
    if what:
        if len(what) == 2 and what[0][0] == what[1][0]:
            what = [(what[0][0], "height and the width")]
        text = "; ".join(f"{differs} along the {axis}" for differs, axis in what)
        bad.append(Misalignment(name, f"merge '{name}' joins unaligned inputs ({text})"))
    return RF(tuple(size), tuple(jump), tuple(pad), grid)


# What the report says about a network, by kind. A *warning* is a likely mistake; a *note* is a fact about a
# choice the classics make on purpose (AlexNet's and VGG's fc layers, LeNet's small field), shown without alarm.
#   truncation    a window that never reads the last rows or columns: a note when it drops at most
#                 TRUNCATION_NOTE of the map (a 7x7/2 conv on 224, AlexNet's paper layout), a warning when more
#                 (a 2x2 pool on a 7x7 map drops a seventh: usually a wrong input size)
#   fc-heavy      fully-connected layers hold most of the parameters: always a note (AlexNet, VGG by design)
#   small-field   the receptive field where the classifier starts is smaller than the input: a note, a warning
#                 when it covers less than half the input's height or width in a network of DEEP or more
#                 convolutions (in a deep net it is usually a missing downsampling or a wrong input size)
#   unaligned     a merge of inputs whose fields are not centred alike or step differently: a warning
#   dead-weights  a convolution some of whose kernel taps only ever read padding (a 3x3 conv on a 1x1 map, an
#                 ImageNet network at CIFAR's size): a warning
#   unused        a node whose output nothing reads (a dead layer; ir.verify refuses them): a warning
#   input-layout  an input written channels first (3x32x32 read as HxWxC): a warning with a hint
TRUNCATION_NOTE = 0.1
DEEP = 5


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def channels_first(hwc: tuple) -> Optional[tuple[int, int, int]]:
    """The HxWxC an input probably meant when it looks written channels first (3x32x32: 3 rows of 32 columns
    with 32 channels), else None: the first size is 1, 3 or 4 and the other two are larger than 4."""
    h, w, c = hwc
    return (w, c, h) if h in (1, 3, 4) and w > 4 and c > 4 else None


def layout_message(hwc: tuple, written: str = "input") -> Optional[tuple[str, str]]:
    """(message, hint) when an input size `written` as HxWxC (`input` in a spec, `--input` on the command line)
    looks channels first; else None."""
    meant = channels_first(hwc)
    if meant is None:
        return None
    h, w, c = hwc
    return (f"{written} {h}x{w}x{c} is read as HxWxC: an image {h} pixel{'s' if h > 1 else ''} high and {w} wide "
            f"with {c} channels", f"did you mean {written} {'x'.join(map(str, meant))}? (height x width x channels)")


def input_layout(g: Graph) -> Optional[dict]:
    """The warning (kind `input-layout`) for a spec whose `input` line looks channels first (`input 3x32x32`),
    at that line; None otherwise, and for a size given in its place (--input, input_shape=), checked where it
    is read."""
    first = g.nodes[0]
    if len(first.shape) != 3 or g.settings.get("input_from") != "spec":
        return None
    c, h, w = first.shape
    found = layout_message((h, w, c))
    if found is None:
        return None
    span = first.span
    return {"kind": "input-layout", "node": first.name, "message": found[0],
            "line": span.line if span else None, "column": span.column if span else None, "hint": found[1]}


def findings(g: Graph, param_table: dict[str, int], rf: dict[str, RF],
             misaligned: list[Misalignment]) -> tuple[list[dict], list[dict]]:
    """(warnings, notes): each {kind, node, message, line, column} and `hint` where there is one."""
    warns: list[dict] = []
    notes: list[dict] = []

    def add(note: bool, kind: str, node, message: str, hint: Optional[str] = None):
        span = g[node].span if node in g else None
        item = {"kind": kind, "node": node, "message": message,
                "line": span.line if span else None, "column": span.column if span else None}
        if hint:
            item["hint"] = hint
        (notes if note else warns).append(item)

    layout = input_layout(g)
    if layout:
        warns.append(layout)
    for n in g.nodes:
        if OPS[n.op].slides and len(n.shape) == 3:
            src = g[n.inputs[0]].shape
            a = n.attrs
            win = OPS[n.op].window(a, [src])
            lost, fraction = [], 0.0
            for i, axis in ((0, "row"), (1, "column")):
                keff, stride, pad = win[i]
                last = (n.shape[i + 1] - 1) * stride - pad + keff - 1
                if src[i + 1] - 1 > last:
                    lost.append(_plural(src[i + 1] - 1 - last, axis))
                    fraction = max(fraction, (src[i + 1] - 1 - last) / src[i + 1])
            reads_all = all(keff >= stride for keff, stride, _ in win)
            if lost and reads_all:  # a 1x1/2 projection skips rows by design; only report real truncation
                add(fraction <= TRUNCATION_NOTE, "truncation", n.name,
                    f"{n.op} {fmt_shape(a['kernel'])}/{fmt_shape(a['stride'])} on a {fmt_shape(src[1:])} map never "
                    f"reads the last {' and '.join(lost)} (output {fmt_shape(n.shape[1:])})"
                    + ("" if fraction <= TRUNCATION_NOTE else f": {100 * fraction:.0f}% of the map is lost"),
                    None if fraction <= TRUNCATION_NOTE else
                    "check the input size, or pad (`[pad=1]`) or round up (`[ceil]`) so the window reaches the edge")
    total = sum(param_table.values())
    dense = [n.name for n in g.nodes if OPS[n.op].weight and len(n.shape) == 1]    # fully connected
    fc = sum(param_table[k] for k in dense)
    if total and fc / total > 0.5:
        add(True, "fc-heavy", dense[0],
            f"fully-connected layers hold {100 * fc / total:.1f}% of the parameters ({fc:,} of {total:,})")
    head = _classifier_input(g)
    if head is not None:
        field = rf[head]
        want = g.input_shape[1:3]
        if field.size[0] < want[0] or field.size[1] < want[1]:
            index = next(i for i, n in enumerate(g.nodes) if n.name == head)
            convs = sum(1 for n in g.nodes[1:index + 1] if OPS[n.op].weight and len(n.shape) == 3)
            narrow = 2 * field.size[0] < want[0] or 2 * field.size[1] < want[1]
            if narrow and convs >= DEEP:
                add(False, "small-field", head,
                    f"receptive field {fmt_shape(field.size)} at '{head}', where the classifier starts, covers less "
                    f"than half of the {fmt_shape(want)} input after {convs} convolutions",
                    "each feature the classifier reads sees only a patch: downsample more (strides, pooling) or "
                    "check the input size")
            else:
                add(True, "small-field", head,
                    f"receptive field {fmt_shape(field.size)} at '{head}', where the classifier starts, is smaller "
                    f"than the {fmt_shape(want)} input")
    for m in misaligned:
        add(False, "unaligned", m.node, m.message,
            "give the branches the same strides and padding so their units stay centred alike (a projection "
            "shortcut with the stride of the branch)")
    for n in g.nodes:
        if OPS[n.op].slides and OPS[n.op].weight and len(n.shape) == 3:
            src = g[n.inputs[0]].shape
            a = n.attrs
            live = [_live_taps(a["kernel"][i], a["stride"][i], a["padding"][i], a["dilation"][i], src[i + 1],
                               n.shape[i + 1]) for i in (0, 1)]
            taps = a["kernel"][0] * a["kernel"][1]
            if live[0] * live[1] < taps:
                add(False, "dead-weights", n.name,
                    f"{n.op} {fmt_shape(a['kernel'])} on a {fmt_shape(src[1:])} map: only {live[0] * live[1]} of its "
                    f"{taps} kernel taps ever read the input, the others read only padding (their weights never "
                    f"see data)", "the map is too small for the window: use a larger input, or downsample less "
                    "before it")
    used = {i for n in g.nodes for i in n.inputs}
    for n in g.nodes[1:-1]:        # ir.verify refuses these; a graph made by hand may still have them
        if n.name not in used:
            add(False, "unused", n.name, f"'{n.name}' is never used: nothing reads its output",
                "remove it, or merge it with the network (add, cat)")
    return warns, notes


def _live_taps(kernel: int, stride: int, pad: int, dilation: int, size: int, out: int) -> int:
    """How many of a window's `kernel` taps along one axis read a real cell of the `size` input for some of
    the `out` outputs (the others only ever read padding). Exact for small outputs, where dead taps happen
    (a 3x3 convolution on a 1x1 map); a window over a map of more than 32 outputs counts every tap."""
    if out > 32:
        return kernel
    spans = []
    for o in range(out):            # the taps j with 0 <= o*stride - pad + j*dilation < size
        lo = max(0, -((o * stride - pad) // dilation))
        hi = min(kernel - 1, (size - 1 - o * stride + pad) // dilation)
        if lo <= hi:
            spans.append((lo, hi))
    count, end = 0, -1
    for lo, hi in sorted(spans):
        if hi > end:
            count += hi - max(lo, end + 1) + 1
            end = hi
    return count


def warnings(g: Graph, param_table: dict[str, int], rf: dict[str, RF], misaligned: list[Misalignment]) -> list[dict]:
    """The likely mistakes among findings(): truncating windows that lose much of a map, small fields in deep
    networks, unaligned merges, unused nodes, channels-first inputs."""
    return findings(g, param_table, rf, misaligned)[0]


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
