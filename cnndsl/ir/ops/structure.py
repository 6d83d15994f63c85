"""Ops that move or drop values: the graph's input, dropout, flatten and softmax."""
from __future__ import annotations

from math import prod

from .base import LayerArgs, Op, OpError, whole_map, _no_sizes, _options, _real


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

    def torch_module(self, a, ins, inplace=False):
        return "nn.Flatten()"

    def onnx(self, em, n, ins, shapes):
        em.op("Flatten", [ins[0]], n.name, n.name, axis=1)

    def spell(self, a):
        return "flatten"


class Softmax(Op):
    name = kind = "softmax"
    logits_tail = True

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
