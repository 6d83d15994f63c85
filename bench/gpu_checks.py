"""GPU checks of cnndsl's instruments against the device: the training-memory planner against
torch.cuda.max_memory_allocated, and the latency estimate against measured time. Prints one JSON object.

    python bench/gpu_checks.py --device cuda --profile h100-sxm [--memory-batch 64] [--latency-batch 256]
    python bench/gpu_checks.py --device cpu --memory-batch 2 --latency-batch 2 --image 64 --models lenet5   # smoke

Memory: for each model, one AdamW training step (fp32, then bf16 autocast) of the generated module at the given
batch; the planner's `peak` (cnndsl analyze --train) against the allocator's peak (CUDA only; the CPU run reports
the planner's figures). Latency: eager inference (bf16 autocast, channels_last) at --latency-batch, median of CUDA-
event timed runs, against `analyze --device PROFILE --dtype bfloat16`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def analyze(spec: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "cnndsl", "analyze", spec, "--json", *args], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-300:])
    return json.loads(done.stdout)


def memory_check(name: str, device: str, batch: int, image: int, amp: str) -> dict:
    import torch

    import cnndsl
    spec = str(ROOT / "specs" / f"{name}.cnn")
    args = ["--train", "--optimizer", "adamw", "--batch", str(batch), "--input", f"{image}x{image}x3"
            if name != "lenet5" else "32x32x1"] + (["--amp", amp] if amp != "off" else [])
    plan = analyze(spec, *args)["totals"]["train_memory"]
    result = {"model": name, "batch": batch, "amp": amp, "planned": {k: plan[k] for k in
                                                                      ("weights", "grads", "optimizer",
                                                                       "activations", "peak")}}
    if not device.startswith("cuda"):
        return result
    graph = cnndsl.compile(spec, input_shape=(image, image, 3) if name != "lenet5" else None)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model = cnndsl.to_torch(graph, logits=True).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c, h, w = graph.input_shape
    x = torch.randn(batch, c, h, w, device=device)
    y = torch.randint(0, graph.output.shape[0], (batch,), device=device)
    input_bytes = x.numel() * x.element_size() + y.numel() * y.element_size()
    for _ in range(2):          # the second step has the optimizer state in place
        opt.zero_grad(set_to_none=True)
        if amp == "off":
            loss = torch.nn.functional.cross_entropy(model(x), y)
        else:
            with torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - base - input_bytes
    result["measured_peak"] = measured
    result["ratio"] = plan["peak"] / measured if measured else None
    del model, opt, x, y, loss
    torch.cuda.empty_cache()
    return result


def latency_check(name: str, device: str, batch: int, image: int, profile: str, runs: int) -> dict:
    import torch

    import cnndsl
    spec = str(ROOT / "specs" / f"{name}.cnn")
    shape = f"{image}x{image}x3" if name != "lenet5" else "32x32x1"
    predicted = analyze(spec, "--device", profile, "--batch", str(batch), "--dtype", "bfloat16",
                        "--input", shape)["totals"]["latency"]
    result = {"model": name, "batch": batch, "profile": profile, "predicted_s": predicted["seconds"],
              "bound": predicted["bound"]}
    graph = cnndsl.compile(spec, input_shape=tuple(int(v) for v in shape.split("x")))
    model = cnndsl.to_torch(graph, logits=True).to(device).eval()
    c, h, w = graph.input_shape
    x = torch.randn(batch, c, h, w, device=device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        for i in range(runs + 3):
            if device.startswith("cuda"):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize()
                seconds = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                model(x)
                seconds = time.perf_counter() - t0
            if i >= 3:
                times.append(seconds)
    measured = statistics.median(times)
    result.update(measured_s=measured, ratio=predicted["seconds"] / measured if measured else None)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", default="h100-sxm")
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--memory-batch", type=int, default=64)
    ap.add_argument("--latency-batch", type=int, default=256)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    import torch
    out = {"device": args.device, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "memory": [], "latency": []}
    for name in args.models.split(","):
        for amp in ("off", "bf16"):
            try:
                out["memory"].append(memory_check(name, args.device, args.memory_batch, args.image, amp))
            except Exception as e:          # one failed cell is reported, the rest still run
                out["memory"].append({"model": name, "amp": amp, "error": f"{type(e).__name__}: {e}"[:300]})
        try:
            out["latency"].append(latency_check(name, args.device, args.latency_batch, args.image, args.profile,
                                                args.runs))
        except Exception as e:
            out["latency"].append({"model": name, "error": f"{type(e).__name__}: {e}"[:300]})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
