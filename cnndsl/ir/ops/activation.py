"""Activations (`relu`, `relu6`, `tanh`, `sigmoid`, `elu[alpha=1]`, `leakyrelu[slope=0.01]`, `gelu`, `silu`,
`hardswish`, `hardsigmoid`, `mish`), and `none` for a weight layer without one: every facet of each."""
from __future__ import annotations

import math

from typing import Callable, Optional

from .base import LayerArgs, Op, _no_sizes, _options, _real, OnnxImport

NO_ACTIVATION = "none"      # the spelling that removes a weight layer's activation


class Activation(Op):
    """An elementwise activation: its PyTorch module and options, and its ONNX nodes per opset."""

    activation = True

    def __init__(self, name: str, torch_class: str, onnx: Callable, options: Optional[dict] = None,
                 inplace: bool = False, torch_options: Optional[dict] = None, onnx_type: Optional[str] = None,
                 onnx_options: Optional[dict] = None, onnx_fixed: Optional[dict] = None):
        self.name = self.kind = name
        # the single ONNX op it is read back from: its type, option -> (ONNX attribute, ONNX default), and
        # ONNX attribute -> (the value it must have, ONNX default); forms written as several nodes (silu, and
        # gelu, hardswish, mish at older opsets) are recognised by the importer
        self.onnx_type, self.onnx_options, self.onnx_fixed = onnx_type, onnx_options or {}, onnx_fixed or {}
        self.torch_class, self.emit = torch_class, onnx
        self.defaults = options or {}
        self.ATTRS = {k: "real" for k in self.defaults}
        self.inplace = inplace
        self.torch_options = torch_options or {}     # spec option -> PyTorch keyword (None: positional)

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, {k: k for k in self.defaults})
        _no_sizes(args, args.word)
        a = dict(self.defaults)
        for canon, (written, value) in opts.items():
            a[canon] = _real(value, f"option:{written}", canon, -1e6, 1e6)
        return a

    # what each activation's backward keeps (measured): its output, or its input; run in place, the in-place
    # form keeps its result (the same storage) where PyTorch has a formula for it, else a copy of the input
    SAVES_OUTPUT = {"relu", "tanh", "sigmoid"}
    INPLACE_RESULT = {"elu", "leakyrelu"}

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        if self.name in self.SAVES_OUTPUT or (inplace and self.name in self.INPLACE_RESULT):
            return [(("out",), self.tensor_bytes(out, batch, dtype))]
        if inplace:
            return [(("copy",), self.tensor_bytes(ins[0], batch, dtype))]
        return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype))]

    def describe(self, a):
        return self.name + "".join(f" {k}={v:g}" for k, v in a.items())

    def torch_module(self, a, ins, inplace=False):
        args = [f"{a[k]!r}" if kw is None else f"{kw}={a[k]!r}" for k, kw in self.torch_options.items()]
        if inplace and self.inplace:
            args.append("inplace=True")
        return f"nn.{self.torch_class}({', '.join(args)})"

    def onnx(self, em, n, ins, shapes):
        self.emit(em, n, ins[0])

    def spell(self, a):
        return self.name + "".join(f"[{k}={v!r}]" for k, v in a.items())


def _single(op_type: str, **attrs: Callable) -> Callable:
    def emit(em, n, x):
        em.op(op_type, [x], n.name, n.name, **{k: f(n.attrs) for k, f in attrs.items()})
    return emit


def _relu6(em, n, x):
    em.op("Clip", [x, em.const(f"{n.name}.min", 0.0), em.const(f"{n.name}.max", 6.0)], n.name, n.name)


def _gelu(em, n, x):
    if em.opset >= 20:
        return em.op("Gelu", [x], n.name, n.name)
    scaled = em.op("Div", [x, em.const(f"{n.name}.sqrt2", 2.0 ** 0.5)], f"{n.name}.scaled", f"{n.name}.div")
    erf = em.op("Erf", [scaled], f"{n.name}.erf", f"{n.name}.erf")
    plus = em.op("Add", [erf, em.const(f"{n.name}.one", 1.0)], f"{n.name}.plus1", f"{n.name}.add")
    half = em.op("Mul", [x, em.const(f"{n.name}.half", 0.5)], f"{n.name}.halfx", f"{n.name}.mulhalf")
    em.op("Mul", [half, plus], n.name, n.name)


def _silu(em, n, x):
    gate = em.op("Sigmoid", [x], f"{n.name}.gate", f"{n.name}.sigmoid")
    em.op("Mul", [x, gate], n.name, n.name)


def _hardswish(em, n, x):
    if em.opset >= 14:
        return em.op("HardSwish", [x], n.name, n.name)
    gate = em.op("HardSigmoid", [x], f"{n.name}.gate", f"{n.name}.hardsigmoid", alpha=1 / 6, beta=0.5)
    em.op("Mul", [x, gate], n.name, n.name)


def _hardsigmoid(em, n, x):
    em.op("HardSigmoid", [x], n.name, n.name, alpha=1 / 6, beta=0.5)      # PyTorch's: relu6(x + 3) / 6


def _mish(em, n, x):
    if em.opset >= 18:
        return em.op("Mish", [x], n.name, n.name)
    soft = em.op("Softplus", [x], f"{n.name}.softplus", f"{n.name}.softplus")
    gate = em.op("Tanh", [soft], f"{n.name}.gate", f"{n.name}.tanh")
    em.op("Mul", [x, gate], n.name, n.name)


ACTIVATIONS = {op.name: op for op in [
    Activation("relu", "ReLU", _single("Relu"), inplace=True, onnx_type="Relu"),
    Activation("relu6", "ReLU6", _relu6, inplace=True),
    Activation("tanh", "Tanh", _single("Tanh"), onnx_type="Tanh"),
    Activation("sigmoid", "Sigmoid", _single("Sigmoid"), onnx_type="Sigmoid"),
    Activation("elu", "ELU", _single("Elu", alpha=lambda a: float(a["alpha"])), {"alpha": 1.0}, inplace=True,
               torch_options={"alpha": "alpha"}, onnx_type="Elu", onnx_options={"alpha": ("alpha", 1.0)}),
    Activation("leakyrelu", "LeakyReLU", _single("LeakyRelu", alpha=lambda a: float(a["slope"])), {"slope": 0.01},
               inplace=True, torch_options={"slope": None}, onnx_type="LeakyRelu",
               onnx_options={"slope": ("alpha", 0.01)}),
    Activation("gelu", "GELU", _gelu),
    Activation("silu", "SiLU", _silu, inplace=True),
    Activation("hardswish", "Hardswish", _hardswish, inplace=True, onnx_type="HardSwish"),
    Activation("hardsigmoid", "Hardsigmoid", _hardsigmoid, inplace=True, onnx_type="HardSigmoid",
               onnx_fixed={"alpha": (1 / 6, 0.2), "beta": (0.5, 0.5)}),
    Activation("mish", "Mish", _mish, inplace=True, onnx_type="Mish"),
]}


def _no_act(args: LayerArgs, in_shape: tuple):
    _options(args, {})
    _no_sizes(args, args.word)
    return NO_ACTIVATION, {}


def _using(op: Activation):
    return lambda args, in_shape: (op.name, op.build(args, in_shape))


OPS = list(ACTIVATIONS.values())
SPELLINGS = {"none": _no_act, "identity": _no_act, "swish": _using(ACTIVATIONS["silu"]),
             "lrelu": _using(ACTIVATIONS["leakyrelu"]), **{name: _using(op) for name, op in ACTIVATIONS.items()}}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {name: (f"conv3-4 {name}", f"gap + fc5 {name}", f"{name} + conv1-2") for name in ACTIVATIONS}
EXAMPLES["elu"] += ("conv1-3 elu[alpha=0.5]",)
EXAMPLES["leakyrelu"] += ("conv1-3 leakyrelu[slope=0.2]",)


# ------------------------------------------------------------- ONNX import --
# Activations written as one ONNX op with options (Relu, Elu, LeakyRelu, ...) are declared above with
# onnx_type and read by the importer's generic reader; these are the ones that need their own reading. The
# forms older opsets write as several nodes (x * Sigmoid(x), the Erf form of gelu, ...) are pieced together in
# cnndsl.backends.from_onnx.

def _read_clip(imp, node, a):
    src = imp.data(node)
    if len(node.input) > 1:
        if "min" in a or "max" in a:
            raise imp.fail(f"{imp.label(node)} gives its bounds both as inputs and as attributes")
        low, high = imp.scalar(node, 1, "min"), imp.scalar(node, 2, "max")
    else:
        low = imp.float_(node, a, "min", -math.inf) if "min" in a else None
        high = imp.float_(node, a, "max", math.inf) if "max" in a else None
    if low != 0.0 or high != 6.0:
        raise imp.fail(f"{imp.label(node)} is not a ReLU6 (clip to 0..6)")
    imp.add(node, "relu6", [src], {})


def _read_gelu(imp, node, a):
    if imp.string(node, a, "approximate", "none", ("none", "tanh")) != "none":
        raise imp.fail(f"{imp.label(node)} uses the tanh approximation; cnndsl's gelu is the exact one",
                       "export with approximate='none'")
    imp.add(node, "gelu", [imp.data(node)], {})


ONNX_IMPORTS = {
    "Clip": OnnxImport((1, 3), 1, ("min", "max", "consumed_inputs"), _read_clip),
    "Gelu": OnnxImport((1, 1), 1, ("approximate",), _read_gelu),
}
