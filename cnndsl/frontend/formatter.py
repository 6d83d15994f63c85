"""The pretty-printer: a syntax tree back to canonical spec text (parse -> print -> parse is the same IR).

Numbers print as Python's shortest round-tripping text (str for ints, repr for floats: 0.5, 1e-05, 1e+16,
5e-324), which the FLOAT terminal reads back to the same value within its 32 characters; the parser never
yields inf or nan. Pipelines nest at most MAX_NESTING brackets deep, so item() recurses boundedly;
expressions may be long chains (1+1+...+1), so expr() walks them with an explicit stack.
"""
from __future__ import annotations

from . import syntax as A
from ..ir.ops import SPELLINGS, normalize_word

# Binding strength, loosest first: pipeline (|) < sequence (+) < repeat (xN) < unit.
_PIPE, _SEQ, _REP, _UNIT = range(4)
_EXPR_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2}


def format_tree(spec: A.Spec) -> str:
    lines = []
    for st in spec.statements:
        if isinstance(st, A.InputStmt):
            lines.append("input " + "x".join(map(str, st.dims)))
        elif isinstance(st, A.ActivationStmt):
            lines.append(f"activation {layer(st.layer)}")
        elif isinstance(st, A.AugmentStmt):
            lines.append("augment " + ", ".join(o.name if o.value is None else f"{o.name}={expr(o.value)}"
                                                for o in st.options))
        elif isinstance(st, A.BlockDef):
            params = ", ".join(p.name if p.default is None else f"{p.name}={expr(p.default)}" for p in st.params)
            lines.append(f"block {st.name}({params}) = {item(st.body, _PIPE)}")
        else:
            stages = st.stages if isinstance(st, A.Pipeline) else (st,)
            lines.append("\n| ".join(item(s, _SEQ) for s in stages))
    return "\n".join(lines) + "\n"


def item(node, context: int) -> str:
    """Text of a pipeline item, in parentheses when it binds looser than its context needs."""
    if isinstance(node, A.Pipeline):
        text, prec = " | ".join(item(s, _SEQ) for s in node.stages), _PIPE
    elif isinstance(node, A.Sequence):
        text, prec = " + ".join(item(s, _REP) for s in node.items), _SEQ
    elif isinstance(node, A.Repeat):
        count = node.count
        suffix = f"x{count.value}" if isinstance(count, A.Num) and isinstance(count.value, int) else f"x{{{expr(count)}}}"
        text, prec = f"{item(node.body, _UNIT)} {suffix}", _REP
    elif isinstance(node, A.Labeled):      # `a: b: x` does not parse: a label on a label needs parentheses
        body = f"({item(node.body, _PIPE)})" if isinstance(node.body, A.Labeled) else item(node.body, _UNIT)
        text, prec = f"{node.label}: {body}", _UNIT
    elif isinstance(node, A.Layer):
        text, prec = layer(node), _UNIT
    elif isinstance(node, A.Call):
        args = ", ".join(expr(a.value) if a.name is None else f"{a.name}={expr(a.value)}" for a in node.args)
        text, prec = f"{node.name}({args})", _UNIT
    elif isinstance(node, A.Res):
        parts = [item(node.body, _PIPE)] + ([item(node.shortcut, _PIPE)] if node.shortcut is not None else [])
        text, prec = f"res({', '.join(parts)})", _UNIT
    elif isinstance(node, A.Branches):
        text, prec = f"{node.merge}({', '.join(item(b, _PIPE) for b in node.branches)})", _UNIT
    else:
        raise TypeError(f"cannot format {type(node).__name__}")
    return f"({text})" if prec < context else text


def _number(value) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _size(e, lead: bool) -> str:
    if isinstance(e, A.Num):
        return _number(e.value)
    if isinstance(e, A.Dims):
        return "x".join(map(str, e.value))
    if isinstance(e, A.Var) and not lead:
        return e.name
    return "{" + expr(e) + "}"


def layer(node: A.Layer) -> str:
    # built-in layers print in lower case; a block called without parentheses keeps its exact spelling
    text = node.word.lower() if normalize_word(node.word) in SPELLINGS else node.word
    if node.lead is not None:
        # `x 3` is a layer named x, `x3` a repeat and `x{3}` a repeat by an expression: keep the space
        text += (" " if text in ("x", "X") else "") + _size(node.lead, True)
    if node.size is not None:
        text += "-" + _size(node.size, False)
    if node.stride is not None:
        text += "/" + _size(node.stride, False)
    if node.options:
        text += "[" + ", ".join(o.name if o.value is None else f"{o.name}={expr(o.value)}"
                                for o in node.options) + "]"
    return text


def expr(e, parent: int = 0) -> str:
    """An expression's text with the fewest parentheses that keep its tree, built without recursion."""
    out: list[str] = []
    stack: list = [(e, parent)]
    while stack:
        top = stack.pop()
        if isinstance(top, str):
            out.append(top)
            continue
        node, context = top
        if isinstance(node, A.BinOp):
            prec = _EXPR_PREC[node.op]
            parens = prec < context
            stack += ([")"] if parens else []) + [(node.right, prec + 1), f" {node.op} ", (node.left, prec)] + \
                (["("] if parens else [])
        elif isinstance(node, A.Neg):
            stack += [(node.operand, 3), "-"]
        elif isinstance(node, A.Num):
            out.append(_number(node.value))
        elif isinstance(node, A.Dims):
            out.append("x".join(map(str, node.value)))
        elif isinstance(node, A.Var):
            out.append(node.name)
        else:
            raise TypeError(f"cannot format {type(node).__name__}")
    return "".join(out)
