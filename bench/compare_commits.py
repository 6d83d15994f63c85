"""Compile + analyze speed of two commits side by side, in alternating fresh processes on the same machine.

    python bench/compare_commits.py OLD_REF [NEW_REF=working tree] [--rounds 5]

OLD_REF is checked out into a temporary git worktree; each round times every spec in-process (best of 5
compile + analyze + to_dict) once per tree, alternating, so that machine load hits both alike. Prints the best
per spec and tree and the ratio new/old.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ["vgg16", "resnet152", "googlenet", "mobilenet_v2"]
TIMER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import cnndsl
out = {}
texts = {name: open(f"{sys.argv[1]}/specs/{name}.cnn").read() for name in sys.argv[2].split(",")}
texts["5000 x conv3-16 bn"] = "input 32x32x16\n" + "conv3-16 bn\n" * 5000
compile_text = getattr(cnndsl, "compile_text", None) or cnndsl.compile
for name, text in texts.items():
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        cnndsl.analyze(compile_text(text)).to_dict()
        best = min(best, time.perf_counter() - t)
    out[name] = best * 1000
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.old], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            best: dict = {"old": {}, "new": {}}
            for _ in range(args.rounds):
                for label, tree in (("old", old), ("new", ROOT)):
                    res = subprocess.run([sys.executable, "-c", TIMER, str(tree), ",".join(SPECS)], check=True,
                                         capture_output=True, text=True)
                    for name, ms in json.loads(res.stdout).items():
                        best[label][name] = min(ms, best[label].get(name, float("inf")))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    print(f"| spec | {args.old} (ms) | working tree (ms) | new / old |\n|---|---|---|---|")
    for name, ms in best["old"].items():
        new = best["new"][name]
        print(f"| {name} | {ms:.2f} | {new:.2f} | {new / ms:.2f} |")


if __name__ == "__main__":
    main()
