"""Files from and for people: reads bounded before they allocate, writes that a reader never sees half done."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path in the target's folder; on success it is renamed over `path`, else removed."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cnndsl-", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str):
    """Yield a temporary folder beside `path` for an output made of several files; the caller renames them."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(dir=folder, prefix=".cnndsl-", suffix=".tmp")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_at_most(stream, limit: int, chunk: int = 1 << 24) -> bytes:
    """Up to `limit` + 1 bytes of a stream, in chunks: a larger file shows as more than `limit` bytes.

    `stream.read(limit + 1)` would allocate the whole limit up front, whatever the file's size.
    """
    parts, total = [], 0
    while total <= limit:
        part = stream.read(min(chunk, limit + 1 - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)
