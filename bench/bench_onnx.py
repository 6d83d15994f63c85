"""Benchmark: cnndsl's direct ONNX emitter against torch.onnx.export (both exporters) on the same models,
and ONNX Runtime CPU latency of the emitted model against PyTorch eager on the CPU, same weights and batch.

    python bench/bench_onnx.py [--models vgg16,resnet50] [--batch 1]
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="vgg16,resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import numpy as np
    import onnxruntime as ort
    import torch
    import torchvision

    import cnndsl
    from cnndsl.backends.to_onnx import to_onnx
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'model':<9} {'cnndsl emit s':>14} {'torchscript export s':>21} {'dynamo export s':>16} "
          f"{'ratio ts':>9} {'ratio dynamo':>13}")
    latency_rows = []
    for name in args.models.split(","):
        tv = torchvision.models.get_model(name, weights=None).eval()
        graph = cnndsl.compile(ROOT / "specs" / f"{name}.cnn")
        ours = cnndsl.to_torch(graph, logits=True).eval()
        cnndsl.load_torchvision(ours, tv)
        state = ours.state_dict()
        x = torch.randn(args.batch, 3, 224, 224)

        def emit():
            return to_onnx(graph, weights=state, logits=True).SerializeToString()

        def export(dynamo):
            buf = io.BytesIO()
            if dynamo:
                prog = torch.onnx.export(tv, (x,), dynamo=True, verbose=False)
                prog.save(buf)
            else:
                torch.onnx.export(tv, (x,), buf, dynamo=False, opset_version=18)
            return buf.getvalue()
        t_ours, blob = timed(emit, args.repeat)
        t_ts, _ = timed(lambda: export(False), args.repeat)
        try:
            t_dyn, _ = timed(lambda: export(True), 1)
        except Exception as e:   # the dynamo exporter needs onnxscript
            t_dyn = float("nan")
            print(f"  (dynamo exporter unavailable: {type(e).__name__}: {str(e)[:80]})")
        print(f"{name:<9} {t_ours:14.3f} {t_ts:21.3f} {t_dyn:16.3f} {t_ts / t_ours:8.1f}x {t_dyn / t_ours:12.1f}x")
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        for _ in range(3):
            session.run(None, {"input": xn})
            with torch.no_grad():
                ours(x)
        t_ort, y_ort = timed(lambda: session.run(None, {"input": xn})[0], 10)
        with torch.no_grad():
            t_pt, y_pt = timed(lambda: ours(x).numpy(), 10)
        latency_rows.append((name, t_ort, t_pt, float(np.abs(y_ort - y_pt).max())))
    print(f"\n{'model':<9} {'ORT CPU ms':>11} {'PyTorch eager CPU ms':>21} {'ratio':>7} {'max |diff|':>11}  (batch {args.batch})")
    for name, t_ort, t_pt, diff in latency_rows:
        print(f"{name:<9} {t_ort * 1e3:11.1f} {t_pt * 1e3:21.1f} {t_pt / t_ort:6.2f}x {diff:11.2e}")


if __name__ == "__main__":
    main()
