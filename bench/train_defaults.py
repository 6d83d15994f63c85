"""Benchmark: choose `cnndsl train`'s defaults (optimizer, lr, warm-up, weight decay, batch, epochs) by measurement.

Trains specs/lenet5.cnn through the library API (cnndsl.compile + Trainer) on scikit-learn's digits (1,437 train /
360 test images, cnndsl's fixed 80/20 split) and Fashion-MNIST (60,000 / 10,000, the Debian files), one CPU thread,
a fresh temporary run folder per run, and reads the test accuracy after every epoch from the run's metrics.jsonl.
CIFAR-10 is added (a small conv-bn-relu net, 10,000 training images) only where cnndsl finds its python batches.

Stages (--full):
  1. every grid point, seed 0, on digits for 1, 3 and 10 epochs and Fashion-MNIST for 1 and 3 epochs;
  2. the best grid points (by mean test accuracy over those five cells), the best of each optimizer and the
     current defaults again with seed 1;
  3. a: the leader's neighbours just past the grid (lr x3, half the batch, AdamW with wd 5e-4), seeds 0 and 1;
     b: the finalists (the best two, and the best of each optimizer) and the current defaults on Fashion-MNIST for
     10 epochs, on a 5,000-image Fashion-MNIST subset (a small data set) for 1, 3 and 10 epochs with two seeds,
     and on CIFAR-10 if present; the winner is the finalist with the best mean over all these cells;
     c: the winner with the step and constant schedules instead of cosine.
--quick runs a handful of grid points on digits and a 5,000-image Fashion-MNIST subset (< 3 minutes).
--confirm OPT,LR,WD,BATCH checks a winner: its neighbours (lr x3, batch x2 and /2) with two seeds, and it against
the best SGD, AdamW lr 3e-3 and the current defaults on a second network (conv-bn-relu, BN_SPEC) (about 13 minutes).

    python bench/train_defaults.py --full --append bench/RESULTS.md     # about 30 minutes on a 2-core VM
    python bench/train_defaults.py --confirm adamw,0.009,0.05,64 --append bench/RESULTS.md
    python bench/train_defaults.py --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BN_SPEC = """input 32x32x{channels}
conv3-32 bn | conv3-32 bn | maxpool2
| conv3-64 bn | conv3-64 bn | maxpool2
| conv3-128 bn | maxpool2
| gap | fc10 | softmax
"""


class Cfg(NamedTuple):
    optimizer: str
    lr: float
    warmup: float       # epochs
    wd: float
    batch: int
    schedule: str = "cosine"

    def label(self) -> str:
        return (f"{self.optimizer} lr={self.lr:g} warmup={self.warmup:g} wd={self.wd:g} batch={self.batch}"
                + ("" if self.schedule == "cosine" else f" {self.schedule}"))


class Cell(NamedTuple):
    data: str               # digits | fashion-mnist | cifar10
    epochs: int
    limit: Optional[int] = None
    spec: str = "lenet5"    # lenet5 | bnnet (BN_SPEC); CIFAR-10 always gets bnnet

    def label(self) -> str:
        name = {"digits": "digits", "fashion-mnist": "fmnist", "cifar10": "cifar10"}[self.data]
        if self.limit:
            name += f"-{self.limit // 1000}k"
        if self.spec != "lenet5" and self.data != "cifar10":
            name += f" {self.spec}"
        return f"{name} e{self.epochs}"


CURRENT = Cfg("sgd", 0.05, 0, 5e-4, 128)      # today's defaults


def grid() -> list[Cfg]:
    out = []
    for batch in (64, 128):
        for lr in (0.01, 0.05, 0.1):
            for warmup in (0, 1):
                out.append(Cfg("sgd", lr, warmup, 5e-4, batch))
        for lr in (3e-4, 1e-3, 3e-3):
            for wd in (0.05, 1e-4):
                out.append(Cfg("adamw", lr, 0, wd, batch))
    return out


MAIN = [Cell("digits", 1), Cell("digits", 3), Cell("digits", 10), Cell("fashion-mnist", 1), Cell("fashion-mnist", 3)]


class Bench:
    def __init__(self, verbose: bool = True):
        import torch
        torch.set_num_threads(1)
        import cnndsl
        from cnndsl.train import data as data_mod
        from cnndsl.train.trainer import TrainConfig, Trainer
        self.cnndsl, self.data_mod, self.TrainConfig, self.Trainer = cnndsl, data_mod, TrainConfig, Trainer
        self.fields = {f.name for f in dataclasses.fields(TrainConfig)}
        self.graphs = {"lenet5": cnndsl.compile(ROOT / "specs" / "lenet5.cnn")}
        self.datasets: dict = {}
        self.results: dict = {}         # (cfg, cell, seed) -> record
        self.verbose = verbose

    def dataset(self, name: str):
        if name not in self.datasets:
            graph = self.graph_for(Cell(name, 1))
            self.datasets[name] = self.data_mod.load(name, None, size=tuple(graph.input_shape[1:]))
        return self.datasets[name]

    def graph_for(self, cell: "Cell"):
        if cell.data == "cifar10" or cell.spec == "bnnet":
            channels = 3 if cell.data == "cifar10" else 1
            key = f"bnnet{channels}"
            if key not in self.graphs:
                self.graphs[key] = self.cnndsl.compile_text(BN_SPEC.format(channels=channels), filename="<bnnet>")
            return self.graphs[key]
        return self.graphs["lenet5"]

    def cifar_available(self) -> tuple[bool, str]:
        try:
            self.dataset("cifar10")
            return True, "found"
        except Exception as e:      # DataError: no python batches anywhere cnndsl looks
            return False, f"{type(e).__name__}: {getattr(e, 'message', str(e))}"

    def run(self, cfg: Cfg, cell: Cell, seed: int) -> dict:
        key = (cfg, cell, seed)
        if key in self.results:
            return self.results[key]
        ds = self.dataset(cell.data)
        graph = self.graph_for(cell)
        kwargs = dict(epochs=cell.epochs, optimizer=cfg.optimizer, lr=cfg.lr, schedule=cfg.schedule,
                      warmup_epochs=cfg.warmup, weight_decay=cfg.wd, batch_size=cfg.batch, seed=seed,
                      classes=ds.num_classes, device="cpu", limit_train=cell.limit)
        dropped = sorted(set(kwargs) - self.fields)
        if dropped:
            raise SystemExit(f"TrainConfig no longer has {dropped}; adapt bench/train_defaults.py")
        config = self.TrainConfig(**kwargs)
        with tempfile.TemporaryDirectory(prefix="cnndsl-defaults-") as tmp:
            start = time.perf_counter()
            summary = self.Trainer(graph, ds, config, Path(tmp)).run()
            wall = time.perf_counter() - start
            metrics = Path(tmp) / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.exists() else []
        curve = [json.loads(line)["test_accuracy"] for line in lines if line.strip()]
        rec = {"cfg": cfg._asdict(), "cell": cell._asdict(), "seed": seed, "curve": curve,
               "acc": curve[-1] if curve else 0.0, "diverged": bool(summary.get("diverged")), "seconds": wall,
               "train_seconds": summary.get("seconds")}
        self.results[key] = rec
        if self.verbose:
            print(f"  {cell.label():<12} {cfg.label():<48} seed {seed}: {100 * rec['acc']:5.1f}%"
                  f"{' DIVERGED' if rec['diverged'] else ''}  {wall:5.1f}s", file=sys.stderr, flush=True)
        return rec

    # ------------------------------------------------------------ views --
    def acc(self, cfg: Cfg, cell: Cell, seeds=None) -> Optional[float]:
        vals = [r["acc"] for (c, ce, s), r in self.results.items() if c == cfg and ce == cell
                and (seeds is None or s in seeds)]
        return statistics.mean(vals) if vals else None

    def score(self, cfg: Cfg, cells=MAIN, seeds=None) -> float:
        vals = [self.acc(cfg, cell, seeds) for cell in cells]
        return statistics.mean(v for v in vals if v is not None) if any(v is not None for v in vals) else 0.0

    def seeds_of(self, cfg: Cfg, cell: Cell) -> list[int]:
        return sorted(s for (c, ce, s) in self.results if c == cfg and ce == cell)


def pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def pivot(b: Bench, cfgs: list[Cfg], cells: list[Cell], seeds, title: str) -> list[str]:
    """One row per configuration: mean test accuracy (over `seeds`) in each cell, the mean over cells, and the
    wall seconds of all its runs."""
    head = ["optimizer", "lr", "warmup", "wd", "batch", "schedule"] + [c.label() for c in cells] + ["mean", "s/run"]
    rows = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cfg in sorted(cfgs, key=lambda c: -b.score(c, cells, seeds)):
        secs = [r["seconds"] for (c, ce, s), r in b.results.items() if c == cfg and ce in cells and s in seeds]
        mark = " (current)" if cfg == CURRENT else ""
        rows.append("| " + " | ".join([cfg.optimizer + mark, f"{cfg.lr:g}", f"{cfg.warmup:g}", f"{cfg.wd:g}",
                                       str(cfg.batch), cfg.schedule]
                                      + [pct(b.acc(cfg, cell, seeds)) for cell in cells]
                                      + [f"**{pct(b.score(cfg, cells, seeds))}**",
                                         f"{statistics.mean(secs):.1f}" if secs else "–"]) + " |")
    return rows + [""]


def long_table(b: Bench, cfgs: list[Cfg], cells: list[Cell]) -> list[str]:
    """The requested format: one row per (data set, configuration, epochs), test accuracy per seed, seconds, and
    the accuracy after each epoch of the seed-0 run."""
    head = ["data set", "optimizer", "lr", "warmup", "wd", "batch", "schedule", "epochs", "test acc % (seed 0, 1)",
            "seconds (mean)", "test acc % after each epoch (seed 0)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        for cfg in cfgs:
            seeds = b.seeds_of(cfg, cell)
            if not seeds:
                continue
            recs = [b.results[(cfg, cell, s)] for s in seeds]
            accs = ", ".join(pct(r["acc"]) + ("†" if r["diverged"] else "") for r in recs)
            curve = " ".join(f"{100 * a:.0f}" for a in recs[0]["curve"]) if cell.epochs > 1 else ""
            data = (cell.data + (f" (first {cell.limit:,})" if cell.limit else "")
                    + (f", {cell.spec}" if cell.spec != "lenet5" and cell.data != "cifar10" else ""))
            rows.append("| " + " | ".join([data, cfg.optimizer + (" (current)" if cfg == CURRENT else ""),
                                           f"{cfg.lr:g}", f"{cfg.warmup:g}", f"{cfg.wd:g}", str(cfg.batch),
                                           cfg.schedule, str(cell.epochs), accs,
                                           f"{statistics.mean(r['seconds'] for r in recs):.1f}", curve]) + " |")
    return rows + ["", "† the trainer stopped the run as diverged.", ""]


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()}-core CPU VM ({cpu}), torch {torch.__version__} with 1 thread, "
            f"Python {platform.python_version()}")


def confirm(b: Bench, args, started: float) -> None:
    opt, lr, wd, batch = args.confirm.split(",")
    w = Cfg(opt, float(lr), 0, float(wd), int(batch))
    around = list(dict.fromkeys([w, w._replace(lr=w.lr * 3), w._replace(batch=w.batch * 2),
                                 w._replace(batch=max(1, w.batch // 2))]))
    for seed in (0, 1):
        for cell in MAIN:
            for cfg in around:
                b.run(cfg, cell, seed)
    rivals = list(dict.fromkeys([w, Cfg("adamw", 3e-3, 0, 0.05, 64), Cfg("sgd", 0.1, 0, 5e-4, 64), CURRENT]))
    bn_two = [Cell("digits", e, None, "bnnet") for e in (1, 3)]
    bn_one = [Cell("fashion-mnist", 1, 5000, "bnnet")]
    for cfg in rivals:
        for seed in (0, 1):
            for cell in bn_two:
                b.run(cfg, cell, seed)
        for cell in bn_one:
            b.run(cfg, cell, 0)
    lines = [f"### Confirmation (python bench/train_defaults.py --confirm {args.confirm})", "",
             f"{datetime.date.today().isoformat()}; {machine()}; total {(time.perf_counter() - started) / 60:.1f} min. "
             "bnnet is a second network, five 3x3 conv-bn-relu layers (32-32-64-64-128 channels, max pooling, "
             "global average pooling, fc), at 32x32x1.", ""]
    lines += pivot(b, around, MAIN, {0, 1}, f"lenet5: {w.label()} and its neighbours, mean of seeds 0 and 1")
    lines += pivot(b, rivals, bn_two + bn_one, {0, 1}, "bnnet: digits mean of seeds 0 and 1, Fashion-MNIST first "
                   "5,000 seed 0")
    lines += ["**Per run** (the requested format)", ""] + long_table(b, around, MAIN) + long_table(b, rivals,
                                                                                                 bn_two + bn_one)
    text = "\n".join(lines)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(list(b.results.values()), indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few grid points, digits + 5k Fashion-MNIST (< 3 min)")
    mode.add_argument("--full", action="store_true", help="the whole grid in three stages, the default (about 30 min)")
    mode.add_argument("--confirm", metavar="OPT,LR,WD,BATCH",
                      help="check a winner: its neighbours (lr x3, batch x2 and /2) on the main cells with two seeds, "
                           "and it against sgd lr 0.1 batch 64, adamw lr 0.003 and the current defaults on a second "
                           "network (conv-bn-relu) (about 13 min)")
    ap.add_argument("--top", type=int, default=5, help="grid points that stage 2 reruns with a second seed")
    ap.add_argument("--append", metavar="MARKDOWN", help="append the section to this file (bench/RESULTS.md)")
    ap.add_argument("--json", metavar="FILE", help="write every run's record here")
    args = ap.parse_args()
    b = Bench()
    started = time.perf_counter()
    ok, why = b.cifar_available()
    print(f"CIFAR-10: {'found' if ok else 'not found (' + why + ')'}", file=sys.stderr)

    if args.confirm:
        confirm(b, args, started)
        return
    if args.quick:
        cfgs = [CURRENT, Cfg("sgd", 0.1, 0, 5e-4, 64), Cfg("adamw", 1e-3, 0, 0.05, 128),    # today, best SGD, AdamW
                Cfg("adamw", 9e-3, 0, 0.05, 64)]                    # the --full winner (bench/RESULTS.md)
        cells = [Cell("digits", 1), Cell("digits", 3), Cell("digits", 10), Cell("fashion-mnist", 1, 5000)]
        for cfg in cfgs:
            for cell in cells:
                b.run(cfg, cell, 0)
        best = max(cfgs, key=lambda c: b.score(c, cells, {0}))
        for cfg in dict.fromkeys([best, CURRENT]):
            for cell in cells:
                b.run(cfg, cell, 1)
        finalists, winner = [best], best
        sections = [pivot(b, cfgs, cells, {0}, "Quick: seed 0"), long_table(b, cfgs, cells)]
        main_cells = cells
    else:
        cfgs = grid()
        print(f"stage 1: {len(cfgs)} grid points x {len(MAIN)} cells, seed 0", file=sys.stderr)
        for cell in MAIN:
            for cfg in cfgs:
                b.run(cfg, cell, 0)
        ranked = sorted(cfgs, key=lambda c: -b.score(c, MAIN, {0}))
        best_each = [next(c for c in ranked if c.optimizer == o) for o in ("sgd", "adamw")]
        again = list(dict.fromkeys(ranked[:args.top] + best_each + [CURRENT]))
        print(f"stage 2: seed 1 for {len(again)} grid points", file=sys.stderr)
        for cell in MAIN:
            for cfg in again:
                b.run(cfg, cell, 1)
        leader = max(again, key=lambda c: b.score(c, MAIN, {0, 1}))
        neighbours = [leader._replace(lr=leader.lr * 3), leader._replace(batch=leader.batch // 2)]
        if leader.optimizer == "adamw":     # the weight decay the CLI defaults to today, for both optimizers
            neighbours.append(leader._replace(wd=5e-4))
        neighbours = [c for c in dict.fromkeys(neighbours) if c not in again]
        print(f"stage 3a: {len(neighbours)} neighbours of the leader past the grid's edge, seeds 0 and 1",
              file=sys.stderr)
        for seed in (0, 1):
            for cell in MAIN:
                for cfg in neighbours:
                    b.run(cfg, cell, seed)
        two_seeds = again + neighbours
        ranked2 = sorted(two_seeds, key=lambda c: -b.score(c, MAIN, {0, 1}))
        finalists = list(dict.fromkeys(ranked2[:2] + [next(c for c in ranked2 if c.optimizer == o)
                                                      for o in ("sgd", "adamw")]))
        compare = list(dict.fromkeys(finalists + [CURRENT]))
        print(f"stage 3b: {len(compare)} finalists on more data", file=sys.stderr)
        extra = [Cell("fashion-mnist", 10)]
        small = [Cell("fashion-mnist", e, 5000) for e in (1, 3, 10)]
        for cfg in compare:
            for cell in extra:
                b.run(cfg, cell, 0)
            for seed in (0, 1):
                for cell in small:
                    b.run(cfg, cell, seed)
        cifar_cells = [Cell("cifar10", e, 10000) for e in (1, 3)] if ok else []
        for cfg in compare:
            for cell in cifar_cells:
                b.run(cfg, cell, 0)
        every = MAIN + extra + small + cifar_cells
        winner = max(finalists, key=lambda c: b.score(c, every, {0, 1}))     # best across all the data sets
        schedules = [winner._replace(schedule=s) for s in ("step", "constant")]
        for cfg in schedules:
            for cell in MAIN:
                b.run(cfg, cell, 0)
        main_cells = MAIN
        sections = [
            pivot(b, cfgs, MAIN, {0}, "Stage 1: every grid point, seed 0 (test accuracy %, sorted by the mean)"),
            pivot(b, two_seeds, MAIN, {0, 1}, "Stages 2 and 3a: the best grid points, the current defaults and the "
                  "leader's neighbours past the grid (lr x3, half the batch, AdamW with wd 5e-4), mean of seeds 0 "
                  "and 1"),
            pivot(b, compare, every, {0, 1}, "Stage 3b: finalists on every cell (Fashion-MNIST 10 epochs and "
                  + ("CIFAR-10 " if ok else "") + "seed 0 only, the rest mean of seeds 0 and 1)"),
            pivot(b, [winner] + schedules, MAIN, {0}, "Stage 3c: the winner's schedule, seed 0"),
            ["**Per run, finalists and current defaults** (the requested format)", ""]
            + long_table(b, compare + schedules, every),
            ["<details><summary>Every run of stages 1 to 3a</summary>", ""]
            + long_table(b, cfgs + neighbours, MAIN) + ["</details>", ""],
        ]

    # ------------------------------------------------------ the verdict --
    seeds = {0, 1}
    sched_best = max([winner] + [c for c in {k[0] for k in b.results} if c._replace(schedule="cosine") == winner],
                     key=lambda c: b.score(c, main_cells, {0}) - (0 if c == winner else 0.01))  # one seed: a margin
    w, cur = winner, CURRENT
    digit_cells = [c for c in main_cells if c.data == "digits" and not c.limit]
    epochs = max(digit_cells, key=lambda c: (b.acc(w, c, seeds), c.epochs)).epochs   # the best of 1, 3, 10 on digits
    lines = [f"## Training defaults (python bench/train_defaults.py{' --quick' if args.quick else ''})", "",
             f"{datetime.date.today().isoformat()}; {machine()}; lenet5 (tanh, avgpool) on digits and Fashion-MNIST"
             + ("; a 5-conv bn-relu net on CIFAR-10" if ok else "")
             + f"; total {(time.perf_counter() - started) / 60:.1f}"
             " min. Every run is a fresh Trainer (cosine schedule unless a row says otherwise, no augmentation), test "
             "accuracy after the last epoch. digits: 1,437 training / 360 test images (cnndsl's fixed 80/20 split, "
             "so one image is 0.28 points); Fashion-MNIST: 60,000 / 10,000.", "",
             "CIFAR-10: " + ("found, measured below." if ok else
                             f"not on this machine ({why}); no Debian package ships it (apt-cache search cifar finds "
                             "none) and the PyPI packages named for it that were looked at (cifar10 1.0.0, cifar-utils "
                             "0.2: 8 KB and 4 KB wheels) are downloaders, so it was skipped."), ""]
    rec = [f"**Recommendation:** `--optimizer {w.optimizer} --lr {w.lr:g} --schedule {sched_best.schedule} "
           f"--warmup {w.warmup:g} --weight-decay {w.wd:g} --batch-size {w.batch} --epochs {epochs}`", "",
           f"- mean test accuracy over {', '.join(c.label() for c in main_cells)} (seeds 0 and 1): "
           f"**{pct(b.score(w, main_cells, seeds))}%** against **{pct(b.score(cur, main_cells, seeds))}%** for the "
           f"current defaults ({cur.label()}).",
           "- per cell, recommended vs current: " + "; ".join(
               f"{cell.label()} {pct(b.acc(w, cell, seeds))} vs {pct(b.acc(cur, cell, seeds))}" for cell in main_cells)
           + "."]
    if not args.quick:
        for cells, what in (([Cell("fashion-mnist", 10)], "Fashion-MNIST, 10 epochs (seed 0)"),
                            ([Cell("fashion-mnist", e, 5000) for e in (1, 3, 10)], "Fashion-MNIST first 5,000, 1/3/10 "
                             "epochs (seeds 0, 1)")) + ((([Cell("cifar10", e, 10000) for e in (1, 3)],
                                                          "CIFAR-10 first 10,000, 1/3 epochs"),) if ok else ()):
            rec.append(f"- {what}: " + " / ".join(pct(b.acc(w, c)) for c in cells) + " vs current "
                       + " / ".join(pct(b.acc(cur, c)) for c in cells) + ".")
        others = [c for c in {k[0] for k in b.results} if c._replace(schedule="cosine") == w and c != w]
        rec.append("- schedule (seed 0, mean over the same cells): " + ", ".join(
            f"{c.schedule} {pct(b.score(c, main_cells, {0}))}" for c in [w] + sorted(others)) + ".")
    lines += rec + [""]
    for s in sections:
        lines += s
    text = "\n".join(lines)
    print(text)
    if args.append:
        with open(args.append, "a") as f:       # append only: the file's other sections stay as they are
            f.write("\n" + text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(list(b.results.values()), indent=1))


if __name__ == "__main__":
    main()
