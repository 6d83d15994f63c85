"""Preprocessing and augmentation on the training device, one batch at a time (no CPU data pipeline).

The spec's input shape drives preprocessing (cnndsl/preprocess.py, one definition for every path): channel
conversion, zero padding for slightly smaller images (MNIST's 28 into LeNet's 32) or resampling, and per-channel
normalisation. Augmentation follows the
seed notes: reflection, random crops (translations), random scaling, exposure and saturation adjustment.
"""
from __future__ import annotations

from typing import Optional

from ..frontend.augment import AUGMENTATIONS, PRESETS, RANGES, check_augment, check_strength, parse_augment  # noqa: F401


class Preprocess:
    """uint8 N x c x h x w batches (on the device) -> normalised float N x C x H x W for the network: the steps
    of a `preprocess.Preprocessing` plan (one definition for train, eval, predict, ONNX and `cnndsl run`), with
    augmentation on the training batches between the fit and the normalisation.

    `Preprocess(data_shape, target, train_images, augment)` measures the statistics of the training images;
    `Preprocess.of(plan, augment)` uses a recorded plan (a checkpoint's)."""

    def __init__(self, data_shape: tuple, target: tuple, train_images, augment: Optional[dict] = None,
                 classes=()):
        import numpy as np

        from ..preprocess import Preprocessing, PreprocessError, channel_matrix, statistics
        from .data import DataError
        try:
            channel_matrix(int(data_shape[0]), int(target[0]))
        except PreprocessError as e:
            raise DataError(e.message, hint=e.hint) from None
        images = np.asarray(train_images)
        mean, std = statistics(images, int(target[0]))
        self._setup(Preprocessing(tuple(int(v) for v in target), tuple(int(v) for v in data_shape), mean, std,
                                  tuple(classes)), augment)

    @classmethod
    def of(cls, plan, augment: Optional[dict] = None) -> "Preprocess":
        self = cls.__new__(cls)
        self._setup(plan, augment)
        return self

    def _setup(self, plan, augment):
        import torch
        self.plan = plan
        self.data_shape, self.target = tuple(plan.source), tuple(plan.input)
        self.augment = check_augment(augment)
        self.mean = torch.tensor(plan.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(plan.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.device = "cpu"
        self._cache = {}

    def to(self, device):
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        self.device = device
        self._cache = {}
        return self

    def _matrices(self, channels: int, size: tuple):
        import torch
        key = (channels, tuple(size))
        if key not in self._cache:
            self._cache[key] = tuple(torch.from_numpy(m).to(self.device) for m in self.plan.matrices(channels, size))
        return self._cache[key]

    def __call__(self, batch, generator=None, train: bool = False):
        """Normalised input; `generator` draws the augmentation (the whole batch at once)."""
        import torch
        mc, mr, mw = self._matrices(batch.shape[1], tuple(batch.shape[-2:]))
        x = torch.einsum("oc,nchw->nohw", mc.to(batch.device), batch.float())
        x = torch.matmul(torch.matmul(mr.to(x.device), x), mw.to(x.device))
        if train and self.augment:
            x = self._augment(x, generator)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _augment(self, x, g):
        import torch
        import torch.nn.functional as F
        n, dev = x.shape[0], x.device

        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=g, device=dev)
        a = self.augment
        if "exposure" in a:
            x = x * uniform(1 - a["exposure"], 1 + a["exposure"]).view(n, 1, 1, 1)
        if "saturation" in a and x.shape[1] == 3:
            grey = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            s = uniform(1 - a["saturation"], 1 + a["saturation"]).view(n, 1, 1, 1)
            x = grey + (x - grey) * s
        if "exposure" in a or "saturation" in a:
            x = x.clamp(0, 1)
        if "crop" in a or "scale" in a:
            h, w = x.shape[-2:]
            scale = uniform(1 - a.get("scale", 0), 1 + a.get("scale", 0))
            shift = a.get("crop", 0)
            dx = uniform(-shift, shift) * 2 / w
            dy = uniform(-shift, shift) * 2 / h
            theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
            theta[:, 0, 0] = 1 / scale
            theta[:, 1, 1] = 1 / scale
            theta[:, 0, 2] = dx
            theta[:, 1, 2] = dy
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if "flip" in a:
            flip = (torch.rand(n, generator=g, device=dev) < a["flip"]).view(n, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        return x
