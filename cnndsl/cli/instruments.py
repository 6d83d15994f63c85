"""`cnndsl rf` (where a unit looks) and `cnndsl diagnose` (how gradients flow at initialization)."""
from __future__ import annotations

import json
import math

import click

from ..errors import printable
from .common import _guard, _input_shape, _load, _overrides, _write_atomic, main, set_option


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--layer", metavar="NAME", help="The node whose unit to show (default: the last spatial one).")
@click.option("--unit", metavar="Y,X", help="The unit's row and column in that node's map (default: the centre).")
@click.option("--image", type=click.Path(dir_okay=False), help="Draw over this image, fitted to the spec's input "
              "as training fits images (default: a checkerboard).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The picture to write: .svg, .png or .pdf.")
@click.option("--erf/--no-erf", default=True, help="Also draw the effective receptive field (needs torch).")
@click.option("--samples", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Random inputs and initializations the effective field averages over.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@click.option("--json", "as_json", is_flag=True, help="Also print the numbers as one JSON object.")
@set_option
@_guard
def rf(spec, layer, unit, image, output, erf, samples, seed, input_shape, as_json, overrides):
    """Draw the receptive field of one unit of SPEC over an image: the exact box of input pixels it sees
    (Report.rf_box), the layer's stride grid, the field's growth along the path to the layer and, with
    torch, the effective receptive field (mean |gradient| of the unit over random inputs, Luo et al. 2016)."""
    from ..instruments.common import picture_format
    from ..instruments.receptive import field_picture
    fmt = picture_format(output)
    graph = _load(spec, _input_shape(input_shape), _overrides(overrides))
    if erf:
        try:
            import torch  # noqa: F401  (only whether it is installed)
        except ModuleNotFoundError:
            click.echo("note: torch is not installed; drawing without the effective field (--no-erf)", err=True)
            erf = False
    data, info = field_picture(graph, fmt, layer, unit, image, erf, samples, seed)
    _write_atomic(output, data)
    (top, bottom), (left, right) = info["box"]
    size, jump = info["rf"]["size"], info["rf"]["jump"]
    lines = [f"{printable(info['layer'], 120)} unit ({info['unit'][0]}, {info['unit'][1]}) of "
             f"{info['map'][0]}x{info['map'][1]}: rows {top}..{bottom}, columns {left}..{right} "
             f"(field {size[0]}x{size[1]}, jump {jump[0]}x{jump[1]})"]
    if "erf" in info:
        e = info["erf"]
        lines.append(f"effective field ({e['samples']} draws): support "
                     f"{'inside' if e['support_inside_box'] else 'OUTSIDE'} the box, "
                     f"{e['share_in_half_box']:.0%} of its mass in the box's middle half")
    lines.append(f"wrote {printable(output)}")
    if as_json:
        out = {k: v for k, v in info.items() if k != "erf"}
        if "erf" in info:
            out["erf"] = {k: v for k, v in info["erf"].items() if k != "heat"}
        click.echo(json.dumps(out))
    else:
        click.echo("\n".join(lines))


def _stem(path: str) -> str:
    import os
    return os.path.splitext(os.path.basename(path))[0] or path


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _finite(obj):
    """JSON without NaN or Infinity: a non-finite number becomes null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"layers": [{"name", "grad_norm", "grad_rms", "flag", ...}], '
                   '"vanishing", "exploding", ...} (several specs: {"runs": [...]}).')
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also draw the gradient per layer (log scale, flagged layers marked): .svg, .png or .pdf.")
@click.option("--steps", type=click.IntRange(0, 100_000), default=0, show_default=True,
              help="Also measure after this many SGD steps (lr 0.01, momentum 0.9).")
@click.option("--data", type=click.Choice(["synthetic", "digits", "fashion-mnist"]), default="synthetic",
              show_default=True, help="What the batches hold: seeded Gaussian noise with random labels, or images.")
@click.option("--batch", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--ratio", type=click.FloatRange(1e-12, 0.5), default=1e-3, show_default=True,
              help="A layer whose gradient per parameter is below this times the last layers' is vanishing.")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the specs' input size.")
@set_option
@_guard
def diagnose(specs, as_json, output, steps, data, batch, seed, ratio, input_shape, overrides):
    """Measure each conv and fc layer's gradient of SPECS at initialization (and after --steps of training),
    and flag vanishing and exploding layers. Several specs are compared in one picture."""
    from ..instruments.common import picture_format
    from ..instruments.gradients import diagnose as run, gradient_picture
    fmt = picture_format(output) if output else None
    shape, values = _input_shape(input_shape), _overrides(overrides)
    results = [run(_load(s, shape, values), data, steps, batch, seed, ratio=ratio) for s in specs]
    if output:
        _write_atomic(output, gradient_picture(results, [_stem(r["spec"]) for r in results], fmt))
    if as_json:
        click.echo(json.dumps(_finite(results[0] if len(results) == 1 else {"runs": results})))
        return
    for res in results:
        click.echo(f"{printable(res['spec'])}: loss {res['loss']:.4g} at initialization ({data} data, batch "
                   f"{batch}, seed {seed})" + (f", {res['trained_loss']:.4g} after {steps} steps" if steps else ""))
        width = min(40, max(len(printable(r["name"], 40)) for r in res["layers"]))
        head = f"  {'layer':<{width}} {'params':>10} {'grad norm':>10} {'per param':>10}  flag"
        if steps:
            head += f"   {'after':>10}  flag"
        click.echo(head)
        for r in res["layers"]:
            line = (f"  {printable(r['name'], 40):<{width}} {r['params']:>10,} {_number(r['grad_norm']):>10} "
                    f"{_number(r['grad_rms']):>10}  {r['flag']:<9}")
            if steps:
                line += f" {_number(r['trained']['grad_rms']):>10}  {r['trained']['flag']}"
            click.echo(line.rstrip())
        click.echo(f"  first / last layer gradient per parameter: {_number(res['first_to_last'])}; "
                   f"vanishing: {len(res['vanishing'])}, exploding: {len(res['exploding'])}")
    if output:
        click.echo(f"wrote {printable(output)}")
