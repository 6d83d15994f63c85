"""Writing outputs so that a reader never sees half a file: a temporary file beside the target, then a rename."""
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
