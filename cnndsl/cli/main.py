"""The command line (click + rich): the only place that prints."""
from __future__ import annotations

import json
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
    return tuple(int(p) for p in parts)


def _load(path: str, input_shape=None):
    """Compile a spec file (or '-' for standard input); errors propagate as CnnDslError."""
    from ..api import compile_text
    if path.lower().endswith(".onnx"):   # analyze a model cnndsl did not write
        from ..backends.from_onnx import import_onnx
        return import_onnx(path, input_shape)
    text, filename = _read_text(path)
    return compile_text(text, input_shape=input_shape, filename=filename)


def _read_text(path: str) -> tuple[str, str]:
    """A spec's text and the name diagnostics use; '-' is standard input. Size-checked before reading."""
    from ..frontend.source import decode_spec, read_bounded, read_spec
    if path == "-":
        return decode_spec(read_bounded(sys.stdin.buffer, "<stdin>"), "<stdin>"), "<stdin>"
    try:
        return read_spec(path), path
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
    """Per-layer shapes, parameters, MACs, memory and receptive fields of SPEC ('-' reads stdin, a .onnx
    file is imported)."""
    from ..analysis.report import Report
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
    click.echo(f"{printable(graph.filename)}: ok ({len(graph.nodes) - 1} layers, output {shape})")


@main.command("fmt")
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@_guard
def fmt(spec):
    """Print SPEC in canonical form (comments are dropped)."""
    from ..api import format_spec
    text, name = _read_text(spec)
    click.echo(format_spec(text, name), nl=False)


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
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def build(spec, target, output, weights, class_name, logits, seed, opset, fp16, static_batch, external_data,
          input_shape):
    """Emit SPEC for a backend: a self-contained PyTorch source file, or an ONNX model."""
    graph = _load(spec, _input_shape(input_shape))
    if target == "onnx":
        from ..backends.to_onnx import DEFAULT_OPSET, save, to_onnx
        from ..train.weights import read_state_dict
        state = read_state_dict(weights) if weights else None
        model = to_onnx(graph, weights=state, opset=opset or DEFAULT_OPSET, seed=seed, fp16=fp16,
                        dynamic_batch=not static_batch, logits=logits)
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
    _write_atomic(output, generate_source(graph, class_name=class_name, logits=logits).encode())
    message = f"wrote {printable(output)} (class {class_name}, {len(graph.nodes) - 1} layers)"
    if weights:
        import io

        import torch

        from ..backends.to_torch import to_torch
        torch.manual_seed(seed)
        model = to_torch(graph, class_name=class_name, logits=logits)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        _write_atomic(weights, buf.getvalue())
        message += f" and {printable(weights)} ({sum(p.numel() for p in model.parameters()):,} parameters)"
    click.echo(message, err=True)


@main.command("run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--input-file", type=click.Path(exists=True, dir_okay=False), help="Input array (.npy); random if absent.")
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
              help="Batch size of a random input.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the output array here (.npy).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=5, show_default=True, help="Classes to print.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--bench", is_flag=True, help="Report latency and throughput.")
@click.option("--seconds", type=FiniteFloat(0.01, 3600), default=2.0, show_default=True, help="How long --bench runs.")
@_guard
def run_model(model, input_file, batch, output, top_k, provider, bench, seconds):
    """Run an ONNX MODEL with ONNX Runtime (CUDA when available, else CPU)."""
    import numpy as np

    from ..backends import onnx_run
    try:
        from ..backends.from_onnx import check_external_data
    except ModuleNotFoundError:      # no onnx package: ONNX Runtime's own check of external data paths stands
        pass
    else:
        check_external_data(model)
    session, used, why = onnx_run.load_session(model, provider)
    click.echo(f"provider: {used} ({why})", err=True)
    data = None
    if input_file:
        import os
        if os.path.getsize(input_file) > onnx_run.MAX_INPUT_BYTES + 4096:
            raise onnx_run.RunError(f"{printable(input_file)} is larger than the input limit of "
                                    f"{onnx_run.MAX_INPUT_BYTES:,} bytes")
        try:
            data = np.load(input_file, allow_pickle=False)
        except Exception as e:
            raise onnx_run.RunError(f"cannot read {printable(input_file)}: {printable(str(e), 200)}",
                                    hint="give a .npy array") from None
        if not isinstance(data, np.ndarray):
            data.close()
            raise onnx_run.RunError(f"{printable(input_file)} is not a .npy array", hint="save it with numpy.save")
    name, data = onnx_run.make_input(session, data, batch)
    result = onnx_run.run(session, name, data)
    if output:
        import io
        buf = io.BytesIO()
        np.save(buf, result)
        _write_atomic(output, buf.getvalue())
        click.echo(f"wrote {printable(output)} ({'x'.join(map(str, result.shape))})", err=True)
    else:
        for i, row in enumerate(onnx_run.top_k(result, top_k)):
            click.echo(f"[{i}] " + "  ".join(f"{cls}:{score:.4f}" for cls, score in row))
    if bench:
        b = onnx_run.benchmark(session, name, data, seconds)
        click.echo(f"{b['runs']} runs at batch {b['batch']}: mean {b['mean_ms']:.2f} ms, p50 {b['p50_ms']:.2f} ms, "
                   f"p90 {b['p90_ms']:.2f} ms, {b['images_per_s']:.1f} images/s ({used})")


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


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="mnist, fashion-mnist, cifar10, digits, a .npz file or an image folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data files are (else $CNNDSL_DATA, Debian's).")
@click.option("--epochs", type=click.IntRange(1, 100000), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1 << 20), default=128, show_default=True)
@click.option("--lr", type=FiniteFloat(1e-12, 1e3), help="Learning rate (default 0.05 for sgd, 0.001 for adamw).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True)
@click.option("--weight-decay", type=FiniteFloat(0, 10), default=5e-4, show_default=True)
@click.option("--warmup", "warmup_epochs", type=FiniteFloat(0, 1e5), default=0.0, show_default=True, help="Warm-up epochs.")
@click.option("--label-smoothing", type=FiniteFloat(0, 0.99), default=0.0, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]), default="off", show_default=True)
@click.option("--channels-last", is_flag=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--augment", default=None, help="none, standard, all, or e.g. flip,crop=4,scale=0.1,exposure=0.2,"
              "saturation=0.2 (default: the spec's `augment` line, else none).")
@click.option("--classes", type=click.IntRange(1, 1 << 20), help="Replace the classifier with this many outputs.")
@click.option("--freeze", default="", help="Labels or stages to hold constant, comma-separated; 'backbone' = all "
              "but the classifier.")
@click.option("--backbone-lr", type=FiniteFloat(0, 1e3), default=1.0, show_default=True,
              help="Learning-rate factor for all but the classifier (fine-tuning: e.g. 0.1).")
@click.option("--init", type=click.Path(dir_okay=False), help="Start from this checkpoint or state dict.")
@click.option("--init-torchvision", type=click.Path(dir_okay=False),
              help="Start from a torchvision state dict file (matched by structure).")
@click.option("--limit-train", type=click.IntRange(1), help="Use only the first N training images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default runs/<spec>-<time>).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True), help="Continue the run in this folder.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="DistributedDataParallel processes on this machine.")
@click.option("--quiet", is_flag=True, help="No progress bars; one JSON summary line at the end.")
@_guard
def train(spec, data, data_dir, epochs, batch_size, lr, optimizer, schedule, weight_decay, warmup_epochs,
          label_smoothing, seed, device, amp, channels_last, compile_, augment, classes, freeze, backbone_lr, init,
          init_torchvision, limit_train, out_dir, resume, nproc, quiet):
    """Train SPEC on real data, with checkpoints in a run folder (Ctrl-C saves; --resume continues)."""
    import datetime
    import os
    from pathlib import Path

    from ..train import data as data_mod
    from ..train.augment import parse_augment
    from ..train.trainer import TrainConfig, Trainer, train_distributed
    from ..train.weights import load_checkpoint
    graph = _load(spec)
    try:
        aug = parse_augment(augment if augment is not None else graph.settings.get("augment"))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--augment")
    dataset = data_mod.load(data, data_dir, size=graph.input_shape[1:] if len(graph.input_shape) == 3 else None)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed, device=device, amp=amp,
                         channels_last=channels_last, compile=compile_, augment=aug, classes=classes,
                         freeze=tuple(f for f in freeze.split(",") if f), backbone_lr=backbone_lr, init=init,
                         init_torchvision=init_torchvision, label_smoothing=label_smoothing, limit_train=limit_train)
    stem = Path(spec).stem
    out = Path(resume or out_dir or f"runs/{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if nproc > 1:
        if resume:
            raise click.UsageError("--resume with --nproc is not supported; resume with one process")
        summary = train_distributed(graph, dataset, config, out, nproc)
        click.echo(json.dumps(summary))
        return
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:     # launched by torchrun: join its process group
        import torch.distributed as dist
        from ..train.trainer import pick_device
        dist.init_process_group("nccl" if pick_device(device).startswith("cuda") else "gloo")
    reporter = _TrainProgress(quiet or rank != 0)
    trainer = Trainer(graph, dataset, config, out, progress=reporter, rank=rank, world=world)
    if resume:
        trainer.restore(load_checkpoint(str(out / "last.pt")))
    from ..train.trainer import Interrupted
    try:
        with reporter:
            summary = trainer.run()
    except Interrupted:
        click.echo(f"interrupted: saved {out / 'last.pt'} (epoch {trainer.epoch + 1}, step {trainer.step}); "
                   f"continue with --resume {out}", err=True)
        sys.exit(130)
    if rank == 0:
        if quiet:
            click.echo(json.dumps(summary))
        else:
            reporter.summary(summary)


class _TrainProgress:
    """Rich progress bars for training events (epoch, step, loss, accuracy, images/s, ETA)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.rows = []

    def __enter__(self):
        if not self.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} "
                                                "{task.fields[ips]:.0f} img/s"), TimeRemainingColumn())
            self.progress.__enter__()
            self.task = None
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        kind = event["event"]
        if kind == "start":
            self.steps = event["steps_per_epoch"]
            self.progress.console.print(f"training on {event['device']}: {event['params']:,} parameters, "
                                        f"{event['epochs']} epochs x {self.steps} steps")
        elif kind in ("init", "freeze"):
            self.progress.console.print(", ".join(f"{k} {v if not isinstance(v, list) else len(v)}"
                                                  for k, v in event.items()))
        elif kind == "step":
            if self.task is None or event["epoch"] != self.current:
                self.current = event["epoch"]
                self.task = self.progress.add_task("", total=self.steps, epoch=event["epoch"] + 1, loss=0, acc=0,
                                                   ips=0)
            self.progress.update(self.task, completed=event["step"], loss=event["loss"], acc=event["accuracy"],
                                 ips=event["images_per_s"])
        elif kind == "epoch":
            self.rows.append(event)
            self.progress.console.print(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, "
                                        f"train acc {event['train_accuracy']:.4f}, test acc "
                                        f"{event['test_accuracy']:.4f} ({event['seconds']:.1f} s)")

    def summary(self, summary: dict) -> None:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=f"run {summary['run_dir']}", title_justify="left")
        for col in ("epoch", "train loss", "train acc", "test acc", "img/s"):
            table.add_column(col, justify="right")
        for r in self.rows:
            table.add_row(str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['train_accuracy']:.4f}",
                          f"{r['test_accuracy']:.4f}", f"{r['images_per_s']:.0f}")
        console = Console()
        console.print(table)
        console.print(f"best test accuracy {summary['best_test_accuracy']:.4f}; {summary['seconds']:.1f} s on "
                      f"{summary['device']}")


def _model_for(spec: str, weights: str):
    """The spec's model with a checkpoint's weights; the classifier width follows the checkpoint."""
    from ..train.trainer import build_model, fit_head
    from ..train.weights import load_checkpoint, state_dict_of
    graph = _load(spec)
    payload = load_checkpoint(weights)
    state = state_dict_of(payload)
    graph = fit_head(graph, state)
    return graph, build_model(graph, state), payload


@main.command("eval")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Checkpoint or state dict.")
@click.option("--data", required=True, help="As for train.")
@click.option("--data-dir", type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=512, show_default=True)
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="k of top-k accuracy.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def eval_cmd(spec, weights, data, data_dir, device, batch_size, top, as_json):
    """Accuracy, top-k, confusion matrix and per-class accuracy of SPEC with trained weights."""
    from ..train import data as data_mod
    from ..train.augment import Preprocess
    from ..train.trainer import checkpoint_norm, evaluate, pick_device
    graph, model, payload = _model_for(spec, weights)
    dataset = data_mod.load(data, data_dir, size=graph.input_shape[1:])
    dev = pick_device(device)
    pre = Preprocess(dataset.train.images.shape[1:], graph.input_shape, dataset.train.images).to(dev)
    norm = checkpoint_norm(payload, graph.input_shape[0])
    if norm is not None:   # the statistics the network was trained with
        pre.mean, pre.std = norm[0].to(dev), norm[1].to(dev)
    result = evaluate(model.to(dev), dataset.test, pre, dev, batch=batch_size, top=top)
    result["classes"] = dataset.classes
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    console.print(f"{result['count']:,} test images: accuracy {result['accuracy']:.4f}, "
                  f"top-{top} {result[f'top{top}_accuracy']:.4f}, loss {result['loss']:.4f}")
    table = Table("true \\ predicted", *[str(i) for i in range(len(result["confusion"]))], "class acc",
                  title="confusion matrix", title_justify="left")
    for i, row in enumerate(result["confusion"]):
        name = dataset.classes[i] if i < len(dataset.classes) else str(i)
        table.add_row(f"{i} {name}", *[str(v) for v in row], f"{result['per_class_accuracy'][i]:.3f}")
    console.print(table)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Checkpoint or state dict.")
@click.option("--top", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--device", default="auto", show_default=True)
@_guard
def predict(spec, images, weights, top, device):
    """Classify IMAGE files with SPEC and trained weights."""
    import numpy as np
    import torch

    from ..train.augment import Preprocess
    from ..train.trainer import checkpoint_norm, pick_device
    from PIL import Image
    graph, model, payload = _model_for(spec, weights)
    classes = payload.get("classes") or []
    c, h, w = graph.input_shape
    arrays = []
    for path in images:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                a = np.asarray(im)
        except Exception as e:
            raise click.FileError(path, hint=f"not an image: {str(e)[:100]}") from None
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    batch = np.stack(arrays)
    dev = pick_device(device)
    pre = Preprocess(batch.shape[1:], graph.input_shape, batch).to(dev)
    norm = checkpoint_norm(payload, graph.input_shape[0])
    if norm is not None:
        pre.mean, pre.std = norm[0].to(dev), norm[1].to(dev)
    model = model.to(dev).eval()
    with torch.no_grad():
        probs = torch.softmax(model(pre(torch.as_tensor(batch).to(dev))).float(), 1)
    for path, row in zip(images, probs):
        values, idx = row.topk(min(top, row.numel()))
        shown = ", ".join(f"{classes[i] if i < len(classes) else i} {v:.3f}" for v, i in zip(values.tolist(), idx.tolist()))
        click.echo(f"{path}: {shown}")


@main.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Input size, where the model leaves it open.")
@_guard
def import_model(model, input_shape):
    """Print the cnndsl spec equivalent to an ONNX MODEL (checked by compiling it back)."""
    from ..backends.from_onnx import import_onnx
    from ..backends.to_spec import write_spec
    click.echo(write_spec(import_onnx(model, _input_shape(input_shape))), nl=False)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def ir(spec, input_shape):
    """Print the lowered IR of SPEC, one node per line."""
    click.echo(_load(spec, _input_shape(input_shape)).dump())


if __name__ == "__main__":  # pragma: no cover
    main()
