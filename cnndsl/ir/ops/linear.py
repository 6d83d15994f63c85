"""Fully connected layers (`fcN`, `FC-N`, `linearN`, `denseN`): every facet of the op."""
from __future__ import annotations

from ... import limits
from .base import GLOBAL, LayerArgs, OnnxImport, Op, OpError, _bool, _count, _options, fmt_shape


class FC(Op):
    name = kind = "fc"
    ATTRS = {"out": "count", "bias": "bool"}
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
        bias, bias_written = True, None
        for canon, (written, value) in opts.items():
            if bias_written is not None:
                raise OpError(f"bias given twice (as '{bias_written}' and as '{written}')", f"option:{written}",
                              "keep one: bias, bias=false or nobias", kind="name")
            bias_written = written
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

    autocast = "lower"

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype))]      # and its weight, a parameter

    def param_tensors(self, a, ins):
        return 2 if a["bias"] else 1

    def describe(self, a):
        return f"fc {a['out']}"

    fresh_output = True
    needs_vector = True

    def starts_classifier(self, a):
        return True

    def torch_module(self, a, ins, inplace=False):
        return f"nn.Linear({ins[0][0]}, {a['out']}{'' if a['bias'] else ', bias=False'})"

    def onnx(self, em, n, ins, shapes):
        import numpy as np
        a = n.attrs
        w = em.tensor(n, "weight", (a["out"], shapes[0][0]),
                      lambda: em.rng.standard_normal((a["out"], shapes[0][0]), np.float32) * 0.01)
        inputs = [ins[0], w]
        if a["bias"]:
            inputs.append(em.tensor(n, "bias", (a["out"],), lambda: np.zeros(a["out"])))
        em.op("Gemm", inputs, n.name, n.name, transB=1)

    def spell(self, a):
        return f"fc{a['out']}[{'bias' if a['bias'] else 'nobias'}]"


FULLY_CONNECTED = FC()


def _fc(args: LayerArgs, in_shape: tuple):
    return "fc", FULLY_CONNECTED.build(args, in_shape)


OPS = [FULLY_CONNECTED]
SPELLINGS = {"fc": _fc, "dense": _fc, "fullyconnected": _fc, "linear": _fc}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"fc": ("fc5", "flatten + fc4[nobias]", "gap + fc6 + fc3", "fc4 bn")}


# ------------------------------------------------------------- ONNX import --
# `imp` is the importer (cnndsl.backends.from_onnx). A MatMul's bias, written as an Add after it, is folded
# into the fc by the importer's Add reader.

def _read_weight(imp, node, src: str, weight: tuple, transposed: bool) -> int:
    features = imp.vector(node, src)
    if len(weight) != 2:
        raise imp.fail(f"{imp.label(node)} has a rank-{len(weight)} weight; a linear layer's is rank 2")
    inner, out = (weight[1], weight[0]) if transposed else weight
    if inner != features:
        raise imp.fail(f"{imp.label(node)}: its {fmt_shape(weight)} weight{' (transposed)' if transposed else ''} "
                        f"takes {inner:,} input features, but its input has {features:,}")
    imp.within(node, "the output width", (out,), 1, limits.MAX_DIM)
    return out


def _read_gemm(imp, node, a):
    src = imp.data(node)
    trans_a = imp.int_(node, a, "transA", 0, (0, 1))
    trans_b = imp.int_(node, a, "transB", 0, (0, 1))
    imp.int_(node, a, "broadcast")
    alpha = imp.float_(node, a, "alpha", 1.0)
    beta = imp.float_(node, a, "beta", 1.0)
    if trans_a or alpha != 1.0 or beta != 1.0:
        raise imp.fail(f"{imp.label(node)} with transA/alpha/beta is not a plain linear layer")
    out = _read_weight(imp, node, src, imp.dims(node, 1, "weight", required=True), bool(trans_b))
    bias = imp.dims(node, 2, "bias")
    if bias is not None and bias not in ((out,), (1, out)):
        raise imp.fail(f"{imp.label(node)}: its bias is {fmt_shape(bias)}; cnndsl imports a bias of one value "
                        f"per output ({out})")
    imp.add(node, "fc", [src], {"out": out, "bias": bias is not None})


def _read_matmul(imp, node, a):
    src = imp.data(node)
    out = _read_weight(imp, node, src, imp.dims(node, 1, "weight", required=True), False)
    imp.add(node, "fc", [src], {"out": out, "bias": False})


ONNX_IMPORTS = {"Gemm": OnnxImport((2, 3), 1, ("alpha", "beta", "transA", "transB", "broadcast"), _read_gemm),
                "MatMul": OnnxImport((2, 2), 1, (), _read_matmul)}
