"""Source spans, the error classes, and rendering a caret under a span."""
from __future__ import annotations

from typing import NamedTuple


def printable(text: str, limit: int = 200) -> str:
    """Text safe for a terminal or a one-line comment: control, format and line-break characters escaped,
    and at most `limit` characters shown."""
    text = str(text)
    if text.isprintable() and len(text) <= limit:
        return text
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[:limit + 1])
    return out if len(out) <= limit else out[:limit] + "..."


class Span(NamedTuple):
    """A region of source text: 1-based line/column, 0-based character offsets."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int
    end: int

    def join(self, other: "Span | None") -> "Span":
        if other is None:
            return self
        first, last = (self, other) if self.start <= other.start else (other, self)
        return Span(first.line, first.column, last.end_line, last.end_column, first.start, max(self.end, other.end))


class CnnDslError(Exception):
    """Base class of every error cnndsl raises on bad input; carries a span and a hint."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = tuple(notes)
        self.source: str | None = None
        self.filename: str = "<spec>"

    def attach(self, source: str | None, filename: str) -> "CnnDslError":
        """Remember the text the span points into, once (the innermost source wins)."""
        if self.source is None:
            self.source, self.filename = source, filename
        return self

    @property
    def line(self) -> int:
        return self.span.line if self.span else 1

    @property
    def column(self) -> int:
        return self.span.column if self.span else 1

    def render(self) -> str:
        """`file:line:col: error: message`, the source line, a caret, notes and a hint."""
        filename, message = printable(self.filename), printable(self.message, 2000)
        if self.span is None:   # not about a place in a spec (a model file, a run)
            where = "" if self.filename == "<spec>" else f"{filename}: "
            out = [f"{where}{self.kind}: {message}"]
        else:
            out = [f"{filename}:{self.line}:{self.column}: {self.kind}: {message}"]
        if self.source is not None and self.span is not None:
            lines = self.source.split("\n")      # spans count lines by "\n" only (not \f, \v or a lone \r)
            if 1 <= self.span.line <= len(lines):
                line = lines[self.span.line - 1].rstrip("\r")
                text = "".join(ch if ch.isprintable() else "?" for ch in line.expandtabs(1))
                if len(text) > 200:
                    text = text[:200] + "..."
                col = min(self.span.column, len(text) + 1)
                if self.span.end_line == self.span.line:
                    width = max(1, min(self.span.end_column, len(text) + 1) - col)
                else:
                    width = max(1, len(text) + 1 - col)
                gutter = f"{self.span.line:>4} | "
                out.append(gutter + text)
                out.append(" " * (len(gutter) - 2) + "| " + " " * (col - 1) + "^" + "~" * (width - 1))
        out.extend(f"  note: {printable(n, 2000)}" for n in self.notes)
        if self.hint:
            out.append(f"  hint: {printable(self.hint, 2000)}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class SyntaxError_(CnnDslError):
    """The text does not follow the grammar (unexpected character or token)."""

    kind = "syntax error"


class NameError_(CnnDslError):
    """An unknown layer, block, option or parameter name, or a duplicate one."""

    kind = "error"


class ShapeError(CnnDslError):
    """Shapes do not fit: a size collapses, a residual or concat cannot be joined."""

    kind = "shape error"


class ValueError_(CnnDslError):
    """A malformed or out-of-range number, or a wrong argument."""

    kind = "error"


class LimitError(CnnDslError):
    """Input refused because it exceeds a sanity limit (size, depth, repeat count)."""

    kind = "limit exceeded"


class OnnxExportError(CnnDslError):
    """The graph uses something ONNX cannot express, or the weights do not fit."""

    kind = "onnx error"


class InternalError(Exception):
    """The IR verifier found an inconsistency: a bug in cnndsl, not in the input."""


# Public, shorter aliases (the trailing underscores avoid shadowing builtins inside the package).
ParseError = SyntaxError_
SpecNameError = NameError_
SpecValueError = ValueError_
