"""torchvision's own ONNX exports of the classification zoo, imported by cnndsl: parameters and MACs against the
model and its spec.

For each model: build it with weights=None in eval mode, export it with torch.onnx.export (TorchScript-based,
dynamo=False) at the input size its weights were trained at, import the file with cnndsl, and compare the
imported graph's parameters with the model's own count and its MACs with the spec's (specs/<name>.cnn) and
torchvision's published GFLOPS. Files go to a temporary folder and are deleted one by one.

    python bench/zoo_onnx_import.py [--models a,b,...] [--opset 17] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def check(name: str, opset: int, folder: Path) -> dict:
    import torch
    import torchvision

    import cnndsl
    from cnndsl.backends.from_onnx import import_onnx
    from conftest import TORCHVISION, input_size

    ctor, kwargs = TORCHVISION[name]
    size = input_size(name)
    model = torchvision.models.get_model(ctor, weights=None, **kwargs).eval()
    params = sum(p.numel() for p in model.parameters())
    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), opset_version=opset, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE,   # eval mode without folding BN into conv
                          external_data=params * 4 > 1.8e9)
    export_s = time.perf_counter() - start
    row = {"model": name, "size": size, "params": params, "export_s": round(export_s, 1)}
    try:
        start = time.perf_counter()
        report = cnndsl.analyze(import_onnx(path))
        row["import_s"] = round(time.perf_counter() - start, 2)
        spec = cnndsl.analyze(cnndsl.compile(ROOT / "specs" / f"{name}.cnn"))
        meta = torchvision.models.get_model_weights(ctor).DEFAULT.meta
        row.update(imported_params=report.totals["params"], imported_macs=report.totals["macs"],
                   spec_macs=spec.totals["macs"], published_gflops=meta["_ops"])
        row["exact"] = (report.totals["params"] == params and report.totals["macs"] == spec.totals["macs"]
                        and round(report.totals["macs"] / 1e9, 3) == meta["_ops"])
    except Exception as e:     # a refusal is a result: record what cnndsl said
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        row["exact"] = False
    finally:
        for f in folder.iterdir():
            f.unlink()
    return row


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import TORCHVISION
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(sorted(TORCHVISION)))
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            row = check(name, args.opset, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | params | imported params | imported MACs = spec's = published | note |\n|---|---|---|---|---|")
    for r in rows:
        ok = "yes" if r["exact"] else "no"
        print(f"| {r['model']} | {r['params']:,} | {r.get('imported_params', '-'):,} | {ok} | "
              f"{r.get('error', '')} |" if "imported_params" in r else
              f"| {r['model']} | {r['params']:,} | - | no | {r.get('error', '')} |")
    print(f"\n{sum(r['exact'] for r in rows)} of {len(rows)} exact")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
