"""Check the latency model (cnndsl.analysis.latency) against this machine's eager PyTorch CPU forward time.

  python bench/latency_check.py [--calibrate] [--profile FILE] [--threads N] [--size 112] [--runs 7]
                                [--only resnet18,vgg11] [--spearman resnet50,vgg16,mobilenet_v2,googlenet]

For every bundled spec (specs/*.cnn) at SIZExSIZE, batch 1, float32: predicted seconds (analyze --device with
the calibrated profile) against the measured median eager forward (torch.set_num_threads fixed, warm-up,
median of --runs runs). Specs that cannot take the size are reported, not hidden. Goal: within 1.5x each.
Per-layer ranking: Spearman's rho between each node's predicted seconds and its module's measured time
(forward pre-hooks and hooks around every module; inline ops such as add and concat have no module and are
left out). Goal: rho >= 0.8. Prints a Markdown section for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def ranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a, b) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def compile_at(path: str, size: int):
    from cnndsl.api import compile_source
    text = open(path, encoding="utf-8").read()
    g = compile_source(text, path, path=path)
    channels = g.input_shape[0]
    return compile_source(text, path, path=path, input_shape=(size, size, channels))


def measure_forward(model, x, runs: int) -> float:
    import torch
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_layers(model, graph, x, runs: int) -> dict[str, float]:
    """Median seconds per node that has a module (hooks around each module call)."""
    import torch
    times: dict[str, list[float]] = {}
    handles = []
    for n in graph.nodes[1:]:
        try:
            module = model.get_submodule(".".join(model.cnndsl_paths[n.name]))
        except AttributeError:
            continue           # an op done inline in forward()

        def pre(_m, _i, name=n.name):
            times.setdefault(name, []).append(-time.perf_counter())

        def post(_m, _i, _o, name=n.name):
            times[name][-1] += time.perf_counter()
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times.clear()
        for _ in range(runs):
            model(x)
    for h in handles:
        h.remove()
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibrate", action="store_true", help="run cnndsl calibrate first (into --profile)")
    ap.add_argument("--profile", default=None, help="profile JSON (default: the local profile)")
    ap.add_argument("--seconds", type=float, default=10.0, help="calibration time")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--only", default=None, help="comma-separated spec names (default: all of specs/*.cnn)")
    ap.add_argument("--spearman", default="resnet50,vgg16,mobilenet_v2,googlenet")
    ap.add_argument("--max-params", type=float, default=2e8, help="skip specs with more weights (build time)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()

    import torch

    from cnndsl.analysis import latency, profiles
    from cnndsl.api import to_torch
    from cnndsl.errors import CnnDslError

    path = args.profile or profiles.local_path()
    if args.calibrate:
        from cnndsl.cli.calibrate import measure
        prof = measure(args.seconds, args.threads, log=lambda m: print(m, file=sys.stderr))
        profiles.validate(prof)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(prof, f, indent=1)
    raw_profile = json.load(open(path))
    profile = profiles.read_profile(path)
    threads = args.threads or raw_profile.get("threads") or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "specs")
    names = args.only.split(",") if args.only else sorted(os.path.basename(p)[:-4]
                                                           for p in glob.glob(os.path.join(root, "*.cnn")))
    rows, skipped = [], []
    for name in names:
        spec = os.path.join(root, name + ".cnn")
        try:
            graph = compile_at(spec, args.size)
        except CnnDslError as e:
            skipped.append((name, e.message.split("\n")[0][:120]))
            continue
        from cnndsl.analysis.passes import counts
        if sum(counts(graph)[0].values()) > args.max_params:
            skipped.append((name, f"more than {args.max_params:.0e} weights (build time)"))
            continue
        predicted = latency.estimate(graph, profile)["totals"]["seconds"]
        model = to_torch(graph).eval()
        x = torch.randn(1, *graph.input_shape)
        measured = measure_forward(model, x, args.runs)
        ratio = predicted / measured
        rows.append({"spec": name, "predicted_ms": predicted * 1e3, "measured_ms": measured * 1e3, "ratio": ratio})
        print(f"{name:24s} predicted {predicted * 1e3:9.2f} ms  measured {measured * 1e3:9.2f} ms  x{ratio:.2f}",
              file=sys.stderr, flush=True)
        del model

    ranking = []
    for name in [s for s in args.spearman.split(",") if s]:
        spec = os.path.join(root, name + ".cnn")
        graph = compile_at(spec, args.size)
        model = to_torch(graph).eval()
        x = torch.randn(1, *graph.input_shape)
        measured = measure_layers(model, graph, x, args.runs)
        predicted = latency.estimate(graph, profile)["layers"]
        keys = sorted(measured)
        rho = spearman([predicted[k]["seconds"] for k in keys], [measured[k] for k in keys])
        ranking.append({"spec": name, "layers": len(keys), "spearman": rho})
        print(f"{name:24s} per-layer Spearman {rho:.3f} over {len(keys)} modules", file=sys.stderr, flush=True)

    within = [r for r in rows if 1 / 1.5 <= r["ratio"] <= 1.5]
    print(f"\n## Latency estimates (python bench/latency_check.py)\n")
    print(f"Machine: {raw_profile.get('source', '?')}; torch.set_num_threads({threads}); input {args.size}x{args.size}, "
          f"batch 1, float32, eager CPU forward under inference_mode, median of {args.runs} runs after 2 warm-ups. "
          f"Profile: launch {profile['launch_s'] * 1e6:.1f} us, ramp {profile['ramp_s'] * 1e6:.1f} us, "
          f"peak {profile['peak_flops']['float32'] / 1e9:.0f} GFLOP/s, DRAM {profile['bandwidth'] / 1e9:.1f} GB/s.\n")
    print(f"Within 1.5x: {len(within)} of {len(rows)} networks; "
          f"median |log ratio| = x{statistics.median(max(r['ratio'], 1 / r['ratio']) for r in rows):.2f}; "
          f"worst x{max(max(r['ratio'], 1 / r['ratio']) for r in rows):.2f}.\n" if rows else "No networks measured.\n")
    print("| spec | predicted ms | measured ms | predicted/measured | within 1.5x |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        ok = "yes" if 1 / 1.5 <= r["ratio"] <= 1.5 else "**no**"
        print(f"| {r['spec']} | {r['predicted_ms']:.2f} | {r['measured_ms']:.2f} | {r['ratio']:.2f} | {ok} |")
    if skipped:
        print("\nSkipped:\n")
        for name, why in skipped:
            print(f"- {name}: {why}")
    if ranking:
        print("\n| spec (per-layer ranking) | modules | Spearman rho | >= 0.8 |")
        print("|---|---:|---:|---|")
        for r in ranking:
            print(f"| {r['spec']} | {r['layers']} | {r['spearman']:.3f} | {'yes' if r['spearman'] >= 0.8 else '**no**'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "skipped": skipped, "ranking": ranking, "profile": raw_profile}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
