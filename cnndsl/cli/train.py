"""`cnndsl train`, `eval` and `predict`: training runs, their progress and their results."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import printable
from .common import FiniteFloat, _guard, _guard_output, _input_shape, _load, _read_text, _write_atomic, main  # noqa: F401


# train's flags that are settings of the run (TrainConfig fields), by their parameter names
_SETTINGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
             "schedule": "schedule", "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs",
             "label_smoothing": "label_smoothing", "seed": "seed", "device": "device", "amp": "amp",
             "channels_last": "channels_last", "compile_": "compile", "augment": "augment", "classes": "classes",
             "freeze": "freeze", "backbone_lr": "backbone_lr", "init": "init", "init_torchvision": "init_torchvision",
             "limit_train": "limit_train", "limit_test": "limit_test"}


@main.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--data", help="mnist, fashion-mnist, cifar10, digits, a .npz file or an image folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data files are (else $CNNDSL_DATA, Debian's).")
@click.option("--epochs", type=click.IntRange(1, 100000), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1 << 20), default=64, show_default=True)
@click.option("--lr", type=FiniteFloat(1e-12, 1e3), help="Learning rate (default 0.009 for adamw, 0.05 for sgd).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True,
              help="AdamW, or SGD with Nesterov momentum 0.9.")
@click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True)
@click.option("--weight-decay", type=FiniteFloat(0, 10), help="Weight decay (default 0.05 for adamw, 5e-4 for sgd).")
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
@click.option("--limit-test", type=click.IntRange(1), help="Test on only the first N test images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default runs/<spec>-<time>).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True),
              help="Continue the run in this folder with its own settings (SPEC and --data may be left out).")
@click.option("--force", is_flag=True, help="Start over in an --out folder that holds a run: the old run is moved "
              "aside to FOLDER.old-<time>.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="DistributedDataParallel processes on this machine.")
@click.option("--quiet", is_flag=True, help="No progress bars; one JSON summary line at the end.")
@_guard
def train(spec, data, data_dir, epochs, batch_size, lr, optimizer, schedule, weight_decay, warmup_epochs,
          label_smoothing, seed, device, amp, channels_last, compile_, augment, classes, freeze, backbone_lr, init,
          init_torchvision, limit_train, limit_test, out_dir, resume, force, nproc, quiet):
    """Train SPEC on real data, with checkpoints in a run folder (Ctrl-C saves; --resume DIR continues).

    A run folder is a record: run.json holds the spec, every setting, the data's source and fingerprint and the
    environment; metrics.jsonl one line per epoch; last.pt and best.pt the checkpoints; curves and confusion
    pictures. `--resume DIR` alone continues the run with its own settings; of the flags, only --epochs,
    --device, --compile, --channels-last and --data-dir may change on resume.
    """
    import datetime
    import os

    from ..train import data as data_mod
    from ..train.augment import parse_augment
    from ..train.record import holds_run, move_aside, RunLock
    from ..train.trainer import Interrupted, TrainConfig, Trainer, resume_trainer, train_distributed
    ctx = click.get_current_context()
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                   click.core.ParameterSource.ENVIRONMENT)}

    def parsed_augment(text, graph):
        try:
            return parse_augment(text if text is not None else graph.settings.get("augment"))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--augment")
    values = dict(ctx.params, freeze=tuple(f for f in freeze.split(",") if f))
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise click.UsageError("RANK and WORLD_SIZE (set by torchrun) must be whole numbers") from None
    reporter = _TrainProgress(quiet or rank != 0)
    if resume:
        if force:
            raise click.UsageError("--force starts a new run; it cannot go with --resume")
        if nproc > 1:
            raise click.UsageError("--resume with --nproc is not supported; resume with one process")
        if out_dir and os.path.realpath(out_dir) != os.path.realpath(resume):
            raise click.UsageError("--out and --resume name different folders; --resume continues the run in its "
                                   "own folder")
        changes = {_SETTINGS[k]: values[k] for k in given if k in _SETTINGS}
        if "augment" in changes:
            changes["augment"] = parsed_augment(augment, None)
        if "data_dir" in given:
            changes["data_dir"] = os.path.abspath(data_dir)
        graph = _load(spec) if spec else None
        trainer = resume_trainer(resume, changes, progress=reporter, graph=graph, rank=rank, world=world,
                                 data=_data_source(data) if data else None)
    else:
        if not spec or not data:
            raise click.UsageError("give SPEC and --data (or --resume DIR to continue a run)")
        out = Path(out_dir or f"runs/{Path(spec).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        if holds_run(out) and rank == 0:      # refused before any data is loaded; checked again under the lock
            if not force:
                raise click.UsageError(f"{printable(str(out))} already holds a run; continue it with --resume "
                                       f"{printable(str(out))}, start over with --force (moves the old run aside), or "
                                       "use another --out")
            probe = RunLock(out).acquire(write_pid=False)       # not while another process writes it
            try:
                moved = move_aside(out)
            finally:
                probe.release()
            click.echo(f"moved the old run aside to {printable(str(moved))}", err=True)
        graph = _load(spec)
        aug = parsed_augment(augment, graph)
        dataset = data_mod.load(data, data_dir, size=graph.input_shape[1:] if len(graph.input_shape) == 3 else None)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                             weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed, device=device,
                             amp=amp, channels_last=channels_last, compile=compile_, augment=aug, classes=classes,
                             freeze=values["freeze"], backbone_lr=backbone_lr,
                             init=os.path.abspath(init) if init else None,
                             init_torchvision=os.path.abspath(init_torchvision) if init_torchvision else None,
                             label_smoothing=label_smoothing,
                             limit_train=limit_train, limit_test=limit_test)
        source = {"source": _data_source(data), "data_dir": os.path.abspath(data_dir) if data_dir else None}
        if nproc > 1:
            try:
                summary = train_distributed(graph, dataset, config, out, nproc, source=source)
            except Interrupted as e:
                _interrupted(e)
            _finish(summary, True, None)
            return
        if world > 1:     # launched by torchrun: join its process group
            import torch.distributed as dist
            from ..train.trainer import pick_device
            dist.init_process_group("nccl" if pick_device(device).startswith("cuda") else "gloo")
        trainer = Trainer(graph, dataset, config, out, progress=reporter, rank=rank, world=world, source=source)
    try:
        with reporter:
            summary = trainer.run()
    except Interrupted as e:
        if rank != 0:
            sys.exit(130)
        _interrupted(e)
    if rank == 0:
        _finish(summary, quiet, reporter)


def _data_source(data: str) -> str:
    """--data as the run records it: a file or folder that exists as an absolute path, else the name."""
    import os
    names = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
             "mnist": "mnist", "cifar10": "cifar10", "cifar-10": "cifar10", "digits": "digits",
             "sklearn-digits": "digits"}        # as data.load reads them: a name first, then a path
    if data.lower() in names:
        return names[data.lower()]
    return os.path.abspath(data) if os.path.exists(data) else data


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
        kind = event["event"]
        if kind == "warning":           # shown even with --quiet: something the run could not do
            click.echo(f"warning: {printable(str(event.get('message')), 400)}", err=True)
            return
        if self.quiet:
            return
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
        run = Path(summary["run_dir"])
        drawn = [str(run / f) for f in ("curves.png", "confusion.png") if (run / f).exists()]
        if drawn:
            console.print(_plain(f"pictures: {', '.join(drawn)}"))
        console.print(_plain(f"weights: {run / 'best.pt'} (cnndsl predict, eval, build --target onnx --weights); "
                             f"more epochs: cnndsl train --resume {run} --epochs N"))


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
@click.option("--limit-test", type=click.IntRange(1), help="Evaluate only the first N test images.")
@click.option("--confusion", "confusion_out", type=click.Path(dir_okay=False),
              help="Also draw the confusion matrix to this file (.svg or .png).")
@click.option("--json", "as_json", is_flag=True)
@_guard
def eval_cmd(spec, weights, data, data_dir, device, batch_size, top, limit_test, confusion_out, as_json):
    """Accuracy, top-k, confusion matrix and per-class accuracy of SPEC with trained weights.

    Images are prepared as the checkpoint's preprocessing says (the one definition training used); a data set
    whose class names differ from the checkpoint's is evaluated with a warning."""
    from ..train import data as data_mod
    from ..train.augment import Preprocess
    from ..train.data import Split
    from ..train.predict import model_for, plan_of
    from ..train.trainer import evaluate, pick_device
    if confusion_out:
        if not confusion_out.lower().endswith((".svg", ".png")):
            raise click.BadParameter("the confusion picture is an .svg or a .png file", param_hint="--confusion")
        from ..files import output_target
        _guard_output(confusion_out, lambda: output_target(confusion_out))     # before the evaluation, not after
    graph, model, payload = model_for(_load(spec), weights)
    plan = plan_of(payload, graph)
    _warn_unrecorded(payload)
    dataset = data_mod.load(data, data_dir, size=graph.input_shape[1:])
    warnings = []
    if plan.classes and list(plan.classes) != list(dataset.classes):
        differ = next((i for i, (a, b) in enumerate(zip(plan.classes, dataset.classes)) if a != b),
                      min(len(plan.classes), len(dataset.classes)))
        warnings.append(f"the data's class names differ from the checkpoint's (first at class {differ}: "
                        f"{_name_at(dataset.classes, differ)} here, {_name_at(plan.classes, differ)} in training; "
                        f"{len(dataset.classes)} vs {len(plan.classes)} classes): the accuracy compares class "
                        "indices")
    for w in warnings:
        click.echo(f"warning: {printable(w, 400)}", err=True)
    dev = pick_device(device)
    pre = Preprocess.of(plan).to(dev)
    test = dataset.test
    if limit_test:
        test = Split(test.images[:limit_test], test.labels[:limit_test])
    result = evaluate(model.to(dev), test, pre, dev, batch=batch_size, top=top)
    result["classes"] = dataset.classes
    result["warnings"] = warnings
    if confusion_out:
        from ..train.pictures import render_confusion
        fmt = confusion_out.rsplit(".", 1)[1].lower()
        names = [dataset.classes[i] if i < len(dataset.classes) else str(i) for i in range(len(result["confusion"]))]
        picture = render_confusion(result["confusion"], names, fmt,
                                   title=f"{Path(spec).name}: accuracy {result['accuracy']:.4f} on "
                                         f"{result['count']:,} images")
        _write_atomic(confusion_out, picture)
    if as_json:
        click.echo(json.dumps(result))
        return
    _confusion_table(result, dataset.classes, top)
    if confusion_out:
        click.echo(f"wrote {printable(confusion_out)}", err=True)


def _name_at(names, i) -> str:
    return f"'{names[i][:40]}'" if i < len(names) else "none"      # printed through printable once, by the caller


def _warn_unrecorded(payload) -> None:
    """Weights without a preprocessing record (a plain state dict, an older checkpoint) are prepared with the
    spec's size and, unless the checkpoint has norm statistics, no normalisation: say so."""
    if isinstance(payload, dict) and "preprocessing" not in payload:
        norm = "its norm statistics" if "norm_mean" in payload else "no normalisation (pixels in [0, 1])"
        click.echo("warning: the weights carry no preprocessing record (not a checkpoint of cnndsl train): images "
                   f"are fitted to the spec's size with {norm}", err=True)


MAX_MATRIX_CLASSES = 30        # above this, the terminal shows one row per class, not the whole matrix


def _class_table(result: dict, names, console) -> None:
    """One row per class: images, accuracy, and the class it is most often mistaken for."""
    from rich.table import Table
    matrix = result["confusion"]
    table = Table(title=f"per class ({len(matrix)} classes; the whole matrix: --confusion FILE.svg or --json)",
                  title_justify="left")
    for col in ("true class", "images", "accuracy", "most often predicted instead", "times"):
        table.add_column(col, justify="left" if "class" in col or "instead" in col else "right", no_wrap=True)
    for i, row in enumerate(matrix):
        wrong = [(v, j) for j, v in enumerate(row) if j != i and v]
        v, j = max(wrong, key=lambda t: (t[0], -t[1])) if wrong else (0, None)
        table.add_row(_plain(names[i], 60), str(sum(row)), f"{result['per_class_accuracy'][i]:.3f}",
                      _plain(names[j], 60) if j is not None else "", str(v) if v else "")
    console.print(table)


def _confusion_table(result: dict, classes, top: int) -> None:
    """The confusion matrix as a table that fits the terminal: all columns when they fit, else the predicted
    classes as numbered columns in as many bands of rows as it takes, never wrapped cells."""
    from rich.console import Console
    from rich.table import Table
    console = Console()
    console.print(_plain(f"{result['count']:,} test images: accuracy {result['accuracy']:.4f}, "
                         f"top-{top} {result[f'top{top}_accuracy']:.4f}, loss {result['loss']:.4f}"))
    matrix = result["confusion"]
    n = len(matrix)
    names = [printable(f"{i} {classes[i] if i < len(classes) else i}", 28) for i in range(n)]
    if n > MAX_MATRIX_CLASSES:          # a matrix this wide is read as a picture (--confusion) or as JSON
        _class_table(result, names, console)
        return
    label_w = max(len("true \\ predicted"), *(len(x) for x in names))
    cell_w = max(len(str(n - 1)), *(len(str(v)) for row in matrix for v in row))
    # each rich column takes its width + 3 (padding and a border); one more border closes the row
    per_band = max(1, (console.width - (label_w + 3) - (len("class acc") + 3) - 1) // (cell_w + 3))
    for first in range(0, n, per_band):
        cols = range(first, min(n, first + per_band))
        last = cols[-1] == n - 1
        title = "confusion matrix" + (f" (predicted {cols[0]}..{cols[-1]})" if per_band < n else "")
        table = Table(title=title, title_justify="left")
        table.add_column("true \\ predicted", no_wrap=True, min_width=label_w)
        for j in cols:
            table.add_column(str(j), justify="right", no_wrap=True, min_width=cell_w)
        if last:
            table.add_column("class acc", justify="right", no_wrap=True)
        for i, row in enumerate(matrix):
            cells = [str(row[j]) for j in cols]
            if last:
                cells.append(f"{result['per_class_accuracy'][i]:.3f}")
            table.add_row(_plain(names[i], 60), *cells)
        console.print(table)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Checkpoint or state dict.")
@click.option("--top-k", "--top", "top", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Classes to print per image.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image: path and [class, probability].")
@_guard
def predict(spec, images, weights, top, device, as_json):
    """Classify IMAGE files with SPEC and trained weights: `IMAGE: class probability, ...` per image.

    Each image is read at its own size and prepared as the checkpoint's training prepared its images."""
    from ..train.predict import model_for, predict as classify
    graph, model, payload = model_for(_load(spec), weights)
    _warn_unrecorded(payload)
    print_predictions([(r.path, r.top) for r in classify(graph, model, payload, images, top=top, device=device)],
                      as_json)


def print_predictions(results, as_json: bool) -> None:
    """`IMAGE: class probability, ...` lines (names made terminal-safe), or JSON lines with full precision."""
    for path, top in results:
        if as_json:
            click.echo(json.dumps({"image": path, "top": [[name, p] for name, p in top]}))
        else:
            shown = ", ".join(f"{printable(name, 80)} {p:.4f}" for name, p in top)
            click.echo(f"{printable(path)}: {shown}")
