"""`cnndsl calibrate`: measure this machine with PyTorch (CPU, float32) and save a latency profile that
`cnndsl analyze --device local` reads (cnndsl.analysis.profiles, cnndsl.analysis.latency)."""
from __future__ import annotations

import json
import os
import statistics
import time

import click

from .common import FiniteFloat, _guard, _write_atomic, main

# conv shapes per efficiency class: (in channels, out channels, kernel, stride, size, groups)
CONV_SHAPES = {
    "conv": (64, 64, 3, 1, 56, 1),
    "conv1x1": (256, 64, 1, 1, 56, 1),
    "stem": (3, 64, 7, 2, 112, 1),
    "grouped": (128, 128, 3, 1, 28, 32),
    "grouped_wide": (256, 256, 3, 1, 14, 8),
    "depthwise": (96, 96, 3, 1, 56, 96),
}
MATMUL_SIZES = (64, 128, 256, 512, 1024)
COPY_SIZES = (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26)     # bytes per tensor (moved: 2x)


def _time(fn, budget: float, max_reps: int = 10_000) -> float:
    """Median seconds of one call of `fn` (two warm-up calls, then as many as fit in `budget`, at least 5)."""
    fn()
    fn()
    times: list[float] = []
    end = time.perf_counter() + budget
    while len(times) < 5 or (time.perf_counter() < end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(seconds: float = 10.0, threads: int | None = None, log=None) -> dict:
    """A CPU float32 profile of this machine (see cnndsl.analysis.profiles for the fields)."""
    import platform

    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    say = log or (lambda _msg: None)
    slot = seconds / (len(MATMUL_SIZES) + len(CONV_SHAPES) + len(COPY_SIZES) + 7)
    with torch.inference_mode():
        # per-op overhead: a tiny op through an nn.Module call, as an eager forward runs it
        relu = nn.ReLU()
        tiny = torch.ones(1)
        launch = _time(lambda: relu(tiny), slot)
        say(f"per-op overhead {launch * 1e6:.2f} us")

        # matrix multiply at a few sizes: peak rate and the fixed cost of a compute-bound kernel
        points = []
        for n in MATMUL_SIZES:
            a, b = torch.randn(n, n), torch.randn(n, n)
            t = _time(lambda: torch.mm(a, b), slot)
            points.append((2.0 * n ** 3, t))
            say(f"matmul {n}: {2 * n ** 3 / t / 1e9:.1f} GFLOP/s")
        peak = max(w / t for w, t in points)
        # the fixed cost a compute-bound kernel pays beyond its work at peak: the median over the small sizes
        ramp = max(statistics.median(t - w / peak - launch for w, t in points[:3]), 1e-7)
        efficiency = {"matmul": 1.0}

        # conv2d for typical shapes of each class: the fraction of the matmul peak each reaches
        for cls, (cin, cout, k, stride, size, groups) in CONV_SHAPES.items():
            conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False).eval()
            x = torch.randn(1, cin, size, size)
            t = _time(lambda: conv(x), slot)
            out = (size + 2 * (k // 2) - k) // stride + 1
            flops = 2.0 * cout * out * out * (cin // groups) * k * k
            efficiency[cls] = min(1.0, max(1e-4, flops / max(t - launch - ramp, t * 0.05) / peak))
            say(f"conv {cls}: {flops / t / 1e9:.1f} GFLOP/s ({efficiency[cls]:.0%} of peak)")

        # memory: copies of growing size (caches, then DRAM); elementwise ops against a copy
        curve = []
        for nbytes in COPY_SIZES:
            src = torch.ones(nbytes // 4)
            dst = torch.empty_like(src)
            t = _time(lambda: dst.copy_(src), slot, max_reps=2_000)
            curve.append([2.0 * nbytes, 2.0 * nbytes / max(t - launch, t * 0.05)])
            say(f"copy {nbytes >> 10} KiB: {curve[-1][1] / 1e9:.1f} GB/s")
        efficiency["memory"] = 1.0           # the curve is what copies reach

        # elementwise (batch norm, activation) and pooling: their rate against the matmul peak
        x = torch.randn(1, 64, 56, 56)
        for cls, module, flops in (
                ("elementwise", nn.BatchNorm2d(64).eval(), x.numel()),
                ("elementwise", nn.ReLU(), x.numel()),
                ("pool", nn.MaxPool2d(3, 2, 1), 64 * 28 * 28 * 9),
                ("pool", nn.AvgPool2d(2, 2), 64 * 28 * 28 * 4)):
            t = _time(lambda: module(x), slot)
            e = min(1.0, max(1e-5, flops / max(t - launch, t * 0.05) / peak))
            efficiency[cls] = min(efficiency.get(cls, 1.0), e) if cls == "pool" else \
                (efficiency[cls] * e) ** 0.5 if cls in efficiency else e
            say(f"{type(module).__name__}: {flops / t / 1e9:.2f} G elements/s")

        # small maps: the same conv work on 7x7 (256 channels) against 56x56 (64 channels)
        conv = nn.Conv2d(256, 256, 3, 1, 1, bias=False).eval()
        x = torch.randn(1, 256, 7, 7)
        t = _time(lambda: conv(x), slot)
        small_eff = 2.0 * 256 * 256 * 9 * 49 / max(t - launch, t * 0.05) / peak
        half = 49.0 * max(efficiency["conv"] / small_eff - 1.0, 0.0)
        say(f"conv on 7x7: {small_eff:.0%} of peak (half efficiency at {half:.0f} output pixels)")

        # the fixed cost of a small conv beyond its work at the conv rate
        conv = nn.Conv2d(32, 32, 3, 1, 1, bias=False).eval()
        x = torch.randn(1, 32, 8, 8)
        t = _time(lambda: conv(x), slot)
        small = 2.0 * 32 * 32 * 9 * 64
        ramp = max(ramp, t - launch - small / (peak * efficiency["conv"] * 64 / (64 + half)))
        say(f"small conv fixed cost {ramp * 1e6:.1f} us")
    for i in range(1, len(curve)):          # keep the curve's sizes increasing (they are) and its rates sane
        curve[i][1] = max(curve[i][1], 1e6)
    return {"name": "local", "kind": "cpu",
            "source": f"cnndsl calibrate: {platform.machine()} {platform.processor() or ''}".strip()
                      + f", torch {torch.__version__}, {threads} threads, {time.strftime('%Y-%m-%d')}",
            "threads": threads,
            "peak_flops": {"float32": peak}, "bandwidth": curve[-1][1], "bandwidth_curve": curve,
            "launch_s": launch, "ramp_s": ramp, "spatial_half": half, "efficiency": efficiency}


@main.command()
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the profile here (default: $XDG_CONFIG_HOME/cnndsl/profiles/local.json).")
@click.option("--seconds", type=FiniteFloat(0.5, 600), default=10.0, show_default=True,
              help="About how long to measure.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="torch.set_num_threads for the measurement (default: PyTorch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Also print the profile as JSON.")
@_guard
def calibrate(out, seconds, threads, as_json):
    """Measure this machine's CPU with PyTorch (matrix-multiply and conv2d throughput, memory bandwidth,
    per-op overhead) and save a latency profile for `cnndsl analyze --device local`."""
    from ..analysis.profiles import local_path, validate
    profile = measure(seconds, threads, log=lambda m: click.echo(m, err=True))
    validate(profile)           # what analyze will accept
    path = out or local_path()
    if out is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomic(path, (json.dumps(profile, indent=1) + "\n").encode("utf-8"))
    click.echo(f"saved profile '{profile['name']}' to {path}", err=True)
    if as_json:
        click.echo(json.dumps(profile))
