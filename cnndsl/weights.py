"""Reading weights: cnndsl checkpoints, torch state dicts (DDP/compile prefixes removed) and .npz arrays."""
from __future__ import annotations

from .errors import CnnDslError


class WeightsError(CnnDslError):
    """A weights file is missing, unreadable, or not a state dict."""

    kind = "weights error"


def load_checkpoint(path: str) -> dict:
    """A checkpoint or state dict saved with torch.save, loaded with weights_only=True."""
    import torch
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"no checkpoint at {path}") from None
    except Exception as e:
        raise WeightsError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).strip()[:160]}",
                           hint="the file may be truncated or not a PyTorch checkpoint") from None
    if not isinstance(payload, dict):
        raise WeightsError(f"{path} holds a {type(payload).__name__}, not a checkpoint or state dict")
    return payload


def state_dict_of(payload: dict) -> dict:
    """The model's state dict inside a checkpoint ({'model': ...}, {'state_dict': ...}) or the dict itself."""
    for key in ("model", "state_dict", "model_state"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    clean = {}
    for k, v in payload.items():
        for prefix in ("module.", "_orig_mod."):     # DistributedDataParallel, torch.compile
            while k.startswith(prefix):
                k = k[len(prefix):]
        clean[k] = v
    return clean


def read_state_dict(path: str) -> dict:
    """A state dict from an .npz (no torch needed) or from a torch checkpoint / state dict."""
    if path.endswith(".npz"):
        import numpy as np
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise WeightsError(f"no weights file at {path}") from None
        except Exception as e:
            raise WeightsError(f"cannot read {path}: {str(e)[:160]}") from None
    return state_dict_of(load_checkpoint(path))
