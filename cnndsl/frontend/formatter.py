"""The pretty-printer: spec text in canonical form, comments and blank lines kept (parse -> print -> parse is
the same IR, and printing printed text changes nothing).

Each statement prints on its own line (a pipeline's stages one per line, `| ` first), long lines wrap after a
`+`, `|` or `,` where the parser continues the line, and comments stay with what they were written beside:
a comment on its own line stays on its own line before the statement (or stage) it preceded, blank lines
between statements stay (one at most), and a comment at the end of a statement's (or stage's) last line stays
there. A comment inside a statement that prints as one line moves to its own line before that statement.

Numbers print as Python's shortest round-tripping text (str for ints, repr for floats: 0.5, 1e-05, 1e+16,
5e-324), which the FLOAT terminal reads back to the same value within its 32 characters; the parser never
yields inf or nan. Pipelines nest at most MAX_NESTING brackets deep, so item() recurses boundedly;
expressions may be long chains (1+1+...+1), so expr() walks them with an explicit stack.
"""
from __future__ import annotations

import re

from . import syntax as A
from ..ir.ops import SPELLINGS, normalize_word

# Binding strength, loosest first: pipeline (|) < sequence (+) < repeat (xN) < unit.
_PIPE, _SEQ, _REP, _UNIT = range(4)
_EXPR_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2}
WIDTH = 100          # lines longer than this wrap where the parser continues a line
INDENT = "    "      # a wrapped line's continuation


def format_tree(spec: A.Spec) -> str:
    """Canonical text of a syntax tree, without comments (format_source keeps them)."""
    lines = []
    for st in spec.statements:
        lines.extend(line for stage in statement(st) for line in wrap(stage))
    return "\n".join(lines) + "\n"


def statement(st) -> list[str]:
    """A statement's text: one string, or one per stage of a top-level pipeline (`| ` before all but the first)."""
    if isinstance(st, A.InputStmt):
        return ["input " + "x".join(map(str, st.dims))]
    if isinstance(st, A.InputExpr):
        return ["input " + "x".join(_size(d, True) for d in st.dims)]
    if isinstance(st, A.ParamStmt):
        return [f"param {st.name} = {expr(st.value)}"]
    if isinstance(st, A.UseStmt):
        return [f'use "{st.path}"']
    if isinstance(st, A.ActivationStmt):
        return [f"activation {layer(st.layer)}"]
    if isinstance(st, A.AugmentStmt):
        return ["augment " + ", ".join(o.name if o.value is None else f"{o.name}={expr(o.value)}"
                                       for o in st.options)]
    if isinstance(st, A.BlockDef):
        params = ", ".join(p.name if p.default is None else f"{p.name}={expr(p.default)}" for p in st.params)
        head = f"block {st.name}({params})" if params else f"block {st.name}"
        return [f"{head} = {item(st.body, _PIPE)}"]
    return [("| " if i else "") + item(s, _SEQ) for i, s in enumerate(stages_of(st))]


def stages_of(st) -> tuple:
    return st.stages if isinstance(st, A.Pipeline) else (st,)


_STRING_OR_COMMENT = re.compile(r'"[^"\n]*"|#[^\n]*')


def format_source(text: str, spec: A.Spec) -> str:
    """Canonical text of `text` (already read into `spec`), its comments and blank lines kept."""
    comments = []                                    # (line, own line?, text)
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for m in _STRING_OR_COMMENT.finditer(text):
        if m.group().startswith("#"):
            line = text.count("\n", 0, m.start()) + 1
            own = not text[starts[line - 1]:m.start()].strip()
            comments.append((line, own, m.group().rstrip()))
    lines = text.split("\n")
    out: list[str] = []
    last = 0                                         # the last source line printed from
    ci = 0

    def gap(line: int) -> None:                      # a blank line kept where the source had one
        if out and out[-1] != "" and any(not lines[i].strip() for i in range(last, line - 1)):
            out.append("")

    statements = spec.statements
    for si, st in enumerate(statements):
        # a comment at the end of a line belongs to the last statement (and stage) on that line
        shared = si + 1 < len(statements) and statements[si + 1].span.line == st.span.end_line
        while ci < len(comments) and comments[ci][0] < st.span.line:
            gap(comments[ci][0])
            out.append(comments[ci][2])
            last = comments[ci][0]
            ci += 1
        gap(st.span.line)
        texts = statement(st)
        parts = stages_of(st) if len(texts) > 1 else (st,)
        for k, (piece, node) in enumerate(zip(texts, parts)):
            first = node.span.line if k else st.span.line
            end = node.span.end_line if k + 1 < len(parts) else st.span.end_line
            if (parts[k + 1].span.line == end if k + 1 < len(parts) else shared):
                end -= 1
            mine = []
            while ci < len(comments) and comments[ci][0] <= end:
                mine.append(comments[ci])
                ci += 1
            trailing = [c for c in mine if not c[1] and c[0] == node.span.end_line]
            for c in mine:
                if c not in trailing or c is not trailing[-1]:
                    out.append(c[2])
            body = wrap(piece)
            if trailing:
                body[-1] += "  " + trailing[-1][2]
            out.extend(body)
        last = max(st.span.end_line, last)
        if ci and comments[ci - 1][0] > last:
            last = comments[ci - 1][0]
    while ci < len(comments):
        gap(comments[ci][0])
        out.append(comments[ci][2])
        last = comments[ci][0]
        ci += 1
    return "\n".join(out) + "\n" if out else ""


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """`line` cut into lines of at most `width` characters where possible, after a `+`, `|` or `,` where the
    parser continues the line (inside brackets, or after an operator); continuations are indented."""
    if len(line) <= width:
        return [line]
    cuts = []                                        # positions just after a break point's space
    depth, quoted = 0, False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == " " and i > 0 and (line[i - 1] == "+" or (depth > 0 and line[i - 1] in ",|")):
            cuts.append((i + 1, depth))
    out, start, prefix = [], 0, ""
    while len(prefix) + len(line) - start > width:
        room = width - len(prefix)
        fit = [(c, d) for c, d in cuts if start < c and c - start <= room]
        if fit:     # the outermost break point that fits, the last of those: inner lists stay whole
            low = min(d for _, d in fit)
            cut = max(c for c, d in fit if d == low)
        else:
            cut = next((c for c, _ in cuts if c > start), None)
        if cut is None:
            break
        out.append(prefix + line[start:cut].rstrip())
        start, prefix = cut, INDENT
    out.append(prefix + line[start:])
    return out


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
        elif isinstance(node, A.Func):
            parts: list = [")"]
            for i, arg in enumerate(reversed(node.args)):
                parts.append((arg.value, 0))
                if arg.name is not None:
                    parts.append(f"{arg.name}=")
                if i + 1 < len(node.args):
                    parts.append(", ")
            stack += parts + [f"{node.name}("]
        elif isinstance(node, A.Num):
            out.append(_number(node.value))
        elif isinstance(node, A.Dims):
            out.append("x".join(map(str, node.value)))
        elif isinstance(node, A.Var):
            out.append(node.name)
        else:
            raise TypeError(f"cannot format {type(node).__name__}")
    return "".join(out)
