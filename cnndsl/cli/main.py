"""The command line (click + rich): the only place that prints. Commands for specs live here; `run` and the
training commands in their own modules, registered on the same group."""
from __future__ import annotations

import json
import sys

import click

from ..errors import printable
from .common import (FiniteFloat, _guard, _guard_output, _input_shape, _load, _overrides, _read_text,  # noqa: F401
                     _write_atomic, main, set_option)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table (= --format json).")
@click.option("--format", "out_format", type=click.Choice(["table", "json", "csv", "markdown"]), default=None,
              help="Output: the table (default), one JSON object, or the view's rows as CSV or Markdown (exact "
                   "numbers, the JSON's rows at the chosen depth).")
@click.option("--depth", type=click.Choice(["stage", "block", "layer"]), default="layer", show_default=True,
              help="One row per stage, per block instance (the name's component after the stage) or per layer.")
@click.option("--budget", "budgets", multiple=True, metavar="KEY<=LIMIT,...",
              help="Limits to check, e.g. params<=25M,macs<=4.1G,memory<=500MB; exit 3 when one is exceeded. "
                   "Keys: params, macs, flops (K/M/G/T = powers of 1000), memory (= weights + peak "
                   "activations), weights, activations, peak (bytes: KB/MB/GB/TB or KiB/MiB/GiB/TiB); "
                   "operators <= and <.")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Batch size for MACs and memory.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16", "float64", "int8"]),
              help="Element type for memory figures.")
@click.option("--train", is_flag=True,
              help="Add training memory: weights, gradients, optimizer state, the activations autograd keeps "
                   "for backward (each layer's saved_bytes) and the peak, without importing torch.")
@click.option("--optimizer", type=click.Choice(["adamw", "adam", "sgd", "none"]), default="adamw",
              show_default=True, help="--train: the optimizer whose state counts (sgd: with momentum).")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None,
              help="--train: mixed precision (torch.autocast): half activations where autocast casts, float32 "
                   "weights and their cached half copies.")
@click.option("--fit", "fit", metavar="MEMORY", default=None,
              help="--train: also the largest batch whose peak fits in MEMORY (80GB = 80e9 bytes, 80GiB = "
                   "80 x 2^30).")
@set_option
@click.option("--device", metavar="NAME", default=None,
              help="Add a latency estimate (roofline model) on this device: a built-in GPU (h100-sxm, h100-pcie, "
                   "a100-80gb-sxm, a100-40gb-pcie, l4, t4, rtx4090, v100), 'local' (this machine, measured by "
                   "`cnndsl calibrate`) or a profile JSON file.")
@_guard
def analyze(spec, as_json, out_format, depth, budgets, input_shape, batch, dtype, overrides, device=None,
            train=False, optimizer="adamw", amp=None, fit=None):
    """Per-layer shapes, parameters, MACs, memory and receptive fields of SPEC ('-' reads stdin, a .onnx
    file is imported). With --budget, exit 3 when a limit is exceeded."""
    if as_json and out_format not in (None, "json"):
        raise click.UsageError(f"--json is --format json; it cannot go with --format {out_format}")
    out_format = "json" if as_json else out_format or "table"
    limits = None
    if budgets:
        from ..analysis.views import BudgetError, parse_budget
        try:
            limits = parse_budget(",".join(budgets))
        except BudgetError as e:
            raise click.BadParameter(str(e), param_hint="--budget") from None
    profile = None
    if device is not None:      # --device: read and check the profile before the spec (no torch is imported)
        from ..analysis.profiles import ProfileError, load as load_profile
        try:
            profile = load_profile(device)
        except ProfileError as e:
            raise click.BadParameter(str(e), param_hint="--device") from None
    from ..analysis.report import Report
    graph = _load(spec, _input_shape(input_shape), _overrides(overrides), layout_warning=False)  # in the report
    report = Report(graph, batch=batch, dtype=dtype)
    if profile is not None:
        from ..analysis import latency
        try:
            lat_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(amp, dtype)     # --amp: half-precision math
            latency.attach(report, latency.estimate(graph, profile, batch=batch, dtype=lat_dtype, train=train))
        except latency.ProfileError as e:
            raise click.BadParameter(str(e), param_hint="--device") from None
    train_plan = None
    if train or fit or amp:     # --train: the training-memory planner (no torch import)
        from ..analysis import memory
        try:
            fit_limit = memory.parse_bytes(fit) if fit else None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--fit") from None
        if amp and dtype != "float32":
            raise click.UsageError("--amp keeps float32 weights: leave --dtype at float32")
        if dtype not in memory.ITEMSIZE:
            raise click.UsageError(f"--train needs a float --dtype, not {dtype}")
        train_plan = memory.train_memory(graph, batch=batch, optimizer=optimizer, dtype=dtype, amp=amp)
        if fit_limit is not None:
            train_plan["fit_limit"] = fit_limit
            train_plan["fit_batch"] = memory.fit_batch(graph, fit_limit, optimizer=optimizer, dtype=dtype, amp=amp)
        memory.attach(report, train_plan)
    budget = None
    if limits is not None:
        from ..analysis.views import budget_lines, check_budget
        budget = check_budget(report, limits)
    if out_format == "table":
        from .render import print_report
        print_report(report, depth=depth, budget=budget)
        if train_plan is not None:
            click.echo(memory.line(train_plan))
        if profile is not None:
            click.echo(latency.summary_line(report.totals["latency"]))
    else:
        if out_format == "json":
            if depth == "layer" and budget is None:
                click.echo(json.dumps(memory.add_saved_bytes(report.to_dict(), train_plan) if train_plan else
                                      report.to_dict()))
            else:
                from ..analysis.views import view_dict
                data = view_dict(report, depth)
                if train_plan is not None:
                    memory.add_saved_bytes(data, train_plan)
                if budget is not None:
                    data["budget"] = budget
                click.echo(json.dumps(data))
        else:
            from ..analysis import views
            text = views.to_csv(report, depth) if out_format == "csv" else views.to_markdown(report, depth, budget)
            click.echo(text, nl=False)
        if budget is not None:
            for line in budget_lines(budget, failed_only=True):
                click.echo(f"budget exceeded: {line}", err=True)
    if budget is not None and not budget["ok"]:
        sys.exit(3)         # over budget (1 is bad input, 2 a usage error)


@main.command()
@click.argument("spec_a", metavar="A", type=click.Path(allow_dash=True, dir_okay=False))
@click.argument("spec_b", metavar="B", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table (= --format json).")
@click.option("--format", "out_format", type=click.Choice(["table", "json", "markdown"]), default=None,
              help="Output: the table (default), one JSON object or Markdown.")
@click.option("--depth", type=click.Choice(["stage", "layer"]), default="layer", show_default=True,
              help="Compare per stage, or per layer (the table shows the layers that differ).")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override both specs' input size.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Batch size for MACs and memory.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16", "float64", "int8"]),
              help="Element type for memory figures.")
@set_option
@_guard
def diff(spec_a, spec_b, as_json, out_format, depth, input_shape, batch, dtype, overrides):
    """Compare two networks, A then B (specs, '-' for stdin, or .onnx files): layers aligned by name within
    each stage, then by order; per stage and per layer the change in output shape, params, MACs, activation
    memory and receptive field (B - A), and the totals."""
    if as_json and out_format not in (None, "json"):
        raise click.UsageError(f"--json is --format json; it cannot go with --format {out_format}")
    if spec_a == "-" and spec_b == "-":
        raise click.UsageError("only one of A and B can be '-' (standard input)")
    out_format = "json" if as_json else out_format or "table"
    from ..analysis.diff import Diff
    from ..analysis.report import Report
    shape, values = _input_shape(input_shape), _overrides(overrides)
    reports = [Report(_load(spec, shape, values), batch=batch, dtype=dtype) for spec in (spec_a, spec_b)]
    result = Diff(*reports)
    if out_format == "json":
        click.echo(json.dumps(result.to_dict(depth)))
    elif out_format == "markdown":
        from ..analysis.diff import to_markdown
        click.echo(to_markdown(result, depth), nl=False)
    else:
        from .render import print_diff
        print_diff(result, depth=depth)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: spec, ok, layers, input and output shapes, stages, warnings.")
@set_option
@_guard
def check(spec, input_shape, overrides, as_json):
    """Parse and verify SPEC only; exit 0 when it is a valid network."""
    graph = _load(spec, _input_shape(input_shape), _overrides(overrides), layout_warning=not as_json)
    if as_json:
        from ..analysis.passes import input_layout
        layout = input_layout(graph)
        click.echo(json.dumps({"spec": graph.filename, "ok": True, "layers": len(graph.nodes) - 1,
                               "input_shape": list(graph.input_shape), "output_shape": list(graph.output.shape),
                               "stages": list(graph.stages), "warnings": [layout] if layout else []}))
        return
    shape = "x".join(map(str, graph.output.shape))
    click.echo(f"{printable(graph.filename)}: ok ({len(graph.nodes) - 1} layers, output {shape})")


@main.command("fmt")
@click.argument("specs", nargs=-1, required=True, type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--check", is_flag=True, help="Print nothing; exit 1 and name each file that is not formatted.")
@click.option("--write", "-w", is_flag=True, help="Rewrite each file in place (atomically) when it changes.")
@_guard
def fmt(specs, check, write):
    """Print each SPEC in canonical form, comments and blank lines kept.

    With --check, exit 1 if any file would change (a CI gate); with --write, format the files in place.
    """
    from ..api import format_spec
    if check and write:
        raise click.UsageError("give --check or --write, not both")
    if (check or write) and "-" in specs:
        raise click.UsageError("--check and --write take files, not '-'")
    if not (check or write) and len(specs) > 1:
        raise click.UsageError("printing takes one SPEC; use --check or --write for several")
    changed = []
    for spec in specs:
        text, name = _read_text(spec)
        printed = format_spec(text, name)
        if not (check or write):
            click.echo(printed, nl=False)
        elif printed != text:
            changed.append(spec)
            if write:
                _write_atomic(spec, printed.encode("utf-8"))
    for spec in changed:
        click.echo(f"{'would reformat' if check else 'reformatted'} {printable(spec)}", err=check)
    if check and changed:
        raise SystemExit(1)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--target", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="Backend to emit.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True,
              help="File to write: a Python module (torch) or a .onnx model (onnx).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="torch: also WRITE the initial weights here (torch.save). onnx: READ weights from this "
                   "state dict or checkpoint (.pt/.pth/.ckpt, or .npz).")
@click.option("--class-name", default="Net", show_default=True, help="torch: name of the generated class.")
@click.option("--logits", is_flag=True, help="Leave out a final softmax (for training with cross-entropy).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed for initial weights.")
@click.option("--opset", type=click.IntRange(1, 1000), default=None, help="onnx: opset version (default 18; 13..21 supported).")
@click.option("--fp16", is_flag=True, help="onnx: store weights and run in float16.")
@click.option("--static-batch", is_flag=True, help="onnx: fix the batch to 1 instead of a dynamic 'N' axis.")
@click.option("--external-data", is_flag=True, help="onnx: weights in FILE.data (automatic above 2 GB).")
@click.option("--embed-preprocessing", is_flag=True,
              help="onnx, with a cnndsl checkpoint: the model takes uint8 images (N x h x w x c) and prepares them "
                   "itself, as training did.")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@set_option
@_guard
def build(spec, target, output, weights, class_name, logits, seed, opset, fp16, static_batch, external_data,
          embed_preprocessing, input_shape, overrides):
    """Emit SPEC for a backend: a self-contained PyTorch source file, or an ONNX model.

    An ONNX model built from a checkpoint of `cnndsl train` carries its preprocessing and class names in its
    metadata (`cnndsl run MODEL IMAGE...` uses them), and with --embed-preprocessing in its graph too."""
    graph = _load(spec, _input_shape(input_shape), _overrides(overrides))
    if embed_preprocessing and not (target == "onnx" and weights):
        raise click.UsageError("--embed-preprocessing needs --target onnx and --weights (a checkpoint of cnndsl "
                               "train, which records its preprocessing)")
    if target == "onnx":
        from ..backends.to_onnx import DEFAULT_OPSET, attach_preprocessing, save, to_onnx
        from ..train.weights import model_weights, read_state_dict
        plan = None
        if weights and not weights.endswith(".npz"):
            from ..train.predict import plan_of
            from ..train.trainer import check_network, fit_head
            from ..train.weights import load_checkpoint, state_dict_of
            payload = load_checkpoint(weights)
            state = state_dict_of(payload)
            graph = fit_head(graph, state)      # a classifier trained with --classes
            check_network(payload, graph)
            expected = model_weights(graph)
            if set(state) != set(expected) or any(tuple(v.shape) != expected[k] for k, v in state.items()):
                state = read_state_dict(weights, expected=expected)     # names the first weight that differs
            if "preprocessing" in payload:
                plan = plan_of(payload, graph)
        else:
            state = read_state_dict(weights, expected=model_weights(graph)) if weights else None
        if embed_preprocessing and plan is None:
            raise click.UsageError("--embed-preprocessing needs a checkpoint of cnndsl train (it records the "
                                   "preprocessing); these weights carry none")
        model = to_onnx(graph, weights=state, opset=opset or DEFAULT_OPSET, seed=seed, fp16=fp16,
                        dynamic_batch=not static_batch, logits=logits)
        if plan is not None:
            from ..ir.ops import OPS
            tail = OPS[graph.nodes[-1].op].logits_tail
            attach_preprocessing(model, plan, logits=logits or not tail, embed=embed_preprocessing)
        _guard_output(output, lambda: save(model, output, external_data=True if external_data else None))
        source = "given weights" if weights else f"seeded weights (seed {seed})"
        click.echo(f"wrote {printable(output)} (opset {opset or DEFAULT_OPSET}, {len(model.graph.node)} ONNX nodes, {source})",
                   err=True)
        return
    from ..backends.to_torch import check_class_name, generate_source
    try:
        check_class_name(class_name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--class-name") from None
    source = generate_source(graph, class_name=class_name, logits=logits).encode()
    message = f"wrote {printable(output)} (class {class_name}, {len(graph.nodes) - 1} layers)"
    state = None
    if weights:      # everything is made before the first file is written: a failure leaves neither
        import io

        import torch

        from ..backends.to_torch import to_torch
        from ..files import output_target
        _guard_output(weights, lambda: output_target(weights))
        torch.manual_seed(seed)
        model = to_torch(graph, class_name=class_name, logits=logits)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        state = buf.getvalue()
        message += f" and {printable(weights)} ({sum(p.numel() for p in model.parameters()):,} parameters)"
    _write_atomic(output, source)
    if state is not None:
        _write_atomic(weights, state)
    click.echo(message, err=True)


@main.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Input size, where the model leaves it open.")
@_guard
def import_model(model, input_shape):
    """Print the cnndsl spec equivalent to an ONNX MODEL (checked by compiling it back)."""
    from ..backends.from_onnx import import_onnx
    from ..backends.to_spec import write_spec
    click.echo(write_spec(import_onnx(model, _input_shape(input_shape))), nl=False)


def _plain(value):
    """An attribute value as JSON: tuples as lists, numbers, booleans and strings as they are."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: spec, input and output shapes, and every node with its op, inputs, "
                   "attributes, shape, stage, label and source position.")
@set_option
@_guard
def ir(spec, input_shape, overrides, as_json):
    """Print the lowered IR of SPEC, one node per line."""
    graph = _load(spec, _input_shape(input_shape), _overrides(overrides))
    if as_json:
        nodes = []
        for n in graph.nodes:
            node = {"name": n.name, "op": n.op, "inputs": list(n.inputs),
                    "attrs": {k: _plain(v) for k, v in sorted(n.attrs.items())}, "shape": list(n.shape),
                    "stage": n.stage, "label": n.label}
            if n.span is not None:
                node["line"], node["column"] = n.span.line, n.span.column
            nodes.append(node)
        click.echo(json.dumps({"spec": graph.filename, "input_shape": list(graph.input_shape),
                               "output_shape": list(graph.output.shape), "nodes": nodes}))
        return
    click.echo("\n".join(printable(line, 100_000) for line in graph.dump().split("\n")))


from . import run as _run, train as _train  # noqa: E402,F401  (register their commands)
from . import draw as _draw  # noqa: E402,F401  (registers `cnndsl draw`)
from . import instruments as _instruments  # noqa: E402,F401  (registers `cnndsl rf` and `cnndsl diagnose`)
from . import calibrate as _calibrate  # noqa: E402,F401  (registers `cnndsl calibrate`)

if __name__ == "__main__":  # pragma: no cover
    main()
