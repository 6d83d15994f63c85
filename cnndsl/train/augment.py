"""Preprocessing and augmentation on the training device, one batch at a time (no CPU data pipeline).

The spec's input shape drives preprocessing: channel conversion, zero padding for slightly smaller images
(MNIST's 28 into LeNet's 32) or bilinear resizing, and per-channel normalisation. Augmentation follows the
seed notes: reflection, random crops (translations), random scaling, exposure and saturation adjustment.
"""
from __future__ import annotations

from typing import Optional

from ..frontend.augment import AUGMENTATIONS, PRESETS, RANGES, check_augment, check_strength, parse_augment  # noqa: F401


class Preprocess:
    """uint8 N x c x h x w batches (on the device) -> normalised float N x C x H x W for the network."""

    def __init__(self, data_shape: tuple, target: tuple, train_images, augment: Optional[dict] = None):
        import torch
        self.data_shape, self.target = tuple(data_shape), tuple(target)
        self.augment = check_augment(augment)
        c, h, w = self.data_shape
        tc, th, tw = self.target
        self.pad = None
        if (h, w) != (th, tw) and th >= h and tw >= w and (th - h) <= h // 4 and (tw - w) <= w // 4:
            top, left = (th - h) // 2, (tw - w) // 2
            self.pad = (left, tw - w - left, top, th - h - top)
        # per-channel statistics of the training images, after channel conversion
        sample = train_images[: min(len(train_images), 10000)]
        x = self._channels(torch.as_tensor(sample).float() / 255.0)
        self.mean = x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.std = torch.nan_to_num(x.std(dim=(0, 2, 3)), nan=1.0).clamp_min(1e-3).view(1, -1, 1, 1)  # 1 pixel: NaN

    def to(self, device):
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def _channels(self, x):
        c, tc = x.shape[1], self.target[0]
        if c in (2, 4) and c != tc:     # grey + alpha, RGBA: drop the alpha channel, as Pillow converts them
            x, c = x[:, :c - 1], c - 1
        if c == tc:
            return x
        if c == 1:
            return x.expand(-1, tc, -1, -1)
        if tc == 1 and c == 3:
            weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            return (x * weights).sum(1, keepdim=True)
        from .data import DataError
        raise DataError(f"cannot turn {c}-channel images into the spec's {tc} channels",
                        hint="give grey or RGB images, or a spec whose input has 1 or 3 channels")

    def __call__(self, batch, generator=None, train: bool = False):
        """Normalised input; `generator` draws the augmentation (the whole batch at once)."""
        import torch
        import torch.nn.functional as F
        x = self._channels(batch.float() / 255.0)
        th, tw = self.target[1:]
        if self.pad is not None:
            x = F.pad(x, self.pad)
        elif x.shape[-2:] != (th, tw):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
        if train and self.augment:
            x = self._augment(x, generator)
        return (x - self.mean) / self.std

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
