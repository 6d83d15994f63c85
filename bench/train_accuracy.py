"""What `cnndsl train` reaches with its defaults: accuracy per epoch and time to a stated accuracy.

    python bench/train_accuracy.py [--device cpu|cuda|auto] [--epochs N] [--only digits,fashion-mnist,cifar10]

Runs `cnndsl train SPEC --data DATA --quiet` with no other settings (the defaults a newcomer gets) for LeNet-5
on scikit-learn's digits and on Fashion-MNIST, and a small CIFAR-10 network where CIFAR-10's python batches are
found ($CNNDSL_DATA or --data-dir; skipped otherwise). Prints a Markdown table: best test accuracy, the epoch and
the training seconds (the run's own per-epoch training time, test passes excluded) at which each target was first
reached, and wall seconds of the whole command.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CIFAR_NET = """# a small CIFAR-10 network: three conv-bn-relu stages, global pooling, one classifier
input 32x32x3
(conv3-32 bn relu) x2 + maxpool
| (conv3-64 bn relu) x2 + maxpool
| (conv3-128 bn relu) x2 + maxpool
| gap | fc10
"""
RUNS = [("digits", "specs/lenet5.cnn", "digits", (0.90, 0.95, 0.97)),
        ("fashion-mnist", "specs/lenet5.cnn", "fashion-mnist", (0.85, 0.88, 0.90)),
        ("cifar10", None, "cifar10", (0.60, 0.70, 0.80))]


def run(name, spec, data, targets, device, epochs, extra):
    with tempfile.TemporaryDirectory() as tmp:
        if spec is None:
            spec = os.path.join(tmp, "cifar_small.cnn")
            Path(spec).write_text(CIFAR_NET)
        else:
            spec = str(ROOT / spec)
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "cnndsl", "train", spec, "--data", data, "--quiet", "--out", out,
               "--device", device] + (["--epochs", str(epochs)] if epochs else []) + extra
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            return {"name": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        records = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        record = json.loads(Path(out, "run.json").read_text())
    reached, seconds = {}, 0.0
    for r in records:
        seconds += r["seconds"]
        for t in targets:
            if t not in reached and r["test_accuracy"] >= t:
                reached[t] = (r["epoch"], seconds)
    return {"name": name, "epochs": len(records), "best": max(r["test_accuracy"] for r in records),
            "last": records[-1]["test_accuracy"], "train_seconds": seconds, "wall": wall, "reached": reached,
            "targets": targets, "images_per_s": summary["images_per_s"], "device": summary["device"],
            "settings": {k: record["settings"][k] for k in ("optimizer", "lr", "weight_decay", "batch_size",
                                                            "epochs", "schedule")}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, help="override the default epoch count")
    ap.add_argument("--only", help="comma-separated: digits, fashion-mnist, cifar10")
    ap.add_argument("--data-dir", help="where CIFAR-10's python batches are")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for name, spec, data, targets in RUNS:
        if only and name not in only:
            continue
        extra = ["--data-dir", args.data_dir] if args.data_dir and name == "cifar10" else []
        result = run(name, spec, data, targets, args.device, args.epochs, extra)
        rows.append(result)
        print(json.dumps(result, default=str), file=sys.stderr)
    print("| data | network | epochs | best test acc | time to targets (epoch, training s) | training s | "
          "img/s | wall s |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | | | skipped: {r['error'][:80]} | | | | |")
            continue
        reach = ", ".join(f"{t:.0%}: " + (f"ep {r['reached'][t][0]}, {r['reached'][t][1]:.1f} s" if t in r["reached"]
                                          else "not reached") for t in r["targets"])
        net = "LeNet-5" if r["name"] != "cifar10" else "3-stage conv-bn-relu"
        print(f"| {r['name']} | {net} | {r['epochs']} | {r['best']:.4f} | {reach} | {r['train_seconds']:.1f} | "
              f"{r['images_per_s']:.0f} | {r['wall']:.1f} |")
    if rows and "settings" in rows[0]:
        print(f"\nsettings (the defaults): {rows[0]['settings']}; device {rows[0]['device']}")


if __name__ == "__main__":
    main()
