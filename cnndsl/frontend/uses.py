"""`use "families/efficientnet.cnn"`: the block definitions and params of other spec files.

A used file is read relative to the file that uses it, inside the folder of the spec being compiled (its
fence: no absolute paths, no `..` or symlink leading out), as a regular file of bounded size, and may hold
only `block`, `param` and `use` statements. Each file is read once however often it is used; a file that
uses itself, directly or not, is an error naming the cycle; uses nest at most MAX_USE_DEPTH deep.

Spans of a used file are shifted by its index times USED (1 << 40) characters, so an error's span says which
file it points into (Sources.attach gives the error that file's text and name); line and column stay the
file's own.
"""
from __future__ import annotations

import os
from typing import Optional

from .. import limits
from ..errors import CnnDslError, LimitError, Span, ValueError_
from . import syntax as A

USED = 1 << 40                  # the offset stride between files (a file has fewer characters)
MAX_USE_DEPTH = 16              # uses nested deeper than this
MAX_USE_FILES = 64              # files one spec may use, directly or not
MAX_USE_CHARS = limits.MAX_SOURCE_CHARS   # characters of all the used files together


class Sources:
    """The files of one compilation: the spec (spans from offset 0) and the files it uses (file k from k * USED)."""

    def __init__(self, text: str, filename: str):
        self.files: list[tuple[str, str]] = [(filename, text)]

    def add(self, filename: str, text: str) -> int:
        self.files.append((filename, text))
        return (len(self.files) - 1) * USED

    def index(self, span: Optional[Span]) -> int:
        return min(span.start // USED, len(self.files) - 1) if span is not None and span.start >= 0 else 0

    def where(self, span: Span) -> str:
        """`line:column`, with the file's name in front when the spec uses other files."""
        if len(self.files) == 1:
            return f"{span.line}:{span.column}"
        return f"{self.files[self.index(span)][0]}:{span.line}:{span.column}"

    def attach(self, error: CnnDslError) -> CnnDslError:
        name, text = self.files[self.index(error.span)]
        return error.attach(text, name)


def shift(tree, base: int):
    """The syntax tree with every span moved `base` characters on, rebuilt without recursion."""
    out: list = []
    stack: list = [(tree, False)]
    while stack:
        obj, ready = stack.pop()
        if ready:
            n = len(obj) + (1 if isinstance(obj, A.Options) else 0)
            kids = out[len(out) - n:]
            del out[len(out) - n:]
            if isinstance(obj, A.Options):
                out.append(A.Options(kids[:-1], kids[-1]))
            elif hasattr(obj, "_fields"):
                out.append(type(obj)(*kids))
            else:
                out.append(tuple(kids))
        elif isinstance(obj, Span):
            out.append(obj._replace(start=obj.start + base, end=obj.end + base))
        elif isinstance(obj, tuple) and (obj or isinstance(obj, A.Options)):
            stack.append((obj, True))
            if isinstance(obj, A.Options):
                stack.append((obj.span, False))
            stack.extend((child, False) for child in reversed(obj))
        else:
            out.append(obj)
    return out[0]


_ALLOWED = (A.BlockDef, A.ParamStmt, A.UseStmt)


def resolve(spec: A.Spec, sources: Sources, base: Optional[str], path: Optional[str] = None) -> A.Spec:
    """The spec with the statements of the files it uses (post-order: a used file's own uses first) in front.

    `base` is the folder the spec's `use` paths are relative to, and the fence no used file may leave (None:
    a spec with `use` is refused); `path` is the spec's own file, so that a file using it back is a cycle.
    A `param` of the spec replaces a param of the same name from a used file (its value is the spec's).
    """
    uses = [st for st in spec.statements if isinstance(st, A.UseStmt)]
    if not uses:
        return spec
    if base is None:
        raise ValueError_("'use' needs the folder of the spec, and this spec text has none", uses[0].span,
                          "used files are read relative to the spec's folder: give the spec as a file (not standard "
                          "input), or in Python compile_text(text, base=FOLDER)")
    fence = os.path.realpath(base)
    root = os.path.realpath(path) if path is not None else None
    chain = [(root, sources.files[0][0])]         # the files being read, for cycles
    done: set[str] = set()
    if root is not None:
        done.add(root)
    used: list = []
    total = 0
    stack = [(iter(uses), base, None)]
    while stack:
        frame_uses, folder, statements = stack[-1]
        use = next(frame_uses, None)
        if use is None:
            stack.pop()
            chain.pop()
            if statements is not None:
                used.extend(st for st in statements if not isinstance(st, A.UseStmt))
            continue
        written = use.path
        if os.path.isabs(written) or written.startswith("~"):
            raise sources.attach(ValueError_(f"'use' takes a path relative to the file that uses it, not "
                                             f"{written!r}", use.path_span, 'write use "families/resnet.cnn"'))
        name = os.path.normpath(os.path.join(folder, written))
        real = os.path.realpath(name)
        if os.path.commonpath([fence, real]) != fence:
            raise sources.attach(ValueError_(f"{written!r} is outside the spec's folder", use.path_span,
                                             f"used files must be inside {fence}, the folder of the spec being "
                                             "compiled (no '..' or link leading out of it)"))
        cycle = next((i for i, (p, _) in enumerate(chain) if p == real), None)
        if cycle is not None:
            names = [n for _, n in chain[cycle:]] + [chain[cycle][1]]
            raise sources.attach(ValueError_(f"'use' makes a cycle: {' -> '.join(names)}", use.span,
                                             "a file may not use itself, directly or through others"))
        if real in done:            # used twice (a diamond): its blocks are there already
            continue
        if len(stack) > MAX_USE_DEPTH:
            raise sources.attach(LimitError(f"'use' nests more than {MAX_USE_DEPTH} files deep", use.span,
                                            "flatten the uses"))
        if len(sources.files) > MAX_USE_FILES:
            raise sources.attach(LimitError(f"the spec uses more than {MAX_USE_FILES} files", use.span))
        text = _read(name, written, use, sources)
        total += len(text)
        if total > MAX_USE_CHARS:
            raise sources.attach(LimitError(f"the files the spec uses hold more than {MAX_USE_CHARS:,} characters",
                                            use.span, "use smaller files"))
        tree = _parse(text, name)
        done.add(real)
        offset = sources.add(name, text)
        tree = shift(tree, offset)
        chain.append((real, name))
        inner = [st for st in tree.statements if isinstance(st, A.UseStmt)]
        stack.append((iter(inner), os.path.dirname(name), tree.statements))
    own = {st.name for st in spec.statements if isinstance(st, A.ParamStmt)}
    used = [st for st in used if not (isinstance(st, A.ParamStmt) and st.name in own)]
    return A.Spec(tuple(used) + spec.statements)


def _read(name: str, written: str, use: A.UseStmt, sources: Sources) -> str:
    from ..files import open_regular, read_at_most
    from .source import decode_spec
    most = 4 * limits.MAX_SOURCE_CHARS
    try:
        with open_regular(name) as f:
            data = read_at_most(f, most)
    except OSError as e:
        raise sources.attach(ValueError_(f"cannot read {written!r}: {e.strerror or e}", use.path_span,
                                         f"the path is relative to the folder of the file that uses it: "
                                         f"{os.path.dirname(name) or '.'}")) from None
    if len(data) > most:
        raise sources.attach(LimitError(f"{written!r} is larger than {most:,} bytes", use.path_span,
                                        f"specs may be at most {limits.MAX_SOURCE_CHARS:,} characters"))
    return decode_spec(data, name)


def _parse(text: str, name: str) -> A.Spec:
    from .parser import parse
    try:
        tree = parse(text)
        for st in tree.statements:
            if not isinstance(st, _ALLOWED):
                what = {A.InputStmt: "an input line", A.InputExpr: "an input line", A.ActivationStmt:
                        "an activation line", A.AugmentStmt: "an augment line"}.get(type(st), "a network")
                raise ValueError_(f"a used file may hold only block, param and use statements, and this one holds "
                                  f"{what}", st.span, "put the network, input, activation and augment lines in the "
                                  "spec that uses this file")
    except CnnDslError as e:
        raise e.attach(text, name) from None
    return tree
