"""ONNX -> IR: import an existing ONNX CNN so the analyzer reports on models cnndsl did not write.

The file is untrusted. It is size-checked before it is read, every node is checked the way ONNX Runtime
checks it (shapes, attribute types and ranges) before it reaches the IR, the work is linear in the file,
weights are read only as shapes, the few small tensors whose values matter (Reshape targets, pads, axes,
bounds) are capped, and external data is read only from the model's own folder. Names from the file
appear in messages escaped and shortened; IR node names keep the ONNX names, bounded and unique.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import stat
from collections import ChainMap
from typing import Optional

import numpy as np

from .. import limits
from ..errors import CnnDslError, printable
from ..files import NotRegularFile, open_regular, read_at_most
from ..ir import Graph, make_node, verify
from ..ir.ops import ACTIVATIONS, IMPORTS, OPS, LayerArgs, OpError, adaptive_window, fmt_shape

SUPPORTED = ("Conv, Gemm, MatMul (+Add), MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, "
             "BatchNormalization, Relu, Clip(0,6), Tanh, Sigmoid, Elu, LeakyRelu, Gelu, HardSwish, Add, Sum, "
             "Concat, Flatten, Reshape (to N x -1), Softmax, LRN, Dropout, Identity (and cnndsl's droppath notes on it), "
             "Resize (upsampling by whole-number scales, nearest or bilinear), Pad (zeros before AveragePool, "
             "-inf before MaxPool), "
             "Slice + ReduceMean/ReduceMax + Concat (uneven adaptive pooling, as cnndsl writes it), Slice and "
             "Split on channels, Reshape + Transpose + Reshape (channel shuffle), Shape/Gather/Unsqueeze/Cast/Concat "
             "and integer Add/Sub/Mul/Div on sizes (as torch.onnx writes them), HardSigmoid, "
             "Mish, and the forms activations take at older opsets: x * Sigmoid(x) (silu), x * HardSigmoid(x) "
             "(hardswish), x * Tanh(Softplus(x)) (mish), x/2 * (1 + Erf(x / sqrt 2)) and x * (1 + Erf(x / sqrt 2)) "
             "/ 2 (gelu); Mul of two values (mul) and by one factor per channel (layer scale); LayerNormalization "
             "over channels and its ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add form (layer norm), on "
             "channels-last values between Transposes 0,2,3,1 and 0,3,1,2 as torch.onnx writes LayerNorm2d, where "
             "MatMul (+Add) is a 1x1 convolution (ConvNeXt's pointwise layers)")

MAX_FILE_BYTES = 2 << 30     # protobuf cannot parse a larger message; larger weights belong in external data
MAX_VALUES = 64              # elements of a tensor whose values are read (a Reshape target, pads, axes, bounds)
MAX_NAME = 200               # longer node names are shortened (deterministically) in the IR
SHOWN = 60                   # characters of a name from the file shown in a message

# op -> (fewest inputs, most inputs or None, most outputs, attributes read here), within what the op's ONNX
# schema at the model's opset allows; other attributes are refused (ONNX Runtime refuses unknown ones, and one
# this importer does not read could change the layer). Attributes of old opsets that change nothing here pass.
_OLD = ("consumed_inputs",)
OPSPEC: dict[str, tuple] = {
    "Add": (2, 2, 1, ("axis", "broadcast") + _OLD), "Sum": (1, None, 1, _OLD),
    "Concat": (1, None, 1, ("axis",)), "Reshape": (2, 2, 1, ("allowzero",)),
    "Identity": (1, 1, 1, ()), "Constant": (0, 0, 1, ("value", "value_float", "value_floats", "value_int", "value_ints")),
    "Pad": (1, 4, 1, ("mode", "pads", "value")), "Slice": (3, 5, 1, ()),
    "ReduceMean": (1, 2, 1, ("axes", "keepdims", "noop_with_empty_axes")),
    "ReduceMax": (1, 2, 1, ("axes", "keepdims", "noop_with_empty_axes")),
    "Softplus": (1, 1, 1, ()),
    "Mul": (2, 2, 1, ("axis", "broadcast") + _OLD), "Div": (2, 2, 1, ("axis", "broadcast") + _OLD),
    "Erf": (1, 1, 1, ()),
    "Sqrt": (1, 1, 1, _OLD), "Pow": (2, 2, 1, ("axis", "broadcast")),     # a layer norm at older opsets
    # shape arithmetic (exporters compute Slice bounds and Reshape targets from the input's Shape)
    "Shape": (1, 1, 1, ("start", "end")), "Gather": (2, 2, 1, ("axis",)), "Unsqueeze": (1, 2, 1, ("axes",)),
    "Cast": (1, 1, 1, ("to", "saturate")), "Sub": (2, 2, 1, ("axis", "broadcast") + _OLD),
}
_FOLDED = frozenset(["Add", "Sub", "Mul", "Div", "Concat"])     # folded when every input is a known integer
# what may read a channels-last value: ops that compute the same in either layout (elementwise), or over the
# channel axis where they say so (layer norm and its pieces), MatMul over the channels, and the Transpose back
_CHANNELS_LAST = frozenset(["Transpose", "LayerNormalization", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt",
                            "ReduceMean", "Erf", "Softplus", "Tanh", "Identity", "Clip", "Gelu", "Dropout"])

# Node types read by the op modules themselves (each family's ONNX_IMPORTS, collected in cnndsl.ir.ops.IMPORTS)
for _type, _import in IMPORTS.items():
    assert _type not in OPSPEC, f"ONNX {_type} is read twice"
    OPSPEC[_type] = (_import.inputs[0], _import.inputs[1], _import.outputs, tuple(_import.attrs))

# a Transpose to channels last and back is read here (_to_channels_last); others by their family
OPSPEC.setdefault("Transpose", (1, 1, 1, ("perm",)))

# Activations read back from one ONNX op each, as their op module declares (cnndsl.ir.ops.activation)
ACTIVATION_IMPORTS = {op.onnx_type: op for op in ACTIVATIONS.values() if op.onnx_type}
for _type, _op in ACTIVATION_IMPORTS.items():
    OPSPEC[_type] = (1, 1, 1, tuple(key for key, _ in _op.onnx_options.values()) + tuple(_op.onnx_fixed) + _OLD)


class ImportError_(CnnDslError):
    """The ONNX file cannot be read, or uses something the IR cannot express."""

    kind = "import error"


def _text(value) -> str:
    """A string field of the file as text (protobuf hands over bytes when a field is not valid UTF-8)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _clean(value, limit: int = SHOWN) -> str:
    """Text from the file, fit for one line of a message: non-printables escaped, bounded."""
    return printable(_text(value), limit)


def _show(value, limit: int = SHOWN) -> str:
    return f"'{_clean(value, limit)}'"


def _stage(name: str) -> str:
    parts = [p for p in name.replace("/", ".").split(".") if p]
    return parts[0] if len(parts) > 1 else "graph"


def _bounded(name: str) -> str:
    """An IR node name of at most MAX_NAME characters: longer ones keep their start and a digest of the whole."""
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name[:MAX_NAME - 17]}~{digest}"


@functools.lru_cache(maxsize=None)
def _fields() -> dict:
    """Element types read here -> the TensorProto field that holds them when not in raw_data."""
    from onnx import TensorProto as T
    return {T.FLOAT: "float_data", T.DOUBLE: "double_data", T.INT64: "int64_data", T.UINT64: "uint64_data",
            T.UINT32: "uint64_data", **{t: "int32_data" for t in (T.INT32, T.INT16, T.INT8, T.UINT16, T.UINT8,
                                                                 T.BOOL, T.FLOAT16, T.BFLOAT16)}}


@functools.lru_cache(maxsize=None)
def _floats() -> tuple:
    from onnx import TensorProto as T
    return (T.FLOAT, T.FLOAT16, T.BFLOAT16, T.DOUBLE)


def _np_dtype(data_type: int) -> Optional[np.dtype]:
    from onnx import helper
    return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)) if data_type in _fields() else None


@functools.lru_cache(maxsize=None)
def _attr_types() -> dict:
    from onnx import AttributeProto as A
    return {"INT": A.INT, "INTS": A.INTS, "FLOAT": A.FLOAT, "FLOATS": A.FLOATS, "STRING": A.STRING, "TENSOR": A.TENSOR}


@functools.lru_cache(maxsize=None)
def _attr_fields() -> dict:
    """AttributeProto type -> the one field that may hold its value."""
    from onnx import AttributeProto as A
    return {A.FLOAT: "f", A.INT: "i", A.STRING: "s", A.TENSOR: "t", A.GRAPH: "g", A.SPARSE_TENSOR: "sparse_tensor",
            A.TYPE_PROTO: "tp", A.FLOATS: "floats", A.INTS: "ints", A.STRINGS: "strings", A.TENSORS: "tensors",
            A.GRAPHS: "graphs", A.SPARSE_TENSORS: "sparse_tensors", A.TYPE_PROTOS: "type_protos"}


@functools.lru_cache(maxsize=None)
def _schema(op: str, opset: int):
    """The ONNX schema of an op as of an opset, or None where the opset has no such op."""
    from onnx import defs
    try:
        return defs.get_schema(op, opset, "")
    except Exception:
        return None


@functools.lru_cache(maxsize=None)
def _data_types() -> frozenset:
    from onnx import TensorProto
    return frozenset(v for v in TensorProto.DataType.values() if v != TensorProto.UNDEFINED)


def _type_name(data_type: int) -> str:
    from onnx import TensorProto
    try:
        return TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"type {data_type}"


class _Importer:
    def __init__(self, model, path: str, input_shape: Optional[tuple[int, int, int]], folder: Optional[str]):
        self.model, self.path, self.folder = model, path, folder
        self.input_shape = input_shape
        self.consts: dict[str, object] = {}    # name -> TensorProto (read lazily) or a small ndarray
        self.checked: dict[int, tuple] = {}    # id(TensorProto) -> its dims, once its storage has been checked
        self.external: set[int] = set()        # ids of tensors stored outside the model file
        self.places: dict[str, tuple] = {}     # external location -> (real path, size)
        self.defined: set = set()              # every ONNX value defined so far (SSA: defined once)
        self.alias: dict[str, str] = {}        # ONNX value -> IR node
        self.rows: list = []                   # [name, op, inputs, attrs, shape, stage]
        self.shape: dict[str, tuple] = {}
        self.names: set[str] = set()
        self.suffix: dict[str, int] = {}       # base name -> last suffix tried: duplicate names cost O(1) each
        self.pads: dict[str, tuple] = {}       # ONNX Pad outputs waiting for their AveragePool
        # pieces of an activation written as several nodes (older opsets): ONNX value -> (form, IR source)
        self.parts: dict[str, tuple[str, str]] = {}
        # uneven adaptive pooling, as emitted by cnndsl: Slice -> ReduceMean/Max per band, Concat the bands,
        # first along the rows, then along the columns; these hold the pieces until the last Concat
        self.slices: dict[str, tuple] = {}     # Slice output -> (source, axis, start, end)
        self.bands: dict[str, tuple] = {}      # Reduce output -> (kind, source, axis, start, end)
        self.rows_pooled: dict[str, tuple] = {}  # row Concat output -> (kind, IR source, output rows)
        self.opset = max([v.version for v in model.opset_import if v.domain in ("", "ai.onnx")] or [0])
        self.elem = 0                          # the input's element type (weights must match it)
        self.batch: Optional[int] = None       # the input's batch size, when the file fixes it
        self.uses: dict[str, int] = {}         # ONNX value -> how many node inputs and graph outputs read it
        self.made: dict[str, str] = {}         # IR node -> the ONNX value it was made as (for folding a bias)
        # sizes computed from a Shape: ONNX value -> object array of ints, None where it holds the (unfixed)
        # batch size; those without the batch are also in consts, as int64 arrays
        self.symbolic: dict[str, np.ndarray] = {}
        # a channel shuffle's first Reshape and Transpose: ONNX value -> (stage, IR source, groups, dims after N)
        self.shuffles: dict[str, tuple] = {}
        # channels-last values: a Transpose 0, 2, 3, 1 of a feature map (LayerNorm2d, a ConvNeXt block's pointwise
        # layers) and what is computed from it, until the Transpose 0, 3, 1, 2 back; each aliases its IR node
        self.nhwc: set[str] = set()
        self.layout_free = False               # while a node that reads channels-last values is read
        self.pointwise: set[str] = set()       # IR convolutions read from a MatMul over channels (bias follows)

    # ------------------------------------------------------------ helpers --
    text = staticmethod(lambda value: _text(value))       # a string from the file, as text
    show = staticmethod(lambda value: _show(value))       # a name from the file, escaped and shortened for a message

    def fail(self, message: str, hint: Optional[str] = None):
        return ImportError_(message, hint=hint).attach(None, self.path)

    @staticmethod
    def label(node) -> str:
        """How a message names a node: its op and its name (or first output), escaped."""
        name = node.name or (node.output[0] if node.output else "")
        return f"{_clean(node.op_type, 40)} {_show(name)}"

    def src(self, value) -> str:
        if value in self.alias:
            if value in self.nhwc and not self.layout_free:
                raise self.fail(f"the value {_show(value)} is in channels-last layout (a Transpose of a feature map) "
                                "where cnndsl expects channels first",
                                "cnndsl imports channels-last values only inside a LayerNorm2d or a ConvNeXt block: "
                                "Transpose 0, 2, 3, 1, then layer norm, MatMul (+Add), activations, Transpose "
                                "0, 3, 1, 2")
            return self.alias[value]
        if value in self.symbolic:
            raise self.fail(f"the value {_show(value)}, computed from sizes, is used as a feature map")
        if value in self.consts:
            raise self.fail(f"the constant {_show(value)} is used as a feature map",
                            "cnndsl imports CNNs whose layers compute on the input image")
        if value in self.pads:
            raise self.fail(f"the padded value {_show(value)} feeds something other than one average pooling",
                            "cnndsl imports a Pad only as the padding of the AveragePool after it")
        if value in self.parts:
            raise self.fail(f"the value {_show(value)} ({self.parts[value][0]}) is used on its own",
                            "cnndsl imports Softplus, Erf, Sub, Pow, Sqrt, ReduceMean and Mul/Div/Add by a constant "
                            "only as parts of mish, gelu and layer norm, written as their exporters write them")
        if value in self.shuffles:
            raise self.fail(f"the value {_show(value)}, part of a channel shuffle, is used on its own",
                            "cnndsl imports a 5-D Reshape and Transpose only as a channel shuffle: Reshape to "
                            "N x g x C/g x H x W, Transpose 0, 2, 1, 3, 4, Reshape to N x C x H x W")
        if value in self.slices or value in self.bands or value in self.rows_pooled:
            raise self.fail(f"the value {_show(value)}, part of an adaptive pooling, is used on its own",
                            "cnndsl imports Slice/Reduce/Concat only in the pattern its exporter writes")
        raise self.fail(f"value {_show(value)} is not produced by an earlier supported node")

    def data(self, node) -> str:
        """The IR node a node's first input comes from."""
        return self.src(node.input[0])

    def spatial(self, node, src: str) -> tuple[int, int, int]:
        shape = self.shape[src]
        if len(shape) != 3:
            raise self.fail(f"{self.label(node)} needs an N x C x H x W input, but its input is N x {shape[0]:,}")
        return shape

    def vector(self, node, src: str) -> int:
        shape = self.shape[src]
        if len(shape) != 1:
            raise self.fail(f"{self.label(node)} needs an N x features input, but its input is N x {fmt_shape(shape)}",
                            "cnndsl imports a linear layer after a Flatten")
        return shape[0]

    # attributes: typed, known, given once
    def attrs(self, node, schema) -> dict:
        read = OPSPEC[_text(node.op_type)][3]
        out = {}
        for a in node.attribute:
            name = _text(a.name)
            if name not in schema.attributes:
                raise self.fail(f"{self.label(node)} has an unknown attribute {_show(name)}",
                                f"in opset {self.opset}, {_clean(node.op_type)} takes: "
                                f"{', '.join(sorted(schema.attributes)) or 'no attributes'}")
            if name not in read:
                raise self.fail(f"{self.label(node)} has the attribute {_show(name)}, which cnndsl does not import")
            if name in out:
                raise self.fail(f"{self.label(node)} gives the attribute {_show(name)} twice")
            field = _attr_fields().get(a.type)
            held = {f.name for f, _ in a.ListFields()} & set(_attr_fields().values())
            if field is None or held - {field}:     # as ONNX Runtime checks: the value sits in its type's field
                raise self.fail(f"{self.label(node)}: attribute {_show(name)} holds a value that is not of its type")
            out[name] = a
        for name, attr in schema.attributes.items():
            if attr.required and name not in out:
                raise self.fail(f"{self.label(node)} has no {name}")
        return out

    def types(self, node, schema) -> None:
        """Constant inputs of the element types the op's schema allows, the data's type where they share it."""
        formals = schema.inputs
        for i, value in enumerate(node.input):
            t = self.consts.get(value) if value else None
            if t is None or not formals:
                continue
            formal = formals[min(i, len(formals) - 1)]
            if isinstance(t, np.ndarray):
                from onnx import helper
                code = helper.np_dtype_to_tensor_dtype(t.dtype)
            else:
                code = t.data_type
            same = formal.type_str == formals[0].type_str and self.elem and node.input[0] not in self.consts and \
                node.input[0] not in self.symbolic      # sizes share no type with the data
            if f"tensor({_type_name(code)})" not in formal.types or (same and code != self.elem):
                want = _type_name(self.elem) if same else ", ".join(sorted(x[7:-1] for x in formal.types))
                raise self.fail(f"{self.label(node)}: its {formal.name} {_show(value)} holds {_type_name(code)}, "
                                f"not {want}")

    def _attr(self, node, a: dict, name: str, kind: str):
        attr = a.get(name)
        if attr is not None and attr.type != _attr_types()[kind]:
            what = {"INT": "an integer", "INTS": "a list of integers", "FLOAT": "a number", "STRING": "a string",
                    "FLOATS": "a list of numbers", "TENSOR": "a tensor"}[kind]
            raise self.fail(f"{self.label(node)}: attribute {_show(name)} must be {what}")
        return attr

    def int_(self, node, a: dict, name: str, default=None, choices=None) -> Optional[int]:
        attr = self._attr(node, a, name, "INT")
        value = default if attr is None else int(attr.i)
        if choices is not None and value not in choices:
            raise self.fail(f"{self.label(node)}: attribute {_show(name)} must be one of "
                            f"{', '.join(map(str, choices))}, got {value}")
        return value

    def ints(self, node, a: dict, name: str, default=None, length: Optional[int] = None,
             low: Optional[int] = None, high: int = limits.MAX_KERNEL) -> Optional[tuple]:
        attr = self._attr(node, a, name, "INTS")
        if attr is None:
            return default
        values = tuple(int(v) for v in attr.ints)
        if length is not None and len(values) != length:
            raise self.fail(f"{self.label(node)}: attribute {_show(name)} has {len(values)} values, expected {length}")
        self.within(node, name, values, low, high)
        return values

    def within(self, node, what: str, values, low: Optional[int], high: int = limits.MAX_KERNEL):
        for v in values:
            if low is not None and v < low:
                raise self.fail(f"{self.label(node)}: {what} must be at least {low}, got {v}")
            if v > high:
                raise self.fail(f"{self.label(node)}: {what} {v:,} is beyond the limit of {high:,}")
        return values

    def float_(self, node, a: dict, name: str, default: float, low: float = -1e6, high: float = 1e6,
               open_low: bool = False) -> float:
        attr = self._attr(node, a, name, "FLOAT")
        value = default if attr is None else float(attr.f)
        return self.real(node, f"attribute {_show(name)}", value, low, high, open_low)

    def real(self, node, what: str, value: float, low: float, high: float, open_low: bool = False,
             open_high: bool = False) -> float:
        if not math.isfinite(value):
            raise self.fail(f"{self.label(node)}: {what} is {value}, not a finite number")
        value = float(f"{value:.7g}")       # as written in a spec, and checked as written
        if value < low or value > high or (open_low and value == low) or (open_high and value == high):
            bound = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
            raise self.fail(f"{self.label(node)}: {what} must be in {bound}, got {value:g}")
        return value

    def string(self, node, a: dict, name: str, default: str, choices: tuple) -> str:
        attr = self._attr(node, a, name, "STRING")
        value = default if attr is None else _text(attr.s)
        if value not in choices:
            raise self.fail(f"{self.label(node)}: attribute {_show(name)} is {_show(value)}; expected one of "
                            f"{', '.join(choices)}")
        return value

    # constants: weights are read as shapes only; a few small tensors as values
    def const(self, node, index: int, what: str):
        """The constant at an input (None when the input is left out), refused when it is computed."""
        if index >= len(node.input) or not node.input[index]:
            return None
        t = self.consts.get(node.input[index])
        if t is None:
            raise self.fail(f"{self.label(node)} takes a computed {what} {_show(node.input[index])}",
                            "cnndsl imports weights stored as initializers or constants")
        return t

    def dims(self, node, index: int, what: str, required: bool = False) -> Optional[tuple]:
        """The shape of a constant input (a weight), its storage checked but its values left unread (its element
        type was checked against the op's schema with the node)."""
        t = self.const(node, index, what)
        if t is None:
            if required:
                raise self.fail(f"{self.label(node)} has no {what}")
            return None
        if isinstance(t, np.ndarray):
            return tuple(int(d) for d in t.shape)
        return self.storage(node, node.input[index], t)

    def storage(self, node, name, t) -> tuple:
        """Check once that a TensorProto's data is all there (inline, or in a file beside the model)."""
        key = id(t)
        if key in self.checked:
            return self.checked[key]
        from onnx import TensorProto
        dims = tuple(int(d) for d in t.dims)
        where = f"{self.label(node)}: tensor {_show(name)}"
        if any(d < 0 for d in dims):
            raise self.fail(f"{where} has a negative dimension {fmt_shape(dims)}")
        dtype = _np_dtype(t.data_type)
        if dtype is None:
            raise self.fail(f"{where} has element type {t.data_type}, which cnndsl does not read",
                            "cnndsl reads numeric tensors (floats, integers, booleans)")
        count = math.prod(dims)
        nbytes = count * dtype.itemsize
        if t.data_location == TensorProto.EXTERNAL:
            self.place(node, name, t, nbytes)
            self.external.add(key)
        elif t.raw_data:
            if len(t.raw_data) != nbytes:
                raise self.fail(f"{where} declares {fmt_shape(dims)} ({nbytes:,} bytes) but holds "
                                f"{len(t.raw_data):,} bytes")
        else:
            held = len(getattr(t, _fields()[t.data_type]))
            if held != count:
                raise self.fail(f"{where} declares {fmt_shape(dims)} ({count:,} values) but holds {held:,}")
        self.checked[key] = dims
        return dims

    def place(self, node, name, t, nbytes: int) -> tuple[str, int, int]:
        """Where an external tensor's bytes are: (real path, offset, length), inside the model's folder only."""
        where = f"{self.label(node)}: tensor {_show(name)}"
        if self.folder is None:
            raise self.fail(f"{where} keeps its data in an external file, which cnndsl reads only for a model "
                            "given as a file", "save the model to a file, or load its external data first")
        info: dict[str, str] = {}
        for entry in t.external_data:
            key = _text(entry.key)
            if key in info:
                raise self.fail(f"{where} gives its external '{_clean(key)}' twice")
            info[key] = _text(entry.value)
        location = info.get("location", "")
        try:
            offset = int(info.get("offset") or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise self.fail(f"{where} has an external offset or length that is not a number") from None
        if location not in self.places:
            try:
                self.places[location] = external_file(self.folder, location)
            except ValueError as e:
                raise self.fail(f"{where} has its external data at {_show(location)}, {e}",
                                "cnndsl reads external data only from files beside the model, named without '..'")
        real, size = self.places[location]
        if length is None:          # ONNX then reads to the end of the file
            length = size - offset
        if offset < 0 or length != nbytes or offset + length > size:
            raise self.fail(f"{where} declares {fmt_shape(tuple(t.dims))} ({nbytes:,} bytes), but its external "
                            f"data is {length:,} bytes at offset {offset:,} of a {size:,}-byte file")
        return real, offset, length

    def values(self, node, index: int, what: str, integers: bool = False, limit: int = MAX_VALUES,
               rank: Optional[int] = 1, minus_infinity: bool = False):
        """The values of a small constant input (None when left out): at most `limit` numbers, of the given
        rank (0: a scalar; None: any), finite (or -inf, where `minus_infinity`)."""
        t = self.const(node, index, what)
        if t is None:
            return None
        name = node.input[index]
        if isinstance(t, np.ndarray):
            array = t
        else:
            from onnx import numpy_helper
            dims = self.storage(node, name, t)
            if math.prod(dims) > limit:
                raise self.fail(f"{self.label(node)}: its {what} {_show(name)} has {math.prod(dims):,} values; "
                                f"cnndsl reads at most {limit} here")
            if id(t) in self.external:
                real, offset, length = self.place(node, name, t, math.prod(dims) * _np_dtype(t.data_type).itemsize)
                array = np.frombuffer(self.read(node, real, offset, length),
                                      _np_dtype(t.data_type).newbyteorder("<")).reshape(dims)
            else:
                array = numpy_helper.to_array(t)
        if array.size > limit:
            raise self.fail(f"{self.label(node)}: its {what} {_show(name)} has {array.size:,} values; "
                            f"cnndsl reads at most {limit} here")
        if array.dtype.kind not in "biuf":
            array = array.astype(np.float32)       # float16 / bfloat16 stored by ml_dtypes
        if rank is not None and array.ndim != rank:
            raise self.fail(f"{self.label(node)}: its {what} {_show(name)} must be "
                            f"{'a scalar' if rank == 0 else f'rank {rank}'}, not {fmt_shape(array.shape)}")
        if integers and array.dtype.kind not in "iu":
            raise self.fail(f"{self.label(node)}: its {what} {_show(name)} must hold integers")
        if not integers and array.dtype.kind == "f" and \
                not np.all(np.isfinite(array) | ((array == -np.inf) if minus_infinity else False)):
            raise self.fail(f"{self.label(node)}: its {what} {_show(name)} is not finite")
        return array

    def shown(self, node, index: int, array) -> str:
        """Values for a message: only small inline ones, never bytes read from an external file."""
        t = self.consts.get(node.input[index])
        if id(t) in self.external:
            return f"(external values of {_show(node.input[index])})"
        return "[" + ", ".join(str(v) for v in array.ravel()[:8].tolist()) + (", ...]" if array.size > 8 else "]")

    def read(self, node, real: str, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of a regular file (never more; never blocks on a FIFO)."""
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError as e:
            raise self.fail(f"{self.label(node)}: cannot open its external data ({e.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self.fail(f"{self.label(node)}: its external data is not in a regular file")
            chunks, got = [], 0
            while got < length:
                chunk = os.pread(fd, length - got, offset + got)
                if not chunk:
                    raise self.fail(f"{self.label(node)}: its external data file ends early")
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def scalar(self, node, index: int, what: str, rank: Optional[int] = None,
               minus_infinity: bool = False) -> Optional[float]:
        array = self.values(node, index, what, rank=rank, minus_infinity=minus_infinity)
        if array is None:
            return None
        if array.size != 1 or array.ndim > 1:     # a scalar, or (as ONNX Runtime takes it) a 1-element vector
            raise self.fail(f"{self.label(node)}: its {what} {_show(node.input[index])} must be one number, "
                            f"got {fmt_shape(array.shape)}")
        return float(array.ravel()[0])

    # ---------------------------------------------------------------- IR --
    def fresh(self, onnx_node, op: str, name: Optional[str] = None) -> str:
        """The IR name of what `onnx_node` makes: its name or output's, a numbered copy where that is taken."""
        name = _text(name or onnx_node.name or onnx_node.output[0]).strip("/").replace("/", ".") or op
        name = _bounded(name)
        if name in self.names:      # a numbered copy; each base counts on from its last suffix: linear
            base, i = name, self.suffix.get(name, 1)
            while name in self.names:
                i += 1
                name = f"{base}_{i}"
            self.suffix[base] = i
        return name

    def add(self, onnx_node, op: str, inputs: list[str], attrs: dict, output: Optional[str] = None,
            name: Optional[str] = None) -> str:
        name = self.fresh(onnx_node, op, name)
        try:
            shape = tuple(OPS[op].shape(attrs, [self.shape[s] for s in inputs]))
        except OpError as e:
            raise self.fail(f"{self.label(onnx_node)}: {e.message}") from None
        if len(shape) == 3 and max(shape) > limits.MAX_DIM:     # a flattened vector may be longer
            raise self.fail(f"{self.label(onnx_node)} makes a {fmt_shape(shape)} output, beyond the limit of "
                            f"{limits.MAX_DIM:,} per dimension")
        self.rows.append([name, op, tuple(inputs), attrs, shape, _stage(name)])
        self.names.add(name)
        self.shape[name] = shape
        self.alias[output or onnx_node.output[0]] = name
        self.made[name] = output or onnx_node.output[0]
        return name

    def define(self, value, what: str = "value") -> None:
        if value in self.defined:
            raise self.fail(f"the {what} {_show(value)} is defined twice", "ONNX defines every value once")
        self.defined.add(value)

    def graph_input(self):
        g = self.model.graph
        known = _data_types()
        for t in g.initializer:
            self.define(t.name, "initializer")
            if t.data_type not in known:     # ONNX Runtime refuses the model even when the tensor is unused
                raise self.fail(f"the initializer {_show(t.name)} has no valid element type ({t.data_type})")
            self.consts[t.name] = t
        inputs = [v for v in g.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise self.fail(f"the model has {len(inputs)} inputs; cnndsl imports single-input CNNs")
        v = inputs[0]
        self.define(v.name, "input")
        if not v.type.HasField("tensor_type"):
            raise self.fail(f"the input {_show(v.name)} is not a tensor")
        self.elem = v.type.tensor_type.elem_type
        if self.elem not in _floats():
            raise self.fail(f"the input {_show(v.name)} holds {_type_name(self.elem)}; cnndsl imports "
                            "floating-point images")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        if len(dims) != 4:
            raise self.fail(f"the input {_show(v.name)} has rank {len(dims)}; cnndsl imports N x C x H x W images")
        if dims[0] is not None and dims[0] < 1:
            raise self.fail(f"the input {_show(v.name)} has a batch size of {dims[0]}")
        self.batch = dims[0]
        if self.input_shape is not None:
            h, w, c = self.input_shape
        else:
            c, h, w = dims[1:]
            bad = [d for d in (c, h, w) if d is not None and d < 0]
            if bad:
                raise self.fail(f"the input {_show(v.name)} has a negative size {bad[0]}")
            if None in (c, h, w) or 0 in (c, h, w):
                raise self.fail("the model's input size is not fixed", "give it with --input HxWxC")
        for d in (c, h, w):
            if not 1 <= d <= limits.MAX_DIM:
                raise self.fail(f"the input size {h}x{w}x{c} is beyond the limit of {limits.MAX_DIM:,} per dimension")
        self.rows.append(["input", "input", (), {}, (c, h, w), "input"])
        self.names.add("input")
        self.shape["input"] = (c, h, w)
        self.alias[v.name] = "input"

    # ------------------------------------------------------------- nodes --
    def run(self) -> Graph:
        g = self.model.graph
        if not g.node:
            raise self.fail("the model has no nodes", "the file may be truncated or corrupt")
        if len(g.node) > limits.MAX_NODES:
            raise self.fail(f"the model has {len(g.node):,} nodes, beyond the limit of {limits.MAX_NODES:,}")
        import onnx
        from onnx import defs
        if not 0 <= self.model.ir_version <= onnx.IR_VERSION:
            raise self.fail(f"the model has IR version {self.model.ir_version}",
                            f"cnndsl reads IR versions up to {onnx.IR_VERSION}")
        if not 1 <= self.opset <= defs.onnx_opset_version():
            raise self.fail(f"the model imports ONNX opset {self.opset}" if self.opset else
                            "the model imports no ONNX opset", f"cnndsl reads opsets 1 to {defs.onnx_opset_version()}")
        self.graph_input()
        for node in g.node:
            for value in node.input:
                self.uses[value] = self.uses.get(value, 0) + 1
        for value in g.output:
            self.uses[value.name] = self.uses.get(value.name, 0) + 1
        for node in g.node:
            self.node(node)
        outputs = [o.name for o in g.output]
        if len(outputs) != 1:
            raise self.fail(f"the model has {len(outputs)} outputs; cnndsl imports single-output CNNs")
        if outputs[0] not in self.alias:
            raise self.fail(f"the output {_show(outputs[0])} is not produced by a supported node")
        if outputs[0] in self.nhwc:
            raise self.fail(f"the output {_show(outputs[0])} is in channels-last layout",
                            "cnndsl imports channels-last values only between a Transpose 0, 2, 3, 1 and its "
                            "Transpose 0, 3, 1, 2 back")
        declared = g.output[0].type.tensor_type.elem_type
        if g.output[0].type.HasField("tensor_type") and declared != self.elem:
            raise self.fail(f"the output {_show(outputs[0])} is declared as {_type_name(declared)}, but the model "
                            f"computes {_type_name(self.elem)}")
        last = self.alias[outputs[0]]
        if last == "input":
            raise self.fail("the model's output is its input: it has no layers")
        keep = {last}
        for row in reversed(self.rows):         # drop what does not lead to the output
            if row[0] in keep:
                keep.update(row[2])
        nodes = [make_node(name, op, inputs, attrs, shape, stage, None)
                 for name, op, inputs, attrs, shape, stage in self.rows if name in keep]
        if nodes[-1].name != last:
            raise self.fail("the output is not the last node")
        return verify(Graph(tuple(nodes), "", self.path))

    def node(self, node) -> None:
        """Check a node's domain, arity and outputs, then hand it to its handler; anything unexpected the
        handler meets becomes an import error that names the node."""
        op = _text(node.op_type)
        spec = OPSPEC.get(op) if node.domain in ("", "ai.onnx") else None
        if spec is None:
            raise self.fail(f"unsupported ONNX op {_clean(op, 40)}"
                            f"{f' (domain {_show(node.domain)})' if node.domain not in ('', 'ai.onnx') else ''} "
                            f"(node {_show(node.name or (node.output[0] if node.output else ''))})",
                            f"cnndsl imports: {SUPPORTED}")
        schema = _schema(op, self.opset)
        if schema is None:
            raise self.fail(f"{self.label(node)}: ONNX opset {self.opset} has no {op}")
        fewest, most, outputs, _ = spec
        fewest, outputs = max(fewest, schema.min_input), min(outputs, schema.max_output)
        most = schema.max_input if most is None else min(most, schema.max_input)
        count = len(node.input)
        if count < fewest or (most is not None and count > most):
            want = f"{fewest}" if fewest == most else f"{fewest} to {most}" if most < 1 << 20 else f"at least {fewest}"
            raise self.fail(f"{self.label(node)} has {count} input{'s' * (count != 1)}; {op} takes {want}")
        if fewest and not node.input[0]:
            raise self.fail(f"{self.label(node)} leaves out its first input")
        if not node.output or not node.output[0]:
            raise self.fail(f"{self.label(node)} has no output")
        if len(node.output) > outputs:
            raise self.fail(f"{self.label(node)} has {len(node.output)} outputs; {op} makes at most {outputs}")
        for value in node.output:
            if value:
                self.define(value)
        a = self.attrs(node, schema)
        self.types(node, schema)
        try:
            if self.nhwc and any(v in self.nhwc for v in node.input):
                self._channels_last(node, a, op)
            elif op == "Transpose" and self._to_channels_last(node, a):
                pass
            elif op in _FOLDED and self.fold(node, a, op):
                pass
            else:
                self.dispatch(node, a, op)
        except (CnnDslError, MemoryError, RecursionError):
            raise
        except Exception as e:  # the last line of defence: a malformed node no check above foresaw
            raise self.fail(f"malformed ONNX node {self.label(node)}: {type(e).__name__}: {_clean(e, 100)}") from None

    def dispatch(self, node, a, op: str) -> None:
        """Hand a checked node to its reader: the importer's own (n_<op>), its op family's (ops.IMPORTS), or
        the generic reader of a one-node activation."""
        handler = getattr(self, "n_" + op, None)
        if handler is not None:
            handler(node, a)
        elif op in IMPORTS:
            IMPORTS[op].read(self, node, a)
        else:
            self._activation(node, a)

    def n_Constant(self, node, a):
        if len(a) != 1:
            raise self.fail(f"{self.label(node)} must have exactly one value attribute")
        (key, attr), = a.items()
        if key == "value":
            value = self._attr(node, a, key, "TENSOR").t
        elif key in ("value_float", "value_floats"):
            self._attr(node, a, key, "FLOAT" if key == "value_float" else "FLOATS")
            value = np.asarray(attr.f if key == "value_float" else list(attr.floats)[:MAX_VALUES + 1], np.float32)
        else:
            self._attr(node, a, key, "INT" if key == "value_int" else "INTS")
            value = np.asarray(attr.i if key == "value_int" else list(attr.ints)[:MAX_VALUES + 1], np.int64)
        self.consts[node.output[0]] = value

    def n_Identity(self, node, a):
        from ..ir.ops.regularize import DROPPATH_DOC, read_droppath
        if node.input[0] in self.consts:       # exporters alias shared weights through Identity
            self.consts[node.output[0]] = self.consts[node.input[0]]
        elif _text(node.doc_string).startswith(DROPPATH_DOC):     # cnndsl's droppath, noted with its rate
            read_droppath(self, node, _text(node.doc_string))
        else:
            self.alias[node.output[0]] = self.src(node.input[0])

    def spatial_pads(self, node, a: dict, kernel, strides, dilations, in_shape, pool: bool = False):
        auto = self.string(node, a, "auto_pad", "NOTSET", ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"))
        pads = self.ints(node, a, "pads", None, length=4, low=0)
        if auto != "NOTSET" and pads is not None:
            raise self.fail(f"{self.label(node)} has both auto_pad and pads")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if tuple(dilations) != (1, 1):      # ONNX Runtime refuses it: no agreed padding to compare with
                raise self.fail(f"{self.label(node)} has auto_pad={auto} with dilations {fmt_shape(dilations)}",
                                "ONNX Runtime does not run this either; give explicit pads")
            begin, end = [], []
            for n, k, s, d in zip(in_shape[1:], kernel, strides, dilations):
                total = (-(-n // s) - 1) * s + d * (k - 1) + 1 - n
                if total < 0 and pool:     # ONNX Runtime's pooling refuses a negative padding, its Conv clamps it
                    raise self.fail(f"{self.label(node)}: auto_pad={auto} with kernel {k} and stride {s} over "
                                    f"{n} gives a negative padding")
                total = max(0, total)
                small, large = total // 2, total - total // 2
                begin.append(small if auto == "SAME_UPPER" else large)
                end.append(large if auto == "SAME_UPPER" else small)
            return begin, end
        pads = list(pads or (0, 0, 0, 0))
        return pads[:2], pads[2:]

    def n_Add(self, node, a):
        self.int_(node, a, "axis")
        self.int_(node, a, "broadcast")
        consts = [i for i, v in enumerate(node.input) if v in self.consts]
        erf = [v for v in node.input if self.parts.get(v, (None,))[0] == "erf"]
        if consts and erf:              # 1 + erf(x / sqrt 2): part of a gelu
            if abs((self.scalar(node, consts[0], "addend") or 0) - 1.0) > 1e-9 or not self._single_use(erf[0]):
                raise self.fail(f"{self.label(node)} is not part of a gelu (1 + erf)")
            self.parts[node.output[0]] = ("1+erf", self.parts[erf[0]][1])
            return
        if consts and len(consts) < len(node.input) and self._layer_norm_add(node, consts[0]):
            return
        if consts:      # MatMul + Add(bias): the bias of a linear layer (or of a 1x1 conv over channels last)
            if len(consts) == len(node.input):
                raise self.fail(f"{self.label(node)} adds constants only")
            value = node.input[1 - consts[0]]
            other = self.src(value)
            row = self.rows[-1]
            bias = self.dims(node, consts[0], "bias")
            pointwise = row[1] == "conv" and row[0] in self.pointwise and value in self.nhwc
            if row[0] == other and (row[1] == "fc" or pointwise) and not row[3]["bias"] and (
                    bias in ((row[3]["out"],), (1, row[3]["out"])) or (pointwise and self._per_channel(bias, value))):
                # the bias becomes part of the layer: anything else reading the layer's output would get it too
                if self.made.get(other) != value or self.uses.get(value, 0) != 1:
                    raise self.fail(f"{self.label(node)} adds a bias to {_show(value)}, which is also used "
                                    "without it", "cnndsl imports a MatMul + Add as one linear layer only when "
                                    "nothing else reads the MatMul's output")
                row[3]["bias"] = True
                self.alias[node.output[0]] = other
                return
            raise self.fail(f"{self.label(node)} adds a constant that is not a linear layer's bias")
        self.add(node, "add", [self.src(i) for i in node.input], {})

    def n_Sum(self, node, a):
        if len(node.input) == 1:
            self.alias[node.output[0]] = self.data(node)
            return
        self.add(node, "add", [self.src(i) for i in node.input], {})

    def n_Concat(self, node, a):
        axis = self.int_(node, a, "axis")
        if axis is None:
            raise self.fail(f"{self.label(node)} has no axis")
        if all(i in self.bands for i in node.input):
            if not -4 <= axis < 4:
                raise self.fail(f"{self.label(node)}: axis {axis} is out of range for its rank-4 inputs")
            return self._band_concat(node, axis)
        inputs = [self.src(i) for i in node.input]
        rank = len(self.shape[inputs[0]]) + 1
        if not -rank <= axis < rank:
            raise self.fail(f"{self.label(node)}: axis {axis} is out of range for its rank-{rank} inputs")
        if axis % rank != 1:
            raise self.fail(f"{self.label(node)} joins on axis {axis}; cnndsl concatenates channels (axis 1)")
        if len(inputs) == 1:
            self.alias[node.output[0]] = inputs[0]
            return
        self.add(node, "concat", inputs, {})

    def n_Pad(self, node, a):
        src = self.data(node)
        mode = self.string(node, a, "mode", "constant", ("constant", "reflect", "edge", "wrap"))
        if len(node.input) > 3 and node.input[3]:
            raise self.fail(f"{self.label(node)} pads chosen axes; cnndsl imports a Pad of all four axes")
        if len(node.input) > 1:
            if "pads" in a or "value" in a:
                raise self.fail(f"{self.label(node)} gives its pads both as an input and as an attribute")
            pads = self.values(node, 1, "pads", integers=True)
            if pads is None:
                raise self.fail(f"{self.label(node)} has no pads")
            pads = pads.ravel().tolist()
            value = self.scalar(node, 2, "padding value", minus_infinity=True) or 0.0
        else:
            pads = list(self.ints(node, a, "pads", (), low=None))
            attr = self._attr(node, a, "value", "FLOAT")
            value = -math.inf if attr is not None and attr.f == -math.inf else self.float_(node, a, "value", 0.0)
        # zeros, as the padding an average counts (cnndsl's avgpool); -inf, as max pooling pads (what cnndsl
        # writes where ONNX's own pads cannot reach): the pooling after it sorts out the windows
        if mode != "constant" or value not in (0.0, -math.inf) or len(pads) != 8 or pads[:2] != [0, 0] or \
                pads[4:6] != [0, 0] or min(pads) < 0:
            raise self.fail(f"{self.label(node)} is not a zero (or -inf) padding of height and width")
        self.within(node, "the padding", pads, 0)
        self.spatial(node, src)
        self.pads[node.output[0]] = (src, tuple(pads[2:4]), tuple(pads[6:8]), value)

    def n_Reshape(self, node, a):
        zero_is_zero = self.int_(node, a, "allowzero", 0, (0, 1))
        symbolic = self.symbolic.get(node.input[1])
        if symbolic is not None and symbolic.ndim != 1:
            raise self.fail(f"{self.label(node)}: its shape {_show(node.input[1])} must be rank 1")
        values = self.values(node, 1, "shape", integers=True, limit=8) if symbolic is None else symbolic
        if values is None:
            raise self.fail(f"{self.label(node)} has no shape")
        target = [None if v is None else int(v) for v in values.ravel()]
        pending = self.shuffles.get(node.input[0])
        if pending is not None or len(target) == 5 or None in target:    # a channel shuffle, or sizes from Shape
            from ..ir.ops.channels import read_shuffle_reshape
            dims = self.reshape_dims(node, pending[3] if pending else self.shape[self.data(node)], target,
                                     zero_is_zero)
            if read_shuffle_reshape(self, node, node.input[0], list(dims)):
                return None
            if len(dims) == 1:
                return self.add(node, "flatten", [self.data(node)], {})
            raise self.fail(f"{self.label(node)} to N x {fmt_shape(dims)} is neither a flatten to N x features nor "
                            "part of a channel shuffle")
        src = self.data(node)
        size = math.prod(self.shape[src])
        if len(target) == 2 and target[1] in (-1, size) and \
                target[0] in ((-1, 1) if zero_is_zero else (0, -1, 1)) and target != [-1, -1]:
            if target[0] == 1 and self.batch != 1:
                raise self.fail(f"{self.label(node)} to {self.shown(node, 1, values)} makes one row of a whole "
                                f"batch, but the model's batch is {self.batch or 'not fixed'}",
                                "reshape to [0, -1] or [-1, features], or fix the batch at 1")
            return self.add(node, "flatten", [src], {})
        raise self.fail(f"{self.label(node)} to {self.shown(node, 1, values)} is not a flatten to N x features")

    def reshape_dims(self, node, dims: tuple, target: list, allowzero: int) -> tuple:
        """What a Reshape of an N x `dims` value to `target` (None: the batch, from a Shape) makes after the
        batch, which must stay first; anything else is refused."""
        full, out = (None,) + tuple(dims), []
        for i, v in enumerate(target):
            if v == 0 and not allowzero:
                if i >= len(full):
                    raise self.fail(f"{self.label(node)} copies dimension {i} of a rank-{len(full)} input")
                v = full[i]
            elif (v is not None and v < -1) or (v is None and i):
                raise self.fail(f"{self.label(node)} to {target[:8]} is not a reshape that keeps the batch first")
            out.append(v)
        size = math.prod(dims)
        first, rest = out[0], out[1:]
        if out.count(-1) > 1 or (first == -1 and -1 in rest):
            raise self.fail(f"{self.label(node)} infers more than one dimension (-1)")
        if first is not None and first != -1 and first != self.batch:
            raise self.fail(f"{self.label(node)} to {target[:8]} makes {first} rows of a whole batch, but the model's "
                            f"batch is {self.batch or 'not fixed'}", "reshape with the batch copied (0) or inferred (-1)")
        known = math.prod(d for d in rest if d != -1)
        if -1 in rest:
            if known == 0 or size % known:
                raise self.fail(f"{self.label(node)} cannot infer a dimension of {target[:8]} from {size:,} values")
            rest[rest.index(-1)] = size // known
        if math.prod(rest) != size or min(rest, default=1) < 1:
            raise self.fail(f"{self.label(node)} reshapes N x {fmt_shape(tuple(dims))} to {target[:8]}")
        return tuple(rest)

    # --------------------------------- shape arithmetic (Shape, Gather ...) --
    def known(self, node, index: int):
        """An input's integer values as an object array (None for the batch), or None when they are not known."""
        value = node.input[index] if index < len(node.input) else ""
        if value in self.symbolic:
            return self.symbolic[value]
        t = self.consts.get(value) if value else None
        if t is None:
            return None
        dtype = t.dtype if isinstance(t, np.ndarray) else _np_dtype(t.data_type)
        if dtype is None or dtype.kind not in "iu":
            return None
        return np.array(self.values(node, index, "sizes", integers=True, rank=None).tolist(), dtype=object)

    def keep(self, node, array) -> None:
        """The output of a size computation: bounded, kept (as a constant too, when it holds no batch)."""
        array = np.asarray(array, dtype=object)
        if array.size > MAX_VALUES or array.ndim > 2:
            raise self.fail(f"{self.label(node)} computes {array.size:,} sizes; cnndsl reads at most {MAX_VALUES}")
        if any(v is not None and not -(1 << 63) <= v < 1 << 63 for v in array.ravel()):
            raise self.fail(f"{self.label(node)} computes a size beyond 64-bit integers")
        self.symbolic[node.output[0]] = array
        if not any(v is None for v in array.ravel()):
            self.consts[node.output[0]] = np.array(array.tolist(), dtype=np.int64).reshape(array.shape)

    def fold(self, node, a, op) -> bool:
        """Integer arithmetic and Concat on sizes, when every input is known; False leaves the node to its reader."""
        arrays = [self.known(node, i) for i in range(len(node.input))]
        if not arrays or any(x is None for x in arrays):
            return False
        if op == "Concat":
            axis = self.int_(node, a, "axis")
            if any(x.ndim != 1 for x in arrays) or axis not in (0, -1):
                raise self.fail(f"{self.label(node)} joins sizes other than along one axis")
            self.keep(node, np.concatenate(arrays))
            return True
        self.int_(node, a, "axis")
        self.int_(node, a, "broadcast")
        x, y = arrays
        if any(v is None for v in list(x.ravel()) + list(y.ravel())):
            raise self.fail(f"{self.label(node)} computes with the batch size",
                            "cnndsl imports sizes computed from channels, height and width")
        if op == "Div":
            if any(v == 0 for v in y.ravel()):
                raise self.fail(f"{self.label(node)} divides by zero")
            # integers divide towards zero in ONNX
            div = np.frompyfunc(lambda p, q: abs(p) // abs(q) * (1 if (p < 0) == (q < 0) else -1), 2, 1)
            self.keep(node, div(x, y))
        else:
            self.keep(node, {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](x, y))
        return True

    def n_Sub(self, node, a):
        self.int_(node, a, "axis")
        self.int_(node, a, "broadcast")
        x, mean = node.input
        form, of = self.parts.get(mean, (None, None))
        if form == "ln mean" and of == x and self._single_use(mean):     # x - mean(x): a layer norm's
            self.parts[node.output[0]] = ("ln centered", x)
            return
        raise self.fail(f"{self.label(node)} subtracts values; cnndsl imports Sub only on sizes and as a layer "
                        "norm's x - mean(x)", f"cnndsl imports: {SUPPORTED}")

    def n_Shape(self, node, a):
        shape = (self.batch,) + tuple(self.shape[self.data(node)])
        start, end = self.int_(node, a, "start", 0), self.int_(node, a, "end", len(shape))
        self.keep(node, np.array(shape[slice(start, end)], dtype=object))

    def n_Gather(self, node, a):
        data, indices = self.known(node, 0), self.known(node, 1)
        if data is None:
            self.src(node.input[0])
            raise self.fail(f"{self.label(node)} gathers from a feature map; cnndsl imports Gather only on sizes")
        if indices is None:
            raise self.fail(f"{self.label(node)} takes computed indices; cnndsl imports Gather only on sizes")
        axis = self.int_(node, a, "axis", 0)
        if data.ndim != 1 or axis not in (0, -1) or any(v is None for v in indices.ravel()):
            raise self.fail(f"{self.label(node)} is not a pick of sizes from a list of sizes")
        for v in indices.ravel():
            if not -data.size <= v < data.size:
                raise self.fail(f"{self.label(node)}: index {v} is out of range for {data.size} sizes")
        self.keep(node, np.take(data, np.array(indices.tolist(), dtype=np.int64).reshape(indices.shape)))

    def n_Unsqueeze(self, node, a):
        data = self.known(node, 0)
        if data is None:
            self.src(node.input[0])
            raise self.fail(f"{self.label(node)} unsqueezes a feature map; cnndsl imports Unsqueeze only on sizes")
        axes = self.known(node, 1) if len(node.input) > 1 else None
        if axes is not None and any(v is None for v in axes.ravel()):
            raise self.fail(f"{self.label(node)} takes its axes from the batch size")
        axes = [int(v) for v in axes.ravel()] if axes is not None else list(self.ints(node, a, "axes", (), low=None))
        rank = data.ndim + len(axes)
        if not axes or any(not -rank <= v < rank for v in axes) or len({v % rank for v in axes}) != len(axes) or \
                rank > 2:
            raise self.fail(f"{self.label(node)} has axes {axes[:8]} for a rank-{data.ndim} input")
        self.keep(node, np.expand_dims(data, tuple(sorted(v % rank for v in axes))))

    def n_Cast(self, node, a):
        from onnx import TensorProto as T
        data = self.known(node, 0)
        to = self.int_(node, a, "to")
        self.int_(node, a, "saturate")
        if data is None or to not in (T.INT64, T.INT32):
            self.src(node.input[0])
            raise self.fail(f"{self.label(node)} casts values; cnndsl imports Cast only of sizes to integers")
        self.keep(node, data)

    def _activation(self, node, a):
        """An activation read from the one ONNX op its module names, with its options and fixed attributes."""
        op = ACTIVATION_IMPORTS[_text(node.op_type)]
        src = self.data(node)
        self.ints(node, a, "consumed_inputs", high=1 << 62)
        for key, (want, default) in op.onnx_fixed.items():
            got = self.float_(node, a, key, default)
            if abs(got - want) > 1e-6:
                raise self.fail(f"{self.label(node)} has {key} {got:g}; cnndsl's {op.name} has {want:g}")
        self.add(node, op.name, [src], {k: self.float_(node, a, key, default)
                                        for k, (key, default) in op.onnx_options.items()})

    def n_Tanh(self, node, a):
        form, x = self.parts.get(node.input[0], (None, None))
        if form == "softplus" and self._single_use(node.input[0]):     # tanh(softplus(x)): a mish's gate
            self.parts[node.output[0]] = ("tanh(softplus)", x)
            return
        self._activation(node, a)

    # ------------------------------------ activations written as several nodes --
    def _single_use(self, value: str) -> bool:
        return self.uses.get(value, 0) == 1

    def n_Softplus(self, node, a):
        self.parts[node.output[0]] = ("softplus", self.data(node))

    def n_Erf(self, node, a):
        form, x = self.parts.get(node.input[0], (None, None))
        if form != "x/sqrt2" or not self._single_use(node.input[0]):
            raise self.fail(f"{self.label(node)} is not part of a gelu (Erf of x / sqrt 2)")
        self.parts[node.output[0]] = ("erf", x)

    def n_Div(self, node, a):
        self.int_(node, a, "axis")
        self.int_(node, a, "broadcast")
        if self._layer_norm_div(node):
            return
        value = self.scalar(node, 1, "divisor") if node.input[1] in self.consts else None
        if value is None or abs(value - 2 ** 0.5) > 1e-6:
            raise self.fail(f"{self.label(node)} is not part of a gelu (x / sqrt 2) or a layer norm "
                            "((x - mean) / sqrt(var + eps))")
        self.parts[node.output[0]] = ("x/sqrt2", self.data(node))

    def _rewrite_last(self, node, x: str, gate: str, was: str, now: str) -> bool:
        """x * gate(x), where gate(x) is an IR node `was` read only here: that node becomes `now`."""
        name = self.alias.get(gate)
        row = next((r for r in reversed(self.rows) if r[0] == name), None) if name else None
        if row is None or row[1] != was or row[2] != (x,) or not self._single_use(gate):
            return False
        row[1] = now
        if not any(name in r[2] for r in self.rows):    # named as the Mul that ends it, as gelu and mish are
            self.names.discard(name)
            new = self.fresh(node, now)
            row[0], row[5] = new, _stage(new)
            self.names.add(new)
            self.shape[new] = self.shape.pop(name)
            self.made.pop(name, None)
            self.made[new] = node.output[0]
            for value, target in self.alias.items():
                if target == name:
                    self.alias[value] = new
            name = new
        self.alias[node.output[0]] = name
        return True

    def n_Mul(self, node, a):
        self.int_(node, a, "axis")
        self.int_(node, a, "broadcast")
        p, q = node.input
        if p in self.consts and q in self.consts:
            raise self.fail(f"{self.label(node)} multiplies constants only")
        for first, second in ((p, q), (q, p)):
            if first in self.consts:
                return self._mul_by_constant(node, list(node.input).index(first), second)
        parts = {self.parts.get(v, (None, None))[0]: v for v in (p, q) if v in self.parts}
        if set(parts) == {"x/2", "1+erf"}:                              # x/2 * (1 + erf(x / sqrt 2)): gelu
            x = {self.parts[v][1] for v in parts.values()}
            if len(x) == 1 and all(self._single_use(v) for v in parts.values()):
                self.add(node, "gelu", [x.pop()], {})
                return
        if set(parts) == {"1+erf"} and p != q:      # x * (1 + erf(x / sqrt 2)), halved next: torch.onnx's gelu
            gate = parts["1+erf"]
            x_value = q if gate == p else p
            if x_value in self.alias and self.src(x_value) == self.parts[gate][1] and self._single_use(gate):
                self.parts[node.output[0]] = ("x(1+erf)", self.parts[gate][1])
                return
        if p == q and set(parts) == {"ln centered"}:                    # (x - mean) * (x - mean): a layer norm's
            self.parts[node.output[0]] = ("ln sq", (self.parts[p][1], p, 3))    # read here twice and by the Div
            return
        for x_value, gate in ((p, q), (q, p)):
            if x_value in self.parts or x_value in self.consts:
                continue
            x = self.src(x_value)
            if self.parts.get(gate, (None, None)) == ("tanh(softplus)", x) and self._single_use(gate):
                self.add(node, "mish", [x], {})
                return
            if self._rewrite_last(node, x, gate, "sigmoid", "silu") or \
                    self._rewrite_last(node, x, gate, "hardsigmoid", "hardswish"):
                return
        self._mul(node, p, q)

    def _mul(self, node, p: str, q: str) -> None:
        """The product of two values: a mul (one of them may be C x 1 x 1, broadcast); a chain of products, each
        read only by the next, is one mul of all their inputs (as ONNX's two-input Mul writes mul(a, b, c))."""
        inputs = [self.src(p), self.src(q)]
        row = self.rows[-1]
        for i, value in enumerate((p, q)):
            if p != q and row[1] == "mul" and row[0] == inputs[i] and self.made.get(row[0]) == value and \
                    self._single_use(value):
                joined = row[2] + (inputs[1 - i],)
                try:
                    shape = tuple(OPS["mul"].shape({}, [self.shape[v] for v in joined]))
                except OpError as e:
                    raise self.fail(f"{self.label(node)}: {e.message}") from None
                row[2], row[4] = joined, shape
                self.shape[row[0]] = shape
                self.alias[node.output[0]] = row[0]
                self.made[row[0]] = node.output[0]
                return
        self.add(node, "mul", inputs, {})

    def _mul_by_constant(self, node, index: int, value: str) -> None:
        """`value` times the constant at input `index`: the 1/2 of a gelu, a layer norm's weight, or one factor
        per channel (a layer scale)."""
        form, of = self.parts.get(value, (None, None))
        dims = self.dims(node, index, "factor")
        half = math.prod(dims) == 1 and len(dims) <= 1 and abs(self.scalar(node, index, "factor") - 0.5) < 1e-9
        if form == "ln normed":
            if not self._single_use(value) or not self._per_channel(dims, of[0]):
                raise self.fail(f"{self.label(node)} does not scale a layer norm by one weight per channel")
            self.parts[node.output[0]] = ("ln scaled", of)
            return
        if form == "x(1+erf)" and half and self._single_use(value):      # x * (1 + erf(x / sqrt 2)) / 2
            self.add(node, "gelu", [of], {})
            return
        if half and value not in self.parts:                             # x * 0.5: half of a gelu's input
            self.parts[node.output[0]] = ("x/2", self.src(value))
            return
        src = self.src(value)
        if self._per_channel(dims, value):
            from ..ir.ops.scale import read_layer_scale
            return read_layer_scale(self, node, src)
        raise self.fail(f"{self.label(node)} scales by a constant of {fmt_shape(dims)}, neither a gelu's 1/2 nor "
                        f"one factor per channel of its N x {fmt_shape(self.shape[src])} input (a layer scale)")

    def _per_channel(self, dims, value: str) -> bool:
        """Whether a constant of `dims` holds one number per channel of the feature value `value`, as ONNX
        broadcasts it: C x 1 x 1 on N x C x H x W; C (with leading ones) on a vector or a channels-last value."""
        if dims is None:
            return False
        shape = self.shape[self.alias[value]]
        c, dims = shape[0], tuple(dims)
        if len(shape) == 1 or value in self.nhwc:
            return len(dims) <= len(shape) + 1 and dims[-1:] == (c,) and all(d == 1 for d in dims[:-1])
        return dims in ((c, 1, 1), (1, c, 1, 1))

    # ----------------------------- channels last: LayerNorm2d, ConvNeXt's pointwise layers --
    def channels_last(self, value: str) -> bool:
        """Whether an ONNX value is in channels-last layout (N x H x W x C of its IR node's C x H x W)."""
        return value in self.nhwc

    def _to_channels_last(self, node, a) -> bool:
        """A Transpose 0, 2, 3, 1 of a feature map (its output is then channels-last), or of a constant (a weight
        transposed for a MatMul, as torch.onnx writes it without constant folding). False: another Transpose,
        left to its family's reader."""
        value = node.input[0]
        perm = self.ints(node, a, "perm", low=None, high=1 << 62)
        if value in self.consts:
            self._transposed_constant(node, perm)
            return True
        if value in self.alias and perm == (0, 2, 3, 1) and len(self.shape[self.alias[value]]) == 3:
            self.alias[node.output[0]] = self.alias[value]
            self.nhwc.add(node.output[0])
            return True
        if "Transpose" not in IMPORTS:
            self.src(value)
            raise self.fail(f"{self.label(node)} transposes a feature map other than to channels last (0, 2, 3, 1)")
        return False

    def _transposed_constant(self, node, perm) -> None:
        name = node.input[0]
        t = self.consts[name]
        if isinstance(t, np.ndarray):
            dims, dtype = tuple(t.shape), t.dtype
        else:
            dims, dtype = self.storage(node, name, t), _np_dtype(t.data_type)
        perm = tuple(reversed(range(len(dims)))) if perm is None else perm
        if sorted(perm) != list(range(len(dims))):
            raise self.fail(f"{self.label(node)}: perm {list(perm)[:8]} does not order the {len(dims)} axes of "
                            f"its {fmt_shape(dims)} input")
        if math.prod(dims) <= MAX_VALUES:
            self.consts[node.output[0]] = np.transpose(self.values(node, 0, "tensor", rank=None), perm)
        else:       # a weight, read as its shape only: a stand-in of the transposed shape that holds nothing
            self.consts[node.output[0]] = np.broadcast_to(np.zeros((), dtype), tuple(dims[i] for i in perm))

    def _channels_last(self, node, a, op: str) -> None:
        """A node that reads a channels-last value: the Transpose back, a MatMul over the channels (a 1x1
        convolution), or an op that computes the same in either layout (elementwise, or over the channel axis
        where it says so); its output stays channels-last."""
        value = next(v for v in node.input if v in self.nhwc)
        if op not in _CHANNELS_LAST and op not in ACTIVATION_IMPORTS:
            raise self.fail(f"{self.label(node)} reads the channels-last value {_show(value)}",
                            "cnndsl imports channels-last values only inside a LayerNorm2d or a ConvNeXt block: "
                            "layer norm, MatMul (+Add), activations, then Transpose 0, 3, 1, 2")
        mixed = [v for v in node.input if v and v not in self.nhwc and v not in self.consts]
        if mixed:
            raise self.fail(f"{self.label(node)} joins the channels-last value {_show(value)} and the "
                            f"channels-first value {_show(mixed[0])}")
        self.layout_free = True
        try:
            if op == "Transpose":
                perm = self.ints(node, a, "perm", low=None, high=1 << 62)
                if perm != (0, 3, 1, 2):
                    raise self.fail(f"{self.label(node)} has perm {list(perm) if perm else 'reversed'}; a "
                                    "channels-last value goes back with perm 0, 3, 1, 2")
                self.alias[node.output[0]] = self.src(value)       # channels first again
                return
            if op == "MatMul":
                self._pointwise(node)
            else:
                self.dispatch(node, a, op)
        finally:
            self.layout_free = False
        self.nhwc.add(node.output[0])

    def _pointwise(self, node) -> None:
        """MatMul of a channels-last value by a C x D weight: a 1x1 convolution to D channels (nn.Linear on
        N x H x W x C, ConvNeXt's pointwise layers); its bias is the Add after it."""
        src = self.data(node)
        shape = self.shape[src]
        weight = self.dims(node, 1, "weight", required=True)
        if len(weight) != 2 or weight[0] != shape[0]:
            raise self.fail(f"{self.label(node)}: its {fmt_shape(weight)} weight does not map the {shape[0]:,} "
                            "channels of its channels-last input", "a pointwise layer's weight is C x D")
        self.within(node, "the output channel count", (weight[1],), 1, limits.MAX_DIM)
        try:
            attrs = OPS["conv"].build(LayerArgs("conv", 1, weight[1], None, {"bias": False}), shape)
        except OpError as e:
            raise self.fail(f"{self.label(node)}: {e.message}") from None
        self.pointwise.add(self.add(node, "conv", [src], attrs))

    # --------------------- layer norm at older opsets: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add --
    # over the channel axis (the last of a channels-last value or a vector, 1 of N x C x H x W); each piece is read
    # by the next only, and the pieces of one layer norm name the same x
    def _layer_norm_mean(self, node, axis: int) -> None:
        """ReduceMean over the channels, keeping them: mean(x), or mean((x - mean)^2), a layer norm's variance."""
        value = node.input[0]
        form, of = self.parts.get(value, (None, None))
        x = of[0] if form == "ln sq" else value
        shape = self.shape[self.src(x)]
        rank = len(shape) + 1
        channel = rank - 1 if x in self.nhwc or len(shape) == 1 else 1
        if not -rank <= axis < rank or axis % rank != channel:
            raise self.fail(f"{self.label(node)} averages over axis {axis} of its {'channels-last ' * (x in self.nhwc)}"
                            f"rank-{rank} input; cnndsl imports ReduceMean outside adaptive pooling only as a layer "
                            "norm's mean over the channels", f"cnndsl imports: {SUPPORTED}")
        if form == "ln sq":
            if not self._single_use(value):
                raise self.fail(f"{self.label(node)}: the squares it averages are also read elsewhere")
            self.parts[node.output[0]] = ("ln var", of)
        else:
            self.parts[node.output[0]] = ("ln mean", x)

    def _layer_norm_add(self, node, index: int) -> bool:
        """var + eps, or the bias after the weight (then the layer norm is whole); False for other Adds."""
        value = node.input[1 - index]
        form, of = self.parts.get(value, (None, None))
        if form not in ("ln var", "ln scaled"):
            return False
        if not self._single_use(value):
            raise self.fail(f"{self.label(node)}: the layer norm piece {_show(value)} is also read elsewhere")
        if form == "ln var":
            from ..ir.ops.norm import layer_norm_eps
            eps = layer_norm_eps(self, node, self.scalar(node, index, "epsilon"))
            self.parts[node.output[0]] = ("ln var+eps", of + (eps,))
            return True
        x, eps = of
        if not self._per_channel(self.dims(node, index, "bias"), x):
            raise self.fail(f"{self.label(node)} does not add one bias per channel to a layer norm")
        self.add(node, "layernorm", [self.src(x)], {"eps": eps})
        return True

    def n_Pow(self, node, a):
        self.int_(node, a, "axis")
        self.int_(node, a, "broadcast")
        centered = node.input[0]
        form, x = self.parts.get(centered, (None, None))
        exponent = self.scalar(node, 1, "exponent") if node.input[1] in self.consts else None
        if form != "ln centered" or exponent != 2.0:
            if form is None:
                self.src(centered)
            raise self.fail(f"{self.label(node)} is not part of a layer norm ((x - mean) ^ 2)",
                            f"cnndsl imports: {SUPPORTED}")
        self.parts[node.output[0]] = ("ln sq", (x, centered, 2))     # x - mean is read here and by the Div

    def n_Sqrt(self, node, a):
        value = node.input[0]
        form, of = self.parts.get(value, (None, None))
        if form != "ln var+eps" or not self._single_use(value):
            if form is None:
                self.src(value)
            raise self.fail(f"{self.label(node)} is not part of a layer norm (sqrt(var + eps))",
                            f"cnndsl imports: {SUPPORTED}")
        self.parts[node.output[0]] = ("ln std", of)

    def _layer_norm_div(self, node) -> bool:
        centered, std = node.input
        form, of = self.parts.get(std, (None, None))
        if form != "ln std":
            return False
        x, piece, reads, eps = of
        if centered != piece or not self._single_use(std) or self.uses.get(centered, 0) != reads:
            raise self.fail(f"{self.label(node)} does not divide x - mean by the deviation of the same x, or their "
                            "pieces are also read elsewhere")
        self.parts[node.output[0]] = ("ln normed", (x, eps))
        return True

    # ------------------------------------------ uneven adaptive pooling --
    def _axis(self, node, value: int) -> int:
        if value not in (2, 3, -2, -1):
            raise self.fail(f"{self.label(node)} works on axis {value}; cnndsl imports it only as "
                            "part of adaptive pooling over height or width")
        return value % 4

    def n_Slice(self, node, a):
        data = node.input[0]
        if data not in self.alias and data not in self.rows_pooled:
            self.src(data)
        starts, ends = (self.values(node, i, what, integers=True) for i, what in ((1, "starts"), (2, "ends")))
        axes = self.values(node, 3, "axes", integers=True)
        steps = self.values(node, 4, "steps", integers=True)
        if starts is None or ends is None or axes is None or starts.size != 1 or ends.size != 1 or \
                axes.size != 1 or (steps is not None and steps.ravel().tolist() != [1]):
            raise self.fail(f"{self.label(node)} is not one band of an adaptive pooling",
                            "cnndsl imports Slice only in the pattern its own exporter writes for adaptive pooling")
        rank = len(self.shape[self.alias[data]]) + 1 if data in self.alias else 4
        if int(axes.ravel()[0]) in (1, 1 - rank):      # a channel range
            from ..ir.ops.channels import read_channel_slice
            return read_channel_slice(self, node, self.src(data), int(starts.ravel()[0]), int(ends.ravel()[0]))
        if int(axes.ravel()[0]) not in (2, 3, -2, -1):
            raise self.fail(f"{self.label(node)} works on axis {int(axes.ravel()[0])}; cnndsl imports Slice on "
                            "channels (axis 1) and as a band of adaptive pooling over height or width")
        self.slices[node.output[0]] = (data, self._axis(node, int(axes.ravel()[0])), int(starts.ravel()[0]),
                                       int(ends.ravel()[0]))

    def _reduce(self, node, a, kind):
        piece = self.slices.get(node.input[0])
        axes = self.values(node, 1, "axes", integers=True)
        if axes is None:
            axes = self.ints(node, a, "axes", high=1 << 62)
        keep = self.int_(node, a, "keepdims", 1, (0, 1))
        self.int_(node, a, "noop_with_empty_axes", 0, (0, 1))
        if piece is None and kind == "avg" and axes is not None and np.size(axes) == 1 and keep:
            return self._layer_norm_mean(node, int(np.ravel(axes)[0]))
        if piece is None and axes is not None and np.size(axes) == 2 and node.input[0] in self.alias and \
                sorted(int(v) % 4 for v in np.ravel(axes)) == [2, 3]:
            return self._global_pool(node, kind, keep)
        if piece is None or axes is None or np.size(axes) != 1 or not keep:
            raise self.fail(f"unsupported ONNX op {node.op_type} (node {_show(node.name)}) outside adaptive pooling",
                            f"cnndsl imports: {SUPPORTED}")
        data, axis, start, end = piece
        if self._axis(node, int(np.ravel(axes)[0])) != axis:
            raise self.fail(f"{self.label(node)} reduces another axis than its Slice")
        self.bands[node.output[0]] = (kind, data, axis, start, end)

    def _global_pool(self, node, kind: str, keep: int) -> None:
        """ReduceMean/ReduceMax over height and width (torchvision's ShuffleNetV2 head, x.mean([2, 3])): global
        pooling, and a flatten where the reduced axes are dropped (keepdims=0)."""
        src = self.data(node)
        self.spatial(node, src)
        name = _text(node.name or node.output[0])
        pooled = self.add(node, f"adaptive_{kind}pool", [src], {"output": (1, 1)},
                          output=None if keep else f"{node.output[0]}\x00pooled", name=name)
        if not keep:
            self.add(node, "flatten", [pooled], {}, name=f"{name}/flatten")

    def n_ReduceMean(self, node, a):
        self._reduce(node, a, "avg")

    def n_ReduceMax(self, node, a):
        self._reduce(node, a, "max")

    def _band_concat(self, node, axis):
        if len(set(node.input)) != len(node.input):
            raise self.fail(f"{self.label(node)} joins one band twice")
        bands = [self.bands.pop(i) for i in node.input]
        kinds, sources, axes = ({b[i] for b in bands} for i in range(3))
        if len(kinds) != 1 or len(sources) != 1 or axes != {axis % 4}:
            raise self.fail(f"{self.label(node)} joins bands that are not one adaptive pooling")
        kind, data, axis = bands[0][0], bands[0][1], bands[0][2]
        if axis == 2:
            src = self.src(data)
            size = self.spatial(node, src)[1]
        else:
            pooled = self.rows_pooled.pop(data, None)
            if pooled is None or pooled[0] != kind:
                raise self.fail(f"{self.label(node)} pools columns without pooling rows first")
            src = pooled[1]
            size = self.shape[src][2]
        count = len(bands)
        if [(b[3], b[4]) for b in bands] != [adaptive_window(i, size, count) for i in range(count)]:
            raise self.fail(f"{self.label(node)} joins bands that are not PyTorch's adaptive pooling windows")
        if axis == 2:
            self.rows_pooled[node.output[0]] = (kind, src, count)
        else:
            # named after the value it makes: the pooling's own name, not its last Concat's
            self.add(node, f"adaptive_{kind}pool", [src], {"output": (pooled[2], count)}, name=node.output[0])

def external_file(folder: str, location: str) -> tuple[str, int]:
    """(real path, size) of an external data file named by `location`, which must lie inside `folder` (a real
    path): no absolute paths, drive letters, '..' or symlinks leading out. ValueError says what is wrong."""
    parts = location.replace("\\", "/").split("/")
    if not location or "\x00" in location or os.path.isabs(location) or location[:1] in "/\\" or \
            (len(location) > 1 and location[1] == ":") or ".." in parts:
        raise ValueError("outside the model's folder")
    real = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([real, folder]) != folder or real == folder:
        raise ValueError("which leads outside the model's folder")
    try:
        st = os.stat(real)
    except OSError:
        raise ValueError("which is missing beside the model") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("which is not a file")
    return real, st.st_size


MAX_RUN_ELEMENTS = 1 << 28   # elements a size-making op may make from its constant sizes (1 GiB of float32)
MAX_RUN_FACTOR = 1 << 16     # how many times Tile, Resize, Upsample, Pad or OneHot may multiply their input

# ops whose output size is set by values in the model: op -> ((input index, what the values are), ...), by
# the ONNX opset the model imports (Resize moved its scales to input 2 in opset 11); see check_before_run
_SIZE_INPUTS = {
    "ConstantOfShape": ((0, "shape"),), "Expand": ((1, "shape"),), "Tile": ((1, "repeats"),),
    "Range": ((0, "range"), (1, "range"), (2, "range")), "OneHot": ((1, "depth"),), "Pad": ((1, "pads"),),
    "Upsample": ((1, "scales"),), "CenterCropPad": ((1, "shape"),), "Col2Im": ((1, "shape"), (2, "shape")),
}
_SIZE_ATTRIBUTES = {"RandomNormal": ("shape", "shape"), "RandomUniform": ("shape", "shape"),
                    "Upsample": ("scales", "scales"), "Pad": ("pads", "pads"), "Multinomial": ("sample_size", "depth")}


def _count_text(count: float) -> str:
    return f"{count:,.0f}" if count < 1e15 else "infinitely many" if math.isinf(count) else f"about {count:.3g}"


def _tensors(graph_or_node_attrs):
    """Every TensorProto an attribute list holds (sparse tensors as their values and indices)."""
    for a in graph_or_node_attrs:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors)
        for sp in sparse:
            yield sp.values
            yield sp.indices


def check_before_run(path: str) -> None:
    """Refuse a model that `cnndsl run` should not hand to ONNX Runtime; ONNX Runtime then loads the same file.

    Guarded, in the main graph, the branches of If (at any depth) and the model's local functions:
      * external data must lie in the model's folder (no absolute paths, '..', or symlinks out), for
        initializers, sparse initializers and tensors in attributes alike;
      * no Loop or Scan, nor any other node that carries a graph to run (SequenceMap, the com.microsoft
        search ops): they repeat work as often as the model says (Loop with M = 2**62 never ends);
      * ops whose output size comes from values (ConstantOfShape, Expand, Tile, Range, OneHot, Pad, Resize,
        Upsample, CenterCropPad, Col2Im, and RandomNormal/RandomUniform/Multinomial from their attributes)
        must take those values from constants (initializers or Constant nodes, at most MAX_VALUES numbers),
        and the sizes they give are bounded: at most MAX_RUN_ELEMENTS elements made from a shape, and at most
        MAX_RUN_FACTOR times the input for repeats, scales, pads and depths.
    Not guarded (bounded only by the file's size, the input limit and ONNX Runtime itself): growth by chains
    of ops (Concat of a value with itself, again and again, or Tile after Tile, each within its bound),
    broadcasting of two large values against each other (an outer product), heavy but finite compute (a
    huge Conv or MatMul over a large input), and output sizes set by other attributes (RoiAlign's output
    size). `cnndsl run` also stops ONNX Runtime after its --timeout (between kernels, a Loop's iterations
    included): that bounds time, not memory. This replaces the older check_external_data.
    """
    from .onnx_run import RunError
    model = _read(path)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    opset = max([v.version for v in model.opset_import if v.domain in ("", "ai.onnx")] or [0])

    def refuse(message: str, hint: Optional[str] = None):
        return RunError(message, hint=hint).attach(None, path)

    def check_external(t) -> None:
        from onnx import TensorProto
        if t.data_location != TensorProto.EXTERNAL:
            return
        location = next((_text(e.value) for e in t.external_data if _text(e.key) == "location"), "")
        try:
            external_file(folder, location)
        except ValueError as e:
            raise ImportError_(f"tensor {_show(t.name)} has its external data at {_show(location)}, {e}",
                               hint="cnndsl runs models whose external data lies beside them").attach(None, path)

    def static(consts: dict, node, index: int):
        """The values of a constant input, or None when the input is computed or too large to read."""
        from onnx import numpy_helper
        value = node.input[index] if index < len(node.input) else ""
        if not value:
            return ()      # left out
        t = consts.get(value)
        if t is None:
            return None
        if isinstance(t, np.ndarray):
            return t if t.size <= MAX_VALUES else None
        from onnx import TensorProto
        if t.data_location == TensorProto.EXTERNAL or _np_dtype(t.data_type) is None or \
                any(d < 0 for d in t.dims) or math.prod(t.dims) > MAX_VALUES:
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:
            return None

    def sizes(node, what: str, values) -> None:
        """Refuse sizes beyond the bounds: `values` are the constant numbers of an input or attribute."""
        label = f"{_clean(node.op_type, 40)} {_show(node.name or (node.output[0] if node.output else ''))}"
        try:
            numbers = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise refuse(f"{label} has {what} that are not numbers") from None
        if not np.all(np.isfinite(numbers)):
            raise refuse(f"{label} has {what} that are not finite")
        if what == "range":
            return
        if what == "pads":
            half = len(numbers) // 2
            grow = np.maximum(numbers[:half], 0) + np.maximum(numbers[half:2 * half], 0) + 1
        else:
            grow = np.maximum(numbers, 1 if what in ("repeats", "scales") else 0)
        total = math.prod(float(g) for g in grow)
        bound = MAX_RUN_ELEMENTS if what == "shape" else MAX_RUN_FACTOR
        if total > bound:
            size = "elements" if what == "shape" else "times its input"
            raise refuse(f"{label} would make {_count_text(total)} {size} (its {what}); cnndsl run allows at most "
                         f"{bound:,}", "run a model this large with ONNX Runtime directly, if you trust it")

    def check_range(consts: dict, node) -> None:
        values = [static(consts, node, i) for i in range(3)]
        if any(v is None or np.size(v) != 1 for v in values):
            return
        start, limit, delta = (float(np.ravel(v)[0]) for v in values)
        if delta != 0 and all(map(math.isfinite, (start, limit, delta))):
            count = max(0.0, (limit - start) / delta)       # may be inf: 1e308 / 1e-308
            if count > MAX_RUN_ELEMENTS:
                raise refuse(f"Range {_show(node.name or node.output[0])} would make {_count_text(count)} elements; "
                             f"cnndsl run allows at most {MAX_RUN_ELEMENTS:,}")

    # (nodes, initializers, attribute tensors' owners, constants seen from outer graphs)
    todo = [(model.graph.node, list(model.graph.initializer), list(model.graph.sparse_initializer), ChainMap())]
    todo += [(f.node, [], [], ChainMap()) for f in model.functions]
    while todo:
        nodes, inits, sparse, outer = todo.pop()
        consts = outer.new_child()      # a subgraph sees the constants of the graphs around it (no copy)
        for t in inits:
            check_external(t)
            consts[t.name] = t
        for sp in sparse:
            check_external(sp.values)
            check_external(sp.indices)
        for node in nodes:
            for t in _tensors(node.attribute):
                check_external(t)
            op = _text(node.op_type)
            if op == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t"):
                        consts[node.output[0]] = a.t
                    elif a.name in ("value_int", "value_float"):
                        consts[node.output[0]] = np.asarray(a.i if a.name == "value_int" else a.f)
                    elif a.name in ("value_ints", "value_floats"):
                        listed = a.ints if a.name == "value_ints" else a.floats
                        consts[node.output[0]] = np.asarray(list(listed[:MAX_VALUES + 1]))
            elif op == "Identity" and node.input and node.input[0] in consts and node.output:
                consts[node.output[0]] = consts[node.input[0]]
        for node in nodes:
            op = _text(node.op_type)
            label = f"{_clean(op, 40)} {_show(node.name or (node.output[0] if node.output else ''))}"
            graphs = [a for a in node.attribute if a.HasField("g") or len(a.graphs)]
            if op in ("Loop", "Scan") or (graphs and (op != "If" or node.domain not in ("", "ai.onnx"))):
                raise refuse(f"the model uses {label}, which runs a graph as many times as the model says; "
                             "cnndsl run does not run loops", "run it with ONNX Runtime directly, if you trust it")
            for a in graphs:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    todo.append((g.node, list(g.initializer), list(g.sparse_initializer), consts))
            inputs = _SIZE_INPUTS.get(op, ())
            if op == "Resize":
                inputs = ((1, "scales"),) if opset < 11 else ((2, "scales"), (3, "shape"))
            for index, what in inputs:
                values = static(consts, node, index)
                if isinstance(values, tuple):       # an optional input left out
                    continue
                if values is None:
                    raise refuse(f"{label} takes its {what} from {_show(node.input[index])}, which is not a small "
                                 "constant, so its output size is not known before it runs",
                                 "cnndsl run runs models whose sizes are constants")
                sizes(node, what, values)
            if op == "Range":
                check_range(consts, node)
            if op in _SIZE_ATTRIBUTES:
                name, what = _SIZE_ATTRIBUTES[op]
                for a in node.attribute:
                    if a.name == name:
                        sizes(node, what, list(a.ints) or list(a.floats) or [a.i or a.f])


def _display_name(model) -> str:
    name = _clean(model.graph.name, 80) if model.graph.name else ""
    return f"<onnx {name}>" if name else "<onnx>"


def _read(path: str):
    """The ModelProto in a file, read only after its size is known to be within MAX_FILE_BYTES."""
    import onnx

    def fail(message: str, hint: Optional[str] = None):
        return ImportError_(message, hint=hint).attach(None, path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise fail(f"the file is {size:,} bytes, beyond the limit of {MAX_FILE_BYTES:,}",
                           "keep large weights as external data beside the model")
            data = read_at_most(f, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise fail("no such file") from None
    except NotRegularFile:
        raise fail("not a regular file") from None
    except OSError as e:
        raise fail(f"cannot open the file ({e.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"the file grew beyond the limit of {MAX_FILE_BYTES:,} bytes while it was read")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise fail(f"not a readable ONNX model ({type(e).__name__}: {_clean(str(e).strip(), 160)})",
                   "the file may be truncated or corrupt") from None
    if not model.HasField("graph") or not model.graph.node:
        raise fail("the model has no nodes", "the file may be truncated or corrupt")
    return model


def import_onnx(path, input_shape: Optional[tuple[int, int, int]] = None) -> Graph:
    """Read an ONNX file (or an onnx.ModelProto) into the IR; shapes from its input, or `input_shape` (H, W, C).

    External data is read only beside a file, from its own folder; a ModelProto with external data is refused.
    """
    import onnx
    if isinstance(path, onnx.ModelProto):
        return _Importer(path, _display_name(path), input_shape, None).run()
    path = os.fspath(path)
    model = _read(path)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return _Importer(model, path, input_shape, folder).run()
