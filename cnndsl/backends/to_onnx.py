"""ONNX backend: each node's ONNX nodes are written by its op (cnndsl.ir.ops) through the emitter here, with
onnx.helper; the emitter owns value names, initializers and weights (from a state dict or a seed)."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..errors import CnnDslError, OnnxExportError
from ..ir import Graph, Node
from ..ir.names import module_paths
from ..ir.ops import OPS

DEFAULT_OPSET = 18
MIN_OPSET = 13
MAX_OPSET = 21          # newest opset checked against ONNX Runtime here

__all__ = ["to_onnx", "save", "OnnxExportError", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]


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
        self.declared: list[tuple[str, tuple]] = []      # values whose shape the model states (see declare)
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

    def const(self, name: str, value, dtype=None) -> str:
        """A constant of the model's float type, or of `dtype` (Resize's scales are float32 in any model)."""
        name = self.fresh(name)
        self.inits.append((name, np.asarray(value, dtype=dtype or self.dtype)))
        return name

    def op(self, op_type: str, inputs: list, output: str, name: str, **attrs) -> str:
        """One ONNX node; an output other than the current IR node's own value gets a fresh name."""
        if output != self.current:
            output = self.fresh(output)
        self.nodes.append(self.h.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def declare(self, value: str, shape: tuple) -> None:
        """State a value's shape (batch first) in the model, where ONNX shape inference cannot carry the symbolic
        batch through the node (Resize's scales multiply it by 1.0 into an unknown dimension)."""
        self.declared.append((value, shape))

    def uses(self, node: Node, leaf: str) -> None:
        """Count a state-dict entry as used although ONNX does not need it (BN's num_batches_tracked)."""
        if self.weights is not None:
            self.used.add(".".join(self.paths[node.name]) + "." + leaf)

    def ints(self, name: str, values: list[int]) -> str:
        name = self.fresh(name)
        self.inits.append((name, np.asarray(values, dtype=np.int64)))
        return name

    def reduce(self, op_type: str, value: str, axis: int, name: str) -> str:
        if self.opset < 18:   # opset 18 moved the axes of ReduceMean/ReduceMax from an attribute to an input
            return self.op(op_type, [value], name, name, axes=[axis], keepdims=1)
        return self.op(op_type, [value, self.ints(f"{name}.axes", [axis])], name, name, keepdims=1)

    def emit(self, n: Node, ins: list[str], in_shapes: list[tuple]) -> None:
        """The node's ONNX nodes, as its op writes them."""
        self.current = n.name
        OPS[n.op].onnx(self, n, ins, in_shapes)


def to_onnx(graph: Graph, *, weights: Optional[dict] = None, opset: int = DEFAULT_OPSET, seed: int = 0,
            dynamic_batch: bool = True, fp16: bool = False, logits: bool = False):
    """Build an onnx.ModelProto for a graph; value names are the IR's node names.

    `weights` maps state-dict keys (as the PyTorch backend names them) to arrays or tensors; without it the
    weights are drawn from `seed` with the PyTorch backend's scheme. `logits=True` leaves out a final softmax.
    An error about a node (a weight missing or of the wrong shape) names the graph's file and shows its line.
    """
    try:
        return _to_onnx(graph, weights=weights, opset=opset, seed=seed, dynamic_batch=dynamic_batch, fp16=fp16,
                        logits=logits)
    except CnnDslError as e:
        raise e.attach(graph.source or None, graph.filename)


def _to_onnx(graph: Graph, *, weights: Optional[dict], opset: int, seed: int, dynamic_batch: bool, fp16: bool,
             logits: bool):
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
    if logits and OPS[nodes[-1].op].logits_tail and len(nodes) > 2:
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
    declared = [helper.make_tensor_value_info(value, elem, [batch, *shape]) for value, shape in em.declared
                if value != nodes[-1].name]
    g = helper.make_graph(em.nodes, graph.filename.rsplit("/", 1)[-1].removesuffix(".cnn") or "cnndsl",
                          [inp], [out], value_info=declared)
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


PREPROCESSING_KEY = "cnndsl.preprocessing"     # metadata: the preprocessing record (JSON, see cnndsl/preprocess.py)
OUTPUT_KEY = "cnndsl.output"                   # metadata: "logits" or "probabilities"
EMBEDDED_KEY = "cnndsl.embedded_preprocessing"  # metadata: "true" when the graph takes uint8 images


def attach_preprocessing(model, plan, logits: bool, embed: bool = False):
    """Record a checkpoint's preprocessing in the model's metadata (JSON), so that `cnndsl run MODEL IMAGE...`
    and any other runtime prepare images as training did and name the classes; with `embed`, also put it in the
    graph: the model then takes uint8 N x h x w x c images (the training images' size and channels) as input
    'image', and its nodes do the channel step, the fit and the normalisation (cnndsl/preprocess.py)."""
    import json

    from onnx import TensorProto, helper
    props = {p.key: p.value for p in model.metadata_props}
    props[PREPROCESSING_KEY] = json.dumps(plan.to_dict())
    props[OUTPUT_KEY] = "logits" if logits else "probabilities"
    props[EMBEDDED_KEY] = "true" if embed else "false"
    if embed:
        g = model.graph
        old = g.input[0]
        elem = old.type.tensor_type.elem_type
        batch = old.type.tensor_type.shape.dim[0]
        network_input = old.name
        target = network_input if elem == TensorProto.FLOAT else "preprocess_float32"
        nodes, inits, image = plan.onnx_nodes(target, image_input="image")
        if elem != TensorProto.FLOAT:       # an fp16 model: its input in its own type
            nodes.append(helper.make_node("Cast", [target], [network_input], to=elem))
        if batch.HasField("dim_value"):
            image.type.tensor_type.shape.dim[0].dim_value = batch.dim_value
        existing = list(g.node)
        del g.node[:]
        g.node.extend(nodes + existing)
        g.initializer.extend(inits)
        del g.input[:]
        g.input.append(image)
    del model.metadata_props[:]
    helper.set_model_props(model, props)
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
