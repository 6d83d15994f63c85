"""ONNX -> IR: import an existing ONNX CNN so the analyzer reports on models cnndsl did not write."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import CnnDslError
from .ir import Graph, make_node, verify
from .ops import OPS, OpError, adaptive_window, pool_out

SUPPORTED = ("Conv, Gemm, MatMul (+Add), MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, "
             "BatchNormalization, Relu, Clip(0,6), Tanh, Sigmoid, Elu, LeakyRelu, Gelu, HardSwish, Add, Sum, "
             "Concat, Flatten, Reshape (to N x -1), Softmax, LRN, Dropout, Identity, Pad (before AveragePool), "
             "Slice + ReduceMean/ReduceMax + Concat (uneven adaptive pooling, as cnndsl writes it)")


class ImportError_(CnnDslError):
    """The ONNX file cannot be read, or uses something the IR cannot express."""

    kind = "import error"


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _stage(name: str) -> str:
    parts = [p for p in name.replace("/", ".").split(".") if p]
    return parts[0] if len(parts) > 1 else "graph"


class _Importer:
    def __init__(self, model, path: str, input_shape: Optional[tuple[int, int, int]]):
        from onnx import numpy_helper
        self.model, self.path = model, path
        self.to_array = numpy_helper.to_array
        self.consts = {t.name: t for t in model.graph.initializer}   # TensorProtos, read only when needed
        for node in model.graph.node:
            if node.op_type == "Constant":
                value = _attrs(node).get("value")
                if value is not None:
                    self.consts[node.output[0]] = numpy_helper.to_array(value)
        self.alias: dict[str, str] = {}        # ONNX value -> IR node
        self.rows: list = []                   # [name, op, inputs, attrs, shape, stage]
        self.shape: dict[str, tuple] = {}
        self.names: set[str] = set()
        self.pads: dict[str, tuple] = {}       # ONNX Pad outputs waiting for their AveragePool
        # uneven adaptive pooling, as emitted by cnndsl: Slice -> ReduceMean/Max per band, Concat the bands,
        # first along the rows, then along the columns; these hold the pieces until the last Concat
        self.slices: dict[str, tuple] = {}     # Slice output -> (source, axis, start, end)
        self.bands: dict[str, tuple] = {}      # Reduce output -> (kind, source, axis, start, end)
        self.rows_pooled: dict[str, tuple] = {}  # row Concat output -> (kind, IR source, output rows)
        self.input_shape = input_shape

    def fail(self, message: str, hint: Optional[str] = None):
        return ImportError_(message, hint=hint).attach(None, self.path)

    def src(self, value: str) -> str:
        if value in self.alias:
            return self.alias[value]
        raise self.fail(f"value '{value}' is not produced by a supported node")

    def add(self, onnx_node, op: str, inputs: list[str], attrs: dict, output: Optional[str] = None,
            name: Optional[str] = None) -> str:
        name = (name or onnx_node.name or onnx_node.output[0]).strip("/").replace("/", ".") or op
        base, i = name, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        try:
            shape = tuple(OPS[op].shape(attrs, [self.shape[s] for s in inputs]))
        except OpError as e:
            raise self.fail(f"node '{onnx_node.name}' ({onnx_node.op_type}): {e.message}") from None
        self.rows.append([name, op, tuple(inputs), attrs, shape, _stage(name)])
        self.names.add(name)
        self.shape[name] = shape
        self.alias[output or onnx_node.output[0]] = name
        return name

    def graph_input(self):
        g = self.model.graph
        inputs = [v for v in g.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise self.fail(f"the model has {len(inputs)} inputs; cnndsl imports single-input CNNs")
        v = inputs[0]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        if len(dims) != 4:
            raise self.fail(f"the input '{v.name}' has rank {len(dims)}; cnndsl imports N x C x H x W images")
        if self.input_shape is not None:
            h, w, c = self.input_shape
        else:
            c, h, w = dims[1:]
            if None in (c, h, w) or 0 in (c, h, w):
                raise self.fail("the model's input size is not fixed", "give it with --input HxWxC")
        self.rows.append(["input", "input", (), {}, (c, h, w), "input"])
        self.names.add("input")
        self.shape["input"] = (c, h, w)
        self.alias[v.name] = "input"

    def weight(self, node, index: int, values: bool = True):
        """A constant input: its values, or (values=False) a zero-cost array of its shape (weights of GBs)."""
        if index >= len(node.input) or node.input[index] == "":
            return None
        value = self.consts.get(node.input[index])
        if value is None:
            raise self.fail(f"{node.op_type} '{node.name}' takes a computed weight '{node.input[index]}'",
                            "cnndsl imports weights stored as initializers or constants")
        if isinstance(value, np.ndarray):
            return value
        if not values:
            dims = tuple(value.dims)
            return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=dims, strides=(0,) * len(dims))
        return self.to_array(value)

    def spatial_pads(self, node, a: dict, kernel, strides, dilations, in_shape):
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for n, k, s, d in zip(in_shape[1:], kernel, strides, dilations):
                total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
                pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
            return [p[0] for p in pads], [p[1] for p in pads]
        pads = list(a.get("pads", [0, 0, 0, 0])) if auto != "VALID" else [0, 0, 0, 0]
        return pads[:2], pads[2:]

    # ------------------------------------------------------------- nodes --
    def run(self) -> Graph:
        self.graph_input()
        for node in self.model.graph.node:
            handler = getattr(self, "n_" + node.op_type, None)
            if handler is None:
                raise self.fail(f"unsupported ONNX op {node.op_type} (node '{node.name or node.output[0]}')",
                                f"cnndsl imports: {SUPPORTED}")
            handler(node)
        outputs = [o.name for o in self.model.graph.output]
        if len(outputs) != 1:
            raise self.fail(f"the model has {len(outputs)} outputs; cnndsl imports single-output CNNs")
        last = self.src(outputs[0])
        keep = {last}
        for row in reversed(self.rows):         # drop what does not lead to the output
            if row[0] in keep:
                keep.update(row[2])
        nodes = [make_node(name, op, inputs, attrs, shape, stage, None)
                 for name, op, inputs, attrs, shape, stage in self.rows if name in keep]
        if nodes[-1].name != last:
            raise self.fail("the output is not the last node")
        return verify(Graph(tuple(nodes), "", self.path))

    def n_Constant(self, node):
        pass

    def n_Identity(self, node):
        if node.input[0] in self.consts:       # exporters alias shared weights through Identity
            self.consts[node.output[0]] = self.consts[node.input[0]]
        else:
            self.alias[node.output[0]] = self.src(node.input[0])

    def n_Dropout(self, node):
        ratio = self.weight(node, 1) if len(node.input) > 1 else None
        p = float(f"{float(ratio) if ratio is not None else float(_attrs(node).get('ratio', 0.5)):.7g}")
        self.add(node, "dropout", [self.src(node.input[0])], {"p": p})

    def n_Conv(self, node):
        a = _attrs(node)
        w = self.weight(node, 1, values=False)
        src = self.src(node.input[0])
        kernel = tuple(a.get("kernel_shape", w.shape[2:]))
        if len(kernel) != 2:
            raise self.fail(f"Conv '{node.name}' is {len(kernel)}-D; cnndsl imports 2-D convolutions")
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        begin, end = self.spatial_pads(node, a, kernel, strides, dil, self.shape[src])
        if begin != end:
            raise self.fail(f"Conv '{node.name}' pads asymmetrically ({begin} before, {end} after)")
        attrs = {"out": int(w.shape[0]), "kernel": kernel, "stride": strides, "padding": tuple(begin),
                 "dilation": dil, "groups": int(a.get("group", 1)), "bias": len(node.input) > 2 and bool(node.input[2])}
        self.add(node, "conv", [src], attrs)

    def n_Gemm(self, node):
        a = _attrs(node)
        w = self.weight(node, 1, values=False)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise self.fail(f"Gemm '{node.name}' with transA/alpha/beta is not a plain linear layer")
        out = w.shape[0] if a.get("transB", 0) else w.shape[1]
        self.add(node, "fc", [self.src(node.input[0])], {"out": int(out), "bias": len(node.input) > 2})

    def n_MatMul(self, node):
        w = self.weight(node, 1, values=False)
        if w.ndim != 2:
            raise self.fail(f"MatMul '{node.name}' is not a linear layer")
        self.add(node, "fc", [self.src(node.input[0])], {"out": int(w.shape[1]), "bias": False})

    def n_Add(self, node):
        consts = [i for i in node.input if i in self.consts]
        if consts:      # MatMul + Add(bias): the bias of a linear layer
            other = self.src(next(i for i in node.input if i not in self.consts))
            row = self.rows[-1]
            if row[0] == other and row[1] == "fc" and not row[3]["bias"] and \
                    self.weight(node, list(node.input).index(consts[0]), values=False).size == row[3]["out"]:
                row[3]["bias"] = True
                self.alias[node.output[0]] = other
                return
            raise self.fail(f"Add '{node.name}' adds a constant that is not a linear layer's bias")
        self.add(node, "add", [self.src(i) for i in node.input], {})

    n_Sum = n_Add

    def n_Concat(self, node):
        axis = _attrs(node).get("axis")
        if node.input and all(i in self.bands for i in node.input):
            return self._band_concat(node, axis)
        if axis not in (1, -3):
            raise self.fail(f"Concat '{node.name}' joins on axis {axis}; cnndsl concatenates channels (axis 1)")
        self.add(node, "concat", [self.src(i) for i in node.input], {})

    def n_Pad(self, node):
        a = _attrs(node)
        pads = self.weight(node, 1) if len(node.input) > 1 else np.asarray(a.get("pads", []))
        value = self.weight(node, 2) if len(node.input) > 2 else None
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = [int(p) for p in pads]
        if mode != "constant" or (value is not None and float(value) != 0.0) or len(pads) != 8 or \
                pads[:2] != [0, 0] or pads[4:6] != [0, 0] or pads[2:4] != pads[6:8]:
            raise self.fail(f"Pad '{node.name}' is not a symmetric zero padding of height and width")
        self.pads[node.output[0]] = (self.src(node.input[0]), tuple(pads[2:4]))

    def _pool(self, node, op):
        a = _attrs(node)
        padded = self.pads.pop(node.input[0], None)
        src, extra = padded if padded else (self.src(node.input[0]), (0, 0))
        n_in = self.shape[src]
        kernel = tuple(a["kernel_shape"])
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        begin, end = self.spatial_pads(node, a, kernel, strides, dil,
                                       (n_in[0], n_in[1] + 2 * extra[0], n_in[2] + 2 * extra[1]))
        ceil = bool(a.get("ceil_mode", 0))
        # the output ONNX computes, then the IR pooling (symmetric padding, ceil or not) that gives it
        want = []
        for i in (0, 1):
            n = n_in[1 + i] + 2 * extra[i]
            span = n + begin[i] + end[i] - dil[i] * (kernel[i] - 1) - 1
            want.append((-(-span // strides[i]) if ceil else span // strides[i]) + 1)
        padding = tuple(extra[i] + begin[i] for i in (0, 1))
        for mode in (False, True):
            got = [pool_out(n_in[1 + i], kernel[i], strides[i], padding[i], dil[i], mode) for i in (0, 1)]
            if got == want:
                attrs = {"kernel": kernel, "stride": strides, "padding": padding, "ceil": mode, "dilation": dil}
                return self.add(node, op, [src], attrs)
        raise self.fail(f"{node.op_type} '{node.name}' pads asymmetrically in a way PyTorch pooling cannot express")

    def n_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(f"MaxPool '{node.name}' also returns indices")
        self._pool(node, "maxpool")

    def n_AveragePool(self, node):
        self._pool(node, "avgpool")

    def n_GlobalAveragePool(self, node):
        self.add(node, "adaptive_avgpool", [self.src(node.input[0])], {"output": (1, 1)})

    def n_GlobalMaxPool(self, node):
        self.add(node, "adaptive_maxpool", [self.src(node.input[0])], {"output": (1, 1)})

    def n_BatchNormalization(self, node):
        a = _attrs(node)
        self.add(node, "bn", [self.src(node.input[0])], {"eps": float(f"{a.get('epsilon', 1e-5):.7g}"),
                                                          "momentum": round(1.0 - float(a.get("momentum", 0.9)), 6)})

    def n_LRN(self, node):
        a = _attrs(node)
        self.add(node, "lrn", [self.src(node.input[0])], {"size": int(a["size"]), "alpha": float(f"{a.get('alpha', 1e-4):.7g}"),
                                                           "beta": float(f"{a.get('beta', 0.75):.7g}"),
                                                           "k": float(f"{a.get('bias', 1.0):.7g}")})

    def n_Flatten(self, node):
        if _attrs(node).get("axis", 1) != 1:
            raise self.fail(f"Flatten '{node.name}' does not flatten from axis 1")
        self.add(node, "flatten", [self.src(node.input[0])], {})

    def n_Reshape(self, node):
        target = [int(v) for v in self.weight(node, 1)]
        src = self.src(node.input[0])
        size = int(np.prod(self.shape[src]))
        if len(target) == 2 and target[1] in (-1, size) and target[0] in (0, -1, 1):
            return self.add(node, "flatten", [src], {})
        raise self.fail(f"Reshape '{node.name}' to {target} is not a flatten to N x features")

    def n_Softmax(self, node):
        axis = _attrs(node).get("axis", -1)
        src = self.src(node.input[0])
        if axis not in (1, -1 if len(self.shape[src]) == 1 else 1, -3 if len(self.shape[src]) == 3 else 1):
            raise self.fail(f"Softmax '{node.name}' over axis {axis}; cnndsl's softmax runs over channels")
        self.add(node, "softmax", [src], {})

    def _act(self, op, **attrs):
        def handle(self, node):
            self.add(node, op, [self.src(node.input[0])], {k: v(_attrs(node)) for k, v in attrs.items()})
        return handle

    n_Relu = _act(None, "relu")
    n_Tanh = _act(None, "tanh")
    n_Sigmoid = _act(None, "sigmoid")
    n_Gelu = _act(None, "gelu")
    n_HardSwish = _act(None, "hardswish")
    n_Elu = _act(None, "elu", alpha=lambda a: float(a.get("alpha", 1.0)))
    n_LeakyRelu = _act(None, "leakyrelu", slope=lambda a: float(a.get("alpha", 0.01)))

    # ------------------------------------------ uneven adaptive pooling --
    def _axis(self, node, value: int) -> int:
        if value not in (2, 3, -2, -1):
            raise self.fail(f"{node.op_type} '{node.name}' works on axis {value}; cnndsl imports it only as "
                            "part of adaptive pooling over height or width")
        return value % 4

    def n_Slice(self, node):
        data = node.input[0]
        if data not in self.alias and data not in self.rows_pooled:
            self.src(data)
        starts, ends = (self.weight(node, i) for i in (1, 2))
        axes = self.weight(node, 3) if len(node.input) > 3 and node.input[3] else None
        steps = self.weight(node, 4) if len(node.input) > 4 and node.input[4] else None
        if starts is None or ends is None or axes is None or len(starts) != 1 or len(axes) != 1 or \
                (steps is not None and list(steps) != [1]):
            raise self.fail(f"Slice '{node.name}' is not one band of an adaptive pooling",
                            "cnndsl imports Slice only in the pattern its own exporter writes for adaptive pooling")
        self.slices[node.output[0]] = (data, self._axis(node, int(axes[0])), int(starts[0]), int(ends[0]))

    def _reduce(self, node, kind):
        piece = self.slices.get(node.input[0])
        a = _attrs(node)
        axes = self.weight(node, 1) if len(node.input) > 1 and node.input[1] else a.get("axes")
        if piece is None or axes is None or len(axes) != 1 or not a.get("keepdims", 1):
            raise self.fail(f"unsupported ONNX op {node.op_type} (node '{node.name}') outside adaptive pooling",
                            f"cnndsl imports: {SUPPORTED}")
        data, axis, start, end = piece
        if self._axis(node, int(axes[0])) != axis:
            raise self.fail(f"{node.op_type} '{node.name}' reduces another axis than its Slice")
        self.bands[node.output[0]] = (kind, data, axis, start, end)

    def n_ReduceMean(self, node):
        self._reduce(node, "avg")

    def n_ReduceMax(self, node):
        self._reduce(node, "max")

    def _band_concat(self, node, axis):
        bands = [self.bands.pop(i) for i in node.input]
        kinds, sources, axes = ({b[i] for b in bands} for i in range(3))
        if len(kinds) != 1 or len(sources) != 1 or axes != {axis % 4 if axis is not None else -1}:
            raise self.fail(f"Concat '{node.name}' joins bands that are not one adaptive pooling")
        kind, data, axis = bands[0][0], bands[0][1], bands[0][2]
        if axis == 2:
            src = self.src(data)
            size = self.shape[src][1]
        else:
            pooled = self.rows_pooled.pop(data, None)
            if pooled is None or pooled[0] != kind:
                raise self.fail(f"Concat '{node.name}' pools columns without pooling rows first")
            src = pooled[1]
            size = self.shape[src][2]
        count = len(bands)
        if [(b[3], b[4]) for b in bands] != [adaptive_window(i, size, count) for i in range(count)]:
            raise self.fail(f"Concat '{node.name}' joins bands that are not PyTorch's adaptive pooling windows")
        if axis == 2:
            self.rows_pooled[node.output[0]] = (kind, src, count)
        else:
            # named after the value it makes: the pooling's own name, not its last Concat's
            self.add(node, f"adaptive_{kind}pool", [src], {"output": (pooled[2], count)}, name=node.output[0])

    def n_Clip(self, node):
        a = _attrs(node)
        low = self.weight(node, 1) if len(node.input) > 1 and node.input[1] else a.get("min")
        high = self.weight(node, 2) if len(node.input) > 2 and node.input[2] else a.get("max")
        if low is None or high is None or float(low) != 0.0 or float(high) != 6.0:
            raise self.fail(f"Clip '{node.name}' is not a ReLU6 (clip to 0..6)")
        self.add(node, "relu6", [self.src(node.input[0])], {})


def import_onnx(path, input_shape: Optional[tuple[int, int, int]] = None) -> Graph:
    """Read an ONNX file (or an onnx.ModelProto) into the IR; shapes from its input, or `input_shape` (H, W, C)."""
    import onnx
    if isinstance(path, onnx.ModelProto):
        return _Importer(path, path.graph.name or "<onnx>", input_shape).run()
    try:
        model = onnx.load(path, load_external_data=False)
    except FileNotFoundError:
        raise ImportError_("no such file").attach(None, path) from None
    except Exception as e:
        raise ImportError_(f"not a readable ONNX model ({type(e).__name__}: {str(e).strip()[:160]})",
                           hint="the file may be truncated or corrupt").attach(None, path) from None
    if not model.graph.node:
        raise ImportError_("the model has no nodes", hint="the file may be truncated or corrupt").attach(None, path)
    return _Importer(model, path, input_shape).run()
