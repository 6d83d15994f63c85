"""`cnndsl train`, `eval` and `predict`: training runs, their progress and their results."""
from __future__ import annotations

import json
import sys

import click

from ..errors import printable
from .common import FiniteFloat, _guard, _guard_output, _input_shape, _load, _read_text, _write_atomic, main  # noqa: F401


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
