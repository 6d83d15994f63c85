"""Training, evaluation and prediction for any spec: device-side data, checkpoints, resume, transfer, DDP.

The library reports progress through a callback and never prints; `cnndsl train` renders it with rich.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Optional

from .data import DataError, Dataset, Split
from .errors import CnnDslError
from .ir import Graph, Node, verify
from .names import module_paths
from .ops import OPS
from .weights import load_checkpoint, state_dict_of  # noqa: F401  (re-exported for callers)


class TrainError(CnnDslError):
    """A training run cannot start or continue as asked."""

    kind = "train error"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: Optional[float] = None              # default: 0.05 for SGD, 1e-3 for AdamW
    optimizer: str = "sgd"
    schedule: str = "cosine"                # cosine | step | constant
    weight_decay: float = 5e-4
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


# ---------------------------------------------------------------- graph --

def classifier(graph: Graph) -> Node:
    fcs = [n for n in graph.nodes if n.op == "fc"]
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
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("CUDA was asked for but torch sees no GPU", hint="use --device cpu or auto")
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

def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomically: write a temporary file beside the target, then rename it over the target."""
    import torch
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_model(graph: Graph, weights: Optional[dict] = None):
    from .torch_backend import to_torch
    model = to_torch(graph, logits=True)
    if weights is not None:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise TrainError(f"the weights do not fit the spec: {len(missing)} missing "
                             f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    return model


# ------------------------------------------------------------- training --

class Interrupted(Exception):
    """Training stopped on SIGINT after saving a checkpoint."""


class Trainer:
    def __init__(self, graph: Graph, dataset: Dataset, config: TrainConfig, out: Path,
                 progress: Optional[Callable[[dict], None]] = None, rank: int = 0, world: int = 1):
        import torch

        from .augment import Preprocess
        self.config, self.out, self.rank, self.world = config, out, rank, world
        self.progress = progress or (lambda event: None)
        self.device = pick_device(config.device)
        if world > 1 and self.device.startswith("cuda"):
            self.device = f"cuda:{rank % torch.cuda.device_count()}"
        self.dataset = dataset
        train = dataset.train
        if config.limit_train:
            train = Split(train.images[: config.limit_train], train.labels[: config.limit_train])
        self.train_split = train
        self.graph = prepare_graph(graph, config.classes, dataset.num_classes)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = build_model(self.graph).to(self.device)
        self._initial_weights()
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head_prefix = ".".join(module_paths(self.graph)[classifier(self.graph).name])
        self._freeze()
        self.pre = Preprocess(train.images.shape[1:], self.graph.input_shape, train.images, config.augment).to(
            self.device)
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

            from .interchange import load_torchvision
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
        lr = c.lr if c.lr is not None else (0.05 if c.optimizer == "sgd" else 1e-3)
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
            "config": json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()}),
        }
        if torch.cuda.is_available():
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        return payload

    def restore(self, payload: dict) -> None:
        import torch
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.epoch, self.step = int(payload["epoch"]), int(payload["step"])
        self.global_step, self.best = int(payload["global_step"]), float(payload["best"])
        torch.set_rng_state(payload["rng"])
        state = random.getstate()
        random.setstate((state[0], tuple(payload["python_rng"]), state[2]))
        if "cuda_rng" in payload and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])

    def save(self, name: str = "last.pt") -> None:
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.out / name, self.checkpoint())

    def log(self, record: dict) -> None:
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ---------------------------------------------------------------- loop --
    def run(self) -> dict:
        import torch
        import torch.nn.functional as F
        c = self.config
        n = len(self.y)
        previous = signal.getsignal(signal.SIGINT)
        if self.rank == 0:
            try:
                signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:      # not the main thread: no handler
                previous = None
        start = time.perf_counter()
        images_seen = 0
        try:
            self.progress({"event": "start", "epochs": c.epochs, "steps_per_epoch": self.steps_per_epoch,
                           "device": self.device, "params": sum(p.numel() for p in self.model.parameters()),
                           "epoch": self.epoch, "step": self.step})
            while self.epoch < c.epochs:
                order = torch.randperm(n, generator=_generator("cpu", c.seed, self.epoch)).to(self.y.device)
                self.net.train()
                loss_sum = torch.zeros((), device=self.device)
                correct = torch.zeros((), device=self.device, dtype=torch.long)
                count = 0
                epoch_start = time.perf_counter()
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
                    images_seen += len(idx)
                    self.step += 1
                    self.global_step += 1
                    if self.step % self.progress_every == 0 or self.step == self.steps_per_epoch:
                        elapsed = time.perf_counter() - epoch_start
                        self.progress({"event": "step", "epoch": self.epoch, "step": self.step,
                                       "loss": loss_sum.item() / max(count, 1),
                                       "accuracy": correct.item() / max(count, 1),
                                       "images_per_s": count * self.world / max(elapsed, 1e-9),
                                       "lr": self.optimizer.param_groups[0]["lr"]})
                    if self.stop_requested:
                        self.save("last.pt")
                        raise Interrupted()
                train_loss, train_acc = loss_sum.item() / max(count, 1), correct.item() / max(count, 1)
                epoch_time = time.perf_counter() - epoch_start
                metrics = evaluate(self.model, self.dataset.test, self.pre, self.device, amp=c.amp,
                                   channels_last=c.channels_last) if self.rank == 0 else {"accuracy": 0.0}
                self.epoch += 1
                self.step = 0
                record = {"epoch": self.epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                          "test_accuracy": metrics["accuracy"], "test_loss": metrics.get("loss"),
                          "lr": self.optimizer.param_groups[0]["lr"], "seconds": epoch_time,
                          "images_per_s": count * self.world / max(epoch_time, 1e-9)}
                improved = metrics["accuracy"] > self.best
                if improved:
                    self.best = metrics["accuracy"]
                self.log(record)
                self.save("last.pt")
                if improved:
                    self.save("best.pt")
                self.progress({"event": "epoch", **record, "best": self.best})
        finally:
            if previous is not None and self.rank == 0:
                signal.signal(signal.SIGINT, previous)
        total = time.perf_counter() - start
        return {"epochs": self.epoch, "best_test_accuracy": self.best, "seconds": total,
                "images_per_s": images_seen / max(total, 1e-9), "device": self.device, "run_dir": str(self.out)}

    def _on_sigint(self, signum, frame):
        if self.stop_requested:          # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop_requested = True


# ----------------------------------------------------------- evaluation --

def evaluate(model, split: Split, pre, device: str, batch: int = 512, amp: str = "off",
             channels_last: bool = False, top: int = 5) -> dict:
    """Accuracy, top-k accuracy, loss, confusion matrix and per-class accuracy on a split."""
    import torch
    import torch.nn.functional as F
    model.eval()
    n = len(split.labels)
    labels = torch.as_tensor(split.labels)
    classes = int(max(labels.max().item() + 1, 1))
    confusion = torch.zeros(classes, classes, dtype=torch.long)
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
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            k = min(top, logits.shape[1])
            correct_top += (logits.topk(k, 1).indices == yb[:, None]).any(1).sum().item()
            pred = logits.argmax(1).cpu()
            confusion.index_put_((labels[start:start + batch], pred), torch.ones_like(pred), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1).float()).tolist()
    return {"accuracy": confusion.diag().sum().item() / max(n, 1), f"top{top}_accuracy": correct_top / max(n, 1),
            "loss": loss_sum / max(n, 1), "confusion": confusion.tolist(), "per_class_accuracy": per_class, "count": n}


# ----------------------------------------------------------------- DDP --

def distributed_worker(rank: int, world: int, init_file: str, spec: tuple, dataset: Dataset, config: TrainConfig,
                       out: str, result_file: str) -> None:
    """One process of a DistributedDataParallel run (gloo on CPU, nccl on CUDA); rank 0 logs and saves."""
    import torch
    import torch.distributed as dist

    import cnndsl
    source, filename, (c, h, w) = spec      # the IR is rebuilt here: compiling is cheaper than pickling it
    graph = cnndsl.compile(source, filename=filename, input_shape=(h, w, c))
    backend = "nccl" if pick_device(config.device).startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        trainer = Trainer(graph, dataset, config, Path(out), rank=rank, world=world)
        summary = trainer.run()
        if rank == 0:
            torch.save(trainer.model.state_dict(), result_file)
            Path(result_file + ".json").write_text(json.dumps(summary))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train_distributed(graph: Graph, dataset: Dataset, config: TrainConfig, out: Path, nproc: int) -> dict:
    """Run `nproc` DDP processes on this machine (torch.multiprocessing); returns rank 0's summary."""
    import tempfile

    import torch.multiprocessing as mp
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        result = os.path.join(tmp, "final.pt")
        spec = (graph.source, graph.filename, tuple(graph.input_shape))
        mp.spawn(distributed_worker, args=(nproc, init_file, spec, dataset, config, str(out), result),
                 nprocs=nproc, join=True)
        return json.loads(Path(result + ".json").read_text())
