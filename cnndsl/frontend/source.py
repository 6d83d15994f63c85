"""Spec text from files and streams: UTF-8, size-checked before it is read."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from .. import limits
from ..errors import LimitError, SyntaxError_
from ..files import read_at_most


def decode_spec(data: bytes, filename: str = "<spec>") -> str:
    """Spec bytes as UTF-8 text, as the parser reads it (parser.line_ends: no byte order mark at the start,
    a lone CR a line end), so diagnostics show the lines their spans count; undecodable bytes become a
    diagnostic with a position."""
    from .parser import _offset_span, line_ends
    try:
        return line_ends(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        text = line_ends(data[:e.start].decode("utf-8", "replace"))
        err = SyntaxError_(f"byte 0x{data[e.start]:02x} is not UTF-8 text", _offset_span(text + "?", len(text)),
                           "is this a binary file? specs are UTF-8 text")
        raise err.attach(text, filename) from None


def read_bounded(stream, filename: str) -> bytes:
    """At most the bytes a spec may have (4 per character), refusing a larger file without reading it all."""
    most = 4 * limits.MAX_SOURCE_CHARS
    data = read_at_most(stream, most)
    if len(data) > most:
        err = LimitError(f"the spec is larger than {most:,} bytes", None,
                         f"specs may be at most {limits.MAX_SOURCE_CHARS:,} characters")
        raise err.attach(None, filename)
    return data


def read_spec(path: Union[str, Path]) -> str:
    """Read a spec file as UTF-8 text (see decode_spec); a file too large for a spec is refused unread."""
    with open(path, "rb") as f:
        return decode_spec(read_bounded(f, str(path)), str(path))
