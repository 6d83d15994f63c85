"""ONNX backend: one emitter per op, built directly with onnx.helper; weights from a state dict or a seed."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..errors import CnnDslError
from ..ir import Graph, Node
from ..ir.names import module_paths
from ..ir.ops import adaptive_window, sliding_window

DEFAULT_OPSET = 18
MIN_OPSET = 13
MAX_OPSET = 21          # newest opset checked against ONNX Runtime here
MAX_BANDS = 256         # uneven adaptive pooling is written as one Slice + Reduce per output row and column


class OnnxExportError(CnnDslError):
    """The graph uses something ONNX cannot express, or the weights do not fit."""

    kind = "onnx error"


class _Emitter:
    def __init__(self, graph: Graph, weights: Optional[dict], seed: int, opset: int, dtype):
        from onnx import helper
        self.h = helper
        self.graph, self.opset, self.dtype = graph, opset, dtype
        self.paths = module_paths(graph)
        self.weights = weights
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.used = [], [], set()
        self.taken = {n.name for n in graph.nodes}      # ONNX value names: the IR's, then fresh ones
        self.current = ""

    def fresh(self, base: str) -> str:
        """A value name not used before: `base`, else `base~2`, `base~3`... (IR names may be anything)."""
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}~{k}"
        self.taken.add(name)
        return name

    # ------------------------------------------------------------ weights --
    def tensor(self, node: Node, leaf: str, shape: tuple, init: Callable[[], np.ndarray]) -> str:
        key = ".".join(self.paths[node.name]) + "." + leaf
        if self.weights is not None:
            if key not in self.weights:
                raise OnnxExportError(f"the weights have no '{key}' for node '{node.name}'", node.span,
                                      "weights must come from a model built from the same spec")
            value = np.asarray(self.weights[key], dtype=np.float32)
            self.used.add(key)
            if value.shape != shape:
                raise OnnxExportError(f"'{key}' has shape {value.shape}, the spec needs {shape}", node.span)
        else:
            value = init().astype(np.float32)
        name = self.fresh(f"{node.name}.{leaf}")
        self.inits.append((name, value.astype(self.dtype, copy=False)))
        return name

    def const(self, name: str, value) -> str:
        name = self.fresh(name)
        self.inits.append((name, np.asarray(value, dtype=self.dtype)))
        return name

    def op(self, op_type: str, inputs: list, output: str, name: str, **attrs) -> str:
        """One ONNX node; an output other than the current IR node's own value gets a fresh name."""
        if output != self.current:
            output = self.fresh(output)
        self.nodes.append(self.h.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    # ------------------------------------------------------------- emitters --
    def emit(self, n: Node, ins: list[str], in_shapes: list[tuple]) -> None:
        self.current = n.name
        getattr(self, "e_" + n.op)(n, ins, in_shapes)

    def e_conv(self, n, ins, shapes):
        a = n.attrs
        cin = shapes[0][0] // a["groups"]
        kh, kw = a["kernel"]
        fan_out = a["out"] * kh * kw
        w = self.tensor(n, "weight", (a["out"], cin, kh, kw),
                        lambda: self.rng.standard_normal((a["out"], cin, kh, kw), np.float32) * (2.0 / fan_out) ** 0.5)
        inputs = [ins[0], w]
        if a["bias"]:
            inputs.append(self.tensor(n, "bias", (a["out"],), lambda: np.zeros(a["out"])))
        ph, pw = a["padding"]
        self.op("Conv", inputs, n.name, n.name, kernel_shape=[kh, kw], strides=list(a["stride"]),
                pads=[ph, pw, ph, pw], dilations=list(a["dilation"]), group=a["groups"])

    def e_fc(self, n, ins, shapes):
        a = n.attrs
        w = self.tensor(n, "weight", (a["out"], shapes[0][0]),
                        lambda: self.rng.standard_normal((a["out"], shapes[0][0]), np.float32) * 0.01)
        inputs = [ins[0], w]
        if a["bias"]:
            inputs.append(self.tensor(n, "bias", (a["out"],), lambda: np.zeros(a["out"])))
        self.op("Gemm", inputs, n.name, n.name, transB=1)

    def _pool(self, op_type, n, ins, shapes, extra):
        a = n.attrs
        ph, pw = a["padding"]
        pads, ceil = [ph, pw, ph, pw], int(a["ceil"])
        if ceil and op_type == "MaxPool":
            # ONNX's ceil mode keeps a last window that starts in the end padding, PyTorch's drops it; pad
            # the end explicitly so floor mode yields exactly PyTorch's windows (-inf padding changes nothing).
            ceil = 0
            for i, (keff, stride, _) in enumerate(sliding_window(a)):
                pads[2 + i] = max(0, (n.shape[1 + i] - 1) * stride + keff - shapes[0][1 + i] - pads[i])
        elif ceil:
            # Average pooling: PyTorch divides by the window clipped to the padded input. Pad with zeros
            # explicitly, then pool in floor mode with uncounted end padding that admits PyTorch's last window.
            value = ins[0]
            if ph or pw:
                pad_amounts = self.ints(f"{n.name}.pads", [0, 0, ph, pw, 0, 0, ph, pw])
                value = self.op("Pad", [value, pad_amounts], f"{n.name}.padded", f"{n.name}.pad", mode="constant")
            ends = [max(0, (n.shape[1 + i] - 1) * a["stride"][i] + a["kernel"][i] - shapes[0][1 + i] - 2 * a["padding"][i])
                    for i in (0, 1)]
            return self.op(op_type, [value], n.name, n.name, kernel_shape=list(a["kernel"]),
                           strides=list(a["stride"]), pads=[0, 0, *ends], ceil_mode=0, count_include_pad=0)
        self.op(op_type, [ins[0]], n.name, n.name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                pads=pads, ceil_mode=ceil, **extra)

    def e_maxpool(self, n, ins, shapes):
        extra = {"dilations": list(n.attrs["dilation"])} if n.attrs["dilation"] != (1, 1) else {}
        self._pool("MaxPool", n, ins, shapes, extra)

    def e_avgpool(self, n, ins, shapes):
        self._pool("AveragePool", n, ins, shapes, {"count_include_pad": 1})

    def _adaptive(self, kind, n, ins, shapes):
        out = n.attrs["output"]
        grid = shapes[0][1:]
        if out == (1, 1):
            return self.op(f"Global{kind}Pool", [ins[0]], n.name, n.name)
        if grid == out:
            return self.op("Identity", [ins[0]], n.name, n.name)
        if all(g % o == 0 for g, o in zip(grid, out)):
            k = [g // o for g, o in zip(grid, out)]
            return self.op(f"{'Average' if kind == 'Average' else 'Max'}Pool", [ins[0]], n.name, n.name,
                           kernel_shape=k, strides=k)
        # Uneven windows: adaptive pooling is separable, so pool the rows of each output row band, then the
        # columns of each output column band (PyTorch's windows: floor(i*n/o) .. ceil((i+1)*n/o)).
        if out[0] + out[1] > MAX_BANDS:
            raise OnnxExportError(f"adaptive pooling to {out[0]}x{out[1]} from {grid[0]}x{grid[1]} has uneven windows; "
                                  f"ONNX needs a Slice and a Reduce per output row and column, and cnndsl writes at "
                                  f"most {MAX_BANDS} of them", n.span,
                                  "choose an output size that divides the input, or pool to fewer cells")
        reduce = "ReduceMean" if kind == "Average" else "ReduceMax"
        value = ins[0]
        for axis, (size, count) in ((2, (grid[0], out[0])), (3, (grid[1], out[1]))):
            pieces = []
            for i in range(count):
                start, end = adaptive_window(i, size, count)
                tag = f"{n.name}.a{axis}_{i}"
                piece = self.op("Slice", [value, self.ints(f"{tag}.start", [start]), self.ints(f"{tag}.end", [end]),
                                          self.ints(f"{tag}.axis", [axis])], f"{tag}.slice", f"{tag}.slice")
                pieces.append(self.reduce(reduce, piece, axis, f"{tag}.pool"))
            value = self.op("Concat", pieces, n.name if axis == 3 else f"{n.name}.rows", f"{n.name}.cat{axis}",
                            axis=axis)

    def ints(self, name: str, values: list[int]) -> str:
        name = self.fresh(name)
        self.inits.append((name, np.asarray(values, dtype=np.int64)))
        return name

    def reduce(self, op_type: str, value: str, axis: int, name: str) -> str:
        if self.opset < 18:   # opset 18 moved the axes of ReduceMean/ReduceMax from an attribute to an input
            return self.op(op_type, [value], name, name, axes=[axis], keepdims=1)
        return self.op(op_type, [value, self.ints(f"{name}.axes", [axis])], name, name, keepdims=1)

    def e_adaptive_avgpool(self, n, ins, shapes):
        self._adaptive("Average", n, ins, shapes)

    def e_adaptive_maxpool(self, n, ins, shapes):
        self._adaptive("Max", n, ins, shapes)

    def e_bn(self, n, ins, shapes):
        c = shapes[0][0]
        scale = self.tensor(n, "weight", (c,), lambda: np.ones(c))
        bias = self.tensor(n, "bias", (c,), lambda: np.zeros(c))
        mean = self.tensor(n, "running_mean", (c,), lambda: np.zeros(c))
        var = self.tensor(n, "running_var", (c,), lambda: np.ones(c))
        if self.weights is not None:
            self.used.add(".".join(self.paths[n.name]) + ".num_batches_tracked")
        self.op("BatchNormalization", [ins[0], scale, bias, mean, var], n.name, n.name,
                epsilon=float(n.attrs["eps"]), momentum=1.0 - float(n.attrs["momentum"]))

    def e_lrn(self, n, ins, shapes):
        a = n.attrs
        self.op("LRN", [ins[0]], n.name, n.name, size=a["size"], alpha=float(a["alpha"]), beta=float(a["beta"]),
                bias=float(a["k"]))

    def e_dropout(self, n, ins, shapes):
        ratio = self.const(f"{n.name}.ratio", n.attrs["p"])     # an inference graph: the identity, kept for import
        self.op("Dropout", [ins[0], ratio], n.name, n.name)

    def e_flatten(self, n, ins, shapes):
        self.op("Flatten", [ins[0]], n.name, n.name, axis=1)

    def e_softmax(self, n, ins, shapes):
        self.op("Softmax", [ins[0]], n.name, n.name, axis=1)

    def e_add(self, n, ins, shapes):
        self.op("Add" if len(ins) == 2 else "Sum", ins, n.name, n.name)

    def e_concat(self, n, ins, shapes):
        self.op("Concat", ins, n.name, n.name, axis=1)

    def e_relu(self, n, ins, shapes):
        self.op("Relu", ins[:1], n.name, n.name)

    def e_relu6(self, n, ins, shapes):
        self.op("Clip", [ins[0], self.const(f"{n.name}.min", 0.0), self.const(f"{n.name}.max", 6.0)], n.name, n.name)

    def e_tanh(self, n, ins, shapes):
        self.op("Tanh", ins[:1], n.name, n.name)

    def e_sigmoid(self, n, ins, shapes):
        self.op("Sigmoid", ins[:1], n.name, n.name)

    def e_elu(self, n, ins, shapes):
        self.op("Elu", ins[:1], n.name, n.name, alpha=float(n.attrs["alpha"]))

    def e_leakyrelu(self, n, ins, shapes):
        self.op("LeakyRelu", ins[:1], n.name, n.name, alpha=float(n.attrs["slope"]))

    def e_gelu(self, n, ins, shapes):
        if self.opset >= 20:
            return self.op("Gelu", ins[:1], n.name, n.name)
        scaled = self.op("Div", [ins[0], self.const(f"{n.name}.sqrt2", 2.0 ** 0.5)], f"{n.name}.scaled", f"{n.name}.div")
        erf = self.op("Erf", [scaled], f"{n.name}.erf", f"{n.name}.erf")
        plus = self.op("Add", [erf, self.const(f"{n.name}.one", 1.0)], f"{n.name}.plus1", f"{n.name}.add")
        half = self.op("Mul", [ins[0], self.const(f"{n.name}.half", 0.5)], f"{n.name}.halfx", f"{n.name}.mulhalf")
        self.op("Mul", [half, plus], n.name, n.name)

    def e_silu(self, n, ins, shapes):
        gate = self.op("Sigmoid", ins[:1], f"{n.name}.gate", f"{n.name}.sigmoid")
        self.op("Mul", [ins[0], gate], n.name, n.name)

    def e_hardswish(self, n, ins, shapes):
        if self.opset >= 14:
            return self.op("HardSwish", ins[:1], n.name, n.name)
        gate = self.op("HardSigmoid", ins[:1], f"{n.name}.gate", f"{n.name}.hardsigmoid", alpha=1 / 6, beta=0.5)
        self.op("Mul", [ins[0], gate], n.name, n.name)


def to_onnx(graph: Graph, *, weights: Optional[dict] = None, opset: int = DEFAULT_OPSET, seed: int = 0,
            dynamic_batch: bool = True, fp16: bool = False, logits: bool = False):
    """Build an onnx.ModelProto for a graph; value names are the IR's node names.

    `weights` maps state-dict keys (as the PyTorch backend names them) to arrays or tensors; without it the
    weights are drawn from `seed` with the PyTorch backend's scheme. `logits=True` leaves out a final softmax.
    """
    import onnx
    from onnx import TensorProto, helper

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise OnnxExportError(f"opset {opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}")
    if weights is not None:
        weights = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in weights.items()}
    from ..analysis.passes import require_buildable
    require_buildable(graph, 2 if fp16 else 4)
    dtype = np.float16 if fp16 else np.float32
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    em = _Emitter(graph, weights, seed, opset, dtype)
    nodes = list(graph.nodes)
    if logits and nodes[-1].op == "softmax" and len(nodes) > 2:
        nodes = nodes[:-1]
    shapes = {n.name: n.shape for n in nodes}
    for n in nodes[1:]:
        em.emit(n, list(n.inputs), [shapes[i] for i in n.inputs])
    if weights is not None:
        unused = sorted(set(weights) - em.used)
        if unused:
            raise OnnxExportError(f"{len(unused)} weights are not used by the spec, e.g. '{unused[0]}'",
                                  hint="the weights come from a different architecture")
    batch = "N" if dynamic_batch else 1
    inp = helper.make_tensor_value_info(nodes[0].name, elem, [batch, *nodes[0].shape])
    out = helper.make_tensor_value_info(nodes[-1].name, elem, [batch, *nodes[-1].shape])
    g = helper.make_graph(em.nodes, graph.filename.rsplit("/", 1)[-1].removesuffix(".cnn") or "cnndsl",
                          [inp], [out])
    for name, array in em.inits:        # written in place: copying TensorProtos of a 500 MB model costs seconds
        t = g.initializer.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        t.dims.extend(array.shape)
        t.raw_data = np.ascontiguousarray(array).tobytes()
    from ..version import __version__
    model = helper.make_model(g, producer_name="cnndsl", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)      # readable by current ONNX Runtime releases
    model.doc_string = f"Generated by cnndsl {__version__} from {graph.filename}"
    helper.set_model_props(model, {"cnndsl.spec": graph.source, "cnndsl.spec_file": graph.filename,
                                   "cnndsl.input_shape": "x".join(map(str, graph.input_shape))})
    return model


def save(model, path: str, external_data: Optional[bool] = None) -> None:
    """Save a model; weights go to an external `<file>.data` when asked or when the model passes 2 GB.

    Written atomically: into a temporary file (or folder, with external data) beside the target, then
    renamed, so an interrupted or failed save never leaves a partial model behind.
    """
    import os

    import onnx

    from ..files import atomic_folder, atomic_path
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if external_data is None:
        external_data = size > 1_800_000_000
    if not external_data:
        with atomic_path(path) as tmp:
            onnx.save_model(model, tmp)
        return
    name = os.path.basename(path)
    with atomic_folder(path) as tmp:
        onnx.save_model(model, os.path.join(tmp, name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=name + ".data", size_threshold=1024)
        if os.path.exists(os.path.join(tmp, name + ".data")):
            os.replace(os.path.join(tmp, name + ".data"), path + ".data")
        os.replace(os.path.join(tmp, name), path)
