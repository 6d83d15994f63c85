"""Convolution (`convK-C`, `convKHxKW-C/S[...]`, `dwconvK`): every facet of the op."""
from __future__ import annotations

from math import prod

from ... import limits
from .base import (stride_option, LayerArgs, Op, OpError, _bool, _check_size, _count, _options, _pair, _spatial, conv_out,
                   fmt_shape, sliding_window, spec_pair, torch_pair)


class Conv(Op):
    name = kind = "conv"
    ATTRS = {"out": "count", "kernel": "pair", "stride": "pair", "padding": "pair0", "dilation": "pair",
             "groups": "count", "bias": "bool"}
    weight = True
    windowed = True
    ALIASES = {"stride": "stride", "s": "stride", "pad": "pad", "padding": "pad", "p": "pad",
               "dilation": "dilation", "dil": "dilation", "d": "dilation", "groups": "groups", "g": "groups",
               "bias": "bias", "nobias": "nobias", "valid": "valid", "same": "same"}

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
        pad = pad_part = bias_written = None
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
            elif canon in ("valid", "same"):
                if pad is not None:
                    raise OpError("padding given twice", part, kind="name")
                if value is not True:
                    raise OpError(f"'{written}' is a flag and takes no value", part)
                pad, pad_part = canon, part
            elif canon == "pad":
                if pad is not None:
                    raise OpError("padding given twice", part, kind="name")
                pad = value if value in ("same", "valid") else _pair(value, part, "padding", low=0)
                pad_part = part
        if pad is None or pad == "same":
            padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
            if pad == "same":
                _check_same(kernel, dilation, pad_part)
            for i in (0, 1):
                if padding[i] > limits.MAX_KERNEL:
                    raise OpError(f"kernel {kernel[i]} with dilation {dilation[i]} needs padding {padding[i]:,}, "
                                  f"beyond the limit of {limits.MAX_KERNEL:,}",
                                  next((f"option:{w}" for c, (w, _) in opts.items() if c == "dilation"), "lead"),
                                  "use a smaller dilation or kernel, or give the padding: [valid] or [pad=N]",
                                  kind="limit")
        elif pad == "valid":
            padding = (0, 0)
        else:
            padding = pad
        if cin % groups or out % groups:
            raise OpError(f"groups={groups} must divide both the {cin} input and {out} output channels",
                          "word", "pick a group count that divides both", kind="shape")
        return {"out": out, "kernel": kernel, "stride": stride, "padding": padding,
                "dilation": dilation, "groups": groups, "bias": bias}

    def shape(self, a, ins):
        c, h, w = _spatial(ins, "conv")
        if c % a["groups"]:
            raise OpError(f"groups={a['groups']} does not divide the {c} input channels", kind="shape")
        oh = conv_out(h, a["kernel"][0], a["stride"][0], a["padding"][0], a["dilation"][0])
        ow = conv_out(w, a["kernel"][1], a["stride"][1], a["padding"][1], a["dilation"][1])
        _check_size(oh, ow, ins, lambda: f"conv {fmt_shape(a['kernel'])}/{fmt_shape(a['stride'])}")
        return (a["out"], oh, ow)

    def params(self, a, ins):
        return a["out"] * (ins[0][0] // a["groups"]) * a["kernel"][0] * a["kernel"][1] + (a["out"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        return prod(out) * (ins[0][0] // a["groups"]) * a["kernel"][0] * a["kernel"][1]

    def window(self, a, ins):
        return sliding_window(a)

    def describe(self, a):
        k, s = a["kernel"], a["stride"]
        text = f"conv {fmt_shape(k) if k[0] != k[1] else f'{k[0]}x{k[0]}'}-{a['out']}"
        if s != (1, 1):
            text += f"/{s[0] if s[0] == s[1] else fmt_shape(s)}"
        extras = []
        if a["padding"] != tuple(a["dilation"][i] * (k[i] - 1) // 2 for i in (0, 1)):
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
        if a["padding"] != (0, 0):
            args.append(f"padding={torch_pair(a['padding'])}")
        if a["dilation"] != (1, 1):
            args.append(f"dilation={torch_pair(a['dilation'])}")
        if a["groups"] != 1:
            args.append(f"groups={a['groups']}")
        if not a["bias"]:
            args.append("bias=False")
        return f"nn.Conv2d({', '.join(args)})"

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
        ph, pw = a["padding"]
        em.op("Conv", inputs, n.name, n.name, kernel_shape=[kh, kw], strides=list(a["stride"]),
              pads=[ph, pw, ph, pw], dilations=list(a["dilation"]), group=a["groups"])

    def spell(self, a):
        text = f"conv{spec_pair(a['kernel'])}-{a['out']}"
        if a["stride"] != (1, 1):
            text += f"/{spec_pair(a['stride'])}"
        opts = []
        same = tuple(a["dilation"][i] * (a["kernel"][i] - 1) // 2 for i in (0, 1))
        if a["padding"] != same:
            opts.append(f"pad={spec_pair(a['padding'])}")
        if a["dilation"] != (1, 1):
            opts.append(f"dilation={spec_pair(a['dilation'])}")
        if a["groups"] != 1:
            opts.append(f"groups={a['groups']}")
        opts.append("bias" if a["bias"] else "nobias")
        return text + f"[{', '.join(opts)}]"


def _check_same(kernel: tuple, dilation: tuple, part: str) -> None:
    """`same` keeps the size at stride 1 (ceil(n/S) at stride S) only where the padding can be symmetric:
    an odd effective kernel d*(K-1)+1 on both axes."""
    for i in (0, 1):
        effective = dilation[i] * (kernel[i] - 1) + 1
        if effective % 2 == 0:
            k = fmt_shape(kernel) if kernel[0] != kernel[1] else str(kernel[0])
            what = f"kernel {k}" if dilation == (1, 1) else f"kernel {k} with dilation {fmt_shape(dilation)}"
            pad = dilation[i] * (kernel[i] - 1) // 2
            raise OpError(f"'same' padding cannot keep the size with the {what}: the effective kernel "
                          f"{effective} is even, so it needs {effective - 1 - pad} padding on one side and "
                          f"{pad} on the other", part,
                          "cnndsl pads both sides equally (asymmetric padding is not supported yet): use an odd "
                          f"kernel, or drop 'same' for pad={pad} (the size shrinks by 1)")


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
                     "dwconv3", "dwconv3-6/2", "conv3-6[groups=3, pad=2]", "conv1-4[bias] bn")}
