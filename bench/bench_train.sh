#!/usr/bin/env bash
# Accuracy benchmarks for `cnndsl train` (not run in CI): LeNet-5 on MNIST and on Fashion-MNIST.
# Usage: bash bench/bench_train.sh [device]   (device: auto, cpu, cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-auto}
for data in mnist fashion-mnist; do
  start=$(date +%s)
  cnndsl train specs/lenet5.cnn --data "$data" --epochs 20 --batch-size 128 --lr 0.05 \
      --augment crop=2,scale=0.05 --device "$device" --quiet --out "runs/bench-lenet5-$data"
  echo "lenet5 on $data: $(( $(date +%s) - start )) s wall"
done
