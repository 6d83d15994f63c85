"""The syntax tree: frozen nodes, each with the span of the text it came from."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

from ..errors import Span



class Num(NamedTuple):
    value: Union[int, float]
    span: Span


class Dims(NamedTuple):
    value: tuple[int, ...]
    span: Span


class Var(NamedTuple):
    name: str
    span: Span


class BinOp(NamedTuple):
    op: str                      # one of + - * / // %
    left: Any
    right: Any
    span: Span
    depth: int = 1               # operators on the longest path down to a leaf (bounded by MAX_EXPR_DEPTH)


class Neg(NamedTuple):
    operand: Any
    span: Span
    depth: int = 1


class Func(NamedTuple):
    """A function in an expression: ceil(x), max(a, b), make_divisible(v, divisor=8)."""

    name: str
    args: tuple                  # Arg
    span: Span
    name_span: Span
    depth: int = 1


class Option(NamedTuple):
    name: str
    value: Any                   # an expression, or None for a flag like [valid]
    span: Span


class Options(tuple):
    """A layer's `[...]` options: a tuple of Option that also knows the span of its brackets."""

    def __new__(cls, items, span: Span):
        self = super().__new__(cls, items)
        self.span = span
        return self


class Layer(NamedTuple):
    """`word lead-size/stride[options]`, e.g. conv3-64/2[pad=0]; sizes are expressions."""

    word: str
    lead: Any
    size: Any
    stride: Any
    options: tuple[Option, ...]
    span: Span
    word_span: Span


class Arg(NamedTuple):
    name: Optional[str]
    value: Any
    span: Span


class Call(NamedTuple):
    name: str
    args: tuple[Arg, ...]
    span: Span
    name_span: Span


class Res(NamedTuple):
    body: Any
    shortcut: Any                # None: identity or automatic projection
    span: Span


class Branches(NamedTuple):
    merge: str                   # "cat", "add", "mul" (a merge op's word) or "split"
    branches: tuple[Any, ...]
    span: Span


class Labeled(NamedTuple):
    label: str
    body: Any
    span: Span
    label_span: Span


class Repeat(NamedTuple):
    body: Any
    count: Any                   # an expression
    span: Span


class Sequence(NamedTuple):
    items: tuple[Any, ...]
    span: Span


class Pipeline(NamedTuple):
    stages: tuple[Any, ...]
    span: Span


class InputStmt(NamedTuple):
    dims: tuple[int, ...]
    span: Span


class InputExpr(NamedTuple):
    """`input {res}x{res}x3`: an input whose sizes are expressions."""

    dims: tuple                  # expressions
    span: Span


class ParamStmt(NamedTuple):
    """`param width = 1.0`: a name every expression may use, whose value the command line may override."""

    name: str
    value: Any
    span: Span
    name_span: Span


class UseStmt(NamedTuple):
    """`use "families/efficientnet.cnn"`: the blocks and params of another file."""

    path: str
    span: Span
    path_span: Span


class ActivationStmt(NamedTuple):
    layer: Any                   # a Layer that must name an activation, e.g. tanh or leakyrelu[slope=0.2]
    span: Span


class AugmentStmt(NamedTuple):
    options: tuple[Option, ...]   # training-time augmentation, e.g. augment flip, crop=4
    span: Span


class Param(NamedTuple):
    name: str
    default: Any
    span: Span


class BlockDef(NamedTuple):
    name: str
    params: tuple[Param, ...]
    body: Any
    span: Span
    name_span: Span


class Spec(NamedTuple):
    statements: tuple[Any, ...]
