"""Ops that move or drop values: the graph's input, dropout, flatten and softmax."""
from __future__ import annotations

import math

from math import prod

from .base import LayerArgs, Op, OpError, whole_map, _no_sizes, _options, _real, OnnxImport


class Input(Op):
    name = kind = "input"


class Dropout(Op):
    name = kind = "dropout"
    ATTRS = {"p": "real"}
    ALIASES = {"p": "p", "rate": "p"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("dropout takes one rate", "size", "write it as dropout0.5 or dropout[p=0.5]")
        p = 0.5 if args.lead is None else _real(args.lead, "lead", "dropout rate", 0.0, 1.0, open_high=True)
        for canon, (written, value) in opts.items():
            if args.lead is not None:
                raise OpError("dropout rate given twice (after the name and as an option)", f"option:{written}",
                              f"write it once: dropout{args.lead} or dropout[p=...]", kind="name")
            p = _real(value, f"option:{written}", "dropout rate", 0.0, 1.0, open_high=True)
        return {"p": p}

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # its mask: bool on CUDA (native_dropout), on the CPU a tensor of the input's type (input * noise)
        if a["p"] == 0:
            return []
        return [(("mask",), self.tensor_bytes(ins[0], batch, "bool" if device == "cuda" else dtype))]

    def alias(self, a, inplace=False):
        return a["p"] == 0          # PyTorch returns the input itself

    def describe(self, a):
        return f"dropout {a['p']:g}"

    def torch_module(self, a, ins, inplace=False):
        return f"nn.Dropout(p={a['p']!r})"

    def onnx(self, em, n, ins, shapes):
        ratio = em.const(f"{n.name}.ratio", n.attrs["p"])     # an inference graph: the identity, kept for import
        em.op("Dropout", [ins[0], ratio], n.name, n.name)

    def spell(self, a):
        return f"dropout[p={a['p']!r}]"


class Flatten(Op):
    name = kind = "flatten"
    flattens = True

    def shape(self, a, ins):
        return (prod(ins[0]),)

    def unit_spans(self, a, in_shape, out_shape):
        return whole_map(in_shape)     # a vector's one unit per axis: all of the map it flattened

    def alias(self, a, inplace=False):
        return True                 # a view of its input

    def torch_module(self, a, ins, inplace=False):
        return "nn.Flatten()"

    def onnx(self, em, n, ins, shapes):
        em.op("Flatten", [ins[0]], n.name, n.name, axis=1)

    def spell(self, a):
        return "flatten"


class Softmax(Op):
    name = kind = "softmax"
    logits_tail = True

    autocast = "float32"

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        return [(("out",), self.tensor_bytes(out, batch, dtype))]

    def torch_module(self, a, ins, inplace=False):
        return "nn.Softmax(dim=1)"

    def onnx(self, em, n, ins, shapes):
        em.op("Softmax", [ins[0]], n.name, n.name, axis=1)

    def spell(self, a):
        return "softmax"


INPUT, DROPOUT, FLATTEN, SOFTMAX = Input(), Dropout(), Flatten(), Softmax()


def _dropout(args: LayerArgs, in_shape: tuple):
    return "dropout", DROPOUT.build(args, in_shape)


def _plain(op):
    def build(args: LayerArgs, in_shape: tuple):
        _options(args, {})
        _no_sizes(args, args.word)
        return op.name, {}
    return build


OPS = [INPUT, DROPOUT, FLATTEN, SOFTMAX]
SPELLINGS = {"dropout": _dropout, "drop": _dropout, "flatten": _plain(FLATTEN), "softmax": _plain(SOFTMAX)}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"input": ("conv1-2",), "dropout": ("dropout", "dropout0.3", "gap + dropout[p=0.1] + fc3"),
            "flatten": ("flatten", "conv1-2 + flatten + fc3"), "softmax": ("gap + fc4 | softmax",)}


# ------------------------------------------------------------- ONNX import --
# `imp` is the importer (cnndsl.backends.from_onnx); Reshape to N x features is read there, with the
# graph's plumbing (Constant, Identity).

def _read_dropout(imp, node, a):
    src = imp.data(node)
    imp.int_(node, a, "seed")
    if imp.int_(node, a, "is_test", 0 if imp.opset < 7 else 1) == 0:
        raise imp.fail(f"{imp.label(node)} runs in training mode (is_test=0)", "export the model in eval mode")
    training = imp.values(node, 2, "training_mode", rank=0)
    if training is not None and bool(training):
        raise imp.fail(f"{imp.label(node)} runs in training mode (its training_mode is true)",
                        "export the model in eval mode")
    ratio = imp.scalar(node, 1, "ratio", rank=0)
    if ratio is None:
        ratio = imp.float_(node, a, "ratio", 0.5, low=0.0, high=1.0)
    p = imp.real(node, "the dropout ratio", ratio, 0.0, 1.0, open_high=True)
    imp.add(node, "dropout", [src], {"p": p})


def _read_flatten(imp, node, a):
    src = imp.data(node)
    axis = imp.int_(node, a, "axis", 1)
    rank = len(imp.shape[src]) + 1
    if not -rank <= axis <= rank or (axis + rank if axis < 0 else axis) != 1:
        raise imp.fail(f"{imp.label(node)} flattens from axis {axis}; cnndsl flattens from axis 1")
    imp.add(node, "flatten", [src], {})


def _read_softmax(imp, node, a):
    src = imp.data(node)
    shape = imp.shape[src]
    rank = len(shape) + 1
    axis = imp.int_(node, a, "axis", -1 if imp.opset >= 13 else 1)
    if not -rank <= axis < rank:
        raise imp.fail(f"{imp.label(node)}: axis {axis} is out of range for its rank-{rank} input")
    # before opset 13, Softmax flattens from its axis: over channels only when nothing follows them
    if axis % rank != 1 or (imp.opset < 13 and math.prod(shape[1:]) != 1):
        raise imp.fail(f"{imp.label(node)} over axis {axis}; cnndsl's softmax runs over channels")
    imp.add(node, "softmax", [src], {})


ONNX_IMPORTS = {
    "Dropout": OnnxImport((1, 3), 2, ("ratio", "seed", "is_test", "consumed_inputs"), _read_dropout),
    "Flatten": OnnxImport((1, 1), 1, ("axis",), _read_flatten),
    "Softmax": OnnxImport((1, 1), 1, ("axis",), _read_softmax),
}
