"""`cnndsl train`, `eval` and `predict`: training runs, their progress and their results."""
from __future__ import annotations

import json
import sys
from pathlib import Path

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
    from ..train.trainer import Interrupted
    if nproc > 1:
        if resume:
            raise click.UsageError("--resume with --nproc is not supported; resume with one process")
        try:
            summary = train_distributed(graph, dataset, config, out, nproc)
        except Interrupted as e:
            _interrupted(e)
        _finish(summary, True, None)
        return
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise click.UsageError("RANK and WORLD_SIZE (set by torchrun) must be whole numbers") from None
    if world > 1:     # launched by torchrun: join its process group
        import torch.distributed as dist
        from ..train.trainer import pick_device
        dist.init_process_group("nccl" if pick_device(device).startswith("cuda") else "gloo")
    reporter = _TrainProgress(quiet or rank != 0)
    trainer = Trainer(graph, dataset, config, out, progress=reporter, rank=rank, world=world)
    if resume:
        trainer.restore(load_checkpoint(str(out / "last.pt")))
    try:
        with reporter:
            summary = trainer.run()
    except Interrupted as e:
        if rank != 0:
            sys.exit(130)
        _interrupted(e)
    if rank == 0:
        _finish(summary, quiet, reporter)


def _interrupted(e) -> None:
    click.echo(f"interrupted: saved {printable(e.saved)} (epoch {e.epoch + 1}, step {e.step}); continue with "
               f"--resume {printable(str(Path(e.saved).parent))}", err=True)
    sys.exit(130)


def _finish(summary: dict, quiet: bool, reporter) -> None:
    """The summary (JSON with --quiet or --nproc, else a table); a diverged run then fails with a TrainError."""
    from pathlib import Path

    from ..train.trainer import TrainError
    if quiet or reporter is None:
        click.echo(json.dumps(summary))
    else:
        reporter.summary(summary)
    at = summary.get("diverged_at")
    if summary.get("diverged") and at:
        last = Path(summary["run_dir"]) / "last.pt"
        saved = (f"saved {last}" if at.get("saved") else
                 f"the weights are no longer finite, so {last} (if any) is from the last finished epoch")
        loss = f"{at['loss']:.3g}" if isinstance(at["loss"], (int, float)) else at["loss"]
        raise TrainError(f"training diverged at epoch {at['epoch']}, step {at['step']} (loss {loss}, above "
                         f"{at['limit']:.3g}); {saved}",
                         hint="lower --lr (or raise --warmup); a loss this large means the weights blew up")


class _TrainProgress:
    """Rich progress bars for training events (epoch, step, loss, accuracy, images/s, ETA). Text from outside
    (paths, names) goes through printable and rich's markup escape: '[' in a folder name is not markup."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.rows = []

    def __enter__(self):
        if not self.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("loss {task.fields[loss]:.4g} acc {task.fields[acc]:.3f} "
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
        say = self.progress.console.print
        if kind == "start":
            self.steps = event["steps_per_epoch"]
            say(_plain(f"training on {event['device']}: {event['params']:,} parameters, {event['epochs']} epochs x "
                       f"{self.steps} steps"))
        elif kind in ("init", "freeze"):
            say(_plain(", ".join(f"{k} {v if not isinstance(v, list) else len(v)}" for k, v in event.items())))
        elif kind == "step":
            if self.task is None or event["epoch"] != self.current:
                self.current = event["epoch"]
                self.task = self.progress.add_task("", total=self.steps, epoch=event["epoch"] + 1, loss=0, acc=0,
                                                   ips=0)
            self.progress.update(self.task, completed=event["step"], loss=event["loss"], acc=event["accuracy"],
                                 ips=event["images_per_s"])
        elif kind == "epoch":
            self.rows.append(event)
            say(_plain(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, train acc "
                       f"{event['train_accuracy']:.4f}, test acc {event['test_accuracy']:.4f} "
                       f"({event['seconds']:.1f} s)"))
        elif kind == "diverged":
            loss = event["loss"]
            say(_plain(f"diverged at epoch {event['epoch']}, step {event['step']}: loss "
                       f"{loss if isinstance(loss, str) else format(loss, '.3g')}"))

    def summary(self, summary: dict) -> None:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=_plain(f"run {summary['run_dir']}"), title_justify="left")
        for col in ("epoch", "train loss", "train acc", "test acc", "img/s"):
            table.add_column(col, justify="right")
        for r in self.rows:
            table.add_row(str(r["epoch"]), f"{r['train_loss']:.4g}", f"{r['train_accuracy']:.4f}",
                          f"{r['test_accuracy']:.4f}", f"{r['images_per_s']:.0f}")
        console = Console()
        console.print(table)
        console.print(_plain(f"best test accuracy {summary['best_test_accuracy']:.4f}; {summary['seconds']:.1f} s on "
                             f"{summary['device']}"))


def _plain(text: str, limit: int = 2000):
    """Text for rich shown as it is: terminal-safe (printable) and never read as markup."""
    from rich.text import Text
    return Text(printable(text, limit))


@main.command("eval")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Checkpoint or state dict.")
@click.option("--data", required=True, help="As for train.")
@click.option("--data-dir", type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1 << 20), default=512, show_default=True)
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="k of top-k accuracy.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def eval_cmd(spec, weights, data, data_dir, device, batch_size, top, as_json):
    """Accuracy, top-k, confusion matrix and per-class accuracy of SPEC with trained weights."""
    from ..train import data as data_mod
    from ..train.augment import Preprocess
    from ..train.predict import model_for
    from ..train.trainer import checkpoint_norm, evaluate, pick_device
    graph, model, payload = model_for(_load(spec), weights)
    norm = checkpoint_norm(payload, graph.input_shape[0])
    dataset = data_mod.load(data, data_dir, size=graph.input_shape[1:])
    dev = pick_device(device)
    pre = Preprocess(dataset.train.images.shape[1:], graph.input_shape, dataset.train.images).to(dev)
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
    console.print(_plain(f"{result['count']:,} test images: accuracy {result['accuracy']:.4f}, "
                         f"top-{top} {result[f'top{top}_accuracy']:.4f}, loss {result['loss']:.4f}"))
    table = Table("true \\ predicted", *[str(i) for i in range(len(result["confusion"]))], "class acc",
                  title="confusion matrix", title_justify="left")
    for i, row in enumerate(result["confusion"]):
        name = dataset.classes[i] if i < len(dataset.classes) else str(i)
        table.add_row(_plain(f"{i} {name}", 60), *[str(v) for v in row], f"{result['per_class_accuracy'][i]:.3f}")
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
    from ..train.predict import model_for, predict as classify
    graph, model, payload = model_for(_load(spec), weights)
    for result in classify(graph, model, payload, images, top=top, device=device):
        shown = ", ".join(f"{printable(name, 80)} {p:.3f}" for name, p in result.top)
        click.echo(f"{printable(result.path)}: {shown}")
