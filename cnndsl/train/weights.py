"""Reading weights: cnndsl checkpoints, torch state dicts (DDP/compile prefixes removed) and .npz arrays.

Checkpoints are loaded with torch.load(weights_only=True), which builds tensors and plain containers only; what
comes out is then checked to be a dict of name -> tensor before anyone copies it into a model.
"""
from __future__ import annotations

import math

from ..errors import CnnDslError

MAX_WEIGHTS_BYTES = 16 << 30        # the arrays of one .npz weights file, as their headers declare them


class WeightsError(CnnDslError):
    """A weights file is missing, unreadable, or not a state dict."""

    kind = "weights error"


def load_checkpoint(path: str) -> dict:
    """A checkpoint or state dict saved with torch.save, loaded with weights_only=True.

    The metadata cnndsl's own checkpoints carry (norm_mean/norm_std, classes) is checked when present, so that
    eval and predict can use it as it is."""
    import torch
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"no checkpoint at {path}") from None
    except Exception as e:
        raise WeightsError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).strip()[:160]}",
                           hint="the file may be truncated, not a PyTorch checkpoint, or hold objects other than "
                                "tensors (which cnndsl never unpickles)") from None
    if not isinstance(payload, dict):
        raise WeightsError(f"{path} holds a {type(payload).__name__}, not a checkpoint or state dict")
    bad = next((k for k in payload if not isinstance(k, str)), None)
    if bad is not None:
        raise WeightsError(f"{path} has a key {str(bad)[:40]!r} of type {type(bad).__name__}; keys must be strings")
    if "norm_mean" in payload or "norm_std" in payload:
        stats = [payload.get("norm_mean"), payload.get("norm_std")]
        if not (all(isinstance(t, torch.Tensor) and t.is_floating_point() and not t.is_meta
                    and 1 <= t.numel() <= 1 << 16 for t in stats) and stats[0].shape == stats[1].shape
                and bool(torch.isfinite(stats[0]).all()) and bool((stats[1] > 0).all() & torch.isfinite(stats[1]).all())):
            raise WeightsError(f"{path}: norm_mean and norm_std must be finite float tensors of one value per input "
                               "channel (std > 0)")
    if "classes" in payload:
        classes = payload["classes"]
        if not (isinstance(classes, list) and len(classes) <= 100_000
                and all(isinstance(c, str) and len(c) <= 1000 for c in classes)):
            raise WeightsError(f"{path}: 'classes' must be a list of class names (strings)")
    return payload


def check_tensor(key, value) -> None:
    import torch
    if not isinstance(key, str):
        raise WeightsError(f"a state dict key is a {type(key).__name__} ({str(key)[:40]!r}), not a string")
    if not isinstance(value, torch.Tensor):
        raise WeightsError(f"'{key[:80]}' holds a {type(value).__name__}, not a tensor",
                           hint="a state dict maps parameter names to tensors")
    if value.is_meta or value.layout != torch.strided or value.is_complex() or value.is_quantized:
        raise WeightsError(f"'{key[:80]}' is a {value.dtype} {value.layout} tensor"
                           f"{' without data (meta)' if value.is_meta else ''}; cnndsl loads dense real tensors")


def state_dict_of(payload: dict) -> dict:
    """The model's state dict inside a checkpoint ({'model': ...}, {'state_dict': ...}) or the dict itself;
    every key a string and every value a dense real tensor, else a WeightsError."""
    import torch
    if not isinstance(payload, dict):
        raise WeightsError(f"a checkpoint must be a dict, not a {type(payload).__name__}")
    for key in ("model", "state_dict", "model_state"):
        if key in payload and not isinstance(payload[key], torch.Tensor):
            if not isinstance(payload[key], dict):
                raise WeightsError(f"the checkpoint's '{key}' is a {type(payload[key]).__name__}, not a state dict")
            payload = payload[key]
            break
    clean = {}
    for k, v in payload.items():
        check_tensor(k, v)
        for prefix in ("module.", "_orig_mod."):     # DistributedDataParallel, torch.compile
            while k.startswith(prefix):
                k = k[len(prefix):]
        clean[k] = v
    if not clean:
        raise WeightsError("the checkpoint holds no weights (an empty state dict)")
    return clean


def read_state_dict(path: str) -> dict:
    """A state dict from an .npz (no torch needed) or from a torch checkpoint / state dict."""
    if path.endswith(".npz"):
        import numpy as np
        try:
            with np.load(path, allow_pickle=False) as data:
                total = 0
                for member in data.zip.namelist():     # sizes from the headers, before anything is decompressed
                    with data.zip.open(member) as f:
                        version = np.lib.format.read_magic(f)
                        shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                                           np.lib.format.read_array_header_2_0)(f)
                    total += math.prod(shape) * dtype.itemsize
                    if total > MAX_WEIGHTS_BYTES:
                        raise WeightsError(f"{path}: the arrays take more than {MAX_WEIGHTS_BYTES:,} bytes, beyond "
                                           "the limit")
                state = {k: data[k] for k in data.files}
        except WeightsError:
            raise
        except FileNotFoundError:
            raise WeightsError(f"no weights file at {path}") from None
        except Exception as e:
            raise WeightsError(f"cannot read {path}: {str(e)[:160]}") from None
        for k, v in state.items():
            if v.dtype.kind not in "biuf":
                raise WeightsError(f"{path}: '{k[:80]}' holds {v.dtype} values, not numbers")
        if not state:
            raise WeightsError(f"{path} holds no arrays")
        return state
    return state_dict_of(load_checkpoint(path))
