"""Benchmark: `cnndsl train`'s steady-state images/s against a bare training-step loop, same model and batch.

Synthetic data at the spec's input size (an .npz in memory), the same optimizer, augmentation off (and, in a
second row, on). Run on the CPU here; on a GPU pass --device cuda --spec specs/resnet50.cnn --image 224.

    python bench/bench_train_overhead.py --spec specs/resnet18.cnn --image 64 --batch 32 --steps 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/resnet18.cnn")
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off")
    args = ap.parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F

    import cnndsl
    from cnndsl.train.data import Dataset, Split
    from cnndsl.train.trainer import TrainConfig, Trainer

    graph = cnndsl.compile(ROOT / args.spec, input_shape=(args.image, args.image, 3))
    n = args.batch * (args.steps + 3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, args.image, args.image), dtype=np.uint8)
    labels = rng.integers(0, 1000, n)
    dataset = Dataset("synthetic", Split(images, labels), Split(images[: args.batch], labels[: args.batch]),
                      [str(i) for i in range(1000)])

    def bare() -> float:
        torch.manual_seed(0)
        model = cnndsl.to_torch(graph, logits=True).to(args.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        x = torch.as_tensor(images).to(args.device)
        y = torch.as_tensor(labels).to(args.device)
        times = []
        for step in range(args.steps + 3):
            start = time.perf_counter()
            xb = (x[step * args.batch:(step + 1) * args.batch].float() / 255 - 0.5) / 0.25
            loss = F.cross_entropy(model(xb), y[step * args.batch:(step + 1) * args.batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            times.append(time.perf_counter() - start)
        return args.batch / (sum(times[3:]) / len(times[3:]))

    def ours(augment) -> float:
        config = TrainConfig(epochs=1, batch_size=args.batch, device=args.device, amp=args.amp, augment=augment)
        trainer = Trainer(graph, dataset, config, Path("/tmp/cnndsl-bench-overhead"))
        times = []
        trainer.progress_every = 1

        def on(event):
            if event["event"] == "step":
                times.append(time.perf_counter())
        trainer.progress = on
        trainer.run()
        steps = times[3:args.steps + 3]
        return args.batch * (len(steps) - 1) / (steps[-1] - steps[0])

    first = bare()
    plain = ours({})
    augmented = ours({"flip": 0.5, "crop": 4, "scale": 0.1, "exposure": 0.2, "saturation": 0.2})
    b = max(first, bare())      # the bare loop before and after: the better of the two is the reference
    print(f"{args.spec} {args.image}x{args.image} batch {args.batch} on {args.device}: bare loop {b:.1f} img/s, "
          f"cnndsl train {plain:.1f} img/s ({plain / b:.3f}), with all augmentations {augmented:.1f} img/s "
          f"({augmented / b:.3f})")


if __name__ == "__main__":
    main()
