"""The Lark parser (built once), the transformer from tokens to the frozen syntax tree, and diagnostics."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from .. import limits
from ..errors import LimitError, Span, SyntaxError_, ValueError_
from .syntax import (Num, Dims, Var, BinOp, Neg, Func, Option, Options, Layer, Arg, Call, Res, Branches, Labeled, Repeat,
                     Sequence, Pipeline, InputStmt, InputExpr, ActivationStmt, AugmentStmt, Param, BlockDef, ParamStmt,
                     UseStmt, Spec)

# ---------------------------------------------------------- the parser ----

GRAMMAR_PATH = Path(__file__).with_name("cnndsl.lark")      # inside the wheel
if not GRAMMAR_PATH.exists():  # running from a source checkout: grammar/ at the top
    GRAMMAR_PATH = Path(__file__).resolve().parents[2] / "grammar" / "cnndsl.lark"


def tok_span(tok) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _span_of(items) -> Span:
    spans = [it if isinstance(it, Span) else (tok_span(it) if hasattr(it, "start_pos") else it.span)
             for it in items if it is not None]
    span = spans[0]
    for s in spans[1:]:
        span = span.join(s)
    return span


def _int(tok, text: Optional[str] = None, span: Optional[Span] = None) -> int:
    """The integer in a token (or in `text`, a part of it at `span`), refusing absurdly long numbers."""
    text = str(tok) if text is None else text
    if len(text) > limits.MAX_INT_DIGITS:
        raise LimitError(f"number {text[:20]}{'...' if len(text) > 20 else ''} has {len(text)} digits",
                         span or tok_span(tok), f"numbers may have at most {limits.MAX_INT_DIGITS} digits")
    return int(text)


def _float(tok) -> float:
    """The finite, nonzero-if-written-nonzero float in a token: no literal turns into inf or silently into 0."""
    text = str(tok)
    if len(text) > limits.MAX_FLOAT_CHARS:
        raise LimitError(f"number literal {text[:20]}... has {len(text)} characters", tok_span(tok),
                         f"write at most {limits.MAX_FLOAT_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise LimitError(f"number {text} is too large to represent", tok_span(tok),
                         "numbers must be below about 1.8e308")
    if value == 0.0 and re.search(r"[1-9]", text.lower().partition("e")[0]):
        raise ValueError_(f"number {text} is too small to represent: it would be read as 0", tok_span(tok),
                          "numbers must be 0 or at least about 5e-324 in size; write 0 if you mean 0")
    return value


def _dims(tok) -> tuple[int, ...]:
    parts = re.split(r"[x\u00d7X]", str(tok))
    if len(parts) > limits.MAX_DIMS:
        raise LimitError(f"dimensions with {len(parts)} parts", tok_span(tok),
                         f"dimensions have at most {limits.MAX_DIMS} parts, as in 32x32x3")
    for p in parts:
        if len(p) > limits.MAX_INT_DIGITS:
            raise LimitError(f"dimension {p[:20]}... has {len(p)} digits", tok_span(tok),
                             f"numbers may have at most {limits.MAX_INT_DIGITS} digits")
    return tuple(int(p) for p in parts)


def _count_text(tok) -> str:
    """The digits of a REPEAT token: `x2`, `x 2`, `\u00d72`."""
    return tok[1:].lstrip(" \t")


_PACKED = re.compile(r"([a-z_]+)([0-9]+)-([0-9]+)", re.IGNORECASE | re.ASCII)    # the LAYER terminal's parts


def _check_count(items, limit: int, what: str, span: Span) -> None:
    if len(items) > limit:
        raise LimitError(f"{len(items):,} {what}", span, f"at most {limit} are allowed")


def _depth(node) -> int:
    return node.depth if isinstance(node, (BinOp, Neg, Func)) else 0


def _deep(depth: int, span: Span) -> int:
    """An expression's depth, refused beyond MAX_EXPR_DEPTH so no walk over it can recurse without bound."""
    if depth > limits.MAX_EXPR_DEPTH:
        raise LimitError(f"expression nests more than {limits.MAX_EXPR_DEPTH} operators deep", span,
                         "split the arithmetic up, e.g. into block parameters")
    return depth


class _ToAst:
    """Callbacks run by the LALR parser on each reduction (no recursion over the tree)."""

    def start(self, c):
        return Spec(tuple(x for x in c if x is not None))

    def input_stmt(self, c):
        return InputStmt(_dims(c[1]), _span_of(c))

    def input_expr(self, c):
        """`input {res}x{res}x3`: the parts after `input`, each a number or an expression."""
        dims = []
        for part in c[1:]:
            if not isinstance(part, str):            # an expression (tokens are str)
                dims.append(part)
            elif part.type in ("DIMS", "INT"):
                span = tok_span(part)
                dims.extend(Num(v, span) for v in (_dims(part) if part.type == "DIMS" else (_int(part),)))
            elif part.type == "REPEAT":                # `x3`, `x 3`: the next size
                dims.append(Num(_int(part, _count_text(part)), tok_span(part)))
            if len(dims) > limits.MAX_DIMS:
                raise LimitError(f"dimensions with more than {limits.MAX_DIMS} parts", _span_of(c),
                                 f"dimensions have at most {limits.MAX_DIMS} parts, as in 32x32x3")
        return InputExpr(tuple(dims), _span_of(c))

    def param_stmt(self, c):
        return ParamStmt(str(c[1]), c[2], _span_of(c), tok_span(c[1]))

    def use_stmt(self, c):
        tok = c[1]
        path = str(tok)[1:-1]
        for i, ch in enumerate(path):
            if not (ch.isascii() and ch.isprintable()) or ch == "\\":
                span = tok_span(tok)
                at = Span(span.line, span.column + 1 + i, span.line, span.column + 2 + i, span.start + 1 + i,
                          span.start + 2 + i)
                if not ch.isascii():
                    raise _non_ascii_char(ch, at, "file names in 'use' are printable ASCII")
                what = "a backslash" if ch == "\\" else f"the control character {ch!r}"
                raise SyntaxError_(f"{what} in a file name", at, "file names in 'use' are printable ASCII, with "
                                   "'/' between folders, as in use \"families/efficientnet.cnn\"")
        if not path:
            raise SyntaxError_("an empty file name", tok_span(tok), 'name a spec file: use "families/resnet.cnn"')
        return UseStmt(path, _span_of(c), tok_span(tok))

    def act_stmt(self, c):
        return ActivationStmt(c[1], _span_of(c))

    def augment_stmt(self, c):
        options = tuple(o for o in c[1:] if o is not None)
        span = _span_of([c[0], *options])
        _check_count(options, limits.MAX_OPTIONS, "augment options", span)
        return AugmentStmt(options, span)

    def param(self, c):
        return Param(str(c[0]), c[1], _span_of(c))

    def block_def(self, c):
        params = tuple(p for p in c[2:-1] if p is not None)
        _check_count(params, limits.MAX_PARAMS, "block parameters", tok_span(c[1]))
        return BlockDef(str(c[1]), params, c[-1], _span_of(c), tok_span(c[1]))

    def pipeline(self, c):
        return c[0] if len(c) == 1 else Pipeline(tuple(c), _span_of(c))

    # `?rule`s with one child are inlined by Lark: these callbacks only see the longer forms

    def chain(self, c):
        return c[0] if len(c) == 1 else Sequence(tuple(c), _span_of(c))

    def rep(self, c):
        body, rest = c[0], [x for x in c[1:] if x is not None]
        if not rest:
            return body
        rep_tok, expr = rest[0], (rest[1] if len(rest) > 1 else None)
        if rep_tok.type == "REPEAT":
            count = Num(_int(rep_tok, _count_text(rep_tok)), tok_span(rep_tok))
            return Repeat(body, count, _span_of([body, rep_tok]))
        return Repeat(body, expr, _span_of([body, rep_tok, expr]))

    def seq(self, c):
        return c[0] if len(c) == 1 else Sequence(tuple(c), _span_of(c))

    def unit(self, c):
        label, body = c if len(c) == 2 else (None, c[0])
        if label is None:
            return body
        return Labeled(str(label)[:-1], body, _span_of([label, body]), tok_span(label))

    def group(self, c):
        return c[0]

    def res(self, c):
        return Res(c[1], c[2], _span_of(c))

    def cat(self, c):
        return Branches("cat", tuple(c[1:]), _span_of(c))

    def add(self, c):
        return Branches("add", tuple(c[1:]), _span_of(c))

    def mul(self, c):
        return Branches("mul", tuple(c[1:]), _span_of(c))

    def split(self, c):
        return Branches("split", tuple(c[1:]), _span_of(c))

    def call(self, c):
        args = tuple(a for a in c[1:] if a is not None)
        _check_count(args, limits.MAX_PARAMS, "arguments", tok_span(c[0]))
        return Call(str(c[0]), args, _span_of(c), tok_span(c[0]))

    def arg(self, c):
        name, value = c
        return Arg(None if name is None else str(name), value, _span_of(c))

    def layer(self, c):
        word, lead, size, stride, opts = c
        if lead is not None and not word.isalpha() and any(ch.isdigit() for ch in word):   # `e1 0.5`, `e1x 2.5`
            raise SyntaxError_(f"a number right after the name '{word}'", lead.span,
                               f"'{word}' holds digits, so it is a block's name and takes no size; call a block "
                               f"as {word}(...)")
        return Layer(str(word), lead, size, stride, opts or (), _span_of([word, lead, size, stride, opts]),
                     tok_span(word))

    def packed_layer(self, c):
        tok, stride, opts = c
        m = _PACKED.match(tok)
        line, col, pos = tok.line, tok.column - 1, tok.start_pos
        word_end, lead_end, size_start = m.end(1), m.end(2), m.start(3)
        word_span = Span(line, col + 1, line, col + 1 + word_end, pos, pos + word_end)
        lead_span = Span(line, col + 1 + word_end, line, col + 1 + lead_end, pos + word_end, pos + lead_end)
        size_span = Span(line, col + 1 + size_start, line, tok.end_column, pos + size_start, tok.end_pos)
        lead = Num(_int(tok, m.group(2), lead_span), lead_span)
        size = Num(_int(tok, m.group(3), size_span), size_span)
        return Layer(m.group(1), lead, size, stride, opts or (), _span_of([tok, stride, opts]), word_span)

    def options(self, c):
        items = [o for o in c[1:-1] if isinstance(o, Option)]
        span = _span_of([c[0], c[-1]])
        _check_count(items, limits.MAX_OPTIONS, "options", span)
        return Options(items, span)

    def option(self, c):
        return Option(str(c[0]).lower(), c[1], _span_of(c))

    def int_size(self, c):
        return Num(_int(c[0]), tok_span(c[0]))

    def float_size(self, c):
        return Num(_float(c[0]), tok_span(c[0]))

    def dims_size(self, c):
        return Dims(_dims(c[0]), tok_span(c[0]))

    dims_num = dims_size

    def num(self, c):
        tok = c[0]
        return Num(_int(tok) if tok.type == "INT" else _float(tok), tok_span(tok))

    def var(self, c):
        return Var(str(c[0]), tok_span(c[0]))

    def func(self, c):
        args = tuple(a for a in c[1:] if a is not None)
        _check_count(args, limits.MAX_PARAMS, "arguments", tok_span(c[0]))
        span = _span_of(c)
        depth = max((_depth(a.value) for a in args), default=0) + 1
        return Func(str(c[0]), args, span, tok_span(c[0]), _deep(depth, span))

    def neg_expr(self, c):
        span = _span_of(c)
        return Neg(c[-1], span, _deep(_depth(c[-1]) + 1, span))

    def _bin(op):
        def build(self, c):
            span = _span_of(c)
            return BinOp(op, c[0], c[1], span, _deep(max(_depth(c[0]), _depth(c[1])) + 1, span))
        return build

    add_expr, sub_expr, mul_expr = _bin("+"), _bin("-"), _bin("*")
    div_expr, floordiv_expr, mod_expr = _bin("/"), _bin("//"), _bin("%")
    del _bin


_HEADS = frozenset(["WORD", "RES", "CAT", "CONCAT", "ADD", "SUM", "MUL", "SPLIT", "BLOCK", "PARAM", "USE"])  # what a name starts with
_GLUE = _HEADS | frozenset(["INT", "DIMS", "FLOAT"])          # what may be glued to it, without a space
_MERGES = frozenset(["RES", "CAT", "CONCAT", "ADD", "SUM", "MUL", "SPLIT"])   # keywords only before '(': a name elsewhere
_LAYER_WORDS: dict = {}                                        # text -> does it normalize to a layer's word?


def _layer_word(text: str) -> bool:
    """Is `text` a built-in layer's word, as `fc` of fc4096 or `Max_Pool` of Max_Pool3, or a packed layer
    (`conv3-64`) whose word is? Remembered for the next time (at most 4,096 texts)."""
    found = _LAYER_WORDS.get(text)
    if found is None:
        from ..ir.ops import SPELLINGS, normalize_word
        if len(_LAYER_WORDS) >= 4096:
            _LAYER_WORDS.clear()
        found = _LAYER_WORDS[text] = normalize_word(text.rstrip("0123456789-")) in SPELLINGS
    return found


def _check_name(parts: list, head, tok) -> None:
    if tok.end_pos - head.start_pos > limits.MAX_NAME_CHARS:
        raise LimitError(f"name {''.join(parts)[:20]}... is more than {limits.MAX_NAME_CHARS} characters long",
                         tok_span(head).join(tok_span(tok)), f"names may have at most {limits.MAX_NAME_CHARS} characters")


def _gluable(tok) -> bool:
    """Can this token be part of a name: a word or digits (2x3 with an ASCII x; 1e5, not 1.5)?"""
    if tok.type == "DIMS":
        return "\u00d7" not in tok.value
    if tok.type == "FLOAT":
        return tok.value.isalnum()
    return True


def _token(type_: str, value: str, first, last, start: int = 0, end: int = 0):
    """A token of `type_` from `first`'s start (plus `start` characters) to `last`'s end (less `end`), on one line."""
    from lark import Token
    return Token(type_, value, first.start_pos + start, first.line, first.column + start, last.end_line,
                 last.end_column - end, last.end_pos - end)


class _Continuations:
    """Postlexer: names with digits joined into one token; newlines end statements except inside brackets or
    around `|`/`+`.

    The lexer reads `fc4096` as the word `fc` and the number 4096, and so also `e1` and `incep3a` as a word
    and digits (and `c2-1` as a packed layer). A word that is not a built-in layer's word is joined here with
    the digits and words written right after it into one WORD: `e1`, `incep3a`, `w2`, `my-block2`; `fc4096`,
    `maxpool3`, `dropout0.5` and `conv3-64` stay layers. In the head of a definition (after `block` or
    `param`, up to its `=`), every name is joined, so `block fc1 = ...` reaches lowering as the name `fc1`,
    which it refuses with a diagnostic.
    """

    always_accept = ("_NL",)
    _OPENERS = frozenset("([{")
    _CLOSERS = frozenset(")]}")
    _CONTINUE_AFTER = frozenset(["|", "+", ",", "=", "(", "[", "{", "-", "/", "*", "//", "%"])
    _CONTINUE_BEFORE = frozenset(["|", "+"])

    _NAMED = frozenset(["WORD", "LABEL", "LAYER"])

    def names(self, stream):
        head = None             # a name's first token, held until the next shows whether digits are glued to it
        parts = None            # ... and the tokens glued to it
        force = False           # in a definition's head: join every name
        fdepth = 0
        heads, glue, merges, gluable, layer_word = _HEADS, _GLUE, _MERGES, _gluable, _layer_word
        for tok in stream:
            t = tok.type
            if head is not None:
                if t == "LAYER" and parts is not None and tok.start_pos == parts[-1].end_pos:
                    # `e1conv3-8`: the packed layer's word and digits end the name, as in `e1conv3-8x`
                    cut = tok.value.rindex("-")
                    parts.append(_token("WORD", tok.value[:cut], tok, tok, end=len(tok.value) - cut))
                    _check_name(parts, head, tok)
                    yield _token("WORD", "".join(parts), head, parts[-1])
                    yield _token("MINUS", "-", tok, tok, start=cut, end=len(tok.value) - cut - 1)
                    yield _token("INT", tok.value[cut + 1:], tok, tok, start=cut + 1)
                    head = parts = None
                    continue
                if t in glue and tok.start_pos == (parts[-1] if parts else head).end_pos and gluable(tok):
                    if parts or force or head.type != "WORD" or not layer_word(head.value):
                        if parts is None:
                            parts = [head]
                        parts.append(tok)
                        _check_name(parts, head, tok)
                        continue
                    yield head          # a layer's word and its size: fc4096
                elif parts is not None:
                    yield _token("WORD", "".join(parts), head, parts[-1])
                    parts = None
                elif t != "LPAR" and head.type in merges:    # `res` not before '(' is a name
                    yield _token("WORD", head.value, head, head)
                else:
                    yield head
                head = None
            if t in heads:
                head = tok
                if t == "BLOCK" or t == "PARAM":
                    force, fdepth = True, 0
                continue
            if t == "LAYER":
                if not layer_word(tok.value):       # `c2-1`: a name, minus, a number
                    cut = tok.value.rindex("-")
                    yield _token("WORD", tok.value[:cut], tok, tok, end=len(tok.value) - cut)
                    yield _token("MINUS", "-", tok, tok, start=cut, end=len(tok.value) - cut - 1)
                    yield _token("INT", tok.value[cut + 1:], tok, tok, start=cut + 1)
                    continue
            elif force:
                value = tok.value
                if value in self._OPENERS:
                    fdepth += 1
                elif value in self._CLOSERS:
                    fdepth -= 1
                elif (value == "=" and fdepth <= 0) or t == "_NL":
                    force = False
            yield tok
        if parts is not None:
            yield _token("WORD", "".join(parts), head, parts[-1])
        elif head is not None:
            yield _token("WORD", head.value, head, head) if head.type in merges else head

    def process(self, stream):
        depth = 0
        prev = None
        newline = None
        named, most = self._NAMED, limits.MAX_NAME_CHARS
        after, before, openers, closers = self._CONTINUE_AFTER, self._CONTINUE_BEFORE, self._OPENERS, self._CLOSERS
        for tok in self.names(stream):
            t = tok.type
            if t in named and len(tok) > most:
                raise LimitError(f"name {str(tok)[:20]}... is {len(tok):,} characters long", tok_span(tok),
                                 f"names may have at most {most} characters")
            if t == "_NL":
                if depth == 0 and prev is not None and prev.value not in after:
                    newline = tok
                continue
            value = tok.value
            if newline is not None:
                if value not in before:
                    yield newline
                newline = None
            if value in openers or t == "XBRACE":
                depth += 1
            elif value in closers:
                depth = max(0, depth - 1)
            prev = tok
            yield tok


_PARSER = None


def _parser():
    """Build the LALR parser once per process (Lark caches the tables on disk)."""
    global _PARSER
    if _PARSER is None:
        from lark import Lark
        grammar = GRAMMAR_PATH.read_text(encoding="utf-8")
        # re.ASCII: `/i` folds only ASCII letters and [0-9] only ASCII digits (see the grammar's terminals)
        kwargs = dict(parser="lalr", lexer="basic", transformer=_ToAst(), postlex=_Continuations(),
                      maybe_placeholders=True, g_regex_flags=re.ASCII)
        try:
            _PARSER = Lark(grammar, cache=True, **kwargs)
        except OSError:  # no writable temp dir for the cache
            _PARSER = Lark(grammar, **kwargs)
    return _PARSER


# --------------------------------------------------------- diagnostics ----

_FRIENDLY = {
    "WORD": "a name", "INT": "a number", "FLOAT": "a number", "DIMS": "dimensions like 32x32x3",
    "REPEAT": "a repeat like x2", "XBRACE": "'x{'", "LABEL": "a label like 'head:'", "LAYER": "a layer like conv3-64",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "VBAR": "'|'", "PLUS": "'+'", "MINUS": "'-'", "SLASH": "'/'", "STAR": "'*'", "PERCENT": "'%'",
    "COMMA": "','", "EQUAL": "'='", "__ANON_0": "'//'", "_NL": "a new line", "$END": "end of input",
    "INPUT": "'input'", "ACTIVATION": "'activation'", "AUGMENT": "'augment'", "BLOCK": "'block'", "RES": "'res'",
    "CAT": "'cat'", "CONCAT": "'concat'", "ADD": "'add'", "SUM": "'sum'", "MUL": "'mul'", "SPLIT": "'split'", "PARAM": "'param'", "USE": "'use'",
    "STRING": 'a quoted file name like "families/resnet.cnn"',
}


def _friendly(names) -> str:
    shown = sorted({_FRIENDLY.get(n, n) for n in names})
    return ", ".join(shown[:10]) + (", ..." if len(shown) > 10 else "")


def _offset_span(text: str, pos: int, length: int = 1) -> Span:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return Span(line, col, line, col + length, pos, pos + length)


_BRACKETS = re.compile(r'"[^"\n]*"|#[^\n]*|[()\[\]{}]')     # a file name or a comment holds no brackets
_PAIRS = {")": "(", "]": "[", "}": "{"}


def check_brackets(text: str) -> None:
    """Refuse unbalanced or too deeply nested brackets before the parser sees them."""
    stack: list[tuple[str, int]] = []
    for m in _BRACKETS.finditer(text):
        ch = m.group()
        if ch[0] == "#" or ch[0] == '"':
            continue
        if ch in "([{":
            stack.append((ch, m.start()))
            if len(stack) > limits.MAX_NESTING:
                raise LimitError(f"brackets nested more than {limits.MAX_NESTING} deep",
                                 _offset_span(text, m.start()), "flatten the nesting, or use a block or a repeat")
        else:
            if not stack:
                raise SyntaxError_(f"unmatched '{ch}'", _offset_span(text, m.start()),
                                   f"remove it, or add the '{_PAIRS[ch]}' that it closes")
            opener, pos = stack.pop()
            if opener != _PAIRS[ch]:
                raise SyntaxError_(f"'{ch}' does not close the '{opener}' opened at "
                                   f"{_offset_span(text, pos).line}:{_offset_span(text, pos).column}",
                                   _offset_span(text, m.start()), f"close '{opener}' first")
    if stack:
        opener, pos = stack[-1]
        closer = {v: k for k, v in _PAIRS.items()}[opener]
        raise SyntaxError_(f"'{opener}' is never closed", _offset_span(text, pos),
                           f"add the matching '{closer}'")


def _non_ascii(text: str, pos: int) -> SyntaxError_:
    """A non-ASCII character outside a comment: name it, and the ASCII character it looks like, if any."""
    return _non_ascii_char(text[pos], _offset_span(text, pos))


def _non_ascii_char(ch: str, span: Span, given_hint: Optional[str] = None) -> SyntaxError_:
    import unicodedata
    name = unicodedata.name(ch, "")
    what = f"U+{ord(ch):04X}{' ' + name if name else ''}"
    if ch.isprintable() and not ch.isspace():
        what = f"'{ch}' ({what})"
    like = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    if unicodedata.decimal(ch, None) is not None:
        like = str(unicodedata.decimal(ch))
    elif ch.isspace():
        like = " "
    hint = "names and numbers in specs are ASCII: letters a-z, digits 0-9, '_' and '-' (and 'x' or '\u00d7' " \
           "in 3x3 and x2); other characters may appear only in comments"
    hint = given_hint or hint
    if like and like.isprintable() and len(like) == 1:
        hint = f"did you mean {like!r}? " + hint
    return SyntaxError_(f"non-ASCII character {what}", span, hint)


BOM = "\ufeff"
_LONE_CR = re.compile(r"\r(?!\n)")


def line_ends(text: str) -> str:
    """Spec text as the parser reads it: a byte order mark at the very start dropped (Windows editors write
    one; columns count from the character after it), and each lone "\r" (old Mac line ends) a "\n", so that
    "\n", "\r\n" and "\r" all end a line and spans count lines the way an editor shows them. Elsewhere a
    BOM stays a non-ASCII character; "\r\n" is kept (the grammar reads it as one line end)."""
    if text.startswith(BOM):
        text = text[1:]
    return _LONE_CR.sub("\n", text) if "\r" in text else text


def parse(text: str) -> Spec:
    """Parse spec text into a frozen AST; raises CnnDslError subclasses with spans (on line_ends(text))."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

    if len(text) > limits.MAX_SOURCE_CHARS:
        raise LimitError(f"spec is {len(text):,} characters long", _offset_span(text, 0),
                         f"specs may be at most {limits.MAX_SOURCE_CHARS:,} characters")
    text = line_ends(text)
    bad = re.search(r"[\x00-\x08\x0b\x0e-\x1f\x7f\x85\u2028\u2029\ufffd]", text)
    if bad:
        raise SyntaxError_(f"control or invalid character {bad.group()!r} in spec text",
                           _offset_span(text, bad.start()), "is this a binary file? specs are UTF-8 text")
    check_brackets(text)
    try:
        spec = _parser().parse(text)
    except UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        if ch and not ch.isascii():
            raise _non_ascii(text, e.pos_in_stream) from None
        hint = f"expected {_friendly(e.allowed)}" if e.allowed else None
        raise SyntaxError_(f"unexpected character {ch!r}", _offset_span(text, e.pos_in_stream), hint) from None
    except UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            pos = len(text.rstrip())
            raise SyntaxError_("unexpected end of input", _offset_span(text, max(0, pos - 1)),
                               f"expected {_friendly(e.expected)}") from None
        if tok.type == "_NL":
            pos = tok.start_pos
            raise SyntaxError_("unexpected end of line", _offset_span(text, pos),
                               f"expected {_friendly(e.expected)}") from None
        what = "name" if tok.type == "WORD" else "token"
        hint = f"expected {_friendly(e.expected)}"
        if tok.type in ("INT", "DIMS") and e.token_history and e.token_history[-1].type == "WORD":
            hint += "; layer sizes come right after the layer name, as in conv3-64"
        before = re.search(r"[A-Za-z_-]+\Z", text[max(0, tok.start_pos - limits.MAX_NAME_CHARS):tok.start_pos])
        if tok.type in ("INT", "DIMS", "FLOAT") and before and _layer_word(before.group()):
            hint = (f"'{before.group()}{tok}' reads as the layer {before.group()} with the size {tok}: names may "
                    "hold digits, but not right after a layer's word")
        raise SyntaxError_(f"unexpected {what} {str(tok)!r}", tok_span(tok), hint) from None
    except UnexpectedEOF as e:
        raise SyntaxError_("unexpected end of input", _offset_span(text, max(0, len(text) - 1)),
                           f"expected {_friendly(e.expected)}") from None
    except UnexpectedInput as e:  # pragma: no cover - other Lark input errors
        raise SyntaxError_(str(e).splitlines()[0], _offset_span(text, getattr(e, "pos_in_stream", 0) or 0)) from None
    except RecursionError:
        raise LimitError("spec nests too deeply", _offset_span(text, 0)) from None
    return spec
