"""Merges of parallel branches: `add(...)` (and a residual's addition), `cat(...)` (channels) and `mul(...)`
(elementwise product, a C x 1 x 1 gate broadcast over C x H x W: squeeze-and-excitation)."""
from __future__ import annotations

from math import prod

from .base import Op, OnnxImport, OpError, fmt_shape  # noqa: F401


class Add(Op):
    name = kind = "add"
    merge = "add"
    merge_verb, merge_need = "add", "the same shape"    # lowering's message for branches that do not fit
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
    merge_verb, merge_need = "concatenate", "the same height and width"
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


class Mul(Op):
    """The elementwise product of its inputs: all of one shape, or C x 1 x 1 inputs (a squeeze-and-excitation
    gate) broadcast over the C x H x W ones; the output has the full shape. No parameters and, as with every
    op but conv and fc, 0 MACs."""

    name = kind = "mul"
    merge = "mul"
    merge_verb, merge_need = "multiply", "the same shape, or C x 1 x 1 beside C x H x W (a gate)"
    fresh_output = True      # a new tensor; its backward keeps the inputs, not the output

    def torch_module(self, a, ins, inplace=False):
        return None

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # a * b * c runs as (a * b) * c: each product keeps both of its factors, the partial products too
        from math import prod
        kept = [(("in", k), self.tensor_bytes(s, batch, dtype)) for k, s in enumerate(ins)]
        for k in range(2, len(ins)):
            partial = max(ins[:k], key=prod)
            kept.append((("partial", k), self.tensor_bytes(partial, batch, dtype)))
        return kept

    def torch_forward(self, module, args, a):
        return " * ".join(args)

    def onnx(self, em, n, ins, shapes):
        # ONNX's Mul takes two inputs: a chain, the first node named after the IR node (the importer flattens a
        # chain of single-use products back into one mul)
        value = ins[0]
        for k, other in enumerate(ins[1:], 1):
            last = k == len(ins) - 1
            value = em.op("Mul", [value, other], n.name if last else f"{n.name}.product{k}",
                          n.name if k == 1 else f"{n.name}.{k}")

    def shape(self, a, ins):
        full = max(ins, key=prod)
        for other in ins:
            if other != full and not (len(full) == 3 and other == (full[0], 1, 1)):
                raise OpError(f"cannot multiply {fmt_shape(full)} and {fmt_shape(other)}: the inputs must have "
                              f"one shape, or be {full[0]}x1x1 (a gate) beside {fmt_shape(full)}", kind="shape")
        return full


OPS = [Add(), Concat(), Mul()]
SPELLINGS: dict = {}     # written as add(...), sum(...), cat(...), concat(...), mul(...) by the grammar


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"add": ("res(conv3-4 + conv3-4)", "res(conv3-6/2 bn + conv3-6 bn)", "add(conv1-6, conv3-6, none)"),
            "concat": ("cat(conv1-2, maxpool3/1[pad=1])", "cat(none, conv3-2, conv1-1 + avgpool3/1[pad=1])"),
            # equal shapes; a squeeze-and-excitation gate (C x 1 x 1, first or last); three inputs; vectors
            "mul": ("mul(conv3-6, conv1-6 tanh)", "mul(none, gap + conv1-2 + conv1-6 sigmoid)",
                    "mul(gap + conv1-6[bias] hardsigmoid, conv3-6/2 bn)",
                    "mul(none, conv1-6 sigmoid, gmp + conv1-6 sigmoid)", "gap + fc5 + mul(fc5 tanh, fc5 sigmoid)")}
