"""Benchmark: cnndsl analyze against torchinfo, fvcore, ptflops and torchscan, side by side in one run.

Every tool is timed end to end as a user pays for it: a fresh Python process that imports the tool, builds
the model (torchvision's, for the peers) and computes its parameter/MAC summary. cnndsl runs its real CLI.
Also: in-process compile+analyze latency, and analysis time against network depth.

    python bench/bench_analyze.py [--repeat 5] [--models vgg16,resnet50]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEERS = {
    "torchinfo": "import torchinfo; torchinfo.summary(m, (1, 3, 224, 224), verbose=0)",
    "fvcore": ("from fvcore.nn import FlopCountAnalysis, parameter_count; import torch; "
               "f = FlopCountAnalysis(m, torch.zeros(1, 3, 224, 224)); f.unsupported_ops_warnings(False); "
               "f.uncalled_modules_warnings(False); f.total(); parameter_count(m)"),
    "ptflops": ("from ptflops import get_model_complexity_info; "
                "get_model_complexity_info(m, (3, 224, 224), as_strings=False, print_per_layer_stat=False)"),
    "torchscan": ("import torchscan, io, contextlib\nwith contextlib.redirect_stdout(io.StringIO()): "
                  "torchscan.summary(m, (3, 224, 224))"),
}


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd}: {res.stderr[-500:]}")
    return statistics.median(times)


def peer_cmd(peer: str, model: str) -> list[str]:
    code = f"import torchvision\nm = torchvision.models.{model}(weights=None).eval()\n{PEERS[peer]}\n"
    return [sys.executable, "-c", code]


def in_process(spec: str, repeat: int = 200) -> float:
    import cnndsl
    text = (ROOT / "specs" / spec).read_text()
    cnndsl.analyze(cnndsl.compile_text(text))
    best = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            cnndsl.analyze(cnndsl.compile_text(text)).totals
        best.append((time.perf_counter() - start) / repeat)
    return min(best)


def depth_curve(depths=(1000, 2000, 5000, 10000)) -> list[tuple[int, float, float]]:
    import cnndsl
    rows = []
    for d in depths:
        written = "input 32x32x3\n" + " + ".join(["conv3-8"] * d)
        repeated = f"input 32x32x3\nconv3-8 x{d}"
        out = []
        for text in (written, repeated):
            start = time.perf_counter()
            cnndsl.analyze(cnndsl.compile_text(text)).to_dict()
            out.append(time.perf_counter() - start)
        rows.append((d, *out))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default="vgg16,resnet50,resnet152")
    args = ap.parse_args()

    print(f"python {sys.version.split()[0]} on {sys.platform}")
    print("\n## End to end, fresh process per run (median of", args.repeat, "runs), seconds")
    startup = wall([sys.executable, "-c", "pass"], args.repeat)
    print(f"bare interpreter start: {startup:.3f}")
    header = f"{'model':<10} {'cnndsl':>8} " + " ".join(f"{p:>10}" for p in PEERS) + "   ratio peer/cnndsl"
    print(header)
    for model in args.models.split(","):
        ours = wall([sys.executable, "-m", "cnndsl", "analyze", "--json", f"specs/{model}.cnn"], args.repeat)
        table = wall([sys.executable, "-m", "cnndsl", "analyze", f"specs/{model}.cnn"], args.repeat)
        peers = {p: wall(peer_cmd(p, model), args.repeat) for p in PEERS}
        ratios = " ".join(f"{peers[p] / ours:5.1f}x" for p in PEERS)
        print(f"{model:<10} {ours:8.3f} " + " ".join(f"{peers[p]:10.3f}" for p in PEERS) + f"   {ratios}"
              f"   (table output: {table:.3f})")

    print("\n## In process: compile + analyze (best mean of 5 x 200), milliseconds")
    for spec in ("vgg16.cnn", "resnet50.cnn", "resnet152.cnn", "googlenet.cnn"):
        print(f"{spec:<16} {in_process(spec) * 1e3:7.2f} ms")

    print("\n## Depth: conv layers (each + ReLU = 2 IR nodes), seconds for compile + analyze + to_dict")
    print(f"{'layers':>7} {'written out':>12} {'as xN':>8}")
    for d, written, repeated in depth_curve():
        print(f"{d:>7} {written:12.3f} {repeated:8.3f}")


if __name__ == "__main__":
    main()
