"""Files from and for people: reads bounded before they allocate, writes that a reader never sees half done."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile


def output_target(path: str) -> str:
    """The file an output to `path` replaces: a symlink's target (the link stays), else `path` itself.

    A target that exists and is not a regular file (a device such as /dev/null, a pipe, a folder) is
    refused: renaming over it would replace it, and writing into it is not an atomic output.
    """
    if not path:
        raise OSError(errno.ENOENT, "no file name given")
    target = os.path.realpath(path)
    if not os.path.isdir(os.path.dirname(target)):
        raise OSError(errno.ENOENT, "its folder does not exist")
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a device, pipe or folder); give a file name")
    return target


def _mode_for(target: str) -> int:
    """The permissions an output gets: those of the file it replaces, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside the output; on success it is renamed over it, else removed.

    The output is `path`, or the file a symlink at `path` points to; special files are refused
    (output_target). The new file keeps the replaced file's permissions (or the umask's).
    """
    target = output_target(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".cnndsl-", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class NotRegularFile(OSError):
    """A pipe, device or folder where a file was to be read."""


@contextlib.contextmanager
def open_regular(path: str):
    """Open a file for reading only if it is a regular file: a pipe or device would block or never end."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = None
            yield f
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: str):
    """Yield a temporary folder beside `path` for an output made of several files; the caller renames them."""
    folder = os.path.dirname(output_target(path))
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
