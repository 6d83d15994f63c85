"""The command line (click + rich): the only place that prints."""
from __future__ import annotations

import json
import sys
from typing import Optional

import click

from .errors import CnnDslError

EXIT_INPUT_ERROR = 1
EXIT_INTERNAL = 70


def _human(n: float, unit: str = "") -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def _bytes(n: int) -> str:
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n} B"


def _input_shape(value: Optional[str]):
    if value is None:
        return None
    parts = value.lower().replace("\u00d7", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and 0 < int(p) for p in parts):
        raise click.BadParameter(f"expected HxWxC such as 224x224x3, got {value!r}")
    return tuple(int(p) for p in parts)


def _load(path: str, input_shape=None):
    """Compile a spec file (or '-' for standard input); errors propagate as CnnDslError."""
    import cnndsl
    if path == "-":
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            from .errors import SyntaxError_
            from .syntax import _offset_span
            head = data[:e.start].decode("utf-8", "replace")
            raise SyntaxError_(f"byte 0x{data[e.start]:02x} is not UTF-8 text", _offset_span(head + "?", len(head)),
                               "is this a binary file? specs are UTF-8 text").attach(head, "<stdin>") from None
        return cnndsl.compile(text, input_shape=input_shape, filename="<stdin>")
    from pathlib import Path
    try:
        text = cnndsl.read_spec(path)
    except (OSError, IsADirectoryError) as e:
        raise click.FileError(path, hint=e.strerror or str(e)) from None
    return cnndsl.compile(text, input_shape=input_shape, filename=path)


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
        except RecursionError:
            click.echo("error: input nests too deeply to process", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except MemoryError:
            click.echo("error: out of memory while processing the input", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except Exception as e:  # a bug in cnndsl: say so plainly
            click.echo(f"internal error: {type(e).__name__}: {e}\n"
                       "this is a bug in cnndsl; please report it with the spec that caused it", err=True)
            sys.exit(EXIT_INTERNAL)
    return run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnndsl", message="cnndsl %(version)s")
def main():
    """cnndsl: compile and analyze compact CNN specs such as
    `(conv3-64 x2 + maxpool) x5 | fc4096 | fc1000 | softmax`."""


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Batch size for MACs and memory.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16", "float64", "int8"]),
              help="Element type for memory figures.")
@_guard
def analyze(spec, as_json, input_shape, batch, dtype):
    """Per-layer shapes, parameters, MACs, memory and receptive fields of SPEC ('-' reads stdin)."""
    from .report import Report
    graph = _load(spec, _input_shape(input_shape))
    report = Report(graph, batch=batch, dtype=dtype)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    from .render import print_report
    print_report(report)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def check(spec, input_shape):
    """Parse and verify SPEC only; exit 0 when it is a valid network."""
    graph = _load(spec, _input_shape(input_shape))
    shape = "x".join(map(str, graph.output.shape))
    click.echo(f"{graph.filename}: ok ({len(graph.nodes) - 1} layers, output {shape})")


@main.command("fmt")
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@_guard
def fmt(spec):
    """Print SPEC in canonical form (comments are dropped)."""
    import cnndsl
    text = sys.stdin.read() if spec == "-" else cnndsl.read_spec(spec)
    name = "<stdin>" if spec == "-" else spec
    click.echo(cnndsl.format_spec(text, name), nl=False)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def ir(spec, input_shape):
    """Print the lowered IR of SPEC, one node per line."""
    click.echo(_load(spec, _input_shape(input_shape)).dump())


if __name__ == "__main__":  # pragma: no cover
    main()
