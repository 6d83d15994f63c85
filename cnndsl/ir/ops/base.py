"""What every op module shares: the error an op rule raises, a layer's written arguments, argument checks,
the window formulas (conv_out, pool_out, sliding_window, adaptive_window) and the Op base class."""
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


class OnnxImport(NamedTuple):
    """How an op family reads one ONNX node type back: its inputs (fewest, most or None), most outputs and the
    attributes the reader reads (others are refused, as ONNX Runtime refuses unknown ones), and
    `read(importer, node, attrs)`, which checks the node with the importer's helpers and adds IR nodes with
    `importer.add` (cnndsl.backends.from_onnx documents them). Attributes of old opsets that change nothing
    are listed too, so that they pass."""

    inputs: tuple
    outputs: int
    attrs: tuple
    read: Callable


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
    # PyTorch and ONNX keep the option as float32: it must stay finite, non-zero if non-zero, and in range
    trouble = limits.float32_trouble(value)
    if trouble:
        raise OpError(f"{what} {trouble}", part, "PyTorch and ONNX keep this option as a float32")
    rounded = limits.float32(value)
    if open_high and rounded >= high:      # (a closed bound may round by an ulp: that means the same)
        raise OpError(f"{what} {value!r} becomes {rounded!r} in float32, outside {bound}", part,
                      "PyTorch and ONNX keep this option as a float32; write a value further inside the range")
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


def stride_option(args: LayerArgs, value, part: str) -> tuple[int, int]:
    """A `stride=` option, refused when the layer already has a stride after '/'."""
    if args.stride is not None:
        raise OpError("stride given twice (after '/' and as an option)", part, kind="name")
    return _pair(value, part, "stride")


def padding_pairs(a: dict) -> tuple:
    """((top, bottom), (left, right)) of a sliding-window layer."""
    return tuple((a["padding"][i], a["pad_end"][i]) for i in (0, 1))


def tf_same(n: int, keff: int, s: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: ceil(n/s) outputs, the odd cell of padding after."""
    total = max(0, (-(-n // s) - 1) * s + keff - n)
    return total // 2, total - total // 2


def torch_pad(a: dict, value: str = "") -> str:
    """The torch.nn.functional.pad amounts of an asymmetric padding: (left, right, top, bottom)."""
    (t, b), (l, r) = padding_pairs(a)
    return f"({l}, {r}, {t}, {b}){value}"


def _no_sizes(args: LayerArgs, example: str) -> None:
    for part in ("lead", "size", "stride"):
        if getattr(args, part) is not None:
            raise OpError(f"{args.word} takes no size", part, f"write it as {example}")


def conv_out(n: int, k: int, s: int, p: int, d: int = 1, p_end: Optional[int] = None) -> int:
    """Output size of a sliding window: padding `p` before and `p_end` (default `p`) after."""
    return (n + p + (p if p_end is None else p_end) - d * (k - 1) - 1) // s + 1


def pool_out(n: int, k: int, s: int, p: int, d: int, ceil: bool, p_end: Optional[int] = None) -> int:
    span = n + p + (p if p_end is None else p_end) - d * (k - 1) - 1
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + p:   # PyTorch: the last window must start inside the input or left padding
        out -= 1
    return out


def sliding_window(a: dict) -> tuple:
    """(effective kernel d*(k-1)+1, stride, padding before) per axis of a conv or pooling layer (the padding
    after, `pad_end`, decides how many windows there are, never where one starts)."""
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

def adaptive_window(i: int, size: int, count: int) -> tuple[int, int]:
    """PyTorch's i-th adaptive pooling window over `size` cells for `count` outputs: [start, end)."""
    return (i * size) // count, -(-((i + 1) * size) // count)


def widest_adaptive_window(size: int, count: int) -> int:
    """max(end - start) over adaptive_window(i, size, count) for all i, in O(1).

    Window i spans ceil((r + size) / count) cells, where r = i * size mod count; r runs over the
    multiples of g = gcd(size, count) below count, so the widest has r = count - g.
    """
    return -(-(count - gcd(size, count) + size) // count)


_GOOD_ATTRS: set = set()     # (op name, attribute items) that passed Op.check_attrs


class Op:
    """Everything about one IR op. Subclasses override what differs from a shape-preserving no-param op.

    Facets: `build` (attributes from the surface syntax), `shape`, `params`, `buffers`, `macs`, `window`
    (the receptive-field window), `describe`, `torch_module`/`torch_forward` (PyTorch source),
    `onnx` (ONNX nodes through the emitter), `spell` (spec text). Flags tell the passes and backends what
    kind of op it is, so none of them compares op names.
    """

    name = "op"
    kind = "op"            # prefix of automatic node names
    weight = False         # a weight layer (conv or fc): carries the default activation
    windowed = False       # has an RF window (see window()); other single-input ops keep their input's field
    merge = None           # joins several inputs: the spec word of the merge ("add", "cat"), else None
    activation = False     # an activation: held back after a weight layer, replaced by an explicit one
    fuses_after_weight = False   # batch norm: sits between a weight layer and its activation
    logits_tail = False    # softmax: left out where logits are wanted (training, --logits)
    inplace = False        # its nn.Module takes inplace=True
    fresh_output = False   # its output is a new tensor, unshared and not needed by its backward
    flattens = False       # turns a feature map into a vector (the classifier starts here)
    needs_vector = False   # takes a vector: lowering flattens a feature map before it (fc)
    slides = False         # a sliding window with kernel, stride and padding attributes (conv, pooling)
    keeps_activation = False   # sits before a weight layer's pending activation, which stays pending (droppath)

    ATTRS: dict = {}       # attribute -> kind ("count", "index" (from 0), "pair", "pair0", "bool", "real"): the IR's schema

    def check_attrs(self, a) -> None:
        """The attributes an IR node of this op must have, of the kinds its schema says (ir.verify asks).

        Networks repeat the same layers, so attribute sets already found good are remembered (a bounded set).
        """
        key = (self.name, repr(tuple(a.items())))     # repr: True and 1, 3 and 3.0 are different attributes
        if key in _GOOD_ATTRS:
            return
        self._check_attrs(a)
        if len(_GOOD_ATTRS) > 50_000:
            _GOOD_ATTRS.clear()
        _GOOD_ATTRS.add(key)

    def _check_attrs(self, a) -> None:
        if set(a) != set(self.ATTRS):
            raise OpError(f"{self.name} has attributes {sorted(a)}, its schema {sorted(self.ATTRS)}")
        for key, kind in self.ATTRS.items():
            v = a[key]
            if kind == "bool":
                ok = isinstance(v, bool)
            elif kind == "real":
                ok = isinstance(v, float) and isfinite(v)
            elif kind in ("count", "index"):
                ok = type(v) is int and v >= (1 if kind == "count" else 0)
            else:
                low = 0 if kind == "pair0" else 1
                ok = isinstance(v, tuple) and len(v) == 2 and all(type(x) is int and x >= low for x in v)
            if not ok:
                raise OpError(f"{self.name} attribute {key} is {v!r}, not a {kind}")

    def shape(self, a: dict, ins: list) -> tuple:
        return ins[0]

    def params(self, a: dict, ins: list) -> int:
        return 0

    def buffers(self, a: dict, ins: list) -> int:
        return 0

    def macs(self, a: dict, ins: list, out: tuple) -> int:
        return 0

    # ------------------------------------------------------------ training memory --
    # What autograd keeps for backward when the generated PyTorch module trains (cnndsl.analysis.memory).
    autocast = None        # under torch.autocast: None (runs in its inputs' type), "lower" (casts float32 inputs
    #                        and weights to half: conv, fc), "float32" (casts inputs to float32: layer norm),
    #                        "float32_out" (takes its inputs as they are, returns float32)

    def saved(self, a: dict, ins: list, out: tuple, batch: int, dtype: str, inplace: bool = False,
              autocast: bool = False, device: str = "cuda") -> list:
        """The tensors this op's backward keeps, parameters left out, as (storage key, bytes) pairs: key
        ("in", k) is input k as the op received it, ("out",) its output, anything else a tensor of its own
        (bytes given here). `dtype` is the type the op computes in; `inplace` whether the generated module runs
        it in place; `autocast` whether it runs under torch.autocast. Measured on PyTorch (tests/test_train_memory.py)."""
        return []

    @staticmethod
    def tensor_bytes(shape, batch: int, dtype: str) -> int:
        """Bytes of a batch of tensors of `shape` in `dtype` ("float32", "float16", "bfloat16", "float64", "int64",
        "bool")."""
        size = {"float64": 8, "int64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "bool": 1}[dtype]
        return prod(shape) * batch * size

    def alias(self, a: dict, inplace: bool = False) -> bool:
        """Whether the op's output shares its first input's storage (a view, or a layer run in place)."""
        return inplace

    def int_buffers(self, a: dict, ins: list) -> int:
        """How many of the buffers' elements are int64 whatever the model's dtype (batch norm's
        num_batches_tracked): 8 bytes each in memory figures."""
        return 0

    def param_tensors(self, a: dict, ins: list) -> int:
        """How many parameter tensors the op's module holds (an optimizer keeps state per tensor)."""
        return 1 if self.params(a, ins) else 0

    def window(self, a: dict, ins: list):
        """RF window per axis ((k_eff, stride, pad) for h and w), GLOBAL, or None (pointwise)."""
        return None

    def unit_spans(self, a: dict, in_shape: tuple, out_shape: tuple):
        """The input cells each output unit reads, per axis: ([(first, last, step) per unit row], [... per
        column]): cells first, first+step, ..., last (a dilated kernel skips cells), indices that may pass the
        map's edges into its padding; None for a pointwise op (unit i reads cell i).
        Exact for every unit, also where the units are not one grid (see cnndsl.analysis.passes.unit_fields).
        """
        if not self.windowed:
            return None
        win = self.window(a, [in_shape]) if len(in_shape) == 3 and len(out_shape) == 3 else GLOBAL
        if win == GLOBAL:
            return whole_map(in_shape)
        dilation = a.get("dilation", (1, 1))
        return tuple([(u * s - p, u * s - p + k - 1, d) for u in range(n)]
                     for (k, s, p), n, d in zip(win, out_shape[1:], dilation))

    def irregular(self, a: dict, in_shape: tuple) -> bool:
        """Whether this layer's units are not one grid of equal windows (see unit_spans)."""
        return False

    def starts_classifier(self, a: dict) -> bool:
        """Whether the classifier starts here (its input's receptive field is what the head sees)."""
        return self.flattens

    def describe(self, a: dict) -> str:
        return self.name

    # ------------------------------------------------------------ backends --
    def torch_module(self, a: dict, ins: list, inplace: bool = False) -> Optional[str]:
        """The constructor expression of the node's nn.Module, or None for an op done in forward()."""
        raise NotImplementedError(f"op {self.name} has no PyTorch emission")

    def torch_forward(self, module: str, args: list[str], a: dict) -> str:
        """The forward() expression: by default the node's module applied to its one input."""
        return f"{module}({args[0]})"

    def onnx(self, em, n, ins: list[str], shapes: list[tuple]) -> None:
        """Emit the node through the ONNX emitter `em` (cnndsl.backends.to_onnx)."""
        raise NotImplementedError(f"op {self.name} has no ONNX emission")

    def spell(self, a: dict) -> str:
        """The spec text of one layer with these attributes (stated explicitly, defaults included)."""
        raise NotImplementedError(f"op {self.name} has no spec spelling")


def whole_map(shape: tuple):
    """unit_spans of one unit that reads a whole feature map (or a whole vector: its one cell per axis)."""
    h, w = shape[1:] if len(shape) == 3 else (1, 1)
    return [(0, h - 1, 1)], [(0, w - 1, 1)]


def torch_pair(v) -> str:
    """A kernel/stride/padding pair as PyTorch source: `3` or `(3, 1)`."""
    return str(v[0]) if v[0] == v[1] else f"({v[0]}, {v[1]})"


def spec_pair(v) -> str:
    """A pair as spec text: `3` or `3x1`."""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"
