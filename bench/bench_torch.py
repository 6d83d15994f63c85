"""Benchmark: cnndsl-built VGG-16 and ResNet-50 against torchvision's, side by side on the same device.

Each cell runs in its own process (so peak memory is that configuration's): training step and inference
throughput in images/s with bf16 autocast and channels_last, eager and (with --compile) torch.compile.
Peak memory is torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on the CPU.

    python bench/bench_torch.py --device cpu --batch 4 --image 112 --steps 5
    python bench/bench_torch.py --device cuda --batch 256 --image 224 --steps 30 --compile
"""
from __future__ import annotations

import argparse
import json
import resource
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


def worker(impl, model, mode, compiled, batch, image, steps, device) -> dict:
    import torch
    net = build(impl, model, image).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, image, image, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    fn = torch.compile(net) if compiled else net
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def step():
        with torch.autocast(dev_type, dtype=torch.bfloat16):
            if mode == "train":
                loss = torch.nn.functional.cross_entropy(fn(x), y)
            else:
                with torch.no_grad():
                    return fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train(mode == "train")
    for _ in range(3 if not compiled else 5):      # warm-up (and compilation)
        step()
    if dev_type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev_type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if dev_type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"images_per_s": batch * steps / elapsed, "peak_bytes": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image", type=int, default=112)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", default="vgg16,resnet50")
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--worker", nargs=7, metavar=("IMPL", "MODEL", "MODE", "COMPILED", "BATCH", "IMAGE", "STEPS"))
    args = ap.parse_args()
    if args.worker:
        impl, model, mode, compiled, batch, image, steps = args.worker
        print(json.dumps(worker(impl, model, mode, compiled == "1", int(batch), int(image), int(steps),
                                args.device)))
        return
    import torch
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__} on {device_name}; batch {args.batch}, {args.image}x{args.image}, "
          f"{args.steps} timed steps, bf16 autocast, channels_last")
    print(f"{'model':<9} {'mode':<6} {'compile':<8} {'torchvision img/s':>18} {'cnndsl img/s':>13} {'ratio':>6}"
          f" {'peak tv MiB':>12} {'peak ours MiB':>14} {'mem ratio':>9}")
    for model in args.models.split(","):
        for mode in args.modes.split(","):
            for compiled in ([False, True] if args.compile else [False]):
                cells = {}
                for impl in ("torchvision", "cnndsl"):
                    cmd = [sys.executable, __file__, "--device", args.device, "--worker", impl, model, mode,
                           "1" if compiled else "0", str(args.batch), str(args.image), str(args.steps)]
                    res = subprocess.run(cmd, capture_output=True, text=True)
                    if res.returncode != 0:
                        raise RuntimeError(res.stderr[-2000:])
                    cells[impl] = json.loads(res.stdout.strip().splitlines()[-1])
                tv, ours = cells["torchvision"], cells["cnndsl"]
                print(f"{model:<9} {mode:<6} {str(compiled):<8} {tv['images_per_s']:18.2f} "
                      f"{ours['images_per_s']:13.2f} {ours['images_per_s'] / tv['images_per_s']:6.3f}"
                      f" {tv['peak_bytes'] / 2**20:12.0f} {ours['peak_bytes'] / 2**20:14.0f}"
                      f" {ours['peak_bytes'] / tv['peak_bytes']:9.3f}", flush=True)


if __name__ == "__main__":
    main()
