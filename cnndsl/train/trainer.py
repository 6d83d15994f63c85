"""Training, evaluation and prediction for any spec: device-side data, checkpoints, resume, transfer, DDP.

The library reports progress through a callback and never prints; `cnndsl train` renders it with rich.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Optional

from .data import MAX_CLASSES, DataError, Dataset, Split, check_dataset
from ..errors import CnnDslError
from ..ir import Graph, Node, verify
from ..ir.names import module_paths
from ..ir.ops import OPS
from .record import (RUN_FILE, RunFolderError, RunLock, data_fingerprint, graph_fingerprint, graph_layers,
                     holds_run, layer_mismatch, make_record, read_metrics, rewrite_metrics, write_json_atomic)
from .weights import (WeightsError, _all_finite, check_norm, check_tensor, load_checkpoint,  # noqa: F401
                      state_dict_of)

MAX_LR = 1e3                # the largest learning rate (the CLI's --lr); times --backbone-lr for the backbone
PICTURE_EVERY = 30.0        # seconds between redrawing the run's pictures during a run (always at its end)
DIVERGED_FACTOR = 1e3       # a training loss this many times its reference (see Trainer.reference_loss) diverged


class TrainError(CnnDslError):
    """A training run cannot start or continue as asked."""

    kind = "train error"


class DeviceError(TrainError):
    """The device asked for does not exist or cannot be used."""

    kind = "device error"


class EvalError(TrainError):
    """A split cannot be evaluated with this network (its labels do not fit the network's outputs)."""

    kind = "eval error"


class WeightsFitError(WeightsError, TrainError):
    """Weights (or a checkpoint's statistics) that do not fit the spec: a weights error to the user, and a
    TrainError to callers of the trainer."""


# Defaults chosen by measurement (bench/train_defaults.py, bench/RESULTS.md): AdamW at 9e-3 with batch 64 learns
# on small data sets where SGD at its usual settings stays at chance for epochs (scikit-learn's digits: 82.9% after
# one epoch, 98.6% after ten, against 8.2% and 37.1% for SGD 0.05 at batch 128).
DEFAULT_LR = {"sgd": 0.05, "adamw": 9e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: Optional[float] = None              # default: DEFAULT_LR of the optimizer
    optimizer: str = "adamw"
    schedule: str = "cosine"                # cosine | step | constant
    weight_decay: Optional[float] = None    # default: DEFAULT_WEIGHT_DECAY of the optimizer
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "off"                        # bf16 | fp16 | off
    channels_last: bool = False
    compile: bool = False
    augment: dict = field(default_factory=dict)
    classes: Optional[int] = None           # replace the classifier with this many outputs
    freeze: tuple = ()                      # labels/stages to hold constant; "backbone" = all but the head
    backbone_lr: float = 1.0                # learning-rate factor for everything but the head (fine-tuning)
    init: Optional[str] = None              # start from this checkpoint / state dict
    init_torchvision: Optional[str] = None  # start from a torchvision state dict file (matched by structure)
    label_smoothing: float = 0.0
    limit_train: Optional[int] = None       # use only the first N training images (quick experiments)
    limit_test: Optional[int] = None        # test on only the first N test images


def _finite(value) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolved(c: TrainConfig) -> TrainConfig:
    """`c` with the optimizer's default learning rate and weight decay filled in: what a run records."""
    import dataclasses
    return dataclasses.replace(c, lr=c.lr if c.lr is not None else DEFAULT_LR.get(c.optimizer),
                               weight_decay=c.weight_decay if c.weight_decay is not None
                               else DEFAULT_WEIGHT_DECAY.get(c.optimizer))


def check_config(c: TrainConfig) -> TrainConfig:
    """`c` if every value is of the right kind and in range, else a TrainError naming the first that is not.
    The CLI checks its flags too; this guards callers of the library (and the numbers a checkpoint carries)."""
    from .augment import check_augment

    def whole(name, value, low, high=None, optional=False):
        if optional and value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            bound = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
            raise TrainError(f"{name} must be a whole number {bound}, got {value!r}")

    def number(name, value, low, high, low_open=False, high_open=False):
        if not (_finite(value) and (low < value if low_open else low <= value)
                and (value < high if high_open else value <= high)):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise TrainError(f"{name} must be a finite number in {span}, got {value!r}")
    whole("epochs", c.epochs, 1, 10 ** 6)
    whole("batch_size", c.batch_size, 1, 1 << 20)
    whole("seed", c.seed, -(1 << 63), (1 << 63) - 1)
    whole("classes", c.classes, 1, MAX_CLASSES, optional=True)
    whole("limit_train", c.limit_train, 1, optional=True)
    whole("limit_test", c.limit_test, 1, optional=True)
    if c.lr is not None:
        number("lr", c.lr, 0, 1000, low_open=True)
    if c.weight_decay is not None:
        number("weight_decay", c.weight_decay, 0, 10)
    if c.optimizer == "sgd":
        number("momentum", c.momentum, 0, 1, low_open=True, high_open=True)   # SGD here is Nesterov's
    else:
        number("momentum", c.momentum, 0, 1, high_open=True)
    number("warmup_epochs", c.warmup_epochs, 0, 10 ** 6)
    number("backbone_lr", c.backbone_lr, 0, 1000)
    number("label_smoothing", c.label_smoothing, 0, 1)
    for name, value, choices in (("optimizer", c.optimizer, ("sgd", "adamw")),
                                 ("schedule", c.schedule, ("cosine", "step", "constant")),
                                 ("amp", c.amp, ("bf16", "fp16", "off"))):
        if value not in choices:
            raise TrainError(f"unknown {name} {value!r}", hint=f"choose {', '.join(choices)}")
    for name in ("channels_last", "compile"):
        if not isinstance(getattr(c, name), bool):
            raise TrainError(f"{name} must be true or false, got {getattr(c, name)!r}")
    for name in ("device",):
        if not isinstance(getattr(c, name), str):
            raise TrainError(f"{name} must be a string such as cpu or cuda, got {getattr(c, name)!r}")
    for name in ("init", "init_torchvision"):
        if getattr(c, name) is not None and not isinstance(getattr(c, name), str):
            raise TrainError(f"{name} must be a file name, got {getattr(c, name)!r}")
    if not isinstance(c.freeze, (tuple, list)) or not all(isinstance(f, str) for f in c.freeze):
        raise TrainError(f"freeze must be a tuple of labels or stages, got {c.freeze!r}")
    try:
        check_augment(c.augment)
    except ValueError as e:
        raise TrainError(str(e)) from None
    return c


# ---------------------------------------------------------------- graph --

def classifier(graph: Graph) -> Node:
    fcs = [n for n in graph.nodes if OPS[n.op].weight and len(n.shape) == 1]     # fully connected
    if not fcs:
        raise TrainError("the spec has no fc layer to act as the classifier")
    return fcs[-1]


def replace_head(graph: Graph, classes: int) -> Graph:
    """The same graph with the classifier (last fc) giving `classes` outputs; later shapes follow."""
    head = classifier(graph)
    nodes, shapes, after = [], {}, False
    for n in graph.nodes:
        if n.name == head.name:
            attrs = dict(n.attrs, out=classes)
            n = n._replace(attrs=MappingProxyType(attrs), shape=(classes,))
            after = True
        elif after and n.inputs:
            n = n._replace(shape=tuple(OPS[n.op].shape(n.attrs, [shapes[i] for i in n.inputs])))
        shapes[n.name] = n.shape
        nodes.append(n)
    return verify(Graph(tuple(nodes), graph.source, graph.filename, graph.settings))


def prepare_graph(graph: Graph, classes: Optional[int], num_classes: int) -> Graph:
    if classes is not None:
        graph = replace_head(graph, classes)
    width = graph.output.shape[0] if len(graph.output.shape) == 1 else None
    if width != num_classes:
        raise TrainError(f"the network outputs {graph.output.shape} but the data has {num_classes} classes",
                         hint=f"pass --classes {num_classes} to give the classifier {num_classes} outputs")
    return graph


# --------------------------------------------------------------- device --

def pick_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {str(name)[:40]!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but torch sees no GPU", hint="use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"there is no {name}: torch sees {torch.cuda.device_count()} GPU(s)",
                             hint="use cuda:0 .. cuda:N-1, or cuda")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("MPS was asked for but torch cannot use it", hint="use --device cpu or auto")
    elif device.type != "cpu":
        raise DeviceError(f"device {str(name)[:40]!r} is not supported", hint="use auto, cpu, cuda or cuda:N")
    return name


def _autocast(device: str, amp: str):
    import contextlib

    import torch
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def _generator(device: str, *seed_parts: int):
    import torch
    g = torch.Generator(device=device)
    seed = 0
    for part in seed_parts:
        seed = (seed * 1_000_003 + int(part)) % (2 ** 62)
    g.manual_seed(seed)
    return g


# ----------------------------------------------------------- checkpoint --

class _SigintDeferred:
    """Hold SIGINT while the block runs (main thread only), then hand it to the handler that was in place: a
    Ctrl-C during a checkpoint save lands after the file is complete."""

    def __enter__(self):
        self.caught, self.previous = [], None
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if current is not None:     # None: a handler not set from Python, which could not be put back
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(signal.SIGINT, lambda signum, frame: self.caught.append(signum))
                    self.previous = current
        return self

    def __exit__(self, *exc):
        if self.previous is None:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.caught:
            if callable(self.previous):
                self.previous(signal.SIGINT, None)
            elif self.previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return f"{type(e).__name__}: {str(e).strip()[:160]}"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomically: write a temporary file beside the target, then rename it over the target. SIGINT waits until
    the file is complete; on any failure the temporary file is removed and the target is left as it was, and a
    failure to write (a full disk, a read-only folder) is a TrainError."""
    import torch
    with _SigintDeferred():
        for _ in range(100):    # a fresh name, created exclusively: never through a link someone placed there
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise TrainError(f"cannot write {path}: {_why(e)}") from None
        else:
            raise TrainError(f"cannot write {path}: no free temporary name beside it")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, (OSError, RuntimeError)):
                full = isinstance(e, OSError) and e.errno == errno.ENOSPC or "write failed" in str(e)
                raise TrainError(f"cannot write {path}: {_why(e)}",
                                 hint="the disk is full" if full else "is the folder writable?") from None
            raise


def check_fits(model, state, what: str = "the weights", strict: bool = True) -> None:
    """A TrainError unless `state` (name -> tensor) fits `model`: the first key whose shape differs is named
    with both shapes; with `strict`, no key may be missing or unexpected."""
    if not isinstance(state, dict):
        raise WeightsFitError(f"{what} are a {type(state).__name__}, not a state dict")
    try:
        for k, v in state.items():
            check_tensor(k, v)
    except WeightsError as e:
        raise WeightsFitError(f"{what}: {e.message}", hint=e.hint) from None
    own = model.state_dict()
    for k, v in own.items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            raise WeightsFitError(f"{what} do not fit the spec: '{k}' is {tuple(state[k].shape)} there but "
                             f"{tuple(v.shape)} in the spec's model",
                             hint="were they trained from another spec, or with another --classes?")
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise WeightsFitError(f"{what} do not fit the spec: {len(missing)} missing (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {[k[:80] for k in unexpected[:2]]})")


def build_model(graph: Graph, weights: Optional[dict] = None):
    from ..backends.to_torch import to_torch
    model = to_torch(graph, logits=True)
    if weights is not None:
        check_fits(model, weights)
        try:
            model.load_state_dict(weights, strict=False)
        except RuntimeError as e:
            raise WeightsFitError(f"the weights do not fit the spec: {str(e).strip()[:200]}") from None
    return model


def fit_head(graph: Graph, state: dict) -> Graph:
    """`graph` with its classifier as wide as the one in `state` (a model trained with --classes), for eval and
    predict; a classifier weight that is not outputs x inputs is a WeightsFitError. A spec without an fc layer
    has no classifier to widen: it stays as it is."""
    if not any(OPS[n.op].weight and len(n.shape) == 1 for n in graph.nodes):
        return graph
    key = ".".join(module_paths(graph)[classifier(graph).name]) + ".weight"
    weight = state.get(key)
    if weight is None:
        return graph
    shape = tuple(getattr(weight, "shape", ()))
    if len(shape) != 2 or not 1 <= shape[0] <= MAX_CLASSES:
        raise WeightsFitError(f"the checkpoint's classifier '{key}' has shape {shape}; it should be outputs x "
                              "inputs")
    return graph if shape[0] == graph.output.shape[0] else replace_head(graph, shape[0])


def check_network(payload, graph: Graph) -> None:
    """A WeightsFitError naming the first layer where the network a checkpoint records (cnndsl train writes its
    graph fingerprint and layers) differs from `graph`; weights without such a record pass (their state dict's
    shapes are still checked where they load)."""
    if not isinstance(payload, dict) or "graph" not in payload:
        return
    if payload["graph"] == graph_fingerprint(graph):
        return
    why, span = layer_mismatch(payload.get("layers"), graph) or ("its graph fingerprint differs from this spec's",
                                                                   None)
    raise WeightsFitError(f"the checkpoint is of another network: {why}", span=span,
                          hint="use the spec it was trained from (run.json in its run folder holds it)"
                          ).attach(graph.source if span else None, graph.filename)


def checkpoint_norm(payload: dict, channels: int):
    """The normalisation a checkpoint was trained with, as (mean, std) of shape 1 x C x 1 x 1, or None if it
    carries none; a WeightsFitError if it is not sane statistics (see weights.check_norm) or does not match the
    spec's `channels`."""
    if "norm_mean" not in payload and "norm_std" not in payload:
        return None
    mean, std = payload.get("norm_mean"), payload.get("norm_std")
    try:
        check_norm(mean, std)
    except WeightsError as e:
        raise WeightsFitError(e.message, hint=e.hint) from None
    if mean.numel() != channels or std.numel() != channels:
        raise WeightsFitError(f"the checkpoint normalises {mean.numel()} channels but the spec's input has "
                              f"{channels}", hint="was it trained from another spec?")
    return mean.float().reshape(1, -1, 1, 1), std.float().reshape(1, -1, 1, 1)


# ------------------------------------------------------------- training --

class Interrupted(Exception):
    """Training stopped on SIGINT after saving a checkpoint (`saved`) at `epoch` (0-based) and `step`."""

    def __init__(self, saved: str = "", epoch: int = 0, step: int = 0):
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step}; saved {saved}")
        self.saved, self.epoch, self.step = saved, epoch, step


GROUP_KEYS = {"sgd": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),     # what each optimizer's step
              "adamw": ("lr", "betas", "eps", "weight_decay", "amsgrad")}           # reads from its groups
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "global_step", "best", "rng", "python_rng")


def _like(current, saved) -> bool:
    """Whether a value read from a checkpoint has the kind of the value in place (bools, finite numbers, strings,
    None, and lists, tuples and dicts of such), so that loading it cannot make a later step fail."""
    if isinstance(current, bool) or current is None:
        return saved is None or isinstance(saved, bool)
    if isinstance(current, (int, float)):
        return _finite(saved)
    if isinstance(current, str):
        return isinstance(saved, str)
    if isinstance(current, (list, tuple)):
        return (isinstance(saved, (list, tuple)) and len(saved) == len(current)
                and all(_like(c, s) for c, s in zip(current, saved)))
    if isinstance(current, dict):
        return isinstance(saved, dict) and all(k in current and _like(current[k], v) for k, v in saved.items())
    return type(saved) is type(current)


class Trainer:
    def __init__(self, graph: Graph, dataset: Dataset, config: TrainConfig, out: Path,
                 progress: Optional[Callable[[dict], None]] = None, rank: int = 0, world: int = 1,
                 source: Optional[dict] = None, lock: bool = True):
        """`source` says where the data came from ({"source": name or path, "data_dir": folder or None}) for the
        run record. `lock`: True to lock the run folder while training, a RunLock the caller already holds
        (resume_trainer's), or False when a parent process has claimed the folder (train_distributed)."""
        import torch

        from .augment import Preprocess
        self.config, self.out, self.rank, self.world = config, Path(out), rank, world
        self.source = dict(source or {"source": None, "data_dir": None})    # None: the caller did not say
        self.lock_folder = lock
        self.resumed = False
        self.history: list[dict] = []           # one record per finished epoch (what metrics.jsonl holds)
        self.partial = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0}    # the epoch in progress
        self._drawn = time.perf_counter()       # when the run's pictures were last drawn
        self.progress = progress or (lambda event: None)
        check_config(config)
        config = self.config = resolved(config)
        check_dataset(dataset)
        self.device = pick_device(config.device)
        if world > 1 and self.device.startswith("cuda"):
            self.device = f"cuda:{rank % torch.cuda.device_count()}"
        self.dataset = dataset
        train = dataset.train
        if config.limit_train:
            train = Split(train.images[: config.limit_train], train.labels[: config.limit_train])
        self.train_split = train
        test = dataset.test
        if config.limit_test:
            test = Split(test.images[: config.limit_test], test.labels[: config.limit_test])
        self.test_split = test
        self.spec_graph = graph             # as the spec's text compiles (run.json's spec.graph)
        self.graph = prepare_graph(graph, config.classes, dataset.num_classes)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = build_model(self.graph).to(self.device)
        self._initial_weights()
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head_prefix = ".".join(module_paths(self.graph)[classifier(self.graph).name])
        self._freeze()
        self.pre = Preprocess(train.images.shape[1:], self.graph.input_shape, train.images, config.augment,
                              classes=dataset.classes).to(self.device)
        on_device = train.images.nbytes < 2 << 30
        self.x = torch.as_tensor(train.images).to(self.device if on_device else "cpu")
        self.y = torch.as_tensor(train.labels).to(self.device)
        self.net = self.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.startswith("cuda")
                                               else None)
        self.forward = torch.compile(self.net) if config.compile else self.net
        self.optimizer = self._optimizer()
        n = len(self.y)
        self.batch = min(config.batch_size, n)
        if self.batch % world:
            raise TrainError(f"--batch-size {self.batch} does not split evenly over {world} processes")
        self.steps_per_epoch = n // self.batch if world > 1 else math.ceil(n / self.batch)
        self.total_steps = max(1, self.steps_per_epoch * config.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler(enabled=config.amp == "fp16" and self.device.startswith("cuda"))
        self.epoch, self.step, self.global_step, self.best = 0, 0, 0, -1.0
        self.stop_requested = False
        self.reference_loss = max(1.0, math.log(dataset.num_classes))     # see diverged_above
        self.diverged_at: Optional[dict] = None
        self.progress_every = 20            # steps between progress events (each one syncs the device)

    # -------------------------------------------------------------- setup --
    def _initial_weights(self):
        c = self.config
        if c.init:
            state = state_dict_of(load_checkpoint(c.init))
            own = self.model.state_dict()
            fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
            skipped = sorted(set(own) - set(fits))
            if not fits:
                raise TrainError(f"nothing in {c.init} fits this spec", hint="was it trained from another spec?")
            self.model.load_state_dict(fits, strict=False)
            self.progress({"event": "init", "loaded": len(fits), "skipped": skipped})
        if c.init_torchvision:
            import torch

            from ..backends.torchvision import load_torchvision
            state = state_dict_of(load_checkpoint(c.init_torchvision))
            head = classifier(self.graph)
            strict = True
            if c.classes is not None:   # the new head is not in the source: copy everything before it
                keys = [k for k in state if state[k].dim() == 2]
                last = keys[-1].rsplit(".", 1)[0] if keys else None
                state = {k: v for k, v in state.items() if last is None or not k.startswith(last + ".")}
                strict = False
            with torch.no_grad():
                pairs = load_torchvision(self.model, state, strict=strict)
            self.progress({"event": "init", "loaded": len(pairs), "skipped": [head.name] if not strict else []})

    def _freeze(self):
        names = set(self.config.freeze)
        if not names:
            return
        frozen = 0
        for key, p in self.model.named_parameters():
            parts = key.split(".")[:-1]
            in_head = key.startswith(self.head_prefix + ".")
            if ("backbone" in names and not in_head) or names & set(parts):
                p.requires_grad_(False)
                frozen += p.numel()
        if frozen == 0:
            raise TrainError(f"--freeze {','.join(sorted(names))} matches no parameters",
                             hint="name labels or stages from the spec (cnndsl analyze shows them), or 'backbone'")
        self.progress({"event": "freeze", "frozen_params": frozen})

    def _optimizer(self):
        import torch
        c = self.config
        lr = c.lr
        head, body = [], []
        for key, p in self.model.named_parameters():
            if p.requires_grad:
                (head if key.startswith(self.head_prefix + ".") else body).append(p)
        groups = [{"params": head, "lr": lr}]
        if body:
            groups.append({"params": body, "lr": lr * c.backbone_lr})
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=lr, weight_decay=c.weight_decay)
        raise TrainError(f"unknown optimizer {c.optimizer!r}", hint="choose sgd or adamw")

    def _lr_factor(self, step: int) -> float:
        c = self.config
        warm = c.warmup_epochs * self.steps_per_epoch
        if warm and step < warm:
            return (step + 1) / warm
        progress = min(1.0, step / self.total_steps)
        if c.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if c.schedule == "step":
            return 0.1 ** int(progress * 3)
        return 1.0

    # ---------------------------------------------------------- checkpoint --
    def checkpoint(self) -> dict:
        import torch
        payload = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step, "best": self.best,
            "rng": torch.get_rng_state(), "python_rng": list(random.getstate()[1]),
            "spec": self.graph.source, "spec_file": self.graph.filename, "classes": list(self.dataset.classes),
            "norm_mean": self.pre.mean.cpu(), "norm_std": self.pre.std.cpu(),
            "preprocessing": self.pre.plan.to_dict(), "graph": graph_fingerprint(self.graph),
            "layers": graph_layers(self.graph), "history": list(self.history), "partial": self._partial(),
            "config": json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in asdict(getattr(self, "record_config", self.config)).items()}),
        }
        if torch.cuda.is_available():
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        return payload

    def _partial(self) -> dict:
        """The sums of the epoch in progress (zero between epochs), so a resumed epoch logs the whole epoch."""
        if not self.step or getattr(self, "sums", None) is None:
            return {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
        loss_sum, correct = self.sums
        return {"loss_sum": float(loss_sum.item()), "correct": int(correct.item()), "count": int(self._count),
                "seconds": time.perf_counter() - self._epoch_start}

    def restore(self, payload: dict) -> None:
        """Continue from a checkpoint of this run (see checkpoint()). Every part is checked before any is used: a
        damaged or foreign checkpoint is a TrainError naming what is missing or wrong."""
        import torch
        self._check_restore(payload)
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.scaler.load_state_dict(payload["scaler"])
            torch.set_rng_state(payload["rng"])
            state = random.getstate()
            random.setstate((state[0], tuple(payload["python_rng"]), state[2]))
            if "cuda_rng" in payload and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(payload["cuda_rng"][:torch.cuda.device_count()])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
            raise TrainError(f"cannot resume from the checkpoint: {type(e).__name__}: {str(e).strip()[:200]}") \
                from None
        self.epoch, self.step = payload["epoch"], payload["step"]
        self.global_step, self.best = payload["global_step"], float(payload["best"])
        self.history = [dict(r) for r in payload.get("history", [])] if "history" in payload else [
            r for r in read_metrics(self.out) if r.get("epoch", 0) <= self.epoch][:self.epoch]
        self.partial = dict(payload.get("partial") or {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0})
        if not self.step:
            self.partial = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
        self.resumed = True

    def _check_restore(self, payload) -> None:
        import torch
        if not isinstance(payload, dict):
            raise TrainError(f"the checkpoint is a {type(payload).__name__}, not a dict")
        missing = [k for k in RESUME_KEYS if k not in payload]
        if missing:
            raise TrainError(f"the checkpoint lacks {', '.join(missing)}",
                             hint="--resume needs the last.pt that cnndsl train wrote; to start from other weights, "
                                  "use --init")
        check_network(payload, self.graph)
        check_fits(self.model, payload["model"], "the checkpoint's weights")
        for key in ("epoch", "step", "global_step"):
            if not isinstance(payload[key], int) or isinstance(payload[key], bool) or payload[key] < 0:
                raise TrainError(f"the checkpoint's {key} must be a whole number >= 0, got {str(payload[key])[:40]}")
        if payload["step"] > self.steps_per_epoch:
            raise TrainError(f"the checkpoint stopped at step {payload['step']} of an epoch, but an epoch now has "
                             f"{self.steps_per_epoch} steps", hint="resume with the --batch-size the run used")
        epoch, step, global_step = payload["epoch"], payload["step"], payload["global_step"]
        if epoch > self.config.epochs or (epoch == self.config.epochs and step):
            raise TrainError(f"the checkpoint is at epoch {epoch:,} but the run has {self.config.epochs:,} epochs",
                             hint=f"resume with --epochs {epoch:,} or more" if epoch <= 10 ** 6 else None)
        most = epoch * max(len(self.dataset.train.labels), self.steps_per_epoch) + step    # any batch size
        if not step <= global_step <= most:
            raise TrainError(f"the checkpoint's global_step {global_step:,} does not fit epoch {epoch:,}, step "
                             f"{step:,} (at most {most:,} steps)")
        if not (_finite(payload["best"]) and -1 <= payload["best"] <= 1):
            raise TrainError(f"the checkpoint's best accuracy must be a number in [-1, 1], got "
                             f"{str(payload['best'])[:40]}")
        rng = payload["rng"]
        if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape):
            raise TrainError("the checkpoint's rng is not torch's random state (a byte tensor)")
        py = payload["python_rng"]
        if not (isinstance(py, (list, tuple)) and len(py) == 625 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                        and 0 <= v < 1 << 32 for v in py)
                and py[-1] <= 624):
            raise TrainError("the checkpoint's python_rng is not Python's random state (625 numbers)")
        if "cuda_rng" in payload and torch.cuda.is_available():
            cuda = payload["cuda_rng"]
            if not (isinstance(cuda, (list, tuple)) and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8
                                                             for t in cuda)):
                raise TrainError("the checkpoint's cuda_rng is not a list of GPU random states (byte tensors)")
        self._check_history(payload)
        self._check_optimizer(payload["optimizer"], payload["global_step"])
        for key, current in (("scheduler", self.scheduler.state_dict()), ("scaler", self.scaler.state_dict())):
            saved = payload[key]
            if not isinstance(saved, dict):
                raise TrainError(f"the checkpoint's {key} is a {type(saved).__name__}, not a dict")
            if key == "scaler" and not current:
                continue        # a disabled scaler ignores its state
            wrong = next((k for k in saved if k not in current or not _like(current[k], saved[k])), None)
            if wrong is None and key == "scaler":
                wrong = next((k for k in current if k not in saved), None)
            if wrong is not None:
                raise TrainError(f"the checkpoint's {key} state has a missing, unknown or malformed "
                                 f"'{str(wrong)[:40]}'")
        self._check_schedule(payload["scheduler"], payload["global_step"])
        if self.scaler.state_dict():
            self._check_scaler(payload["scaler"])

    HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "test_loss", "lr", "seconds",
                    "images_per_s")

    def _check_history(self, payload) -> None:
        """The epoch records and the partial sums a checkpoint carries: one record per finished epoch, numbered
        1, 2, ..., finite numbers (a test loss may be None); partial sums finite, counts whole."""
        if "history" in payload:
            history, epoch = payload["history"], payload.get("epoch")
            if not (isinstance(history, list) and isinstance(epoch, int) and len(history) == epoch):
                raise TrainError(f"the checkpoint's history is not one record per finished epoch "
                                 f"({str(epoch)[:20]})")
            for i, r in enumerate(history):
                ok = isinstance(r, dict) and r.get("epoch") == i + 1 and all(
                    k in self.HISTORY_KEYS and (v is None or _finite(v) or (k == "train_loss" and isinstance(v, float)))
                    for k, v in r.items())
                if not ok:
                    raise TrainError(f"the checkpoint's history record {i + 1} is malformed")
        partial = payload.get("partial")
        if partial is not None:
            ok = (isinstance(partial, dict) and set(partial) == {"loss_sum", "correct", "count", "seconds"}
                  and _finite(partial["loss_sum"]) and _finite(partial["seconds"]) and partial["seconds"] >= 0
                  and all(isinstance(partial[k], int) and not isinstance(partial[k], bool) and partial[k] >= 0
                          for k in ("correct", "count")) and partial["correct"] <= partial["count"])
            if not ok:
                raise TrainError("the checkpoint's sums of the epoch in progress are malformed")

    def max_lr(self) -> float:
        """The largest learning rate a group of this run may have: MAX_LR, times --backbone-lr if above 1."""
        return MAX_LR * max(1.0, self.config.backbone_lr)

    def _check_lr(self, what: str, value) -> None:
        top = self.max_lr()
        if not (_finite(value) and 0 <= value <= top):
            raise TrainError(f"the checkpoint's {what} must be a number from 0 to {top:g}, got {str(value)[:40]}",
                             hint="a learning rate this large overflows; the checkpoint is damaged")

    def _check_schedule(self, saved: dict, global_step: int) -> None:
        """The scheduler's numbers: as many learning rates as groups, each within max_lr(), and its step count
        that of the run (the scheduler steps once per training step)."""
        groups = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            values = saved.get(key, [])
            if not isinstance(values, (list, tuple)) or len(values) != groups:
                raise TrainError(f"the checkpoint's scheduler has {str(values)[:40]} as {key}; it needs {groups} "
                                 "learning rates")
            for value in values:
                self._check_lr(f"scheduler {key}", value)
        last = saved.get("last_epoch", global_step)
        if last != global_step:
            raise TrainError(f"the checkpoint's scheduler is at step {str(last)[:40]} but the run at step "
                             f"{global_step:,}", hint="the scheduler steps once per training step: the checkpoint is "
                                                      "damaged")
        count = saved.get("_step_count", global_step + 1)
        if not (isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= global_step + 1):
            raise TrainError(f"the checkpoint's scheduler _step_count {str(count)[:40]} does not fit step "
                             f"{global_step:,}")

    def _check_scaler(self, saved: dict) -> None:
        """fp16's gradient scaler: a positive finite scale a float32 can hold, growth above 1, backoff in (0, 1)."""
        bounds = {"scale": (0, 2.0 ** 64, True), "growth_factor": (1, 1e3, True), "backoff_factor": (0, 1, True),
                  "growth_interval": (1, 10 ** 9, False), "_growth_tracker": (0, 10 ** 9, False)}
        for key, (low, high, open_low) in bounds.items():
            value = saved.get(key)
            if not (_finite(value) and (low < value if open_low else low <= value) and value <= high):
                raise TrainError(f"the checkpoint's scaler {key} must be a number in "
                                 f"{'(' if open_low else '['}{low:g}, {high:g}], got {str(value)[:40]}")

    # the ranges of the optimizer settings a checkpoint restores: (low, high, low is open, high is open)
    SETTING_RANGES = {"weight_decay": (0, 10, False, False), "momentum": (0, 1, False, True),
                      "dampening": (0, 1, False, False), "eps": (0, 1, True, False), "betas": (0, 1, False, True)}

    def _check_optimizer(self, saved, global_step: int = 0) -> None:
        """The optimizer's state must be this optimizer's: the same groups and settings (learning rates within
        max_lr(), the other numbers within SETTING_RANGES), and per-parameter buffers (momentum, Adam's moments)
        of the parameters' shapes, all finite (Adam's second moments >= 0, its step count at most the run's)."""
        import torch
        groups = self.optimizer.param_groups
        if not (isinstance(saved, dict) and isinstance(saved.get("state"), dict)
                and isinstance(saved.get("param_groups"), list) and len(saved["param_groups"]) == len(groups)):
            raise TrainError(f"the checkpoint's optimizer state is not that of {len(groups)} parameter group(s) of "
                             f"{self.config.optimizer}", hint="resume with the settings the run used")
        params = {}
        for group, old in zip(groups, saved["param_groups"]):
            ids = old.get("params") if isinstance(old, dict) else None
            if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)
                    and len(ids) == len(group["params"]) == len(set(ids) - set(params))):
                raise TrainError("the checkpoint's optimizer has other parameters than this model",
                                 hint="resume with the settings the run used (--freeze, --classes)")
            lacking = [k for k in GROUP_KEYS[self.config.optimizer] if k not in old]
            if lacking:
                raise TrainError(f"the checkpoint's optimizer lacks the {self.config.optimizer} setting '{lacking[0]}'",
                                 hint="resume with the --optimizer the run used")
            for key, value in old.items():
                if key != "params" and key in group and not _like(group[key], value):
                    raise TrainError(f"the checkpoint's optimizer setting '{key}' is malformed: {str(value)[:40]}")
            if not (_finite(old.get("lr", 0)) and old.get("lr", 0) >= 0):
                raise TrainError("the checkpoint's learning rate must be a finite number >= 0")
            for key in ("lr", "initial_lr"):
                if key in old:
                    self._check_lr(f"optimizer {key}", old[key])
            for key, (low, high, low_open, high_open) in self.SETTING_RANGES.items():
                values = old.get(key, ())
                for value in values if isinstance(values, (list, tuple)) else (values,):
                    if not (_finite(value) and (low < value if low_open else low <= value)
                            and (value < high if high_open else value <= high)):
                        raise TrainError(f"the checkpoint's optimizer setting '{key}' must be in "
                                         f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                                         f"got {str(value)[:40]}")
            params.update(zip(ids, group["params"]))
        needed = {"sgd": set(), "adamw": {"step", "exp_avg", "exp_avg_sq"}}[self.config.optimizer]
        for pid, state in saved["state"].items():
            if pid not in params or not isinstance(state, dict) or (state and not needed <= set(state)):
                raise TrainError(f"the checkpoint's optimizer state for parameter {str(pid)[:20]} is unknown or "
                                 f"lacks {', '.join(sorted(needed))}")
            for key, value in state.items():
                if value is None and key == "momentum_buffer":
                    continue
                ok = isinstance(value, torch.Tensor) and value.is_floating_point() and bool(torch.isfinite(value).all())
                if ok and key == "step":
                    ok = value.numel() == 1 and 0 <= float(value) <= global_step
                elif ok:
                    ok = value.shape == params[pid].shape and (key != "exp_avg_sq" or bool((value >= 0).all()))
                if not ok:
                    raise TrainError(f"the checkpoint's optimizer buffer '{str(key)[:40]}' does not fit its parameter "
                                     f"(shape {tuple(params[pid].shape)})")

    def _out_dir(self) -> Path:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainError(f"cannot create the run folder {self.out}: {_why(e)}") from None
        return self.out

    def save(self, name: str = "last.pt") -> None:
        if self.rank == 0:
            save_checkpoint(self._out_dir() / name, self.checkpoint())

    def log(self, record: dict) -> None:
        """Append one line to metrics.jsonl; a failed write is undone (no half line) and is a TrainError."""
        if self.rank == 0:
            path = self._out_dir() / "metrics.jsonl"
            data = (json.dumps(record) + "\n").encode()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                try:
                    start = os.lseek(fd, 0, os.SEEK_END)
                    try:
                        while data:
                            data = data[os.write(fd, data):]
                    except OSError:
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, start)
                        raise
                finally:
                    os.close(fd)
            except OSError as e:
                raise TrainError(f"cannot write {path}: {_why(e)}",
                                 hint="the disk is full" if e.errno == errno.ENOSPC else None) from None

    # ---------------------------------------------------------------- loop --
    def run(self) -> dict:
        """Train to config.epochs; returns the summary. Ctrl-C saves last.pt and raises Interrupted; a training
        loss that turns non-finite or explodes (see diverged_above) stops the run, saves last.pt if the weights
        are still finite, and returns a summary with "diverged": true and "diverged_at"."""
        c = self.config
        n = len(self.y)
        lock = self._claim_folder() if self.rank == 0 else None
        try:
            previous = signal.getsignal(signal.SIGINT)
            try:        # every process: a Ctrl-C reaches them all, and they agree to stop at the same step
                signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:      # not the main thread: no handler
                previous = None
            return self._run(c, n, previous)
        finally:
            if lock is not None:
                lock.release()

    def _claim_folder(self):
        """Rank 0, before training: make the run folder, lock it (unless a parent process holds the lock),
        refuse a folder that holds another run (a resumed run continues its own), write run.json for a new run,
        and on resume rewrite metrics.jsonl from the checkpoint's history. Returns the lock, or None."""
        if isinstance(self.lock_folder, RunLock) and not self.out.is_dir():     # moved while resume_trainer held it
            raise RunFolderError(f"the run folder {self.out} is gone", hint="was it moved aside (--force)?")
        self._out_dir()         # a run folder that cannot be made fails now, not after an epoch of training
        if self.lock_folder is False:   # the parent process (train_distributed) has claimed the folder
            return None
        # a RunLock passed in (resume_trainer's, taken before it read the folder) is this run's to release
        lock = self.lock_folder if isinstance(self.lock_folder, RunLock) else RunLock(self.out).acquire()
        try:
            if not self.resumed and holds_run(self.out):
                raise RunFolderError(f"{self.out} already holds a run",
                                     hint=f"continue it with --resume {self.out}, start over with --force (moves "
                                          "the old run aside), or use another --out")
            if not (self.out / RUN_FILE).exists():
                write_json_atomic(self.out / RUN_FILE, self.record())
            if self.resumed:
                rewrite_metrics(self.out, self.history)
        except OSError as e:
            lock.release()
            raise TrainError(f"cannot write the run folder {self.out}: {_why(e)}") from None
        except BaseException:
            lock.release()
            raise
        return lock

    def record(self) -> dict:
        """run.json: the spec, every setting, the data and its fingerprint, the preprocessing, the environment."""
        ds = self.dataset
        data = dict(self.source, name=ds.name, fingerprint=data_fingerprint(ds), train_images=len(ds.train.labels),
                    test_images=len(ds.test.labels), image_shape=list(ds.train.images.shape[1:]),
                    classes=list(ds.classes))
        return make_record(self.graph.source, self.graph.filename, self.spec_graph,
                           getattr(self, "record_config", self.config), data, self.pre.plan.to_dict(),
                           getattr(self, "record_device", self.device), network=self.graph)

    def _run(self, c, n, previous) -> dict:
        import torch
        import torch.nn.functional as F
        start = time.perf_counter()
        first = True
        try:
            self.progress({"event": "start", "epochs": c.epochs, "steps_per_epoch": self.steps_per_epoch,
                           "device": self.device, "params": sum(p.numel() for p in self.model.parameters()),
                           "epoch": self.epoch, "step": self.step})
            while self.epoch < c.epochs and self.diverged_at is None:
                order = torch.randperm(n, generator=_generator("cpu", c.seed, self.epoch)).to(self.y.device)
                self.net.train()
                loss_sum = torch.tensor(float(self.partial["loss_sum"]), device=self.device)
                correct = torch.tensor(int(self.partial["correct"]), device=self.device, dtype=torch.long)
                count = int(self.partial["count"])
                self.sums = (loss_sum, correct)
                epoch_start = time.perf_counter() - float(self.partial["seconds"])
                self._count, self._epoch_start = count, epoch_start
                while self.step < self.steps_per_epoch:
                    idx = order[self.step * self.batch:(self.step + 1) * self.batch]
                    per_rank = len(idx) // self.world
                    local = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
                    g = _generator(self.device.split(":")[0] if not self.device.startswith("cuda") else self.device,
                                   c.seed, self.epoch, self.step)
                    xb = self.pre(self.x[idx.to(self.x.device)].to(self.device, non_blocking=True), g, train=True)
                    xb, yb = xb[local], self.y[idx][local]
                    if c.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    with _autocast(self.device, c.amp):
                        logits = self.forward(xb)
                        loss = F.cross_entropy(logits.float(), yb, label_smoothing=c.label_smoothing)
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.scheduler.step()
                    loss_sum += loss.detach() * len(yb)
                    correct += (logits.argmax(1) == yb).sum()
                    count += len(yb)
                    self._count = count
                    self.step += 1
                    self.global_step += 1
                    report = self.step % self.progress_every == 0 or self.step == self.steps_per_epoch
                    if not (report or first):
                        if self.world == 1 and self.stop_requested:
                            self._interrupt()
                        continue
                    running = loss_sum.item() / max(count, 1)       # syncs the device: only every few steps
                    if first and math.isfinite(running):
                        self.reference_loss = max(self.reference_loss, running)
                    first = False
                    stop, diverged = self.stop_requested, self._diverged(running)
                    if self.world > 1:      # every process stops at the same step, or the others would wait
                        stop, diverged, running = self._agree(stop, diverged, running)
                    if diverged:
                        self._stop_diverged(running)
                        break
                    if report:
                        elapsed = time.perf_counter() - epoch_start
                        self.progress({"event": "step", "epoch": self.epoch, "step": self.step,
                                       "loss": running, "accuracy": correct.item() / max(count, 1),
                                       "images_per_s": count * self.world / max(elapsed, 1e-9),
                                       "lr": self.optimizer.param_groups[0]["lr"]})
                    if stop or (self.world == 1 and self.stop_requested):
                        self._interrupt()
                if self.diverged_at is not None:
                    break
                train_loss, train_acc = loss_sum.item() / max(count, 1), correct.item() / max(count, 1)
                epoch_time = time.perf_counter() - epoch_start      # training only: the test pass is not in it
                metrics = evaluate(self.model, self.test_split, self.pre, self.device, amp=c.amp,
                                   channels_last=c.channels_last) if self.rank == 0 else {"accuracy": 0.0}
                self.epoch += 1
                self.step = 0
                self.partial = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
                record = {"epoch": self.epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                          "test_accuracy": metrics["accuracy"], "test_loss": metrics.get("loss"),
                          "lr": self.optimizer.param_groups[0]["lr"], "seconds": epoch_time,
                          "images_per_s": count * self.world / max(epoch_time, 1e-9)}
                improved = metrics["accuracy"] > self.best
                if improved:
                    self.best = metrics["accuracy"]
                self.history.append(record)
                # best.pt, then last.pt, then the log line: a kill anywhere leaves last.pt covering every logged
                # epoch, and a resume from it redoes (identically) whatever came after it
                if improved:
                    self.save("best.pt")
                self.save("last.pt")
                self.log(record)
                self.last_confusion = metrics.get("confusion")
                if self.epoch == c.epochs or time.perf_counter() - self._drawn >= PICTURE_EVERY:
                    self.pictures()     # drawing takes ~0.5 s: at the end, and during a long run now and then
                self.progress({"event": "epoch", **record, "best": self.best})
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        total = time.perf_counter() - start
        if self.diverged_at is not None and self.history:
            self.pictures()             # the epochs before it diverged
        trained = sum(r["seconds"] for r in self.history)       # training time only: no test passes
        seen = sum(r["images_per_s"] * r["seconds"] for r in self.history)
        return {"epochs": self.epoch, "best_test_accuracy": self.best, "seconds": total,
                "train_seconds": trained, "images_per_s": seen / trained if trained > 0 else 0.0, "device": self.device, "run_dir": str(self.out),
                "diverged": self.diverged_at is not None, "diverged_at": self.diverged_at}

    def pictures(self) -> None:
        """curves.svg/png (and confusion.svg/png of the latest test pass) in the run folder; a picture that cannot
        be drawn (no matplotlib) is left out, never a failed run."""
        self._drawn = time.perf_counter()
        if self.rank != 0:
            return
        try:
            from . import pictures
        except ImportError:
            return
        try:
            pictures.write_curves(self.history, self.out)
            if getattr(self, "last_confusion", None):
                pictures.write_confusion(self.last_confusion, list(self.dataset.classes), self.out / "confusion",
                                         title=f"epoch {self.epoch}: test accuracy "
                                               f"{self.history[-1]['test_accuracy']:.4f}")
        except ImportError:
            return
        except Exception as e:      # a picture is never worth a failed run (matplotlib's own errors included)
            self.progress({"event": "warning", "message": f"cannot draw the run's pictures: {type(e).__name__}: "
                                                          f"{str(e)[:200]}"})

    def _interrupt(self):
        self.save("last.pt")
        if self.history:
            self.pictures()
        raise Interrupted(str(self.out / "last.pt"), self.epoch, self.step)

    def diverged_above(self) -> float:
        """The training loss above which the run has diverged: DIVERGED_FACTOR times the reference (the loss of
        a uniform guess, ln(classes), at least 1, or the run's first loss if that is higher)."""
        return DIVERGED_FACTOR * self.reference_loss

    def _diverged(self, loss: float) -> bool:
        return not math.isfinite(loss) or loss > self.diverged_above()

    def _agree(self, stop: bool, diverged: bool, loss: float) -> tuple[bool, bool, float]:
        """The processes' flags and largest loss, the same in every process (one all-reduce)."""
        import torch
        import torch.distributed as dist
        flags = torch.tensor([float(stop), float(diverged), loss if math.isfinite(loss) else math.inf],
                             device=self.device, dtype=torch.float64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, diverged, loss = flags.tolist()
        return bool(stop), bool(diverged), loss if math.isfinite(loss) else math.inf

    def _stop_diverged(self, loss: float) -> None:
        """Record where training diverged and save last.pt, unless the weights are no longer finite (then the
        last.pt of the previous epoch, if any, stays)."""
        finite = all(_all_finite(v) for v in self.model.state_dict().values() if v.is_floating_point())
        if finite:
            self.save("last.pt")
        self.diverged_at = {"epoch": self.epoch + 1, "step": self.step,
                            "loss": loss if math.isfinite(loss) else str(loss), "limit": self.diverged_above(),
                            "saved": finite}
        self.progress({"event": "diverged", **self.diverged_at})

    def _on_sigint(self, signum, frame):
        if self.stop_requested:          # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop_requested = True


def resume_trainer(folder, changes: Optional[dict] = None, progress=None, graph: Optional[Graph] = None,
                   rank: int = 0, world: int = 1, data: Optional[str] = None) -> "Trainer":
    """The run in `folder`, ready to continue with its own settings (run.json) from its last.pt (or from the
    start, when it was stopped before its first checkpoint). The folder is locked before anything in it is read
    (the trainer releases the lock when its run ends). `changes` may hold only the settings in
    record.RESUME_SAFE, or values equal to the recorded ones; `graph`, when given, must be the recorded spec's
    network. The data comes from the recorded source, or from `data` (a run started from the library records
    none; data that moved): either way it must have the recorded fingerprint."""
    folder = Path(folder)
    lock = RunLock(folder).acquire()
    try:
        return _resume_locked(folder, lock, changes, progress, graph, rank, world, data)
    except BaseException:
        lock.release()
        raise


def _resume_locked(folder, lock, changes, progress, graph, rank, world, data) -> "Trainer":
    import dataclasses
    import json as _json

    from ..api import compile_source
    from . import data as data_mod
    from .record import RESUME_SAFE, config_from, read_record
    record = read_record(folder)
    settings = dict(record["settings"])
    changes = dict(changes or {})
    data_dir = changes.pop("data_dir", record["data"].get("data_dir"))
    for key, value in changes.items():
        if key not in settings:
            raise RunFolderError(f"the run has no setting {key!r}")
        old = settings[key]
        if isinstance(old, list) and isinstance(value, tuple):
            value = list(value)
        if value != old and key not in RESUME_SAFE:
            raise RunFolderError(f"--resume continues the run with its own settings: {key} was "
                                 f"{_setting(old)}, not {_setting(value)}",
                                 hint="leave the flag out; only " + ", ".join(
                                     "--" + k.replace("_", "-") for k in RESUME_SAFE) + " may change on resume "
                                 "(start a new run with --out to change the others)")
        settings[key] = value
    try:
        config = check_config(config_from(settings, TrainConfig))
    except TypeError as e:
        raise RunFolderError(f"the run record's settings do not make a configuration: {e}") from None
    last = folder / "last.pt"
    payload = load_checkpoint(str(last)) if last.exists() else None
    if payload is None and ((folder / "best.pt").exists() or read_metrics(folder)):
        raise RunFolderError(f"{folder} has finished epochs (best.pt, metrics.jsonl) but no last.pt to continue "
                             "from", hint="restore last.pt, or start over with --force")
    if isinstance(payload, dict) and isinstance(payload.get("config"), str):
        try:
            saved = _json.loads(payload["config"])
        except ValueError:
            saved = None
        if isinstance(saved, dict):
            wrong = next((k for k in sorted(settings) if k not in RESUME_SAFE and k in saved
                          and k not in ("lr", "weight_decay") and saved[k] != settings[k]), None)
            if wrong is None:       # lr and weight decay: the checkpoint may hold None for "the default"
                wrong = next((k for k in ("lr", "weight_decay") if saved.get(k) is not None
                              and saved.get(k) != settings.get(k)), None)
            if wrong is not None:
                raise RunFolderError(f"run.json and last.pt disagree about {wrong} ({_setting(settings[wrong])} "
                                     f"against {_setting(saved[wrong])})",
                                     hint="run.json was edited? restore it, or start a new run")
    spec = record["spec"]
    recorded = compile_source(spec["text"], spec["file"], path=spec.get("path"))
    if graph_fingerprint(recorded) != spec["graph"]:
        raise RunFolderError("the run's spec no longer compiles to the network it trained (a file it uses has "
                             "changed?)", hint="restore the spec's files as they were, or start a new run")
    if graph is not None and graph_fingerprint(graph) != spec["graph"]:
        why, span = layer_mismatch(graph_layers(recorded), graph) or ("the graphs differ", None)
        raise RunFolderError(f"the spec given is not the network this run trains: {why}", span=span,
                             hint="leave SPEC out: --resume uses the run's own spec"
                             ).attach(graph.source if span else None, graph.filename)
    source = record["data"].get("source")
    if source is None and data is None:
        raise RunFolderError("the run's record does not say where its data came from (it was started from the "
                             "library)", hint="give --data with --resume: it must be the data the run started with")
    where = data if data is not None else source
    dataset = data_mod.load(where, data_dir, size=recorded.input_shape[1:])
    if data_fingerprint(dataset) != record["data"].get("fingerprint"):
        raise RunFolderError(f"the data at {where!r} is not the data this run started with (its fingerprint "
                             "differs)", hint="resume with the same data files, or start a new run")
    # the weights come from last.pt: an --init file is not read again (it may have moved since)
    run_config = dataclasses.replace(config, init=None, init_torchvision=None) if payload is not None else config
    trainer = Trainer(recorded, dataset, run_config, folder, progress=progress, rank=rank, world=world,
                      source={"source": where, "data_dir": data_dir}, lock=lock)
    trainer.record_config = config
    if graph_fingerprint(trainer.graph) != spec.get("network", spec["graph"]):
        raise RunFolderError("the run's settings no longer make the network it trained (--classes?)")
    if payload is not None:
        trainer.restore(payload)
    else:
        trainer.resumed = True
    return trainer


def _setting(value) -> str:
    return "(default)" if value is None else str(value)[:60]


# ----------------------------------------------------------- evaluation --

def evaluate(model, split: Split, pre, device: str, batch: int = 512, amp: str = "off",
             channels_last: bool = False, top: int = 5) -> dict:
    """Accuracy, top-k accuracy, loss, confusion matrix and per-class accuracy on a split."""
    import torch
    import torch.nn.functional as F
    model.eval()
    n = len(split.labels)
    if n == 0 or len(split.images) != n:
        raise EvalError(f"cannot evaluate {len(split.images)} images with {n} labels")
    labels = torch.as_tensor(split.labels).long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise EvalError(f"the data has a negative label ({low}); labels are class indices 0, 1, ...")
    confusion = None
    correct_top = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, n, batch):
            xb = pre(torch.as_tensor(split.images[start:start + batch]).to(device))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = labels[start:start + batch].to(device)
            with _autocast(device, amp):
                logits = model(xb).float()
            if confusion is None:
                if logits.dim() != 2 or high >= logits.shape[1]:
                    raise EvalError(f"the data has labels up to {high} ({high + 1} classes) but the network gives "
                                     f"{tuple(logits.shape[1:])} outputs",
                                     hint="evaluate on data with the classes the network was trained on")
                confusion = torch.zeros(logits.shape[1], logits.shape[1], dtype=torch.long)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            k = min(top, logits.shape[1])
            correct_top += (logits.topk(k, 1).indices == yb[:, None]).any(1).sum().item()
            pred = logits.argmax(1).cpu()
            confusion.index_put_((labels[start:start + batch], pred), torch.ones_like(pred), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1).float()).tolist()
    return {"accuracy": confusion.diag().sum().item() / max(n, 1), f"top{top}_accuracy": correct_top / max(n, 1),
            "loss": loss_sum / max(n, 1), "confusion": confusion.tolist(), "per_class_accuracy": per_class, "count": n}


# ----------------------------------------------------------------- DDP --

ERROR_CLASSES = {cls.__name__: cls for cls in (TrainError, DeviceError, EvalError, WeightsFitError, WeightsError,
                                               DataError)}


def max_processes(device: str) -> int:
    """How many DDP processes this machine can run: one per GPU on CUDA, one per CPU this process may use."""
    import torch
    if device.startswith("cuda"):
        return torch.cuda.device_count()
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _write_error(result_file: str, rank: int, error: CnnDslError) -> None:
    with contextlib.suppress(OSError):
        Path(f"{result_file}.error.{rank}").write_text(json.dumps({
            "class": type(error).__name__, "kind": error.kind, "message": error.message, "hint": error.hint,
            "notes": list(error.notes)}))


def distributed_worker(rank: int, world: int, init_file: str, spec: tuple, dataset: Dataset, config: TrainConfig,
                       out: str, result_file: str) -> None:
    """One process of a DistributedDataParallel run (gloo on CPU, nccl on CUDA); rank 0 logs and saves.

    A CnnDslError is written to `result_file`.error.RANK for the parent to raise as the same diagnostic; rank 0
    writes the summary (or where it was interrupted) to `result_file`.json."""
    try:
        import torch.distributed as dist

        from ..api import compile_text
        source, filename, (c, h, w) = spec      # the IR is rebuilt here: compiling is cheaper than pickling it
        graph = compile_text(source, filename=filename, input_shape=(h, w, c))
        backend = "nccl" if pick_device(config.device).startswith("cuda") else "gloo"
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
        try:
            trainer = Trainer(graph, dataset, config, Path(out), rank=rank, world=world, lock=False)
            try:
                summary = trainer.run()
            except Interrupted as e:
                summary = {"interrupted": True, "saved": e.saved, "epoch": e.epoch, "step": e.step}
            if rank == 0:
                Path(result_file + ".json").write_text(json.dumps(summary))
            dist.barrier()
        finally:
            dist.destroy_process_group()
    except CnnDslError as e:
        _write_error(result_file, rank, e)
        raise
    except MemoryError:
        _write_error(result_file, rank, TrainError(f"training process {rank} ran out of memory",
                                                   hint="use fewer --nproc or a smaller --batch-size"))
        raise


def _worker_failure(result_file: str, error: Exception, interrupted: bool) -> BaseException:
    """The error to raise for a failed DDP run: the first process's CnnDslError, as that class with its hint;
    a process killed by a signal as a TrainError; anything else (a bug) as a one-line RuntimeError."""
    failed = getattr(error, "error_index", None)
    import glob
    for rank in sorted(int(p.rsplit(".", 1)[1]) for p in glob.glob(glob.escape(result_file) + ".error.*")):
        try:
            info = json.loads(Path(f"{result_file}.error.{rank}").read_text())
        except (OSError, ValueError):
            continue
        cls = ERROR_CLASSES.get(info.get("class"), TrainError)
        out = cls(str(info.get("message")), hint=info.get("hint"), notes=tuple(info.get("notes") or ()))
        if out.kind != info.get("kind") and isinstance(info.get("kind"), str):
            out.kind = info["kind"]
        return out
    if interrupted:
        return KeyboardInterrupt()
    signal_name = getattr(error, "signal_name", None)
    if signal_name:
        return TrainError(f"training process {failed} was killed by {signal_name}",
                          hint="out of memory? use fewer --nproc or a smaller --batch-size"
                          if signal_name == "SIGKILL" else None)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return RuntimeError(f"training process {failed} failed: {lines[-1] if lines else type(error).__name__}")


def train_distributed(graph: Graph, dataset: Dataset, config: TrainConfig, out: Path, nproc: int,
                      source: Optional[dict] = None) -> dict:
    """Run `nproc` DDP processes on this machine (torch.multiprocessing); returns rank 0's summary.

    Everything that can be checked is checked here, before any process starts: the settings, the device and
    the number of processes (at most one per CPU, or per GPU with CUDA), the spec as the workers will compile
    it, the data, the classes, the --init weights and the run folder. A worker's CnnDslError is raised here as
    the same diagnostic; Ctrl-C saves last.pt and raises Interrupted."""
    import dataclasses
    import logging
    import tempfile

    import torch.multiprocessing as mp

    from ..api import compile_text
    check_config(config)
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise TrainError(f"the number of processes must be a whole number >= 1, got {nproc!r}")
    device = pick_device(config.device)
    if not (device == "cpu" or device.startswith("cuda")):
        raise DeviceError(f"--nproc runs on the CPU or on CUDA GPUs, not on {device}", hint="use --device cpu or cuda")
    if device.startswith("cuda") and ":" in device:
        raise DeviceError(f"--nproc uses one GPU per process (cuda:0, cuda:1, ...); it cannot run on {device} alone",
                          hint="use --device cuda")
    most = max_processes(device)
    if nproc > most:
        units = "GPU(s)" if device.startswith("cuda") else "CPU(s) this process may use"
        raise TrainError(f"--nproc {nproc:,} is more than the {most} {units}",
                         hint=f"use --nproc {most} or fewer: each process loads torch and its own copy of the data")
    spec = (graph.source, graph.filename, tuple(graph.input_shape))
    c, h, w = spec[2]
    worker_graph = compile_text(graph.source, filename=graph.filename, input_shape=(h, w, c))
    # the run as rank 0 will set it up, on the CPU: data, classes, --init weights, --freeze, the run folder
    probe = Trainer(worker_graph, dataset, dataclasses.replace(config, device="cpu", compile=False), out,
                    source=source)
    probe.record_config, probe.record_device = resolved(config), device     # the run's, not the CPU probe's
    if probe.batch % nproc:
        raise TrainError(f"--batch-size {probe.batch} does not split evenly over {nproc} processes",
                         hint=f"use a multiple of {nproc}")
    lock = probe._claim_folder()        # locked for the whole run; the workers do not lock
    del probe
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        result = os.path.join(tmp, "final")
        caught = []
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))  # workers save
        spawn_log = logging.getLogger("torch.multiprocessing.spawn")
        level = spawn_log.level
        spawn_log.setLevel(logging.ERROR)       # not "Terminating process ..." after a worker's diagnostic
        try:
            mp.spawn(distributed_worker, args=(nproc, init_file, spec, dataset, config, str(out), result),
                     nprocs=nproc, join=True)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            raise _worker_failure(result, e, bool(caught)) from None
        finally:
            if lock is not None:
                lock.release()
            spawn_log.setLevel(level)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        try:
            summary = json.loads(Path(result + ".json").read_text())
        except (OSError, ValueError):
            if caught:
                raise KeyboardInterrupt from None
            raise TrainError("the training processes ended without a result") from None
    if summary.get("interrupted"):
        raise Interrupted(summary["saved"], summary["epoch"], summary["step"])
    return summary
