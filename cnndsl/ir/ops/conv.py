"""Convolution (`convK-C`, `convKHxKW-C/S[...]`, `dwconvK`): every facet of the op."""
from __future__ import annotations

from math import prod

from ... import limits
from .base import (stride_option, LayerArgs, OnnxImport, Op, OpError, _bool, _check_size, _count, _options, _pair, _spatial, conv_out,
                   fmt_shape, sliding_window, spec_pair, tf_same, torch_pad, torch_pair)


class Conv(Op):
    name = kind = "conv"
    ATTRS = {"out": "count", "kernel": "pair", "stride": "pair", "padding": "pair0", "pad_end": "pair0", "dilation": "pair",
             "groups": "count", "bias": "bool"}
    weight = True
    windowed = True
    ALIASES = {"stride": "stride", "s": "stride", "pad": "pad", "padding": "pad", "p": "pad",
               "dilation": "dilation", "dil": "dilation", "d": "dilation", "groups": "groups", "g": "groups",
               "bias": "bias", "nobias": "nobias", "valid": "valid", "same": "same", "tfsame": "tfsame",
               "pad_end": "pad_end"}

    def build(self, args: LayerArgs, in_shape: tuple, depthwise: bool = False) -> dict:
        opts = _options(args, self.ALIASES)
        if args.lead is None:
            raise OpError(f"{args.word} needs a kernel size", "word", f"write it as {args.word}3-64")
        kernel = _pair(args.lead, "lead", "kernel size")
        if len(in_shape) != 3:
            raise OpError(f"{args.word} needs a CxHxW feature map, but its input is a vector of "
                          f"{in_shape[0]:,} features", "word", "put convolutions before the first fc layer",
                          kind="shape")
        cin = in_shape[0]
        if depthwise:
            out = cin if args.size is None else _count(args.size, "size", "channel count")
            groups = cin
        else:
            if args.size is None:
                raise OpError(f"{args.word} needs a channel count", "lead",
                              f"write it as {args.word}{fmt_shape(kernel) if kernel[0] != kernel[1] else kernel[0]}-64")
            out = _count(args.size, "size", "channel count")
            groups = 1
        stride = (1, 1) if args.stride is None else _pair(args.stride, "stride", "stride")
        dilation = (1, 1)
        pad = bias_written = end = None
        bias = True
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "stride":
                stride = stride_option(args, value, part)
            elif canon == "dilation":
                dilation = _pair(value, part, "dilation")
            elif canon == "groups":
                written_groups = cin if value == "dw" or value == "depthwise" else _count(value, part, "groups")
                if depthwise and written_groups != cin:
                    k = fmt_shape(kernel) if kernel[0] != kernel[1] else kernel[0]
                    raise OpError(f"{args.word} is depthwise: its groups are its {cin} input channels, "
                                  f"not {written_groups}", part,
                                  f"drop the groups option, or write conv{k}-C[groups={written_groups}]")
                groups = written_groups
            elif canon in ("bias", "nobias"):
                if bias_written is not None:
                    raise OpError(f"bias given twice (as '{bias_written}' and as '{written}')", part,
                                  "keep one: bias, bias=false or nobias", kind="name")
                bias_written = written
                bias = _bool(value, part, canon) if canon == "bias" else not _bool(value, part, canon)
            elif canon in ("valid", "same", "tfsame"):
                if pad is not None:
                    raise OpError("padding given twice", part, kind="name")
                if value is not True:
                    raise OpError(f"'{written}' is a flag and takes no value", part)
                pad = canon
            elif canon == "pad":
                if pad is not None:
                    raise OpError("padding given twice", part, kind="name")
                pad = value if value in ("same", "valid", "tfsame") else _pair(value, part, "padding", low=0)
            elif canon == "pad_end":
                end = (_pair(value, part, "end padding", low=0), part)
        padding, pad_end = resolve_padding(pad, end, kernel, dilation, stride, in_shape,
                                           next((f"option:{w}" for c, (w, _) in opts.items() if c == "dilation"),
                                                "lead"))
        if cin % groups or out % groups:
            raise OpError(f"groups={groups} must divide both the {cin} input and {out} output channels",
                          "word", "pick a group count that divides both", kind="shape")
        return {"out": out, "kernel": kernel, "stride": stride, "padding": padding, "pad_end": pad_end,
                "dilation": dilation, "groups": groups, "bias": bias}

    def shape(self, a, ins):
        c, h, w = _spatial(ins, "conv")
        if c % a["groups"]:
            raise OpError(f"groups={a['groups']} does not divide the {c} input channels", kind="shape")
        oh = conv_out(h, a["kernel"][0], a["stride"][0], a["padding"][0], a["dilation"][0], a["pad_end"][0])
        ow = conv_out(w, a["kernel"][1], a["stride"][1], a["padding"][1], a["dilation"][1], a["pad_end"][1])
        _check_size(oh, ow, ins, lambda: f"conv {fmt_shape(a['kernel'])}/{fmt_shape(a['stride'])}")
        return (a["out"], oh, ow)

    def params(self, a, ins):
        return a["out"] * (ins[0][0] // a["groups"]) * a["kernel"][0] * a["kernel"][1] + (a["out"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        return prod(out) * (ins[0][0] // a["groups"]) * a["kernel"][0] * a["kernel"][1]

    def window(self, a, ins):
        return sliding_window(a)

    autocast = "lower"

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # its input (the weight is a parameter); an asymmetric padding saves the padded copy nn.Conv2d reads
        if a["padding"] == a["pad_end"]:
            return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype))]
        c, h, w = ins[0]
        (t, b), (l, r) = ((a["padding"][i], a["pad_end"][i]) for i in (0, 1))
        return [(("padded",), self.tensor_bytes((c, h + t + b, w + l + r), batch, dtype))]

    def param_tensors(self, a, ins):
        return 2 if a["bias"] else 1

    def describe(self, a):
        k, s = a["kernel"], a["stride"]
        text = f"conv {fmt_shape(k) if k[0] != k[1] else f'{k[0]}x{k[0]}'}-{a['out']}"
        if s != (1, 1):
            text += f"/{s[0] if s[0] == s[1] else fmt_shape(s)}"
        extras = []
        if a["padding"] != a["pad_end"]:
            extras.append(f"pad={fmt_shape(a['padding'])} end={fmt_shape(a['pad_end'])}")
        elif a["padding"] != tuple(a["dilation"][i] * (k[i] - 1) // 2 for i in (0, 1)):
            extras.append(f"pad={fmt_shape(a['padding'])}")
        if a["dilation"] != (1, 1):
            extras.append(f"d={fmt_shape(a['dilation'])}")
        if a["groups"] != 1:
            extras.append(f"g={a['groups']}")
        return text + (f" [{', '.join(extras)}]" if extras else "")

    # ------------------------------------------------------------ backends --
    fresh_output = True
    slides = True

    def torch_module(self, a, ins, inplace=False):
        args = [str(ins[0][0]), str(a["out"]), f"kernel_size={torch_pair(a['kernel'])}"]
        if a["stride"] != (1, 1):
            args.append(f"stride={torch_pair(a['stride'])}")
        if a["padding"] != (0, 0) and a["padding"] == a["pad_end"]:
            args.append(f"padding={torch_pair(a['padding'])}")
        if a["dilation"] != (1, 1):
            args.append(f"dilation={torch_pair(a['dilation'])}")
        if a["groups"] != 1:
            args.append(f"groups={a['groups']}")
        if not a["bias"]:
            args.append("bias=False")
        return f"nn.Conv2d({', '.join(args)})"

    def torch_forward(self, module, args, a):
        if a["padding"] != a["pad_end"]:     # nn.Conv2d pads both ends alike: pad first
            return f"{module}(torch.nn.functional.pad({args[0]}, {torch_pad(a)}))"
        return f"{module}({args[0]})"

    def onnx(self, em, n, ins, shapes):
        import numpy as np
        a = n.attrs
        cin = shapes[0][0] // a["groups"]
        kh, kw = a["kernel"]
        fan_out = a["out"] * kh * kw
        w = em.tensor(n, "weight", (a["out"], cin, kh, kw),
                      lambda: em.rng.standard_normal((a["out"], cin, kh, kw), np.float32) * (2.0 / fan_out) ** 0.5)
        inputs = [ins[0], w]
        if a["bias"]:
            inputs.append(em.tensor(n, "bias", (a["out"],), lambda: np.zeros(a["out"])))
        em.op("Conv", inputs, n.name, n.name, kernel_shape=[kh, kw], strides=list(a["stride"]),
              pads=[*a["padding"], *a["pad_end"]], dilations=list(a["dilation"]), group=a["groups"])

    def spell(self, a):
        text = f"conv{spec_pair(a['kernel'])}-{a['out']}"
        if a["stride"] != (1, 1):
            text += f"/{spec_pair(a['stride'])}"
        opts = []
        same = tuple(a["dilation"][i] * (a["kernel"][i] - 1) // 2 for i in (0, 1))
        if a["padding"] != same or a["pad_end"] != a["padding"]:
            opts.append(f"pad={spec_pair(a['padding'])}")
        if a["pad_end"] != a["padding"]:
            opts.append(f"pad_end={spec_pair(a['pad_end'])}")
        if a["dilation"] != (1, 1):
            opts.append(f"dilation={spec_pair(a['dilation'])}")
        if a["groups"] != 1:
            opts.append(f"groups={a['groups']}")
        opts.append("bias" if a["bias"] else "nobias")
        return text + f"[{', '.join(opts)}]"


def resolve_padding(pad, end, kernel: tuple, dilation: tuple, stride: tuple, in_shape: tuple,
                    limit_part: str) -> tuple[tuple, tuple]:
    """(padding before, padding after) per axis from what a layer wrote: `pad` is None (the default: half the
    effective kernel at both ends), "valid", "same" (PyTorch's: the effective kernel minus one in all, the odd
    cell after), "tfsame" (TensorFlow's: enough for ceil(n / stride) outputs, the odd cell after) or a pair;
    `end` is (pair, part) of an explicit `pad_end`, else None."""
    effective = tuple(dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1))
    if pad is None or pad == "same":
        padding = tuple((e - 1) // 2 for e in effective)
        pad_end = tuple(e - 1 - p for e, p in zip(effective, padding)) if pad == "same" else padding
    elif pad == "tfsame":
        sides = [tf_same(in_shape[1 + i], effective[i], stride[i]) for i in (0, 1)]
        padding, pad_end = tuple(p for p, _ in sides), tuple(q for _, q in sides)
    elif pad == "valid":
        padding = pad_end = (0, 0)
    else:
        padding = pad_end = pad
    if end is not None:
        if pad in ("same", "tfsame", "valid"):
            raise OpError(f"pad_end given with '{pad}', which sets the padding at both ends", end[1],
                          "write pad=TOPxLEFT, pad_end=BOTTOMxRIGHT, or the flag alone", kind="name")
        pad_end = end[0]
    for i in (0, 1):
        if max(padding[i], pad_end[i]) > limits.MAX_KERNEL:
            raise OpError(f"kernel {kernel[i]} with dilation {dilation[i]} needs padding "
                          f"{max(padding[i], pad_end[i]):,}, beyond the limit of {limits.MAX_KERNEL:,}",
                          limit_part,
                          "use a smaller dilation or kernel, or give the padding: [valid] or [pad=N]", kind="limit")
    return padding, pad_end


CONV = Conv()


def _conv(args: LayerArgs, in_shape: tuple):
    return "conv", CONV.build(args, in_shape)


def _dwconv(args: LayerArgs, in_shape: tuple):
    return "conv", CONV.build(args, in_shape, depthwise=True)


OPS = [CONV]
SPELLINGS = {"conv": _conv, "convolution": _conv, "dwconv": _dwconv, "depthwiseconv": _dwconv}


# What the conformance harness (tests/test_conformance.py) builds to hold this family to every oracle: spec
# text after an `input` line, covering every option.
EXAMPLES = {"conv": ("conv3-4", "conv3x1-4/2[pad=0x1]", "conv3-4[dilation=2, nobias]", "conv2-4/2[valid]",
                     "dwconv3", "dwconv3-6/2", "conv3-6[groups=3, pad=2]", "conv1-4[bias] bn",
                     "conv2-4[same]", "conv3-4/2[tfsame]", "dwconv5/2[tfsame]", "conv4x2-3/2[same, dilation=2x1]",
                     "conv3-4[pad=0x1, pad_end=2x0]", "conv1x3-2/3[pad_end=0x2]")}


# ------------------------------------------------------------- ONNX import --
# `imp` is the importer (cnndsl.backends.from_onnx); imp.spatial_pads resolves ONNX's auto_pad and pads.

def _read_conv(imp, node, a):
    src = imp.data(node)
    c, h, w = imp.spatial(node, src)
    weight = imp.dims(node, 1, "weight", required=True)
    if len(weight) != 4:
        raise imp.fail(f"{imp.label(node)} has a rank-{len(weight)} weight; cnndsl imports 2-D convolutions "
                        "(a rank-4 weight)")
    out, per_group, kh, kw = weight
    kernel = imp.ints(node, a, "kernel_shape", (kh, kw), length=2)
    if kernel != (kh, kw):
        raise imp.fail(f"{imp.label(node)}: kernel_shape {fmt_shape(kernel)} disagrees with its "
                        f"{fmt_shape(weight)} weight")
    imp.within(node, "the kernel", kernel, 1)
    strides = imp.ints(node, a, "strides", (1, 1), length=2, low=1)
    dil = imp.ints(node, a, "dilations", (1, 1), length=2, low=1)
    groups = imp.int_(node, a, "group", 1)
    imp.within(node, "group", (groups,), 1, limits.MAX_DIM)
    imp.within(node, "the output channel count", (out,), 1, limits.MAX_DIM)
    if per_group * groups != c:
        raise imp.fail(f"{imp.label(node)}: its {fmt_shape(weight)} weight with group={groups} takes "
                        f"{per_group * groups:,} input channels, but its input has {c:,}")
    if out % groups:
        raise imp.fail(f"{imp.label(node)}: group={groups} does not divide its {out:,} output channels")
    bias = imp.dims(node, 2, "bias")
    if bias is not None and bias != (out,):
        raise imp.fail(f"{imp.label(node)}: its bias is {fmt_shape(bias)}, expected {out} (one per output channel)")
    begin, end = imp.spatial_pads(node, a, kernel, strides, dil, (c, h, w))
    imp.within(node, "the padding", begin + end, 0)
    attrs = {"out": out, "kernel": kernel, "stride": strides, "padding": tuple(begin), "pad_end": tuple(end),
             "dilation": dil,
             "groups": groups, "bias": bias is not None}
    imp.add(node, "conv", [src], attrs)


ONNX_IMPORTS = {"Conv": OnnxImport((2, 3), 1, ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"),
                                   _read_conv)}
