"""What every command shares: the group, input loading, the error guard, finite numbers, atomic outputs."""
from __future__ import annotations

import json
import math
import re
import sys
from typing import Optional

import click

from ..errors import CnnDslError
from ..errors import printable

EXIT_INPUT_ERROR = 1
EXIT_INTERNAL = 70


class OutputError(CnnDslError):
    """An output file cannot be written (no space, no permission, not a folder)."""

    kind = "output error"


class FiniteFloat(click.ParamType):
    """A finite number within [low, high] (NaN, inf and out-of-range values are usage errors)."""

    name = "number"

    def __init__(self, low: float = -1e9, high: float = 1e9):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        import math
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{value!r} is not a finite number in [{self.low:g}, {self.high:g}]", param, ctx)
        return number


def _input_shape(value: Optional[str]):
    if value is None:
        return None
    from .. import limits
    parts = value.lower().replace("\u00d7", "x").split("x")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 9 and 0 < int(p) <= limits.MAX_DIM
                                  for p in parts):
        raise click.BadParameter(f"expected HxWxC such as 224x224x3, each from 1 to {limits.MAX_DIM:,}, "
                                 f"got {printable(value, 40)!r}")
    shape = tuple(int(p) for p in parts)
    from ..analysis.passes import layout_message
    found = layout_message(shape, "--input")     # 3x64x64: channels first, read as 3 rows of 64 x 64 channels
    if found:
        click.echo(f"warning: {found[0]}\n  hint: {found[1]}", err=True)
    return shape


def _load(path: str, input_shape=None, overrides=None, layout_warning: bool = True):
    """Compile a spec file (or '-' for standard input); errors propagate as CnnDslError. A spec whose `input`
    line looks channels first gets a warning on standard error, unless `layout_warning` is False (analyze
    reports it with its other warnings)."""
    from ..api import compile_source
    if path.lower().endswith(".onnx"):   # analyze a model cnndsl did not write
        if overrides:
            raise click.BadParameter("an ONNX model has no params to set", param_hint="--set")
        from ..backends.from_onnx import import_onnx
        return import_onnx(path, input_shape)
    text, filename = _read_text(path)
    graph = compile_source(text, filename, input_shape=input_shape, overrides=overrides,
                           path=None if path == "-" else path)
    if layout_warning:
        from ..analysis.passes import input_layout
        found = input_layout(graph)
        if found:
            where = f"{printable(graph.filename)}:{found['line']}:{found['column']}: " if found["line"] else ""
            click.echo(f"{where}warning: {found['message']}\n  hint: {found['hint']}", err=True)
    return graph


_SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SET_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _overrides(values) -> dict:
    """`--set NAME=VALUE` options as {name: number}: each name once, each value a finite number."""
    from .. import limits
    out: dict = {}
    for item in values or ():
        name, eq, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not eq or not _SET_NAME.fullmatch(name):
            raise click.BadParameter(f"expected NAME=VALUE such as width=1.2, got {printable(item, 40)!r}",
                                     param_hint="--set")
        if name in out:
            raise click.BadParameter(f"'{name}' is set twice", param_hint="--set")
        if not _SET_NUMBER.fullmatch(text) or len(text) > limits.MAX_FLOAT_CHARS:
            raise click.BadParameter(f"the value of '{name}' must be a number, got {printable(text, 40)!r}",
                                     param_hint="--set")
        number = float(text) if any(c in text for c in ".eE") else int(text)
        if not math.isfinite(number) or abs(number) > limits.MAX_MAGNITUDE:
            raise click.BadParameter(f"the value of '{name}' must be a finite number of at most "
                                     f"{limits.MAX_MAGNITUDE:.0e} in size, got {printable(text, 40)!r}",
                                     param_hint="--set")
        out[name] = number
    return out


def set_option(fn):
    """The `--set NAME=VALUE` option (repeatable): a value for a param the spec declares."""
    return click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
                        help="Give the spec's `param NAME` this value (repeat for several params).")(fn)


def _read_text(path: str) -> tuple[str, str]:
    """A spec's text and the name diagnostics use; '-' is standard input. Size-checked before reading."""
    from ..files import open_regular
    from ..frontend.source import decode_spec, read_bounded
    if path == "-":
        return decode_spec(read_bounded(sys.stdin.buffer, "<stdin>"), "<stdin>"), "<stdin>"
    try:
        with open_regular(path) as f:      # a pipe or device as a spec would block or never end
            return decode_spec(read_bounded(f, path), path), path
    except OSError as e:
        raise click.FileError(printable(path), hint=e.strerror or str(e)) from None


def _guard(fn):
    """Turn input errors into diagnostics and unexpected failures into a one-line report, never a traceback."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnnDslError as e:
            click.echo(e.render(), err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except ModuleNotFoundError as e:      # an optional backend's package is not installed
            extra = {"torch": "torch", "torchvision": "torch", "onnx": "onnx", "onnxruntime": "onnx",
                     "numpy": "onnx", "PIL": "train", "sklearn": "dev"}.get((e.name or "").split(".")[0])
            hint = f"pip install 'cnndsl[{extra}]'" if extra else f"pip install {e.name}"
            click.echo(f"error: this command needs the '{e.name}' package, which is not installed\n  hint: {hint}",
                       err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except RecursionError:
            click.echo("error: input nests too deeply to process", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except MemoryError:
            click.echo("error: out of memory while processing the input", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except Exception as e:  # a bug in cnndsl: say so plainly
            click.echo(f"internal error: {type(e).__name__}: {printable(str(e), 300)}\n"
                       "this is a bug in cnndsl; please report it with the spec that caused it", err=True)
            sys.exit(EXIT_INTERNAL)
    return run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnndsl", message="cnndsl %(version)s")
def main():
    """cnndsl: compile and analyze compact CNN specs such as
    `(conv3-64 x2 + maxpool) x5 | fc4096 | fc1000 | softmax`."""


def _write_atomic(path: str, data: bytes) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    from ..files import atomic_path

    def write():
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
    _guard_output(path, write)


def _guard_output(path: str, write) -> None:
    """Run `write`; an OSError (disk full, no permission, no such folder) becomes a diagnostic naming the file."""
    try:
        write()
    except OSError as e:
        raise OutputError(f"cannot write {printable(path)}: {e.strerror or e}") from None


