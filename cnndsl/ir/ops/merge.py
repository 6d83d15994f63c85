"""Merges of parallel branches: `add(...)` (and a residual's addition) and `cat(...)` (channels)."""
from __future__ import annotations

from .base import Op, OpError, fmt_shape


class Add(Op):
    name = kind = "add"
    merge = "add"
    fresh_output = True

    def torch_module(self, a, ins, inplace=False):
        return None

    def torch_forward(self, module, args, a):
        return " + ".join(args)

    def onnx(self, em, n, ins, shapes):
        em.op("Add" if len(ins) == 2 else "Sum", ins, n.name, n.name)

    def shape(self, a, ins):
        for other in ins[1:]:
            if other != ins[0]:
                raise OpError(f"cannot add {fmt_shape(ins[0])} and {fmt_shape(other)}", kind="shape")
        return ins[0]


class Concat(Op):
    name = kind = "concat"
    merge = "cat"
    fresh_output = True

    def torch_module(self, a, ins, inplace=False):
        return None

    def torch_forward(self, module, args, a):
        return f"torch.cat([{', '.join(args)}], 1)"

    def onnx(self, em, n, ins, shapes):
        em.op("Concat", ins, n.name, n.name, axis=1)

    def shape(self, a, ins):
        first = ins[0]
        for other in ins[1:]:
            if len(other) != len(first) or other[1:] != first[1:]:
                raise OpError(f"cannot concatenate {fmt_shape(first)} and {fmt_shape(other)}: "
                              "sizes other than channels must agree", kind="shape")
        return (sum(s[0] for s in ins),) + tuple(first[1:])


OPS = [Add(), Concat()]
SPELLINGS: dict = {}     # written as add(...), sum(...), cat(...), concat(...) by the grammar


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"add": ("res(conv3-4 + conv3-4)", "res(conv3-6/2 bn + conv3-6 bn)", "add(conv1-6, conv3-6, none)"),
            "concat": ("cat(conv1-2, maxpool3/1[pad=1])", "cat(none, conv3-2, conv1-1 + avgpool3/1[pad=1])")}
