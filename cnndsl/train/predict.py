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
    weights (checked to fit and to be finite), and the checkpoint itself (for its preprocessing and classes).

    A checkpoint that records its network (cnndsl train's) must be of this spec's network: the first layer that
    differs is named (a WeightsFitError), even where the weights' shapes would load."""
    from .trainer import build_model, check_network, fit_head
    from .weights import load_checkpoint, state_dict_of
    payload = load_checkpoint(weights)
    state = state_dict_of(payload)
    graph = fit_head(graph, state)
    check_network(payload, graph)
    return graph, build_model(graph, state), payload


def plan_of(payload: dict, graph):
    """The preprocessing a checkpoint was trained with (its record), or for weights without one (a state dict,
    an older checkpoint) the spec's size with the checkpoint's norm statistics if any, else none: pixels in
    [0, 1]."""
    from ..preprocess import Preprocessing, PreprocessError
    from .trainer import WeightsFitError, checkpoint_norm
    c = graph.input_shape[0]
    record = payload.get("preprocessing") if isinstance(payload, dict) else None
    if record is not None:
        try:
            plan = Preprocessing.from_dict(record, "the checkpoint's preprocessing")
        except PreprocessError as e:
            raise WeightsFitError(e.message, hint=e.hint) from None
        if tuple(plan.input) != tuple(graph.input_shape):
            raise WeightsFitError(f"the checkpoint was trained on {_chw(plan.input)} inputs but the spec takes "
                                  f"{_chw(graph.input_shape)}", hint="was it trained from another spec?")
        return plan
    norm = checkpoint_norm(payload, c)
    mean, std = ((tuple(norm[0].flatten().tolist()), tuple(norm[1].flatten().tolist())) if norm is not None
                 else ((0.0,) * c, (1.0,) * c))
    classes = payload.get("classes") if isinstance(payload.get("classes"), list) else []
    return Preprocessing(tuple(graph.input_shape), tuple(graph.input_shape), mean, std, tuple(classes))


def _chw(shape) -> str:
    c, h, w = shape
    return f"{h}x{w}x{c}"


def predict(graph, model, payload: dict, paths, top: int = 3, device: str = "auto") -> list[Prediction]:
    """The `top` most likely classes of each image file, with their probabilities. Each image is read at its
    own size and prepared as the checkpoint's preprocessing says (see cnndsl/preprocess.py): the same steps as
    training, eval, the ONNX export and `cnndsl run`. Class names come from the checkpoint (else the index)."""
    import torch

    from .augment import Preprocess
    from .data import DataError, data_budget, read_image, _pillow
    from .trainer import pick_device
    paths = [str(p) for p in paths]
    if not paths:
        raise PredictError("no images to classify")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise PredictError(f"top must be a whole number >= 1, got {top!r}")
    plan = plan_of(payload, graph)          # before reading any image: a checkpoint that cannot be used
    c, h, w = graph.input_shape
    total = len(paths) * c * h * w * 4
    budget, why = data_budget()
    if total > budget:
        raise DataError(f"{len(paths):,} images of {c} x {h} x {w} take {total:,} bytes as network inputs, beyond "
                        f"{why}", hint="classify them in smaller groups")
    dev = pick_device(device)
    pre = Preprocess.of(plan).to(dev)
    classes = list(plan.classes) or (payload.get("classes") or [])
    model = model.to(dev).eval()
    Image = _pillow()
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), PREDICT_BATCH):
            group = paths[start:start + PREDICT_BATCH]
            x = torch.cat([pre(torch.tensor(read_image(p, plan.file_channels(), None, Image)[None]).to(dev))
                           for p in group])
            probs = torch.softmax(model(x).float(), 1).cpu()
            for path, row in zip(group, probs):
                if not bool(torch.isfinite(row).all()):
                    raise PredictError(f"the network's outputs for {path} are not finite numbers",
                                       hint="the weights are too large for float32 (a run that diverged?)")
                values, idx = row.topk(min(top, row.numel()))
                out.append(Prediction(path, [(classes[i] if i < len(classes) else str(i), v)
                                             for v, i in zip(values.tolist(), idx.tolist()) if math.isfinite(v)]))
    return out
