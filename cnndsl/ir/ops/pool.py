"""Pooling: max and average (`maxpool3/2[pad=1, ceil]`), adaptive (`adaptiveavgpool7`) and global (`gap`,
`gmp`): every facet of the ops."""
from __future__ import annotations

from typing import Optional

from ... import limits
from ...errors import OnnxExportError
from .base import (stride_option, GLOBAL, LayerArgs, OnnxImport, Op, OpError, _bool, _check_size, _no_sizes, _options, _pair, _spatial,
                   adaptive_window, fmt_shape, pool_out, sliding_window, spec_pair, tf_same, torch_pad, torch_pair,
                   widest_adaptive_window)


class Pool(Op):
    """Max or average pooling with a kernel, stride, padding and ceil mode."""

    ALIASES = {"stride": "stride", "s": "stride", "pad": "pad", "padding": "pad", "p": "pad",
               "ceil": "ceil", "dilation": "dilation", "d": "dilation", "pad_end": "pad_end", "tfsame": "tfsame"}
    windowed = True
    fresh_output = True
    slides = True
    ATTRS = {"kernel": "pair", "stride": "pair", "padding": "pair0", "pad_end": "pair0", "ceil": "bool",
             "dilation": "pair"}

    def __init__(self, name: str, torch_class: str, onnx_type: str):
        self.name = self.kind = name
        self.torch_class, self.onnx_type = torch_class, onnx_type

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None:
            raise OpError(f"{args.word} takes a kernel and a stride, not a channel count", "size",
                          f"write it as {args.word}3/2")
        kernel = (2, 2) if args.lead is None else _pair(args.lead, "lead", "pool size")
        stride = kernel if args.stride is None else _pair(args.stride, "stride", "stride")
        padding, ceil, dilation = (0, 0), False, (1, 1)
        end = tf = pad_written = None
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "stride":
                stride = stride_option(args, value, part)
            elif canon == "pad":
                padding = (0, 0) if value == "valid" else _pair(value, part, "padding", low=0)
                pad_written = part
            elif canon == "pad_end":
                end = (_pair(value, part, "end padding", low=0), part)
            elif canon == "tfsame":
                if value is not True:
                    raise OpError(f"'{written}' is a flag and takes no value", part)
                tf = part
            elif canon == "ceil":
                ceil = _bool(value, part, "ceil")
            elif canon == "dilation":
                if self.name != "maxpool":
                    raise OpError("only max pooling takes a dilation", part)
                dilation = _pair(value, part, "dilation")
        pad_end = padding if end is None else end[0]
        if tf is not None:
            if pad_written or end:
                raise OpError("padding given twice ('tfsame' sets both ends)", tf, kind="name")
            if self.name != "maxpool":
                raise OpError("tfsame average pooling is not cnndsl's: TensorFlow leaves its padding out of the "
                              "average, cnndsl's avgpool counts it", tf,
                              "pad explicitly with pad=... and pad_end=... (counted), or use max pooling")
            if len(in_shape) != 3:
                _spatial([in_shape], self.name)
            sides = [tf_same(in_shape[1 + i], dilation[i] * (kernel[i] - 1) + 1, stride[i]) for i in (0, 1)]
            padding, pad_end = tuple(p for p, _ in sides), tuple(q for _, q in sides)
        if padding == pad_end:
            for i in (0, 1):
                if padding[i] * 2 > kernel[i]:
                    raise OpError(f"pool padding {padding[i]} is more than half the kernel {kernel[i]}",
                                  "word", "padding may be at most half the pool size")
        else:
            where = (end and end[1]) or tf or "word"
            if ceil:
                raise OpError("ceil mode with padding that differs at the two ends is not supported", where,
                              "give the padding that ceil mode would add as pad_end instead")
            for i in (0, 1):
                if max(padding[i], pad_end[i]) >= kernel[i]:
                    raise OpError(f"pool padding {max(padding[i], pad_end[i])} at one end is not smaller than the "
                                  f"kernel {kernel[i]}: a window could see nothing but padding", where,
                                  "use less padding or a larger pool size")
        return {"kernel": kernel, "stride": stride, "padding": padding, "pad_end": pad_end, "ceil": ceil,
                "dilation": dilation}

    def shape(self, a, ins):
        c, h, w = _spatial(ins, self.name)
        oh = pool_out(h, a["kernel"][0], a["stride"][0], a["padding"][0], a["dilation"][0], a["ceil"], a["pad_end"][0])
        ow = pool_out(w, a["kernel"][1], a["stride"][1], a["padding"][1], a["dilation"][1], a["ceil"], a["pad_end"][1])
        _check_size(oh, ow, ins, lambda: f"{self.name} {fmt_shape(a['kernel'])}/{fmt_shape(a['stride'])}")
        return (c, oh, ow)

    def window(self, a, ins):
        return sliding_window(a)

    def describe(self, a):
        k, s = a["kernel"], a["stride"]
        text = f"{self.name} {fmt_shape(k)}/{s[0] if s[0] == s[1] else fmt_shape(s)}"
        extras = [f"pad={fmt_shape(a['padding'])}"] if a["padding"] != (0, 0) else []
        if a["pad_end"] != a["padding"]:
            extras.append(f"end={fmt_shape(a['pad_end'])}")
        if a["ceil"]:
            extras.append("ceil")
        return text + (f" [{', '.join(extras)}]" if extras else "")

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # its input (an asymmetric padding: the padded copy), and max pooling the int64 index of each output
        if a["padding"] == a["pad_end"]:
            kept = [(("in", 0), self.tensor_bytes(ins[0], batch, dtype))]
        else:
            c, h, w = ins[0]
            (t, b), (l, r) = ((a["padding"][i], a["pad_end"][i]) for i in (0, 1))
            kept = [(("padded",), self.tensor_bytes((c, h + t + b, w + l + r), batch, dtype))]
        if self.name == "maxpool":
            kept.append((("indices",), self.tensor_bytes(out, batch, "int64")))
        return kept

    def torch_module(self, a, ins, inplace=False):
        args = [f"kernel_size={torch_pair(a['kernel'])}", f"stride={torch_pair(a['stride'])}"]
        if a["padding"] != (0, 0) and a["padding"] == a["pad_end"]:
            args.append(f"padding={torch_pair(a['padding'])}")
        if a.get("dilation", (1, 1)) != (1, 1):
            args.append(f"dilation={torch_pair(a['dilation'])}")
        if a["ceil"]:
            args.append("ceil_mode=True")
        return f"nn.{self.torch_class}({', '.join(args)})"

    def torch_forward(self, module, args, a):
        if a["padding"] != a["pad_end"]:     # PyTorch pools pad both ends alike: pad first (-inf for max)
            value = ", value=float('-inf')" if self.name == "maxpool" else ""
            return f"{module}(torch.nn.functional.pad({args[0]}, {torch_pad(a, value)}))"
        return f"{module}({args[0]})"

    def onnx(self, em, n, ins, shapes):
        a = n.attrs
        ph, pw = a["padding"]
        pads, ceil = [ph, pw, *a["pad_end"]], int(a["ceil"])
        extra = {"dilations": list(a["dilation"])} if a["dilation"] != (1, 1) else {}
        if self.onnx_type == "AveragePool":
            extra["count_include_pad"] = 1
        if ceil and self.onnx_type == "MaxPool":
            # ONNX's ceil mode keeps a last window that starts in the end padding, PyTorch's drops it; pad
            # the end explicitly so floor mode yields exactly PyTorch's windows (-inf padding changes nothing).
            ceil = 0
            for i, (keff, stride, _) in enumerate(sliding_window(a)):
                pads[2 + i] = max(0, (n.shape[1 + i] - 1) * stride + keff - shapes[0][1 + i] - pads[i])
            if pads[2] >= a["kernel"][0] or pads[3] >= a["kernel"][1]:
                # ONNX Runtime wants every pad smaller than the kernel (not the dilated window): pad with -inf
                # explicitly, then pool without padding
                amounts = em.ints(f"{n.name}.pads", [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])
                value = em.op("Pad", [ins[0], amounts, em.const(f"{n.name}.low", float("-inf"))],
                              f"{n.name}.padded", f"{n.name}.pad", mode="constant")
                return em.op("MaxPool", [value], n.name, n.name, kernel_shape=list(a["kernel"]),
                             strides=list(a["stride"]), pads=[0, 0, 0, 0], ceil_mode=0, doc_string=CEIL_DOC, **extra)
            extra["doc_string"] = CEIL_DOC
        elif ceil:
            # Average pooling: PyTorch divides by the window clipped to the padded input. Pad with zeros
            # explicitly, then pool in floor mode with uncounted end padding that admits PyTorch's last window.
            value = ins[0]
            if ph or pw:
                pad_amounts = em.ints(f"{n.name}.pads", [0, 0, ph, pw, 0, 0, ph, pw])
                value = em.op("Pad", [value, pad_amounts], f"{n.name}.padded", f"{n.name}.pad", mode="constant")
            ends = [max(0, (n.shape[1 + i] - 1) * a["stride"][i] + a["kernel"][i] - shapes[0][1 + i]
                        - 2 * a["padding"][i]) for i in (0, 1)]
            return em.op(self.onnx_type, [value], n.name, n.name, kernel_shape=list(a["kernel"]),
                         strides=list(a["stride"]), pads=[0, 0, *ends], ceil_mode=0, count_include_pad=0)
        em.op(self.onnx_type, [ins[0]], n.name, n.name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
              pads=pads, ceil_mode=ceil, **extra)

    def spell(self, a):
        opts = [f"pad={spec_pair(a['padding'])}"] if a["padding"] != (0, 0) else []
        if a["pad_end"] != a["padding"]:
            opts.append(f"pad_end={spec_pair(a['pad_end'])}")
        if a["ceil"]:
            opts.append("ceil")
        if a.get("dilation", (1, 1)) != (1, 1):
            opts.append(f"dilation={spec_pair(a['dilation'])}")
        return f"{self.name}{spec_pair(a['kernel'])}/{spec_pair(a['stride'])}" + (f"[{', '.join(opts)}]" if opts else "")


class AdaptivePool(Op):
    """Adaptive (and, with output 1x1, global) average or max pooling."""

    windowed = True
    fresh_output = True
    ATTRS = {"output": "pair"}

    def __init__(self, name: str, torch_class: str, onnx_kind: str, global_word: str):
        self.name = name
        self.kind = name.replace("adaptive_", "")
        self.torch_class, self.onnx_kind, self.global_word = torch_class, onnx_kind, global_word

    def build(self, args: LayerArgs, in_shape: tuple, global_: bool = False) -> dict:
        _options(args, {})
        if global_:
            _no_sizes(args, args.word)
            return {"output": (1, 1)}
        if args.size is not None or args.stride is not None:
            raise OpError(f"{args.word} takes one output size", "size", f"write it as {args.word}7 or {args.word}6x6")
        if args.lead is None:
            raise OpError(f"{args.word} needs an output size", "word", f"write it as {args.word}7")
        return {"output": _pair(args.lead, "lead", "output size", high=limits.MAX_DIM)}

    def shape(self, a, ins):
        c, _, _ = _spatial(ins, self.name)
        return (c,) + tuple(a["output"])

    def window(self, a, ins):
        if a["output"] == (1, 1):
            return GLOBAL
        return tuple((widest_adaptive_window(n, o), max(1, n // o), 0) for n, o in zip(ins[0][1:], a["output"]))

    def describe(self, a):
        if a["output"] == (1, 1):
            return "global " + self.kind
        return f"{self.name} ->{fmt_shape(a['output'])}"

    def starts_classifier(self, a):
        return a["output"] == (1, 1)

    def irregular(self, a, in_shape):
        return a["output"] != (1, 1) and any(n % o for n, o in zip(in_shape[1:], a["output"]))

    def unit_spans(self, a, in_shape, out_shape):
        """PyTorch's windows exactly, also uneven (10 -> 4) and enlarging (2 -> 4) ones."""
        return tuple([(start, end - 1, 1) for start, end in (adaptive_window(i, n, o) for i in range(o))]
                     for n, o in zip(in_shape[1:], a["output"]))

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # average pooling to 1x1 is a mean over the map (PyTorch keeps nothing); other sizes keep the input;
        # max pooling keeps the input and the int64 index of each output
        kept = [] if self.onnx_kind == "Average" and tuple(a["output"]) == (1, 1) else \
            [(("in", 0), self.tensor_bytes(ins[0], batch, dtype))]
        if self.onnx_kind == "Max":
            kept.append((("indices",), self.tensor_bytes(out, batch, "int64")))
        return kept

    def torch_module(self, a, ins, inplace=False):
        return f"nn.{self.torch_class}({torch_pair(a['output'])})"

    def onnx(self, em, n, ins, shapes):
        out = n.attrs["output"]
        grid = shapes[0][1:]
        kind = self.onnx_kind
        if out == (1, 1):
            return em.op(f"Global{kind}Pool", [ins[0]], n.name, n.name)
        if all(g % o == 0 for g, o in zip(grid, out)):    # one grid of equal windows (1x1 where grid == out)
            k = [g // o for g, o in zip(grid, out)]
            return em.op(f"{kind}Pool", [ins[0]], n.name, n.name, kernel_shape=k, strides=k, doc_string=ADAPTIVE_DOC)
        # Uneven windows: adaptive pooling is separable, so pool the rows of each output row band, then the
        # columns of each output column band (PyTorch's windows: floor(i*n/o) .. ceil((i+1)*n/o)).
        if out[0] + out[1] > limits.MAX_ONNX_BANDS:
            raise OnnxExportError(f"adaptive pooling to {out[0]}x{out[1]} from {grid[0]}x{grid[1]} has uneven "
                                  f"windows; ONNX needs a Slice and a Reduce per output row and column, and cnndsl "
                                  f"writes at most {limits.MAX_ONNX_BANDS} of them", n.span,
                                  "choose an output size that divides the input, or pool to fewer cells")
        reduce = "ReduceMean" if kind == "Average" else "ReduceMax"
        value = ins[0]
        for axis, (size, count) in ((2, (grid[0], out[0])), (3, (grid[1], out[1]))):
            pieces = []
            for i in range(count):
                start, end = adaptive_window(i, size, count)
                tag = f"{n.name}.a{axis}_{i}"
                piece = em.op("Slice", [value, em.ints(f"{tag}.start", [start]), em.ints(f"{tag}.end", [end]),
                                        em.ints(f"{tag}.axis", [axis])], f"{tag}.slice", f"{tag}.slice")
                pieces.append(em.reduce(reduce, piece, axis, f"{tag}.pool"))
            value = em.op("Concat", pieces, n.name if axis == 3 else f"{n.name}.rows", f"{n.name}.cat{axis}",
                          axis=axis)

    def spell(self, a):
        if a["output"] == (1, 1):
            return self.global_word
        return f"{self.name.replace('_', '')}{spec_pair(a['output'])}"


# An adaptive pooling whose windows form one grid is written as a plain pooling with this note, so that cnndsl's
# importer reads it back as the adaptive pooling it was (the arithmetic is the same either way).
ADAPTIVE_DOC = "cnndsl: adaptive pooling"
# A ceil-mode max pooling is written in floor mode with the end padding that gives PyTorch's windows, with this
# note, so that cnndsl's importer reads it back in ceil mode (padding written at the two ends is read as it is).
CEIL_DOC = "cnndsl: ceil mode"

MAXPOOL, AVGPOOL = Pool("maxpool", "MaxPool2d", "MaxPool"), Pool("avgpool", "AvgPool2d", "AveragePool")
ADAPTIVE_AVG = AdaptivePool("adaptive_avgpool", "AdaptiveAvgPool2d", "Average", "gap")
ADAPTIVE_MAX = AdaptivePool("adaptive_maxpool", "AdaptiveMaxPool2d", "Max", "gmp")


def _using(op, **extra):
    def build(args: LayerArgs, in_shape: tuple):
        return op.name, op.build(args, in_shape, **extra)
    return build


OPS = [MAXPOOL, AVGPOOL, ADAPTIVE_AVG, ADAPTIVE_MAX]
SPELLINGS = {
    "maxpool": _using(MAXPOOL), "avgpool": _using(AVGPOOL), "averagepool": _using(AVGPOOL),
    "adaptiveavgpool": _using(ADAPTIVE_AVG), "adaptivepool": _using(ADAPTIVE_AVG),
    "adaptivemaxpool": _using(ADAPTIVE_MAX),
    "gap": _using(ADAPTIVE_AVG, global_=True), "globalavgpool": _using(ADAPTIVE_AVG, global_=True),
    "globalaveragepool": _using(ADAPTIVE_AVG, global_=True),
    "gmp": _using(ADAPTIVE_MAX, global_=True), "globalmaxpool": _using(ADAPTIVE_MAX, global_=True),
}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {
    "maxpool": ("maxpool", "maxpool3/2", "maxpool3/2[pad=1, ceil]", "maxpool2x3/1x2", "maxpool3/1[dilation=2]",
                "maxpool2x3/2[pad=1x0, ceil, dilation=2]", "maxpool3/2[tfsame]", "maxpool2/2[pad=0x1, pad_end=1x0]",
                "maxpool3/1[pad_end=2, dilation=2]"),
    "avgpool": ("avgpool", "avgpool3/2[pad=1]", "avgpool3/2[ceil]", "avgpool3/2[pad=1, ceil]", "avgpool2x1/1",
                "avgpool3/2[pad=0x2, pad_end=2x1]"),
    "adaptive_avgpool": ("gap", "adaptiveavgpool3", "adaptiveavgpool2x5", "adaptiveavgpool9x4 + conv1-2"),
    "adaptive_maxpool": ("gmp", "adaptivemaxpool3", "adaptivemaxpool4x2"),
}


# ------------------------------------------------------------- ONNX import --
# `imp` is the importer (cnndsl.backends.from_onnx): its helpers check each input and attribute as ONNX Runtime
# does and raise an import error that names the node. A Pad before a pooling is held by the importer (imp.pads)
# until the pooling reads it as its own padding.

def _read_pool(imp, node, a, op):
    padded = imp.pads.pop(node.input[0], None)
    if padded and (padded[3] == 0.0) != (op == "avgpool"):
        if op == "maxpool":
            raise imp.fail(f"{imp.label(node)} pools a zero-padded value ({imp.show(node.input[0])}); max "
                            "pooling pads with -inf, so cnndsl cannot fold the zeros into it",
                            "cnndsl imports a zero Pad only as the padding of the AveragePool after it")
        raise imp.fail(f"{imp.label(node)} averages a value padded with -inf ({imp.show(node.input[0])})",
                        "cnndsl imports a -inf Pad only as the padding of the MaxPool after it")
    src, extra, extra_end = padded[:3] if padded else (imp.data(node), (0, 0), (0, 0))
    n_in = imp.spatial(node, src)
    if "kernel_shape" not in a:
        raise imp.fail(f"{imp.label(node)} has no kernel_shape")
    kernel = imp.ints(node, a, "kernel_shape", length=2, low=1)
    strides = imp.ints(node, a, "strides", (1, 1), length=2, low=1)
    dil = imp.ints(node, a, "dilations", (1, 1), length=2, low=1)
    ceil = bool(imp.int_(node, a, "ceil_mode", 0, (0, 1)))
    imp.int_(node, a, "storage_order", 0, (0, 1))
    counted = imp.int_(node, a, "count_include_pad", 0, (0, 1))
    if op == "avgpool" and dil != (1, 1):
        raise imp.fail(f"{imp.label(node)} has dilations {fmt_shape(dil)}; cnndsl's average pooling has none")
    begin, end = imp.spatial_pads(node, a, kernel, strides, dil,
                                   (n_in[0], n_in[1] + extra[0] + extra_end[0], n_in[2] + extra[1] + extra_end[1]),
                                   pool=True)
    for i in (0, 1):
        if max(begin[i], end[i]) >= kernel[i]:
            raise imp.fail(f"{imp.label(node)}: its padding {max(begin[i], end[i])} is not smaller than its "
                            f"kernel {kernel[i]}")
    if op == "avgpool" and not counted and not ceil and not any(begin) and any(end) and \
            tuple(extra) == tuple(extra_end) and all(2 * extra[i] <= kernel[i] for i in (0, 1)):
        # PyTorch's ceil-mode average pooling as cnndsl writes it: zeros padded explicitly (counted, being
        # real values), then end padding that admits ceil mode's last window and is left out of its
        # divisor, which is then the window clipped to the padded input: PyTorch's divisor exactly
        want = [(n_in[1 + i] + 2 * extra[i] + end[i] - kernel[i]) // strides[i] + 1 for i in (0, 1)]
        if want == [pool_out(n_in[1 + i], kernel[i], strides[i], extra[i], 1, True) for i in (0, 1)]:
            return imp.add(node, op, [src], {"kernel": kernel, "stride": strides, "padding": tuple(extra),
                                              "pad_end": tuple(extra), "ceil": True, "dilation": (1, 1)})
    # cnndsl's avgpool divides by the whole window, padding included (PyTorch's count_include_pad=True);
    # zeros from a Pad before it are real values to ONNX, so only the pooling's own padding matters here
    if op == "avgpool" and not counted and any(begin + end):
        raise imp.fail(f"{imp.label(node)} leaves its padding out of the average (count_include_pad=0, "
                        "the ONNX default); cnndsl's average pooling counts it",
                        "export with count_include_pad=True, or pool without padding")
    # the output ONNX computes, then the IR pooling (symmetric padding, ceil or not) that gives it
    want = []
    for i in (0, 1):
        n = n_in[1 + i] + extra[i] + extra_end[i]
        span = n + begin[i] + end[i] - dil[i] * (kernel[i] - 1) - 1
        count = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (count - 1) * strides[i] >= n + begin[i]:
            count -= 1      # ONNX Runtime, as PyTorch, drops a last window that would start in the end padding
        want.append(count)
    if min(want) < 1:
        raise imp.fail(f"{imp.label(node)} shrinks its {n_in[1]}x{n_in[2]} input below 1x1")
    padding = tuple(extra[i] + begin[i] for i in (0, 1))
    padding_end = tuple(extra_end[i] + end[i] for i in (0, 1))
    # the IR pooling that gives ONNX's windows: in floor mode, the padding as it is at each end (unless cnndsl
    # noted that it wrote a ceil-mode pooling this way); in ceil mode, symmetric padding where PyTorch's rule
    # allows it (a window is never more than half padding), else as it is, reaching ceil mode's last window
    direct = not ceil and imp.text(node.doc_string) != CEIL_DOC and all(
        max(padding[i], padding_end[i]) < kernel[i] for i in (0, 1)) and (
        padding != padding_end or all(2 * padding[i] <= kernel[i] for i in (0, 1)))
    if not direct and all(2 * padding[i] <= kernel[i] for i in (0, 1)):
        for mode in (False, True):
            got = [pool_out(n_in[1 + i], kernel[i], strides[i], padding[i], dil[i], mode) for i in (0, 1)]
            if got != want:
                continue
            # an average divides by its window clipped to the padded input: the IR's padding is `padding`
            # at both ends, so the last window must not reach past the shorter of the two end paddings
            if op == "avgpool" and any(
                    begin[i] != end[i] and (want[i] - 1) * strides[i] - begin[i] + kernel[i]
                    > n_in[1 + i] + extra[i] + extra_end[i] + min(begin[i], end[i]) for i in (0, 1)):
                continue
            attrs = {"kernel": kernel, "stride": strides, "padding": padding, "pad_end": padding, "ceil": mode,
                     "dilation": dil}
            return imp.add(node, op, [src], attrs)
    def half_rule():
        for i in (0, 1):
            if 2 * padding[i] > kernel[i]:     # PyTorch's rule, and the spec's: a window is never all padding
                raise imp.fail(f"{imp.label(node)}: its padding {padding[i]}"
                                f"{' (with the Pad before it)' if extra[i] else ''} is more than half its kernel "
                                f"{kernel[i]}, which PyTorch pooling cannot express")
    if padding == padding_end:
        half_rule()
    if ceil and padded:
        raise imp.fail(f"{imp.label(node)} pools a padded value in ceil mode in a way PyTorch pooling cannot "
                        "express")
    if ceil:     # ceil mode's last window, partly past the end padding: the IR's end padding reaches it
        padding_end = tuple(max(padding_end[i], (want[i] - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1
                                - n_in[1 + i] - padding[i]) for i in (0, 1))
        if op == "avgpool" and padding_end != tuple(extra_end[i] + end[i] for i in (0, 1)):
            raise imp.fail(f"{imp.label(node)}: its last window in ceil mode reaches past its padding, so "
                            "its average there differs from cnndsl's")
    if padding == padding_end:
        half_rule()
    for i in (0, 1):
        if max(padding[i], padding_end[i]) >= kernel[i]:
            raise imp.fail(f"{imp.label(node)}: its padding {max(padding[i], padding_end[i])}"
                            f"{' (with the Pad before it)' if extra[i] or extra_end[i] else ''} is not smaller "
                            f"than its kernel {kernel[i]}")
    attrs = {"kernel": kernel, "stride": strides, "padding": padding, "pad_end": padding_end, "ceil": False,
             "dilation": dil}
    got = [pool_out(n_in[1 + i], kernel[i], strides[i], padding[i], dil[i], False, padding_end[i])
           for i in (0, 1)]
    if got != want:
        raise imp.fail(f"{imp.label(node)} pads in a way cnndsl's pooling cannot express")
    return imp.add(node, op, [src], attrs)


def _read_maxpool(imp, node, a):
    if len(node.output) > 1 and node.output[1]:
        raise imp.fail(f"{imp.label(node)} also returns indices")
    _read_adaptive_grid(imp, node, a, "maxpool") or _read_pool(imp, node, a, "maxpool")


def _read_avgpool(imp, node, a):
    _read_adaptive_grid(imp, node, a, "avgpool") or _read_pool(imp, node, a, "avgpool")


def _read_adaptive_grid(imp, node, a, op) -> Optional[str]:
    """An adaptive pooling cnndsl wrote as a plain one (its note, and windows k = n / output with nothing
    else set): read back as the adaptive pooling. Anything else, note or not, is an ordinary pooling."""
    if imp.text(node.doc_string) != ADAPTIVE_DOC or set(a) - {"kernel_shape", "strides"} or \
            node.input[0] in imp.pads or "kernel_shape" not in a:
        return None
    kernel = imp.ints(node, a, "kernel_shape", length=2, low=1)
    if imp.ints(node, a, "strides", (1, 1), length=2, low=1) != kernel:
        return None
    src = imp.data(node)
    _, h, w = imp.spatial(node, src)
    if h % kernel[0] or w % kernel[1]:
        return None
    return imp.add(node, f"adaptive_{op}", [src], {"output": (h // kernel[0], w // kernel[1])})


def _read_global_avg(imp, node, a):
    imp.add(node, "adaptive_avgpool", [imp.data(node)], {"output": (1, 1)})


def _read_global_max(imp, node, a):
    imp.add(node, "adaptive_maxpool", [imp.data(node)], {"output": (1, 1)})


_POOL_ATTRS = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")
ONNX_IMPORTS = {
    "MaxPool": OnnxImport((1, 1), 2, _POOL_ATTRS + ("storage_order",), _read_maxpool),
    "AveragePool": OnnxImport((1, 1), 1, _POOL_ATTRS + ("count_include_pad",), _read_avgpool),
    "GlobalAveragePool": OnnxImport((1, 1), 1, (), _read_global_avg),
    "GlobalMaxPool": OnnxImport((1, 1), 1, (), _read_global_max),
}
