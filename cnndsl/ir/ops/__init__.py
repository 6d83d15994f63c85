"""One entry per op: its attributes from the surface syntax, shape rule, params, MACs and RF window."""
from __future__ import annotations

from math import gcd, isfinite, prod
from typing import Any, Callable, NamedTuple, Optional

from ... import limits

GLOBAL = "global"   # an RF window that covers the whole input grid (fc, global pooling)


class OpError(Exception):
    """Raised by an op rule; `part` says which piece of the layer text to point at."""

    def __init__(self, message: str, part: str = "word", hint: Optional[str] = None, kind: str = "value"):
        super().__init__(message)
        self.message, self.part, self.hint, self.kind = message, part, hint, kind


class LayerArgs(NamedTuple):
    """A layer as written: `word lead-size/stride[options]`, with the expressions evaluated."""

    word: str
    lead: Any
    size: Any
    stride: Any
    options: dict        # name -> value (True for a bare flag)


# ------------------------------------------------------------ helpers ----

def fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


# Every range check below is written `not (low <= v <= high)` on a value known to be an int, or a float
# known to be finite: a NaN fails every comparison, so a check written `v < low or v > high` would pass it.

def _whole(value):
    """A float that is a whole number as an int (NaN and infinities are not whole numbers)."""
    if isinstance(value, float) and isfinite(value) and value.is_integer():
        return int(value)
    return value


def _pair(value, part: str, what: str, low: int = 1, high: int = limits.MAX_KERNEL) -> tuple[int, int]:
    value = _whole(value)
    if isinstance(value, bool) or not isinstance(value, (int, tuple)):
        raise OpError(f"{what} must be a whole number or HxW, got {value!r}", part)
    pair = (value, value) if isinstance(value, int) else value
    if len(pair) != 2:
        raise OpError(f"{what} must be one number or HxW, got {fmt_shape(pair)}", part)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, int):
            raise OpError(f"{what} must be whole numbers, got {v!r}", part)
        if not low <= v:
            raise OpError(f"{what} must be at least {low}, got {v}", part)
        if not v <= high:
            raise OpError(f"{what} {v:,} is beyond the limit of {high:,}", part, kind="limit")
    return pair


def _count(value, part: str, what: str, low: int = 1, high: int = limits.MAX_DIM) -> int:
    value = _whole(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError(f"{what} must be a whole number, got {value!r}", part)
    if not low <= value:
        raise OpError(f"{what} must be at least {low}, got {value}", part)
    if not value <= high:
        raise OpError(f"{what} {value:,} is beyond the limit of {high:,}", part, kind="limit")
    return value


def _real(value, part: str, what: str, low: float, high: float, open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpError(f"{what} must be a number, got {value!r}", part)
    bound = f"[{low:g}, {high:g})" if open_high else f"[{low:g}, {high:g}]"
    if not (isfinite(value) and low <= value <= high) or (open_high and value == high):
        raise OpError(f"{what} must be in {bound}, got {value}", part)
    return float(value)


def _bool(value, part: str, what: str) -> bool:
    if value is True or value in ("true", "yes", "on") or value == 1:
        return True
    if value is False or value in ("false", "no", "off") or value == 0:
        return False
    raise OpError(f"{what} must be true or false, got {value!r}", part)


def _options(args: LayerArgs, aliases: dict[str, str]) -> dict:
    """Map written option names to canonical ones; unknown names get a 'did you mean'."""
    out = {}
    for name, value in args.options.items():
        canon = aliases.get(name)
        if canon is None:
            import difflib
            close = difflib.get_close_matches(name, list(aliases), n=1)
            hint = (f"did you mean '{close[0]}'? " if close else "") + \
                f"{args.word} takes: {', '.join(sorted(set(aliases)))}" if aliases else f"{args.word} takes no options"
            raise OpError(f"unknown option '{name}' for {args.word}", f"option:{name}", hint, kind="name")
        if canon in out:
            raise OpError(f"option '{name}' given twice", f"option:{name}", kind="name")
        out[canon] = (name, value)
    return out


def _no_sizes(args: LayerArgs, example: str) -> None:
    for part in ("lead", "size", "stride"):
        if getattr(args, part) is not None:
            raise OpError(f"{args.word} takes no size", part, f"write it as {example}")


def conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + p:   # PyTorch: the last window must start inside the input or left padding
        out -= 1
    return out


def sliding_window(a: dict) -> tuple:
    """(effective kernel d*(k-1)+1, stride, padding) per axis of a conv or pooling layer."""
    return tuple((a["dilation"][i] * (a["kernel"][i] - 1) + 1, a["stride"][i], a["padding"][i]) for i in (0, 1))


def _spatial(ins, what: str) -> tuple[int, int, int]:
    if len(ins[0]) != 3:
        raise OpError(f"{what} needs a CxHxW feature map, but its input is a vector of {ins[0][0]:,} features",
                      "word", "put it before the first fc layer, or drop it", kind="shape")
    return ins[0]


def _check_size(out_h: int, out_w: int, ins, what) -> None:
    if out_h < 1 or out_w < 1:
        what = what()
        raise OpError(f"{what} shrinks the {ins[0][1]}x{ins[0][2]} input to {out_h}x{out_w}: "
                      "the spatial size collapses below 1", "word",
                      "use a larger input, less stride or pooling, or padding", kind="shape")


# ---------------------------------------------------------------- ops ----

class Op:
    """Math of one IR op. Subclasses override what differs from a shape-preserving no-param op."""

    name = "op"
    kind = "op"            # prefix of automatic node names
    weight = False         # a weight layer (conv or fc): carries the default activation
    windowed = False       # has an RF window (see window()); other single-input ops keep their input's field

    def shape(self, a: dict, ins: list) -> tuple:
        return ins[0]

    def params(self, a: dict, ins: list) -> int:
        return 0

    def buffers(self, a: dict, ins: list) -> int:
        return 0

    def macs(self, a: dict, ins: list, out: tuple) -> int:
        return 0

    def window(self, a: dict, ins: list):
        """RF window per axis ((k_eff, stride, pad) for h and w), GLOBAL, or None (pointwise)."""
        return None

    def describe(self, a: dict) -> str:
        return self.name


class Input(Op):
    name = kind = "input"


class Conv(Op):
    name = kind = "conv"
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
        pad = None
        bias = True
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "stride":
                if args.stride is not None:
                    raise OpError("stride given twice (after '/' and as an option)", part, kind="name")
                stride = _pair(value, part, "stride")
            elif canon == "dilation":
                dilation = _pair(value, part, "dilation")
            elif canon == "groups":
                if value == "dw" or value == "depthwise":
                    groups = cin
                else:
                    groups = _count(value, part, "groups")
            elif canon == "bias":
                bias = _bool(value, part, "bias")
            elif canon == "nobias":
                bias = not _bool(value, part, "nobias")
            elif canon in ("valid", "same"):
                if pad is not None:
                    raise OpError("padding given twice", part, kind="name")
                if value is not True:
                    raise OpError(f"'{written}' is a flag and takes no value", part)
                pad = canon
            elif canon == "pad":
                if pad is not None:
                    raise OpError("padding given twice", part, kind="name")
                pad = value if value in ("same", "valid") else _pair(value, part, "padding", low=0)
        if pad is None or pad == "same":
            padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
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


class FC(Op):
    name = kind = "fc"
    weight = True
    windowed = True
    ALIASES = {"bias": "bias", "nobias": "nobias"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.stride is not None:
            raise OpError("fc takes no stride", "stride")
        if args.lead is not None and args.size is not None:
            raise OpError("fc takes one size: its output width", "size", "write it as fc4096 or FC-4096")
        width = args.lead if args.lead is not None else args.size
        if width is None:
            raise OpError("fc needs an output width", "word", "write it as fc4096 or FC-4096")
        out = _count(width, "lead" if args.lead is not None else "size", "fc width")
        bias = True
        for canon, (written, value) in opts.items():
            flag = _bool(value, f"option:{written}", canon)
            bias = flag if canon == "bias" else not flag
        return {"out": out, "bias": bias}

    def shape(self, a, ins):
        if len(ins[0]) != 1:  # lowering inserts a flatten; a raw IR must do the same
            raise OpError(f"fc needs a vector input, got {fmt_shape(ins[0])}", kind="shape")
        return (a["out"],)

    def params(self, a, ins):
        return ins[0][0] * a["out"] + (a["out"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        return ins[0][0] * a["out"]

    def window(self, a, ins):
        return GLOBAL

    def describe(self, a):
        return f"fc {a['out']}"


class Pool(Op):
    """Max or average pooling with a kernel, stride, padding and ceil mode."""

    ALIASES = {"stride": "stride", "s": "stride", "pad": "pad", "padding": "pad", "p": "pad",
               "ceil": "ceil", "dilation": "dilation", "d": "dilation"}
    windowed = True

    def __init__(self, name: str):
        self.name = self.kind = name

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None:
            raise OpError(f"{args.word} takes a kernel and a stride, not a channel count", "size",
                          f"write it as {args.word}3/2")
        kernel = (2, 2) if args.lead is None else _pair(args.lead, "lead", "pool size")
        stride = kernel if args.stride is None else _pair(args.stride, "stride", "stride")
        padding, ceil, dilation = (0, 0), False, (1, 1)
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "stride":
                if args.stride is not None:
                    raise OpError("stride given twice (after '/' and as an option)", part, kind="name")
                stride = _pair(value, part, "stride")
            elif canon == "pad":
                padding = (0, 0) if value == "valid" else _pair(value, part, "padding", low=0)
            elif canon == "ceil":
                ceil = _bool(value, part, "ceil")
            elif canon == "dilation":
                if self.name != "maxpool":
                    raise OpError("only max pooling takes a dilation", part)
                dilation = _pair(value, part, "dilation")
        for i in (0, 1):
            if padding[i] * 2 > kernel[i]:
                raise OpError(f"pool padding {padding[i]} is more than half the kernel {kernel[i]}",
                              "word", "padding may be at most half the pool size")
        return {"kernel": kernel, "stride": stride, "padding": padding, "ceil": ceil, "dilation": dilation}

    def shape(self, a, ins):
        c, h, w = _spatial(ins, self.name)
        oh = pool_out(h, a["kernel"][0], a["stride"][0], a["padding"][0], a["dilation"][0], a["ceil"])
        ow = pool_out(w, a["kernel"][1], a["stride"][1], a["padding"][1], a["dilation"][1], a["ceil"])
        _check_size(oh, ow, ins, lambda: f"{self.name} {fmt_shape(a['kernel'])}/{fmt_shape(a['stride'])}")
        return (c, oh, ow)

    def window(self, a, ins):
        return sliding_window(a)

    def describe(self, a):
        k, s = a["kernel"], a["stride"]
        text = f"{self.name} {fmt_shape(k)}/{s[0] if s[0] == s[1] else fmt_shape(s)}"
        extras = [f"pad={fmt_shape(a['padding'])}"] if a["padding"] != (0, 0) else []
        if a["ceil"]:
            extras.append("ceil")
        return text + (f" [{', '.join(extras)}]" if extras else "")


def adaptive_window(i: int, size: int, count: int) -> tuple[int, int]:
    """PyTorch's i-th adaptive pooling window over `size` cells for `count` outputs: [start, end)."""
    return (i * size) // count, -(-((i + 1) * size) // count)


def widest_adaptive_window(size: int, count: int) -> int:
    """max(end - start) over adaptive_window(i, size, count) for all i, in O(1).

    Window i spans ceil((r + size) / count) cells, where r = i * size mod count; r runs over the
    multiples of g = gcd(size, count) below count, so the widest has r = count - g.
    """
    return -(-(count - gcd(size, count) + size) // count)


class AdaptivePool(Op):
    """Adaptive (and, with output 1x1, global) average or max pooling."""

    windowed = True

    def __init__(self, name: str):
        self.name = name
        self.kind = name.replace("adaptive_", "")

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


class BatchNorm(Op):
    name = kind = "bn"
    ALIASES = {"eps": "eps", "momentum": "momentum"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        _no_sizes(args, "bn[eps=1e-5]")
        a = {"eps": 1e-5, "momentum": 0.1}
        for canon, (written, value) in opts.items():
            a[canon] = _real(value, f"option:{written}", canon, 0.0, 1.0)
        return a

    def params(self, a, ins):
        return 2 * ins[0][0]

    def buffers(self, a, ins):
        return 2 * ins[0][0] + 1     # running mean, running var, num_batches_tracked

    def describe(self, a):
        return "batchnorm"


class LRN(Op):
    name = kind = "lrn"
    ALIASES = {"size": "size", "n": "size", "alpha": "alpha", "beta": "beta", "k": "k"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("lrn takes one size: the number of neighbouring channels", "size", "write it as lrn5")
        a = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}   # Krizhevsky et al. 2012, section 3.3
        if args.lead is not None:
            a["size"] = _count(args.lead, "lead", "lrn size", high=4096)
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "size":
                a["size"] = _count(value, part, "lrn size", high=4096)
            else:
                a[canon] = _real(value, part, canon, 0.0, 1e6)
        _spatial([in_shape], "lrn")
        return a

    def shape(self, a, ins):
        _spatial(ins, "lrn")
        return ins[0]

    def describe(self, a):
        return f"lrn {a['size']}"


class Dropout(Op):
    name = kind = "dropout"
    ALIASES = {"p": "p", "rate": "p"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("dropout takes one rate", "size", "write it as dropout0.5 or dropout[p=0.5]")
        p = 0.5 if args.lead is None else _real(args.lead, "lead", "dropout rate", 0.0, 1.0, open_high=True)
        for canon, (written, value) in opts.items():
            p = _real(value, f"option:{written}", "dropout rate", 0.0, 1.0, open_high=True)
        return {"p": p}

    def describe(self, a):
        return f"dropout {a['p']:g}"


class Flatten(Op):
    name = kind = "flatten"

    def shape(self, a, ins):
        return (prod(ins[0]),)


class Softmax(Op):
    name = kind = "softmax"


class Activation(Op):
    def __init__(self, name: str, options: Optional[dict] = None):
        self.name = self.kind = name
        self.defaults = options or {}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, {k: k for k in self.defaults})
        _no_sizes(args, args.word)
        a = dict(self.defaults)
        for canon, (written, value) in opts.items():
            a[canon] = _real(value, f"option:{written}", canon, -1e6, 1e6)
        return a

    def describe(self, a):
        return self.name + "".join(f" {k}={v:g}" for k, v in a.items())


class Add(Op):
    name = kind = "add"

    def shape(self, a, ins):
        for other in ins[1:]:
            if other != ins[0]:
                raise OpError(f"cannot add {fmt_shape(ins[0])} and {fmt_shape(other)}", kind="shape")
        return ins[0]


class Concat(Op):
    name = kind = "concat"

    def shape(self, a, ins):
        first = ins[0]
        for other in ins[1:]:
            if len(other) != len(first) or other[1:] != first[1:]:
                raise OpError(f"cannot concatenate {fmt_shape(first)} and {fmt_shape(other)}: "
                              "sizes other than channels must agree", kind="shape")
        return (sum(s[0] for s in ins),) + tuple(first[1:])


ACTIVATIONS = {
    "relu": Activation("relu"), "relu6": Activation("relu6"), "tanh": Activation("tanh"),
    "sigmoid": Activation("sigmoid"), "elu": Activation("elu", {"alpha": 1.0}),
    "leakyrelu": Activation("leakyrelu", {"slope": 0.01}), "gelu": Activation("gelu"),
    "silu": Activation("silu"), "hardswish": Activation("hardswish"),
}

OPS: dict[str, Op] = {op.name: op for op in [
    Input(), Conv(), FC(), Pool("maxpool"), Pool("avgpool"), AdaptivePool("adaptive_avgpool"),
    AdaptivePool("adaptive_maxpool"), BatchNorm(), LRN(), Dropout(), Flatten(), Softmax(), Add(), Concat(),
    *ACTIVATIONS.values()]}

NO_ACTIVATION = "none"      # the spelling that removes a weight layer's activation


def _spell(op: str, **extra) -> Callable[[LayerArgs, tuple], tuple[str, dict]]:
    def build(args: LayerArgs, in_shape: tuple) -> tuple[str, dict]:
        return op, OPS[op].build(args, in_shape, **extra)
    return build


def _no_act(args: LayerArgs, in_shape: tuple) -> tuple[str, dict]:
    _options(args, {})
    _no_sizes(args, args.word)
    return NO_ACTIVATION, {}


def _plain(op: str) -> Callable[[LayerArgs, tuple], tuple[str, dict]]:
    def build(args: LayerArgs, in_shape: tuple) -> tuple[str, dict]:
        _options(args, {})
        _no_sizes(args, args.word)
        return op, {}
    return build


# Surface spellings (lower case, '-' and '_' removed) -> builder of (op name, attributes).
SPELLINGS: dict[str, Callable[[LayerArgs, tuple], tuple[str, dict]]] = {
    "conv": _spell("conv"), "convolution": _spell("conv"),
    "dwconv": _spell("conv", depthwise=True), "depthwiseconv": _spell("conv", depthwise=True),
    "fc": _spell("fc"), "dense": _spell("fc"), "fullyconnected": _spell("fc"),
    "maxpool": _spell("maxpool"), "avgpool": _spell("avgpool"), "averagepool": _spell("avgpool"),
    "adaptiveavgpool": _spell("adaptive_avgpool"), "adaptivepool": _spell("adaptive_avgpool"),
    "adaptivemaxpool": _spell("adaptive_maxpool"),
    "gap": _spell("adaptive_avgpool", global_=True), "globalavgpool": _spell("adaptive_avgpool", global_=True),
    "globalaveragepool": _spell("adaptive_avgpool", global_=True),
    "gmp": _spell("adaptive_maxpool", global_=True), "globalmaxpool": _spell("adaptive_maxpool", global_=True),
    "bn": _spell("bn"), "batchnorm": _spell("bn"), "lrn": _spell("lrn"),
    "dropout": _spell("dropout"), "drop": _spell("dropout"),
    "flatten": _plain("flatten"), "softmax": _plain("softmax"),
    "none": _no_act, "identity": _no_act, "linear": _spell("fc"),
    "swish": lambda args, s: ("silu", OPS["silu"].build(args, s)),
    "lrelu": lambda args, s: ("leakyrelu", OPS["leakyrelu"].build(args, s)),
    **{name: (lambda n: lambda args, s: (n, OPS[n].build(args, s)))(name) for name in ACTIVATIONS},
}


def normalize_word(word: str) -> str:
    return word.lower().replace("-", "").replace("_", "")
