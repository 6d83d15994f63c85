"""`cnndsl draw`: a picture of a spec (SVG, PNG, HTML, mermaid, dot)."""
from __future__ import annotations

import os
import sys

import click

from ..errors import printable
from .common import _guard, _input_shape, _load, _overrides, _write_atomic, main, set_option

_FORMATS = ("svg", "png", "html", "mermaid", "dot")


def _format_of(output, fmt):
    from ..draw import SUFFIXES
    suffix = os.path.splitext(output)[1].lower() if output and output != "-" else ""
    implied = SUFFIXES.get(suffix)
    if fmt and implied and fmt != implied:
        raise click.UsageError(f"--format {fmt} does not match the output's suffix {printable(suffix)!r} "
                               f"({implied})")
    if fmt:
        return fmt
    if implied:
        return implied
    if suffix:
        raise click.UsageError(f"cannot tell the format from the suffix {printable(suffix, 40)!r}; give --format "
                               f"{'|'.join(_FORMATS)}")
    return "svg"


@main.command("draw")
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write; its suffix picks the format (.svg .png .html .mmd .dot). Default: standard "
                   "output.")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), help="Output format (default: from -o, else svg).")
@click.option("--depth", type=click.Choice(["stage", "block", "layer"]), default=None,
              help="One box per stage, per block instance (repeats collapsed: `x3`), or per layer. [default: block]")
@click.option("--expand", is_flag=True, help="Every layer: the same as --depth layer.")
@click.option("--heat", type=click.Choice(["macs", "params", "memory", "rf"]),
              help="Colour the boxes by this metric (a sequential scale, logarithmic when values span decades).")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@set_option
@_guard
def draw(spec, output, fmt, depth, expand, heat, input_shape, overrides):
    """Draw SPEC: stages as frames, blocks as boxes, skips beside the column.

    Hover a box in a browser for its details (name, op, shape, params, MACs, receptive field)."""
    if expand and depth not in (None, "layer"):
        raise click.UsageError(f"--expand draws every layer; it contradicts --depth {depth}")
    depth = "layer" if expand else (depth or "block")
    fmt = _format_of(output, fmt)
    to_stdout = not output or output == "-"
    if fmt == "png" and to_stdout and sys.stdout.isatty():
        raise click.UsageError("a PNG is binary: give -o FILE.png (or redirect standard output)")
    graph = _load(spec, _input_shape(input_shape), _overrides(overrides))
    from ..draw import draw as render
    data = render(graph, fmt, depth=depth, heat=heat)
    if to_stdout:
        stream = sys.stdout.buffer
        stream.write(data)
        stream.flush()
        return
    _write_atomic(output, data)
    click.echo(f"wrote {printable(output)} ({fmt}, depth {depth}, {len(data):,} bytes)", err=True)
