"""AST -> IR: blocks, repeats, defaults, fused batch norm, residual projections, names and spans."""
from __future__ import annotations

import math
import re
from typing import Any, NamedTuple, Optional

from .. import limits
from . import syntax as A
from .uses import USED      # spans from this offset on are in files that `use` brings in
from ..errors import CnnDslError, LimitError, NameError_, ShapeError, Span, ValueError_
from ..ir import Graph, make_node, verify
from ..ir.ops import ACTIVATIONS, NO_ACTIVATION, OPS, SPELLINGS, LayerArgs, OpError, conv_out, fmt_shape, normalize_word
from ..ir.ops.channels import split_parts

def _close(word, candidates, n=1, cutoff=0.6):
    import difflib   # only on the error path
    return difflib.get_close_matches(word, candidates, n=n, cutoff=cutoff)


DEFAULT_INPUT = (224, 224, 3)       # H, W, C as written in `input HxWxC`
DEFAULT_ACTIVATION = "relu"
_ERROR_KINDS = {"shape": ShapeError, "name": NameError_, "limit": LimitError, "value": ValueError_}


_NONE = object()        # `none` as a function's argument: "not given" (make_divisible's min_value)


def make_divisible(v, divisor: int = 8, min_value=None):
    """torchvision's `_make_divisible` (from TensorFlow's MobileNet): `v` rounded to the nearest multiple of
    `divisor` (halves up, by truncating v + divisor/2), at least `min_value` (default: the divisor), and one
    divisor more where rounding down lost more than 10% of `v`."""
    if min_value is None:
        min_value = divisor
    out = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if out < 0.9 * v:
        out += divisor
    return out


# name -> (keyword names in order, least and most arguments)
FUNCTIONS = {
    "ceil": ((), 1, 1), "floor": ((), 1, 1), "round": ((), 1, 1),
    "min": ((), 1, limits.MAX_PARAMS), "max": ((), 1, limits.MAX_PARAMS),
    "make_divisible": (("v", "divisor", "min_value"), 1, 3),
}
FUNCTION_SIGNATURES = {"ceil": "ceil(x)", "floor": "floor(x)", "round": "round(x)", "min": "min(a, b, ...)",
                       "max": "max(a, b, ...)", "make_divisible": "make_divisible(v, divisor=8, min_value=none)"}


MERGE_OPS = {op.merge: name for name, op in OPS.items() if op.merge}     # "cat" -> "concat", "add", "mul"
MERGES = {"res": "res(body) or res(body, shortcut)", "cat": "cat(branch, branch, ...)",
          "concat": "concat(branch, branch, ...)", "add": "add(branch, branch, ...)", "sum": "sum(branch, branch, ...)",
          "split": "split(branch, branch, ...)", "mul": "mul(branch, branch, ...)"}


def _show(value) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return repr(value) if not isinstance(value, str) else f"the name '{value}'"


def check_override(name, value) -> None:
    """A value given for a param from outside the spec (--set, compile's overrides): a finite number."""
    if not isinstance(name, str):
        raise ValueError_(f"a param's name is text, not {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError_(f"the value for param '{name}' must be a number, got {value!r}")
    if not math.isfinite(value) or abs(value) > limits.MAX_MAGNITUDE:
        raise LimitError(f"the value for param '{name}' must be a finite number of at most "
                         f"{limits.MAX_MAGNITUDE:.0e} in size, got {value!r}")


def layer_like(name: str) -> Optional[str]:
    """The layer word a name starts with right before a digit (`fc` in `fc1`), which makes it read as a layer."""
    m = re.match(r"[A-Za-z_-]+(?=[0-9])", name)
    return m.group() if m and normalize_word(m.group()) in SPELLINGS else None


class Scope:
    """A naming scope: a dotted prefix, per-kind counters for automatic names, and the names they must skip.

    `labels` maps each label written directly in the scope (or, at the top, each stage name) to its span:
    an automatic name never takes one, so a label later in the scope cannot collide with an earlier node.
    """

    __slots__ = ("prefix", "counters", "labels")

    def __init__(self, prefix: str, labels: Optional[dict] = None):
        self.prefix = prefix
        self.counters: dict[str, int] = {}
        self.labels: dict[str, Optional[Span]] = labels or {}


def scope_labels(nodes) -> dict[str, Span]:
    """Labels (with their spans) written directly in the scope that lowers `nodes`, not in scopes inside it.

    `nodes` are what the scope lowers: a labelled group's body, a block's body (a residual's body and
    shortcut, for a block that is one residual unit), a residual's body and shortcut, or a branch. A
    labelled item, a call, a residual or branches inside them open scopes of their own.
    """
    found: dict[str, Span] = {}
    stack = [n for n in reversed(nodes) if n is not None]
    while stack:
        node = stack.pop()
        if isinstance(node, A.Labeled):
            found.setdefault(node.label, node.label_span)
        elif isinstance(node, A.Sequence):
            stack.extend(reversed(node.items))
        elif isinstance(node, A.Pipeline):
            stack.extend(reversed(node.stages))
        elif isinstance(node, A.Repeat):
            stack.append(node.body)
    return found


class Row:
    """A node under construction: what becomes an IR Node (attributes may still change, e.g. a bias that a
    following batch norm removes)."""

    __slots__ = ("name", "op", "inputs", "attrs", "shape", "stage", "span", "label", "origin")

    def __init__(self, name, op, inputs, attrs, shape, stage, span, label, origin=None):
        self.name, self.op, self.inputs, self.attrs = name, op, inputs, attrs
        self.shape, self.stage, self.span, self.label = shape, stage, span, label
        self.origin = span if origin is None else origin     # where it is written (span: where it is reported)


class Pending(NamedTuple):
    """A weight layer's activation, held back so a following `bn` can sit before it."""

    op: str
    attrs: dict
    owner: int          # index of the weight layer in the builder's node list
    fusable: bool       # no bn fused yet
    stage: str
    scope: Scope
    span: Optional[Span]


class Cursor(NamedTuple):
    """Where lowering stands: the current output node, its shape, and a deferred activation."""

    node: str
    shape: tuple
    pending: Optional[Pending]


class _Lowering:
    replay_calls = True    # reuse a block call's nodes for a later call with the same key (see replay)

    def __init__(self, spec: A.Spec, input_shape: Optional[tuple[int, int, int]],
                 overrides: Optional[dict] = None, sources=None):
        self.nodes: list[Row] = []
        self.names: set[str] = set()
        self.scope = Scope("")
        self.stage = "stage1"
        self.env: dict[str, Any] = {}
        self.calls: list[tuple[str, Span]] = []
        self.label_suffix = ""
        self.blocks: dict[str, A.BlockDef] = {}
        self.act = (DEFAULT_ACTIVATION, {})
        self.spec = spec
        self.input_override = input_shape
        self.settings: dict[str, Any] = {}
        self.spellings: dict[int, tuple] = {}    # id(Layer) -> (builder, layer, word)
        self.built: dict[tuple, list] = {}       # layer arguments + input shape -> [op, attrs, output shape]
        self.calls_done: dict[tuple, tuple] = {}  # block, arguments, input shape -> the nodes it lowered to
        self.scope_labels: dict[int, dict] = {}    # id(syntax of a scope) -> scope_labels() of it
        self.depth = 0                           # lower() calls in progress (MAX_DEPTH)
        self.steps = 0                           # work done so far (MAX_STEPS)
        self.where: Optional[Span] = None        # the item being lowered, for a RecursionError's diagnostic
        self.params: dict[str, Any] = {}         # `param` values: names every expression may use
        self.overrides = dict(overrides or {})   # param name -> value given on the command line
        self.sources = sources                   # the files of a spec with `use` (uses.Sources), else None
        self.remap = sources is not None and len(sources.files) > 1   # nodes from used files point at calls

    # ------------------------------------------------------------ errors --
    def error(self, cls, message: str, span: Optional[Span], hint: Optional[str] = None) -> CnnDslError:
        notes = tuple(f"in block '{name}' called at {self.at(s)}" for name, s in reversed(self.calls))
        return cls(message, span, hint, notes)

    def at(self, span: Span) -> str:
        """`line:column` of a span, with its file's name in front when it is in a used file."""
        return self.sources.where(span) if self.sources is not None else f"{span.line}:{span.column}"

    def op_error(self, e: OpError, layer: Optional[A.Layer], span: Span) -> CnnDslError:
        where = span
        if layer is not None:
            if e.part == "word":
                where = layer.word_span
            elif e.part.startswith("option:"):
                name = e.part.split(":", 1)[1]
                where = next((o.span for o in layer.options if o.name == name), layer.span)
            else:
                expr = getattr(layer, e.part, None)
                where = expr.span if expr is not None else layer.span
        return self.error(_ERROR_KINDS.get(e.kind, ValueError_), e.message, where, e.hint)

    # ------------------------------------------------------------ naming --
    def fresh(self, kind: str, label: Optional[str] = None, span: Optional[Span] = None,
              scope: Optional[Scope] = None) -> str:
        """A new node or scope name: `label` (plus a repeat's _N suffix) or the next free automatic `kindN`.

        Automatic names skip every name used so far and every label of the scope (see Scope), so IR
        names are unique; a label that is taken anyway (twice in one scope, or `a_2` beside `a` repeated)
        is an error at that label.
        """
        scope = scope or self.scope
        if label is not None:
            name = scope.prefix + label + self.label_suffix
            if name in self.names:
                hint = "labels must be unique within their block"
                if self.label_suffix:
                    hint += f"; inside a repeat, label '{label}' becomes {label}{self.label_suffix}"
                raise self.error(NameError_, f"the name '{name}' is already used", span or self.where, hint)
            return name
        n = scope.counters.get(kind, 0)
        sep = "_" if kind[-1].isdigit() else ""
        while True:
            n += 1
            base = f"{kind}{sep}{n}"
            name = scope.prefix + base
            if name not in self.names and base not in scope.labels:
                scope.counters[kind] = n
                return name

    def reserve(self, label: str, owner: str, what: str) -> None:
        """Refuse a user label equal to a name lowering gives a node of its own (`add`, `proj`) in this scope."""
        span = self.scope.labels.get(label)
        if span is not None:
            raise self.error(NameError_, f"the label '{label}' is taken: {what} in '{owner}' is named "
                             f"'{self.scope.prefix}{label}'", span, "pick another label")

    def emit(self, name: str, op: str, inputs: tuple, attrs: dict, shape: tuple, span: Optional[Span],
             stage: Optional[str] = None, label: Optional[str] = None) -> str:
        if len(self.nodes) >= limits.MAX_NODES:
            raise self.error(LimitError, f"the network grows beyond {limits.MAX_NODES:,} nodes", span,
                             "lower the repeat counts")
        origin = span
        if self.remap and span is not None and span.start >= USED and self.calls:
            span = self.calls[0][1]      # a node made by a block of a used file points at its call in the spec
        self.names.add(name)
        self.nodes.append(Row(name, op, inputs, attrs, shape, stage or self.stage, span, label, origin))
        return name

    def enter(self, segment: str, *syntax) -> Scope:
        """Open the scope `segment` inside the current one for the items `syntax`; return the outer scope."""
        outer = self.scope
        key = id(syntax[0]) if syntax else None      # the first item always comes with the same others
        labels = self.scope_labels.get(key) if key is not None else None
        if labels is None:
            labels = scope_labels(syntax)
            if key is not None:
                self.scope_labels[key] = labels
        self.scope = Scope(f"{outer.prefix}{segment}.", labels)
        return outer

    # ------------------------------------------------------- expressions --
    def value(self, expr, symbols: bool = False):
        """An expression's value: a number, dimensions, or (with `symbols`, for options) a bare word.

        Evaluated with an explicit stack, so no expression can exhaust Python's recursion limit; every
        result is a finite number of at most MAX_MAGNITUDE.
        """
        if isinstance(expr, (A.Num, A.Dims)):
            return expr.value
        if isinstance(expr, A.Var):
            return self.lookup(expr, symbols)
        values: list = []
        stack: list = [(expr, False)]
        while stack:
            node, ready = stack.pop()
            if ready:
                if isinstance(node, A.Neg):
                    values.append(self.negate(node, values.pop()))
                elif isinstance(node, A.Func):
                    cut = len(values) - len(node.args)
                    args = values[cut:]
                    del values[cut:]
                    values.append(self.function(node, args))
                else:
                    b = values.pop()
                    values.append(self.arith(node, values.pop(), b))
                continue
            self.steps += 1
            if isinstance(node, (A.Num, A.Dims)):
                values.append(node.value)
            elif isinstance(node, A.Var):
                values.append(self.lookup(node, False))
            elif isinstance(node, A.BinOp):
                stack += ((node, True), (node.right, False), (node.left, False))
            elif isinstance(node, A.Neg):
                stack += ((node, True), (node.operand, False))
            elif isinstance(node, A.Func):
                stack.append((node, True))
                for a in reversed(node.args):     # evaluated left to right; `none` stands for "not given"
                    v = a.value
                    none = isinstance(v, A.Var) and v.name.lower() == "none" and v.name not in self.env \
                        and v.name not in self.params
                    stack.append((_NONE if none else v, False))
            elif node is _NONE:
                values.append(None)
            else:
                raise self.error(ValueError_, "expected a number", getattr(node, "span", None) or self.where)
        self.check_steps(expr.span)
        return values[0]

    def lookup(self, expr: A.Var, symbols: bool):
        if expr.name in self.env:
            return self.env[expr.name]
        if expr.name in self.params:
            return self.params[expr.name]
        if symbols:
            return expr.name.lower()
        close = _close(expr.name, list(self.env) + list(self.params), n=1)
        if close:
            hint = f"did you mean '{close[0]}'?"
        elif self.env or self.params:
            hint = "the names here are: " + ", ".join(list(self.env) + [p for p in self.params if p not in self.env])
        else:
            hint = "names are a block's parameters, or declared with: param NAME = VALUE"
        raise self.error(NameError_, f"unknown name '{expr.name}'", expr.span, hint)

    def function(self, node: A.Func, args: list):
        """The value of ceil(x), floor(x), round(x), min(a, ...), max(a, ...) or make_divisible(v, divisor, min_value)."""
        name = node.name.lower()
        spec = FUNCTIONS.get(name)
        if spec is None:
            if node.name in self.blocks:
                hint = f"'{node.name}' is a block: blocks are called in the network, not inside arithmetic"
            elif normalize_word(node.name) in SPELLINGS:
                hint = f"'{node.name}' is a layer: layers are written in the network, not inside arithmetic"
            else:
                close = _close(name, list(FUNCTIONS), n=1)
                hint = (f"did you mean '{close[0]}'? " if close else "") + \
                    "the functions are: " + ", ".join(f"{f}()" for f in FUNCTIONS)
            raise self.error(NameError_, f"unknown function '{node.name}'", node.name_span, hint)
        keywords, least, most = spec
        sig = FUNCTION_SIGNATURES[name]
        positional: list = []
        given: dict[str, tuple] = {}
        for a, v in zip(node.args, args):
            if a.name is None:
                if given:
                    raise self.error(ValueError_, "positional argument after a keyword argument", a.span,
                                     f"write {sig}")
                positional.append((a, v))
            elif not keywords:
                raise self.error(ValueError_, f"{name}() takes no keyword arguments", a.span, f"write {sig}")
            elif a.name not in keywords:
                close = _close(a.name, list(keywords), n=1)
                raise self.error(NameError_, f"{name}() has no argument '{a.name}'", a.span,
                                 (f"did you mean '{close[0]}'? " if close else "") + f"write {sig}")
            elif a.name in given or keywords.index(a.name) < len(positional):
                raise self.error(ValueError_, f"{name}() got '{a.name}' twice", a.span, f"write {sig}")
            else:
                given[a.name] = (a, v)
        count = len(positional) + len(given)
        if keywords:
            bound = dict(zip(keywords, positional))
            bound.update(given)
            if len(positional) > len(keywords) or keywords[0] not in bound:
                raise self.error(ValueError_, f"{name}() takes {least} to {most} arguments, got {count}",
                                 node.span, f"write {sig}")
        elif not least <= count <= most:
            want = f"{least}" if least == most else f"at least {least}"
            raise self.error(ValueError_, f"{name}() takes {want} argument{'s' if most > 1 else ''}, got {count}",
                             node.span, f"write {sig}")
        else:
            bound = {str(i): p for i, p in enumerate(positional)}
        for key, (a, v) in bound.items():
            if v is None and key == "min_value":
                continue
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                got = "none" if v is None else _show(v)
                raise self.error(ValueError_, f"{name}() needs numbers, got {got}", a.value.span, f"write {sig}")
            if abs(v) > limits.MAX_MAGNITUDE:
                raise self.error(LimitError, f"{name}() of a number beyond {limits.MAX_MAGNITUDE:.0e} in size",
                                 a.value.span, f"values may be at most {limits.MAX_MAGNITUDE:.0e} in size")
        if name in ("min", "max"):
            return (min if name == "min" else max)(v for _, v in positional)
        if name != "make_divisible":
            x = positional[0][1]
            return math.ceil(x) if name == "ceil" else math.floor(x) if name == "floor" else round(x)
        divisor = bound["divisor"][1] if "divisor" in bound else 8
        if isinstance(divisor, float) and divisor.is_integer():
            divisor = int(divisor)
        if not isinstance(divisor, int) or divisor < 1:
            raise self.error(ValueError_, f"make_divisible(): the divisor must be a whole number of at least 1, "
                             f"got {divisor!r}", bound["divisor"][0].value.span, f"write {sig}")
        min_value = bound["min_value"][1] if "min_value" in bound else None
        out = make_divisible(bound["v"][1], divisor, min_value)
        if abs(out) > limits.MAX_MAGNITUDE:
            raise self.error(LimitError, "make_divisible() result is absurdly large", node.span,
                             f"results may be at most {limits.MAX_MAGNITUDE:.0e} in size")
        return out

    def negate(self, expr: A.Neg, v):
        if isinstance(v, (tuple, str)):
            raise self.error(ValueError_, "cannot negate this value", expr.span)
        return -v

    def arith(self, expr: A.BinOp, a, b):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            raise self.error(ValueError_, f"'{expr.op}' needs two numbers", expr.span)
        if expr.op in ("/", "//", "%") and b == 0:
            raise self.error(ValueError_, "division by zero", expr.right.span)
        if expr.op == "+":
            v = a + b
        elif expr.op == "-":
            v = a - b
        elif expr.op == "*":
            v = a * b
        elif expr.op == "/":
            v = a // b if isinstance(a, int) and isinstance(b, int) and a % b == 0 else a / b
        elif expr.op == "//":
            v = a // b
        else:
            v = a % b
        if isinstance(v, float):
            if not math.isfinite(v):
                raise self.error(ValueError_, f"arithmetic gives {v}, which is not a finite number", expr.span,
                                 "keep numbers well below 1e308")
            if v == 0 and a != 0 and (b != 0 or expr.op != "*") and expr.op in ("*", "/"):
                raise self.error(ValueError_, "arithmetic gives a number too small to represent: it would be 0",
                                 expr.span, "keep numbers well above 1e-308 in size")
        if abs(v) > limits.MAX_MAGNITUDE:
            raise self.error(LimitError, "arithmetic result is absurdly large", expr.span,
                             f"results may be at most {limits.MAX_MAGNITUDE:.0e} in size")
        return v

    def check_steps(self, span: Optional[Span]) -> None:
        if self.steps > limits.MAX_STEPS:
            raise self.error(LimitError, f"the spec takes more than {limits.MAX_STEPS:,} steps to lower", span,
                             "lower the repeat counts, or simplify the expressions inside repeated blocks")

    # ----------------------------------------------------------- pending --
    def flush(self, cur: Cursor) -> Cursor:
        p = cur.pending
        if p is None:
            return cur
        name = self.fresh(p.op, scope=p.scope)
        self.emit(name, p.op, (cur.node,), p.attrs, cur.shape, p.span, stage=p.stage)
        return Cursor(name, cur.shape, None)

    # ------------------------------------------------------------ layers --
    @staticmethod
    def spelling(node: A.Layer):
        """The builder for a layer's word (None if unknown), and the layer with `relu6`-style names joined."""
        word = normalize_word(node.word)
        if isinstance(node.lead, A.Num) and f"{word}{node.lead.value}" in SPELLINGS:   # relu6: a name with digits
            word = f"{word}{node.lead.value}"
            node = node._replace(word=word, lead=None)
        return SPELLINGS.get(word), node, word

    def layer_args(self, node: A.Layer) -> LayerArgs:
        if len(node.options) > 1 and len({o.name for o in node.options}) != len(node.options):
            seen: set[str] = set()
            dup = next(o for o in node.options if o.name in seen or seen.add(o.name))
            raise self.error(NameError_, f"option '{dup.name}' given twice", dup.span)
        value = self.value
        return LayerArgs(node.word.lower(),
                         None if node.lead is None else value(node.lead),
                         None if node.size is None else value(node.size),
                         None if node.stride is None else value(node.stride),
                         {o.name: (True if o.value is None else value(o.value, symbols=True))
                          for o in node.options} if node.options else {})

    def layer(self, node: A.Layer, cur: Cursor, label: Optional[str], label_span: Optional[Span]) -> Cursor:
        found = self.spellings.get(id(node))
        if found is None:
            found = self.spellings[id(node)] = self.spelling(node)
        build, node, word = found
        if build is None:
            if node.word in self.blocks and node.lead is None and node.size is None and not node.options:
                return self.call(A.Call(node.word, (), node.span, node.word_span), cur, label, label_span)
            known = list(SPELLINGS) + list(self.blocks)
            close = _close(word, known, n=1, cutoff=0.6)
            digits = re.match(r"([A-Za-z_-]+)([0-9].*)", node.word)
            if digits and not (close and close[0] in self.blocks):    # `maxpol3`, `convv3-8`: the word, then digits
                near = _close(node.word, list(self.blocks), n=1, cutoff=0.5) or \
                    [c + digits.group(2) for c in _close(normalize_word(digits.group(1)), list(SPELLINGS), n=1)]
                close = near
            hint = f"did you mean '{close[0]}'?" if close else \
                "layers include conv3-64, fc4096, maxpool, avgpool, gap, bn, lrn, dropout, relu, softmax"
            if digits and not close:
                hint = f"no layer or block is named so; define the block first: block {node.word} = ..."
            if word in ("x", "\u00d7") and node.lead is not None:
                hint = "a repeat count is a whole number: x2, x 2 or x{expr}"
            elif word in MERGES:
                hint = f"{word}(...) takes what it joins in parentheses: {MERGES[word]}"
            elif node.word in self.blocks:
                hint = f"'{node.word}' is a block: call it as {node.word}(...), without sizes or options"
            raise self.error(NameError_, f"unknown layer '{node.word}'", node.word_span, hint)
        return self.apply(build, self.layer_args(node), node, cur, label, label_span, node.span)

    def apply(self, build, args: LayerArgs, node: Optional[A.Layer], cur: Cursor, label, label_span, span) -> Cursor:
        in_shape = cur.shape
        try:
            key = (build, args.word, args.lead, args.size, args.stride, tuple(args.options.items()), in_shape)
            cached = self.built.get(key)
        except TypeError:   # an unhashable option value: build without the memo
            key, cached = None, None
        if cached is None:
            try:
                op, attrs = build(args, in_shape)
            except OpError as e:
                raise self.op_error(e, node, span) from None
            if key is not None:
                cached = self.built[key] = [op, dict(attrs), None]    # the output shape is filled in below
        else:
            op, attrs = cached[0], dict(cached[1])
        p = cur.pending
        if op != NO_ACTIVATION and OPS[op].fuses_after_weight and p is not None and p.fusable:
            owner = self.nodes[p.owner]       # batch norm between a weight layer and its activation
            if OPS[owner.op].weight and owner.attrs.get("bias_default"):
                owner.attrs["bias"] = False
            name = self.fresh(OPS[op].kind, label, label_span)
            self.emit(name, op, (cur.node,), attrs, self.shape_of(op, attrs, [in_shape], node, span), span,
                      label=label)
            return Cursor(name, in_shape, p._replace(fusable=False))
        if op != NO_ACTIVATION and OPS[op].keeps_activation and p is not None:
            # droppath ends a residual branch before its activation, which a residual puts after the addition
            name = self.fresh(OPS[op].kind, label, label_span)
            self.emit(name, op, (cur.node,), attrs, self.shape_of(op, attrs, [in_shape], node, span), span,
                      label=label)
            return Cursor(name, in_shape, p._replace(fusable=False))
        if op == NO_ACTIVATION or OPS[op].activation:
            if p is not None:
                cur = Cursor(cur.node, cur.shape, None)   # an explicit activation replaces the default one
            if op == NO_ACTIVATION:
                return cur
        elif OPS[op].logits_tail and p is not None:
            cur = Cursor(cur.node, cur.shape, None)       # the layer before softmax outputs logits
        else:
            cur = self.flush(cur)
        if OPS[op].needs_vector and len(in_shape) == 3:
            flat = (in_shape[0] * in_shape[1] * in_shape[2],)
            cur = Cursor(self.emit(self.fresh("flatten"), "flatten", (cur.node,), {}, flat, span), flat, None)
            in_shape = flat
        weight = OPS[op].weight
        if weight:
            attrs["bias_default"] = not (args.options and
                                         any(normalize_word(k) in ("bias", "nobias") for k in args.options))
        shape = cached[2] if cached is not None else None
        if shape is None:     # same layer arguments and input shape as a layer already lowered: same output
            shape = self.shape_of(op, attrs, [in_shape], node, span)
            if cached is not None:
                cached[2] = shape
        name = self.fresh(OPS[op].kind, label, label_span)
        self.emit(name, op, (cur.node,), attrs, shape, span, label=label)
        if weight and self.act[0] != NO_ACTIVATION:
            act_op, act_attrs = self.act
            return Cursor(name, shape, Pending(act_op, act_attrs, len(self.nodes) - 1, True, self.stage,
                                               self.scope, span))
        return Cursor(name, shape, None)

    def shape_of(self, op: str, attrs: dict, ins: list, node, span) -> tuple:
        try:
            shape = OPS[op].shape(attrs, ins)
        except OpError as e:
            raise self.op_error(e, node, span) from None
        if len(shape) == 3 and max(shape) > limits.MAX_DIM:   # padding can grow a map (a vector may be larger)
            raise self.error(LimitError, f"this layer turns {fmt_shape(ins[0])} into {fmt_shape(shape)}, beyond the "
                             f"limit of {limits.MAX_DIM:,} per size", span, "use less padding or a smaller input")
        return shape

    # ------------------------------------------------------------- calls --
    def call(self, node: A.Call, cur: Cursor, label: Optional[str], label_span: Optional[Span] = None) -> Cursor:
        block = self.blocks.get(node.name)
        if block is None:
            build = SPELLINGS.get(normalize_word(node.name))
            if build is not None:
                return self.builtin_call(build, node, cur, label)
            close = _close(node.name, list(self.blocks) + list(SPELLINGS), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "define it first: block name(c) = conv3-c"
            raise self.error(NameError_, f"unknown block '{node.name}'", node.name_span, hint)
        if any(name == node.name for name, _ in self.calls):
            raise self.error(LimitError, f"block '{node.name}' calls itself", node.span,
                             "blocks may not be recursive; use a repeat (xN) instead")
        if len(self.calls) >= limits.MAX_CALL_DEPTH:
            raise self.error(LimitError, f"blocks nested more than {limits.MAX_CALL_DEPTH} calls deep", node.span)
        self.steps += 3         # a call costs about four times as much as a layer (a scope, a binding, a replay)
        env = self.bind(block, node)
        scope_name = self.fresh(node.name, label, label_span or node.span)
        key = None
        if cur.pending is None and self.replay_calls:   # nothing owed to what came before: the key decides all
            try:
                key = (id(block), tuple(env.items()), cur.shape)
                recorded = self.calls_done.get(key)
            except TypeError:        # an unhashable argument value: lower it afresh
                key, recorded = None, None
            if recorded is not None:
                return self.replay(recorded, scope_name, cur, node)
        syntax = (block.body.body, block.body.shortcut) if isinstance(block.body, A.Res) else (block.body,)
        outer_env, outer_scope = self.env, self.enter(scope_name[len(self.scope.prefix):], *syntax)
        self.names.add(scope_name)
        self.env = env
        self.calls.append((node.name, node.span))
        saved_suffix, self.label_suffix = self.label_suffix, ""
        first, entry = len(self.nodes), cur
        try:
            body = block.body
            if isinstance(body, A.Res):           # a block that is one residual unit needs no inner scope
                cur = self.res(body, cur, own_scope=False)
            elif isinstance(body, A.Branches):
                cur = self.branches(body, cur, own_scope=False)
            else:
                cur = self.lower(body, cur)
        finally:
            self.env, self.scope, self.label_suffix = outer_env, outer_scope, saved_suffix
            self.calls.pop()
        if key is not None and cur.pending is None:
            rows = [(r.name, r.op, r.inputs, dict(r.attrs), r.shape, r.origin, r.label) for r in self.nodes[first:]]
            self.calls_done[key] = (scope_name + ".", entry.node, rows, cur)
        return cur

    def replay(self, recorded, scope_name: str, cur: Cursor, node: A.Call) -> Cursor:
        """Emit a call's nodes again under a new scope name: what lowering the same call would emit.

        A call with the same block, arguments and input shape, entered with no activation pending and
        left with none, lowers to the same nodes up to their scope prefix (ResNet-152 calls its
        bottleneck 50 times with 7 distinct keys); replaying them skips evaluating and building each layer.
        """
        prefix, entry, rows, out = recorded
        new_prefix, cut = scope_name + ".", len(prefix)
        self.names.add(scope_name)

        def rename(name: str) -> str:
            return cur.node if name == entry else new_prefix + name[cut:]
        self.calls.append((node.name, node.span))   # nodes of a used file's blocks point at the outermost call
        try:
            for name, op, inputs, attrs, shape, span, label in rows:
                self.emit(new_prefix + name[cut:], op, tuple(rename(i) for i in inputs), dict(attrs), shape, span,
                          label=label)
        finally:
            self.calls.pop()
        return Cursor(rename(out.node), out.shape, None)

    def bind(self, block: A.BlockDef, node: A.Call) -> dict:
        names = [p.name for p in block.params]
        env: dict[str, Any] = {}
        positional = [a for a in node.args if a.name is None]
        self.steps += len(names) + len(node.args)     # at most MAX_PARAMS each
        self.check_steps(node.span)
        sig = ", ".join(p.name if p.default is None else f"{p.name}={'...'}" for p in block.params)
        if len(positional) > len(names):
            raise self.error(ValueError_, f"block '{block.name}' takes at most {len(names)} argument"
                             f"{'s' if len(names) != 1 else ''} ({sig}), got {len(positional)}",
                             node.span, f"defined at {block.span.line}:{block.span.column}")
        seen_kw = False
        for i, a in enumerate(node.args):
            if a.name is None:
                if seen_kw:
                    raise self.error(ValueError_, "positional argument after a keyword argument", a.span)
                env[names[i]] = self.value(a.value)
            else:
                seen_kw = True
                if a.name not in names:
                    close = _close(a.name, names, n=1)
                    raise self.error(NameError_, f"block '{block.name}' has no parameter '{a.name}'", a.span,
                                     f"did you mean '{close[0]}'?" if close else f"its parameters are ({sig})")
                if a.name in env:
                    raise self.error(ValueError_, f"parameter '{a.name}' given twice", a.span)
                env[a.name] = self.value(a.value)
        outer, self.env = self.env, env
        try:
            for p in block.params:
                if p.name not in env:
                    if p.default is None:
                        raise self.error(ValueError_, f"block '{block.name}' needs a value for '{p.name}' ({sig})",
                                         node.span, f"call it as {block.name}({', '.join(names)})")
                    env[p.name] = self.value(p.default)
        finally:
            self.env = outer
        return env

    def builtin_call(self, build, node: A.Call, cur: Cursor, label) -> Cursor:
        """`dropout(0.3)`, `conv(3, 64, stride=2)`, `dwconv(k, stride=s, nobias)`: a layer written as a call.

        Positional arguments are, in order, what is written after the layer's name, after '-' and after '/'
        (conv(3, 64, 2) = conv3-64/2); keywords are options; a bare name that is not a parameter in scope is
        a flag (nobias = [nobias]). Positional arguments come first.
        """
        positional = []
        options: dict[str, Any] = {}
        flags: dict[str, A.Arg] = {}
        first_named: Optional[A.Arg] = None
        for a in node.args:
            v = a.value
            if a.name is None and not (isinstance(v, A.Var) and v.name not in self.env and v.name not in self.params):
                if first_named is not None:
                    what = "flag" if first_named.name is None else "keyword argument"
                    close = _close(first_named.value.name, list(self.env) + list(self.params), n=1) \
                        if first_named.name is None else None
                    if close:        # `conv(kernal, 8)`: a misspelt parameter reads as a flag
                        raise self.error(NameError_, f"unknown name '{first_named.value.name}'", first_named.span,
                                         f"did you mean the parameter '{close[0]}'? a bare name in "
                                         f"{node.name}(...) that is not a parameter is a flag")
                    raise self.error(ValueError_, f"positional argument after a {what}", a.span,
                                     f"write the sizes first: {node.name}(kernel, channels, stride, options...)")
                positional.append(self.value(v))
                continue
            first_named = first_named or a
            key = (a.name if a.name is not None else v.name).lower()
            if key in options:
                raise self.error(NameError_, f"option '{key}' given twice", a.span)
            if a.name is None:
                options[key] = True
                flags[key] = a
            else:
                options[key] = self.value(v, symbols=True)
        if len(positional) > 3:
            raise self.error(ValueError_, f"{node.name}(...) takes at most 3 positional arguments", node.span,
                             f"{node.name}(lead, size, stride) is {node.name}LEAD-SIZE/STRIDE; write options as keywords")
        lead, size, stride = (positional + [None, None, None])[:3]
        args = LayerArgs(node.name.lower(), lead, size, stride, options)
        try:
            return self.apply(build, args, None, cur, label, node.name_span, node.span)
        except CnnDslError as e:
            flag = next((f for f in flags if e.message.startswith(f"unknown option '{f}'")), None)
            if flag is None:
                raise
            close = _close(flags[flag].value.name, list(self.env) + list(self.params), n=1)
            e.span = flags[flag].span
            e.hint = (f"did you mean the parameter '{close[0]}'? " if close else "") + \
                f"a bare name in {node.name}(...) that is not a parameter is a flag; " + (e.hint or "")
            raise

    # ------------------------------------------------------ composition --
    def lower(self, node, cur: Cursor, label: Optional[str] = None, label_span: Optional[Span] = None) -> Cursor:
        """Lower one item. Each nesting level costs at most three Python frames, and MAX_DEPTH bounds the levels."""
        if isinstance(node, A.Labeled):
            node, label, label_span = node.body, node.label, node.label_span
        self.where = node.span
        self.depth += 1
        self.steps += 1
        if self.depth > limits.MAX_DEPTH:
            raise self.error(LimitError, f"the network nests more than {limits.MAX_DEPTH} levels deep "
                             "(block calls included)", node.span, "flatten the nesting, or use fewer nested blocks")
        if self.steps > limits.MAX_STEPS:
            self.check_steps(node.span)
        if isinstance(node, A.Layer):
            cur = self.layer(node, cur, label, label_span)
        elif isinstance(node, A.Labeled):       # `a: (b: conv3-4)`: the scope a holds the node a.b
            cur = self.scoped(label, label_span, node, cur)
        elif isinstance(node, (A.Sequence, A.Pipeline)):
            if label is not None:
                cur = self.scoped(label, label_span, node, cur)
            else:
                for item in (node.items if isinstance(node, A.Sequence) else node.stages):
                    cur = self.lower(item, cur)
        elif isinstance(node, A.Repeat):
            cur = self.repeat(node, cur, label, label_span)
        elif isinstance(node, A.Call):
            cur = self.call(node, cur, label, label_span)
        elif isinstance(node, A.Res):
            cur = self.res(node, cur, label, label_span)
        elif isinstance(node, A.Branches):
            cur = self.branches(node, cur, label, label_span)
        else:
            raise self.error(ValueError_, f"unexpected {type(node).__name__}", getattr(node, "span", None))
        self.depth -= 1      # not restored on an error: that ends lowering
        return cur

    def scoped(self, label: str, label_span: Optional[Span], node, cur: Cursor) -> Cursor:
        """A labelled sequence, pipeline, repeat or labelled item: its items in the scope `label`."""
        name = self.fresh("group", label, label_span)
        outer = self.enter(name[len(self.scope.prefix):], node)
        self.names.add(name)
        try:
            if isinstance(node, A.Repeat):
                return self.repeat(node, cur)
            if isinstance(node, A.Labeled):
                return self.lower(node, cur)
            for item in (node.items if isinstance(node, A.Sequence) else node.stages):
                cur = self.lower(item, cur)
            return cur
        finally:
            self.scope = outer

    def repeat(self, node: A.Repeat, cur: Cursor, label: Optional[str] = None,
               label_span: Optional[Span] = None) -> Cursor:
        count = self.value(node.count)
        if isinstance(count, float) and count.is_integer():
            count = int(count)
        # a count computed from names (x{n - 1}, x{ceil(n * depth) - 1}) may be 0, leaving the unit out: a family's
        # stage `first + rest x{n - 1}` of one block; a written count (x0, x{0}) is at least 1
        least = 0 if not isinstance(node.count, A.Num) else 1
        if not isinstance(count, int) or isinstance(count, bool) or count < least:
            raise self.error(ValueError_, f"repeat count must be a whole number of at least {least}, got {count!r}",
                             node.count.span)
        if count > limits.MAX_REPEAT:
            raise self.error(LimitError, f"repeat count {count:,} is beyond the limit of {limits.MAX_REPEAT:,}",
                             node.count.span, "networks this deep cannot be built or analyzed usefully")
        if label is not None:
            return self.scoped(label, label_span, node, cur)
        saved = self.label_suffix
        try:
            for i in range(count):
                if count > 1:
                    self.label_suffix = f"{saved}_{i + 1}"
                cur = self.lower(node.body, cur)
        finally:
            self.label_suffix = saved
        return cur

    def res(self, node: A.Res, cur: Cursor, label: Optional[str] = None, label_span: Optional[Span] = None,
            own_scope: bool = True) -> Cursor:
        cur = self.flush(cur)
        if own_scope:
            name = self.fresh("res", label, label_span)
            outer = self.enter(name[len(self.scope.prefix):], node.body, node.shortcut)
            self.names.add(name)
            self.reserve("add", name, "the residual's addition")
        else:
            outer = self.scope
        try:
            first = len(self.nodes)
            body = self.lower(node.body, Cursor(cur.node, cur.shape, None))
            has_bn = any(OPS[r.op].fuses_after_weight for r in self.nodes[first:])
            if node.shortcut is not None:
                short = self.flush(self.lower(node.shortcut, Cursor(cur.node, cur.shape, None)))
            elif body.shape == cur.shape:
                short = cur
            else:
                short = self.projection(cur, body.shape, has_bn, node.span)
            if short.shape != body.shape:
                raise self.error(ShapeError, f"residual shapes cannot be joined: the block gives "
                                 f"{fmt_shape(body.shape)}, its shortcut {fmt_shape(short.shape)}", node.span,
                                 "make the shortcut produce the block's shape")
            add = self.emit(self.fresh("add", "add" if own_scope else None, node.span), "add",
                            (body.node, short.node), {}, body.shape, node.span)
            return self.flush(Cursor(add, body.shape, body.pending))
        finally:
            self.scope = outer

    def projection(self, cur: Cursor, want: tuple, has_bn: bool, span: Span) -> Cursor:
        have = cur.shape
        if len(have) != 3 or len(want) != 3:
            raise self.error(ShapeError, f"residual shapes cannot be joined: {fmt_shape(have)} in, "
                             f"{fmt_shape(want)} out", span,
                             "give an explicit shortcut: res(body, shortcut)")
        strides = []
        for n, m in zip(have[1:], want[1:]):
            s = -(-n // m)
            if m > n or conv_out(n, 1, s, 0) != m:
                raise self.error(ShapeError, f"residual shapes cannot be joined: no 1x1 projection with a stride "
                                 f"maps {fmt_shape(have)} to {fmt_shape(want)}", span,
                                 "give an explicit shortcut: res(body, shortcut)")
            strides.append(s)
        # the ops' own builders: a 1x1 conv with the stride that maps the shapes, then (with BN) batch norm
        try:
            conv = OPS["conv"].build(LayerArgs("conv", 1, want[0], tuple(strides), {"bias": not has_bn}), have)
        except OpError as e:        # a stride beyond MAX_KERNEL
            raise self.error(_ERROR_KINDS.get(e.kind, ValueError_), f"the residual's automatic projection from "
                             f"{fmt_shape(have)} to {fmt_shape(want)}: {e.message}", span,
                             "give an explicit shortcut: res(body, shortcut)") from None
        owner = self.scope.prefix[:-1]
        self.reserve("proj", owner, "the residual's automatic projection")
        name = self.emit(self.fresh("conv", "proj", span), "conv", (cur.node,), conv, want, span)
        if has_bn:
            self.reserve("proj_bn", owner, "the batch norm of the residual's automatic projection")
            bn = OPS["bn"].build(LayerArgs("bn", None, None, None, {}), want)
            name = self.emit(self.fresh("bn", "proj_bn", span), "bn", (name,), bn, want, span)
        return Cursor(name, want, None)

    def branches(self, node: A.Branches, cur: Cursor, label: Optional[str] = None,
                 label_span: Optional[Span] = None, own_scope: bool = True) -> Cursor:
        cur = self.flush(cur)
        if own_scope:
            name = self.fresh(node.merge, label, label_span)
            outer = self.enter(name[len(self.scope.prefix):])     # holds only the branches and their merge
            self.names.add(name)
        else:
            outer = self.scope
        try:
            parts = self.split_parts(node, cur) if node.merge == "split" else None
            outs = []
            for i, branch in enumerate(node.branches):
                inner = self.enter(f"b{i + 1}", branch)
                try:
                    start = Cursor(cur.node, cur.shape, None)
                    if parts:        # split(...): branch i runs on the i-th part of the channels
                        shape = (parts[i][1] - parts[i][0],) + tuple(cur.shape[1:])
                        start = Cursor(self.emit(self.fresh("channels"), "channels", (cur.node,),
                                                 {"start": parts[i][0], "stop": parts[i][1]}, shape, node.span),
                                       shape, None)
                    outs.append(self.flush(self.lower(branch, start)))
                finally:
                    self.scope = inner
            op = MERGE_OPS["cat" if node.merge == "split" else node.merge]     # the op whose `merge` is the word
            try:
                shape = OPS[op].shape({}, [o.shape for o in outs])
            except OpError:
                detail = ", ".join(f"branch {i + 1} gives {fmt_shape(o.shape)}" for i, o in enumerate(outs))
                what, need = OPS[op].merge_verb, OPS[op].merge_need
                raise self.error(ShapeError, f"cannot {what} branches of mismatched sizes: {detail}", node.span,
                                 f"branches must give {need}") from None
            if shape[0] > limits.MAX_DIM:
                raise self.error(LimitError, f"concatenating gives {shape[0]:,} channels, beyond the limit of "
                                 f"{limits.MAX_DIM:,}", node.span)
            name = self.emit(self.fresh(op, op, node.span), op, tuple(o.node for o in outs), {}, shape, node.span)
            return Cursor(name, shape, None)
        finally:
            self.scope = outer

    def split_parts(self, node: A.Branches, cur: Cursor) -> list[tuple[int, int]]:
        """The channel range of each branch of split(...): equal parts, as torch.chunk cuts them."""
        channels, count = cur.shape[0], len(node.branches)
        if channels % count:
            raise self.error(ShapeError, f"split(...) cuts its input's {channels:,} channels into {count} equal "
                             f"parts, but {count} does not divide {channels:,}", node.span,
                             f"give the layer before it a multiple of {count} channels, or cut the parts yourself: "
                             "cat(channels[start=0, stop=N] + ..., channels[start=N] + ...)")
        return split_parts(channels, count)

    # --------------------------------------------------------- top level --
    def stage_names(self, stages: list) -> list[str]:
        """Each stage's name: its label, or `stageN`: the first unlabelled stage takes its position N, each later
        one the number after the unlabelled stage before it (`stage6 | classifier: ... | stage7`).

        An unlabelled stage whose `stageN` is a label, or taken by a stage before it, gets the next free
        number, so no two stages share a name and no automatic stage name is a label.
        """
        labelled: dict[str, Span] = {}
        for stage in stages:
            if isinstance(stage, A.Labeled):
                first = labelled.setdefault(stage.label, stage.label_span)
                if first is not stage.label_span:
                    raise NameError_(f"two stages are labelled '{stage.label}'", stage.label_span,
                                     f"the first is at {first.line}:{first.column}; stage names must be unique")
        taken = set(labelled)
        if len(stages) > len(labelled):
            bodies = [b for st in self.spec.statements if isinstance(st, A.BlockDef) for b in (st.body,)]
            stack = bodies + [st for st in self.spec.statements if isinstance(st, (A.Pipeline, A.Sequence, A.Repeat,
                                                                                    A.Labeled, A.Res, A.Branches))]
            while stack:            # every label in the spec, in any scope or block
                node = stack.pop()
                if isinstance(node, A.Labeled):
                    taken.add(node.label)
                    stack.append(node.body)
                elif isinstance(node, A.Sequence):
                    stack.extend(node.items)
                elif isinstance(node, A.Pipeline):
                    stack.extend(node.stages)
                elif isinstance(node, A.Repeat):
                    stack.append(node.body)
                elif isinstance(node, A.Res):
                    stack.extend(n for n in (node.body, node.shortcut) if n is not None)
                elif isinstance(node, A.Branches):
                    stack.extend(node.branches)
        names = []
        previous = None         # the number of the unlabelled stage before, if any
        for index, stage in enumerate(stages, 1):
            if isinstance(stage, A.Labeled):
                names.append(stage.label)
                continue
            if previous is not None:     # one after the unlabelled stage before it, labelled ones in between or not
                index = previous + 1
            while f"stage{index}" in taken:
                index += 1
            taken.add(f"stage{index}")
            names.append(f"stage{index}")
            previous = index
        return names

    def lone_call(self, node) -> bool:
        """Is this stage one block call and nothing else?"""
        return isinstance(node, A.Call) or (isinstance(node, A.Layer) and node.word in self.blocks
                                            and node.lead is None and node.size is None and not node.options)

    def declare_params(self) -> None:
        """Every `param`'s value, in order (a value may use the params before it); --set values replace theirs."""
        for name, value in self.overrides.items():
            check_override(name, value)
        first: dict[str, A.ParamStmt] = {}
        for st in self.spec.statements:
            if not isinstance(st, A.ParamStmt):
                continue
            if st.name in first:
                raise NameError_(f"param '{st.name}' is declared twice", st.name_span,
                                 f"first declared at {self.at(first[st.name].name_span)}")
            self.check_name(st.name, st.name_span, "a param")
            first[st.name] = st
            if st.name in self.overrides:
                self.params[st.name] = self.overrides[st.name]
                continue
            value = self.value(st.value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError_(f"param '{st.name}' must be a number, got {_show(value)}", st.value.span)
            self.params[st.name] = value
        unknown = [name for name in self.overrides if name not in first]
        if unknown:
            name = unknown[0]
            close = _close(name, list(first), n=1)
            if first:
                hint = (f"did you mean '{close[0]}'? " if close else "") + f"the spec's params are: {', '.join(first)}"
            else:
                hint = "the spec declares no params; declare one with: param NAME = VALUE"
            raise NameError_(f"cannot set '{name}': the spec has no param of that name", None, hint)

    @staticmethod
    def check_name(name: str, span: Span, what: str) -> None:
        """Refuse a block, parameter or param name that reads as a layer where it is used (`fc1`, `conv2a`)."""
        word = layer_like(name)
        if word is not None:
            raise NameError_(f"'{name}' cannot be {what} name: it starts with the layer word '{word}' and a "
                             f"digit, so it reads as a layer ({word} with a size)", span,
                             f"names may hold digits, but not right after a layer's word; e.g. 'my_{name}'")

    def input_size(self, st: A.InputExpr) -> tuple:
        dims = []
        for expr in st.dims:
            d = self.value(expr)
            if isinstance(d, float) and d.is_integer():
                d = int(d)
            if isinstance(d, bool) or not isinstance(d, int):
                raise ValueError_(f"input sizes must be whole numbers, got {_show(d)}", expr.span,
                                  "round it: input {round(res)}x{round(res)}x3")
            if d < 1:
                raise ValueError_(f"input sizes must be at least 1, got {d}", expr.span)
            if d > limits.MAX_DIM:
                raise LimitError(f"input size {d:,} is beyond the limit of {limits.MAX_DIM:,}", expr.span)
            dims.append(d)
        return tuple(dims)

    def run(self) -> list:
        dims = self.input_override
        input_span = act_span = augment_span = None
        pipelines = []
        self.declare_params()
        for st in self.spec.statements:
            if isinstance(st, (A.ParamStmt, A.UseStmt)):
                continue
            if isinstance(st, A.BlockDef):
                if st.name in self.blocks:
                    raise NameError_(f"block '{st.name}' is defined twice", st.name_span,
                                     f"first defined at {self.at(self.blocks[st.name].span)}")
                if normalize_word(st.name) in SPELLINGS:
                    raise NameError_(f"'{st.name}' is a built-in layer and cannot be a block name", st.name_span,
                                     "pick another name")
                self.check_name(st.name, st.name_span, "a block")
                if st.name.lower() in MERGES:
                    raise NameError_(f"'{st.name}' cannot be a block name: {st.name}(...) is a residual or "
                                     "branches", st.name_span, "pick another name")
                seen: set[str] = set()
                dup = next((p for p in st.params if p.name in seen or seen.add(p.name)), None)
                if dup is not None:
                    raise NameError_(f"parameter '{dup.name}' appears twice", dup.span)
                for p in st.params:
                    self.check_name(p.name, p.span, "a parameter")
                self.blocks[st.name] = st
            elif isinstance(st, (A.InputStmt, A.InputExpr)):
                if input_span is not None:
                    raise ValueError_("the input is declared twice", st.span,
                                      f"first declared at {input_span.line}:{input_span.column}")
                input_span = st.span
                given = st.dims if isinstance(st, A.InputStmt) else self.input_size(st)
                if len(given) != 3:
                    raise ValueError_(f"input needs height, width and channels, got {fmt_shape(given)}", st.span,
                                      "write it as input 224x224x3 (HxWxC)")
                if dims is None:
                    dims = given
                    self.settings["input_from"] = "spec"    # where the input size was read (analysis checks it)
                for d in given:
                    if d < 1:
                        raise ValueError_("input sizes must be at least 1", st.span)
                    if d > limits.MAX_DIM:
                        raise LimitError(f"input size {d:,} is beyond the limit of {limits.MAX_DIM:,}", st.span)
            elif isinstance(st, A.AugmentStmt):
                if augment_span is not None:
                    raise ValueError_(f"augment given twice: first given at {augment_span.line}:"
                                      f"{augment_span.column}", st.span,
                                      "write one augment line with every augmentation: augment flip, crop=4")
                augment_span = st.span
                from .augment import PRESETS, parse_augment
                parts, seen = [], {}
                for o in st.options:
                    value = None if o.value is None else self.value(o.value)
                    parts.append(o.name if value is None else f"{o.name}={value}")
                    if o.name in PRESETS and len(st.options) > 1:
                        raise ValueError_(f"the preset '{o.name}' is a whole augment line", o.span,
                                          f"write augment {o.name} alone, or list augmentations: augment flip, crop=4")
                    if o.name in seen:
                        raise ValueError_(f"augmentation '{o.name}' given twice: first given at "
                                          f"{seen[o.name].line}:{seen[o.name].column}", o.span)
                    seen[o.name] = o.span
                    try:                         # each part on its own first, to point at the one that is wrong
                        parse_augment(parts[-1])
                    except ValueError as e:
                        raise ValueError_(str(e), o.span) from None
                text = ",".join(parts) or "none"
                try:
                    parse_augment(text)
                except ValueError as e:
                    raise ValueError_(str(e), st.span) from None
                self.settings["augment"] = text
            elif isinstance(st, A.ActivationStmt):
                if act_span is not None:
                    raise ValueError_(f"activation given twice: first given at {act_span.line}:{act_span.column}",
                                      st.span, "keep one activation line: it sets the activation after every conv "
                                      "and fc layer of the spec, wherever it stands")
                act_span = st.span
                build, node, name = self.spelling(st.layer)
                try:
                    op, attrs = build(self.layer_args(node), (1,)) if build else (None, None)
                except OpError as e:
                    raise self.op_error(e, node, node.span) from None
                if op not in ACTIVATIONS and op != NO_ACTIVATION:
                    close = _close(name, list(ACTIVATIONS), n=1)
                    raise NameError_(f"'{st.layer.word}' is not an activation", st.layer.span,
                                     f"did you mean '{close[0]}'?" if close else
                                     f"choose one of: {', '.join(ACTIVATIONS)}, none")
                self.act = (op, attrs)
            else:
                pipelines.append(st)
        if not pipelines:
            raise ValueError_("the spec has no layers", Span(1, 1, 1, 2, 0, 1),
                              "write a network, e.g.: conv3-64 x2 + maxpool | fc10 | softmax")
        h, w, c = dims or DEFAULT_INPUT
        if min(h, w, c) < 1 or max(h, w, c) > limits.MAX_DIM:
            raise LimitError(f"input {h}x{w}x{c} is out of range", input_span)
        self.emit("input", "input", (), {}, (c, h, w), input_span, stage="input")
        cur = Cursor("input", (c, h, w), None)
        stages = [stage for pipe in pipelines for stage in (pipe.stages if isinstance(pipe, A.Pipeline) else (pipe,))]
        root = self.scope = Scope("", scope_labels(pipelines))
        for stage, name in zip(stages, self.stage_names(stages)):
            self.stage = name
            if isinstance(stage, A.Labeled):
                if stage.label in self.names:
                    raise NameError_(f"the name '{stage.label}' is already used", stage.label_span,
                                     "stage labels must differ from the labels and names before them")
                cur = self.lower(stage, cur)
            elif self.lone_call(stage):     # its scope may be named after the stage: every node is inside it
                cur = self.lower(stage, cur)
            else:
                # A node `stage2.x` beside a node `x` in the stage `stage2` would share the module path
                # stage2.x (names.module_paths drops a scope named like its stage): here no top-level
                # automatic name is the stage's name. (Labels never are: stage names skip them.)
                root.labels[name] = None
                cur = self.lower(stage, cur)
                del root.labels[name]
            self.names.add(name)
        if cur.pending is not None and len(self.nodes[cur.pending.owner].shape) == 1:
            cur = Cursor(cur.node, cur.shape, None)   # the classifier outputs logits
        self.flush(cur)
        return self.nodes


def lower(spec: A.Spec, source: str = "", filename: str = "<spec>",
          input_shape: Optional[tuple[int, int, int]] = None, overrides: Optional[dict] = None,
          sources=None) -> Graph:
    """Lower a parsed spec to a verified IR graph. `input_shape` (H, W, C) overrides the spec's; `overrides`
    maps `param` names to the values that replace theirs; `sources` (uses.Sources) names the files of a spec
    whose `use` statements uses.resolve has brought in."""
    lowering = _Lowering(spec, input_shape, overrides, sources)
    try:
        rows = lowering.run()
    except RecursionError:      # MAX_DEPTH keeps lowering far from the limit; this is a last resort
        raise lowering.error(LimitError, "the network nests too deeply to lower", lowering.where,
                             "flatten the nesting, or use fewer nested blocks") from None
    from ..ir.ops.regularize import resolve_ramps
    resolve_ramps(rows, lambda message, span, hint: ValueError_(message, span, hint))   # droppath[ramp] rates
    nodes = []
    for r in rows:
        r.attrs.pop("bias_default", None)
        nodes.append(make_node(r.name, r.op, r.inputs, r.attrs, r.shape, r.stage, r.span, r.label))
    return verify(Graph(tuple(nodes), source, filename, lowering.settings))
