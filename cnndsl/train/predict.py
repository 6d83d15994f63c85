"""Inference with trained weights: a spec's model with a checkpoint's weights, and classifying image files.

Images are read by data.read_image (the reader image folders use): regular files only, bounded in bytes and
pixels, 16-bit and palette images converted properly. The checkpoint's normalisation and class names are checked
when it is loaded (weights.load_checkpoint).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..errors import CnnDslError

PREDICT_BATCH = 256         # images through the network at once


class PredictError(CnnDslError):
    """Classifying images failed for a reason that is not the images' or the weights' (those are DataErrors and
    WeightsErrors)."""

    kind = "predict error"


class Prediction(NamedTuple):
    path: str
    top: list           # (class name, probability), most likely first


def model_for(graph, weights: str):
    """`graph` with its classifier as wide as the checkpoint's, its PyTorch model holding the checkpoint's
    weights (checked to fit and to be finite), and the checkpoint itself (for its norm_mean/std and classes)."""
    from .trainer import build_model, fit_head
    from .weights import load_checkpoint, state_dict_of
    payload = load_checkpoint(weights)
    state = state_dict_of(payload)
    graph = fit_head(graph, state)
    return graph, build_model(graph, state), payload


def predict(graph, model, payload: dict, paths, top: int = 3, device: str = "auto") -> list[Prediction]:
    """The `top` most likely classes of each image file, with their probabilities. Class names come from the
    checkpoint's `classes` (else the class index, as a string)."""
    import torch

    from .augment import Preprocess
    from .data import load_images
    from .trainer import checkpoint_norm, pick_device
    paths = [str(p) for p in paths]
    if not paths:
        raise PredictError("no images to classify")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise PredictError(f"top must be a whole number >= 1, got {top!r}")
    c, h, w = graph.input_shape
    norm = checkpoint_norm(payload, c)          # before reading any image: a checkpoint that cannot be used
    dev = pick_device(device)
    batch = load_images(paths, 1 if c == 1 else 3, (h, w))
    pre = Preprocess(batch.shape[1:], graph.input_shape, batch).to(dev)
    if norm is not None:        # the statistics the network was trained with
        pre.mean, pre.std = norm[0].to(dev), norm[1].to(dev)
    classes = payload.get("classes") or []
    model = model.to(dev).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), PREDICT_BATCH):
            x = pre(torch.as_tensor(batch[start:start + PREDICT_BATCH]).to(dev))
            probs = torch.softmax(model(x).float(), 1).cpu()
            for path, row in zip(paths[start:start + PREDICT_BATCH], probs):
                if not bool(torch.isfinite(row).all()):
                    raise PredictError(f"the network's outputs for {path} are not finite numbers",
                                       hint="the weights are too large for float32 (a run that diverged?)")
                values, idx = row.topk(min(top, row.numel()))
                out.append(Prediction(path, [(classes[i] if i < len(classes) else str(i), v)
                                             for v, i in zip(values.tolist(), idx.tolist()) if math.isfinite(v)]))
    return out
