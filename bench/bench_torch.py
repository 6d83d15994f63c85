"""Benchmark: cnndsl-built VGG-16 and ResNet-50 against torchvision's, side by side on the same device.

Each cell runs in its own process (so peak memory is that configuration's): training step and inference
throughput in images/s with bf16 autocast and channels_last, eager and (with --compile) torch.compile.
Throughput is the batch over the median step time (one slow step from a noisy neighbour does not move
it); with --rounds R each side runs R times in alternating order (tv, ours, ours, tv, ...) and keeps its
best, so drift in the machine's speed during the run does not favour either side.
Peak memory is torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on the CPU.

    python bench/bench_torch.py --device cpu --batch 4 --image 112 --steps 5
    python bench/bench_torch.py --device cuda --batch 256 --image 224 --steps 30 --compile
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(impl: str, model: str, image: int):
    import torch
    import torchvision

    import cnndsl
    torch.manual_seed(0)
    if impl == "torchvision":
        return torchvision.models.get_model(model, weights=None)
    graph = cnndsl.compile(ROOT / "specs" / f"{model}.cnn", input_shape=(image, image, 3))
    return cnndsl.to_torch(graph, logits=True)


def make_step(net, batch: int, image: int, mode: str, compiled: bool, device: str, amp: bool = True):
    """One training step (forward, backward, SGD) or one inference forward of `net` on a fixed batch."""
    import torch
    net = net.to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, image, image, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    fn = torch.compile(net) if compiled else net
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    net.train(mode == "train")

    def step():
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
            if mode == "train":
                loss = torch.nn.functional.cross_entropy(fn(x), y)
            else:
                with torch.no_grad():
                    return fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(step, device: str) -> float:
    import torch
    start = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def worker(impl, model, mode, compiled, batch, image, steps, device) -> dict:
    import torch
    step = make_step(build(impl, model, image), batch, image, mode, compiled, device)
    for _ in range(3 if not compiled else 5):      # warm-up (and compilation)
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = [timed(step, device) for _ in range(steps)]
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"images_per_s": batch / statistics.median(times), "peak_bytes": peak}


def interleaved(model, mode, batch, image, steps, device, amp) -> tuple[float, float]:
    """Both models in one process, steps alternating (tv, ours, ours, tv, ...): median images/s of each.

    The fairest speed comparison on a machine whose speed drifts; it says nothing about peak memory.
    """
    import torch
    tv_step = make_step(build("torchvision", model, image), batch, image, mode, False, device, amp)
    torch.manual_seed(0)
    ours_step = make_step(build("cnndsl", model, image), batch, image, mode, False, device, amp)
    for _ in range(2):
        tv_step(), ours_step()
    times: dict[str, list[float]] = {"tv": [], "ours": []}
    for i in range(steps):
        order = (("tv", tv_step), ("ours", ours_step)) if i % 2 == 0 else (("ours", ours_step), ("tv", tv_step))
        for key, step in order:
            times[key].append(timed(step, device))
    return batch / statistics.median(times["tv"]), batch / statistics.median(times["ours"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image", type=int, default=112)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", default="vgg16,resnet50")
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, in alternating order; best kept")
    ap.add_argument("--interleaved", action="store_true",
                    help="speed only: both models in one process, steps alternating (eager)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--worker", nargs=7, metavar=("IMPL", "MODEL", "MODE", "COMPILED", "BATCH", "IMAGE", "STEPS"))
    args = ap.parse_args()
    if args.worker:
        impl, model, mode, compiled, batch, image, steps = args.worker
        print(json.dumps(worker(impl, model, mode, compiled == "1", int(batch), int(image), int(steps),
                                args.device)))
        return
    import torch
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    if args.interleaved:
        print(f"torch {torch.__version__} on {device_name}; batch {args.batch}, {args.image}x{args.image}, "
              f"{args.steps} alternating steps each (median), {'fp32' if args.fp32 else 'bf16 autocast'}, "
              "channels_last, eager, one process")
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                tv, ours = interleaved(model, mode, args.batch, args.image, args.steps, args.device, not args.fp32)
                print(f"{model:<9} {mode:<6} torchvision {tv:9.2f} img/s  cnndsl {ours:9.2f} img/s  "
                      f"ratio {ours / tv:6.3f}", flush=True)
        return
    print(f"torch {torch.__version__} on {device_name}; batch {args.batch}, {args.image}x{args.image}, "
          f"{args.steps} timed steps (median), best of {args.rounds} alternating rounds, bf16 autocast, "
          "channels_last")
    print(f"{'model':<9} {'mode':<6} {'compile':<8} {'torchvision img/s':>18} {'cnndsl img/s':>13} {'ratio':>6}"
          f" {'peak tv MiB':>12} {'peak ours MiB':>14} {'mem ratio':>9}")
    for model in args.models.split(","):
        for mode in args.modes.split(","):
            for compiled in ([False, True] if args.compile else [False]):
                cells: dict[str, dict] = {}
                for r in range(args.rounds):
                    for impl in (("torchvision", "cnndsl") if r % 2 == 0 else ("cnndsl", "torchvision")):
                        cmd = [sys.executable, __file__, "--device", args.device, "--worker", impl, model, mode,
                               "1" if compiled else "0", str(args.batch), str(args.image), str(args.steps)]
                        res = subprocess.run(cmd, capture_output=True, text=True)
                        if res.returncode != 0:
                            raise RuntimeError(res.stderr[-2000:])
                        got = json.loads(res.stdout.strip().splitlines()[-1])
                        best = cells.setdefault(impl, got)
                        best["images_per_s"] = max(best["images_per_s"], got["images_per_s"])
                        best["peak_bytes"] = min(best["peak_bytes"], got["peak_bytes"])
                tv, ours = cells["torchvision"], cells["cnndsl"]
                print(f"{model:<9} {mode:<6} {str(compiled):<8} {tv['images_per_s']:18.2f} "
                      f"{ours['images_per_s']:13.2f} {ours['images_per_s'] / tv['images_per_s']:6.3f}"
                      f" {tv['peak_bytes'] / 2**20:12.0f} {ours['peak_bytes'] / 2**20:14.0f}"
                      f" {ours['peak_bytes'] / tv['peak_bytes']:9.3f}", flush=True)


if __name__ == "__main__":
    main()
