"""Reading weights: cnndsl checkpoints, torch state dicts (DDP/compile prefixes removed) and .npz arrays.

Checkpoints are loaded with torch.load(weights_only=True), which builds tensors and plain containers only; what
comes out is then checked to be a dict of name -> finite tensor before anyone copies it into a model. Files are
opened only if they are regular files (a pipe would block), and what they hold is sized from the zip directory or
the .npy headers before anything is decompressed: at most MAX_WEIGHTS_BYTES and half the memory this machine has
free, and, when the caller says which weights its model has (read_state_dict's `expected`), nothing else.
"""
from __future__ import annotations

import errno
import math
import os
import warnings
import zipfile
from typing import Mapping, Union

from ..errors import CnnDslError
from .memory import gib, memory_budget

MAX_WEIGHTS_BYTES = 16 << 30        # the arrays of one weights file, as their headers declare them
MIN_NORM_STD = 1e-6                 # a checkpoint's norm_std below this turns every input into infinities
MAX_NORM = 1e6                      # |norm_mean| and norm_std above this are not statistics of [0, 1] pixels
SPEC_SHARE = 1.1                    # an .npz for a spec may hold at most this times the spec's own weights ...
SPEC_ITEM_BYTES = 8                 # ... counted at 8 bytes a value (float64)
CHECKPOINT_SHARE = 8                # a checkpoint (weights, optimizer state, ...) at most this times the weights

Expected = Union[Mapping[str, tuple], set, frozenset, None]


class WeightsError(CnnDslError):
    """A weights file is missing, unreadable, or not a state dict."""

    kind = "weights error"


def _budget(expected: Expected, share: float) -> tuple[int, str]:
    """Bytes a weights file may hold: the global cap, this machine's free memory, and (given the expected
    shapes) `share` times the spec's own weights; with the words for the message."""
    budget = memory_budget(MAX_WEIGHTS_BYTES, 0.5)
    why = f"the limit of {MAX_WEIGHTS_BYTES:,} bytes" if budget == MAX_WEIGHTS_BYTES else \
        f"the limit of {budget:,} bytes (half of this machine's free memory)"
    if isinstance(expected, Mapping):
        own = sum(math.prod(s) for s in expected.values()) * SPEC_ITEM_BYTES
        spec_budget = int(own * share) + (1 << 20)
        if spec_budget < budget:
            budget, why = spec_budget, f"the limit of {spec_budget:,} bytes ({share:g} x the spec's own weights)"
    return budget, why


def _open_regular(path: str, what: str):
    """The file at `path`, opened for reading, if it is a regular file; else a WeightsError."""
    from ..files import open_regular
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise WeightsError(f"no {what} at {path}") from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise WeightsError(f"cannot read {what} {path}: {reason}",
                           hint="give a file (not a folder, pipe or device)" if e.errno in (errno.EISDIR, errno.EINVAL) else None) \
            from None


def load_checkpoint(path: str, expected: Expected = None) -> dict:
    """A checkpoint or state dict saved with torch.save, loaded with weights_only=True.

    The metadata cnndsl's own checkpoints carry (norm_mean/norm_std, classes) is checked when present, so that
    eval and predict can use it as it is. A zip checkpoint's members are sized from its directory first."""
    import pickle

    import torch
    budget, why = _budget(expected, CHECKPOINT_SHARE)
    try:
        with _open_regular(path, "checkpoint") as f:
            size = os.fstat(f.fileno()).st_size
            if zipfile.is_zipfile(f):      # torch.save's format: members could be compressed, so add them up
                f.seek(0)
                with zipfile.ZipFile(f) as z:
                    size = sum(info.file_size for info in z.infolist())
            else:
                f.seek(0)
                if f.read(1) != b"\x80":       # torch.save's old format is a pickle (protocol 2 or later)
                    raise WeightsError(f"cannot read checkpoint {path}: not a PyTorch checkpoint (neither "
                                       "torch.save's zip archive nor a pickle)",
                                       hint="give a file written by torch.save or cnndsl train")
            if size > budget:
                raise WeightsError(f"{path} holds {size:,} bytes, beyond {why}")
            f.seek(0)
            with warnings.catch_warnings():     # torch's warnings about pickle protocols name its own files
                warnings.simplefilter("ignore")
                payload = torch.load(f, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise WeightsError(f"cannot read checkpoint {path}: it holds Python objects other than tensors, numbers, "
                               "strings and plain containers",
                               hint="cnndsl never unpickles objects (they could run code); save the state dict "
                                    "(model.state_dict()) with torch.save") from None
        raise WeightsError(f"cannot read checkpoint {path}: not a PyTorch checkpoint ({str(e).strip()[:120]})") \
            from None
    except MemoryError:
        raise WeightsError(f"cannot read checkpoint {path}: out of memory") from None
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
        check_norm(payload.get("norm_mean"), payload.get("norm_std"), path)
    if "classes" in payload:
        classes = payload["classes"]
        if not (isinstance(classes, list) and len(classes) <= 100_000
                and all(isinstance(c, str) and len(c) <= 1000 for c in classes)):
            raise WeightsError(f"{path}: 'classes' must be a list of class names (strings)")
    return payload


def check_norm(mean, std, where: str = "the checkpoint") -> None:
    """norm_mean and norm_std must be finite float tensors of one value per channel, with MIN_NORM_STD <= std <=
    MAX_NORM and |mean| <= MAX_NORM: anything else makes every probability NaN or meaningless."""
    import torch
    if not (all(isinstance(t, torch.Tensor) and t.is_floating_point() and not t.is_meta
                and t.layout == torch.strided and 1 <= t.numel() <= 1 << 16 for t in (mean, std))
            and mean.shape == std.shape):
        raise WeightsError(f"{where}: norm_mean and norm_std must be float tensors of one value per input channel")
    mean, std = mean.double(), std.double()
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all())):
        raise WeightsError(f"{where}: norm_mean and norm_std must be finite")
    if not (bool((std >= MIN_NORM_STD).all()) and bool((std <= MAX_NORM).all())
            and bool((mean.abs() <= MAX_NORM).all())):
        raise WeightsError(f"{where}: norm_std must be from {MIN_NORM_STD:g} to {MAX_NORM:g} (std > 0) and "
                           f"|norm_mean| at most {MAX_NORM:g}; got std {std.min().item():g} .. {std.max().item():g}, "
                           f"mean {mean.min().item():g} .. {mean.max().item():g}",
                           hint="these are statistics of pixels in [0, 1]; a std near 0 divides every input by it")


def _all_finite(value) -> bool:
    """Whether a float tensor holds no NaN or infinity (checked in slices: no copy of a large tensor)."""
    import torch
    flat = value.reshape(-1) if value.is_contiguous() else value.contiguous().reshape(-1)
    return all(bool(torch.isfinite(part).all()) for part in flat.split(1 << 24))


def check_tensor(key, value) -> None:
    """A WeightsError unless `key` is a string and `value` a dense real tensor without NaN or infinity."""
    import torch
    if not isinstance(key, str):
        raise WeightsError(f"a state dict key is a {type(key).__name__} ({str(key)[:40]!r}), not a string")
    if not isinstance(value, torch.Tensor):
        raise WeightsError(f"'{key[:80]}' holds a {type(value).__name__}, not a tensor",
                           hint="a state dict maps parameter names to tensors")
    if value.is_meta or value.layout != torch.strided or value.is_complex() or value.is_quantized:
        raise WeightsError(f"'{key[:80]}' is a {value.dtype} {value.layout} tensor"
                           f"{' without data (meta)' if value.is_meta else ''}; cnndsl loads dense real tensors")
    if value.is_floating_point() and value.numel() and not _all_finite(value):
        raise WeightsError(f"'{key[:80]}' holds NaN or infinite values",
                           hint="the weights come from a run that diverged, or the file is damaged")


def state_dict_of(payload: dict) -> dict:
    """The model's state dict inside a checkpoint ({'model': ...}, {'state_dict': ...}) or the dict itself;
    every key a string and every value a dense real finite tensor, else a WeightsError."""
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


def model_weights(graph) -> dict[str, tuple]:
    """The state dict keys of `graph`'s PyTorch model with their shapes, without allocating any weights: what
    read_state_dict(expected=...) checks a file against."""
    import torch

    from ..backends.to_torch import to_torch
    with torch.device("meta"):
        model = to_torch(graph, logits=True)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _npy_header(member):
    import numpy as np
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(member)


def read_state_dict(path: str, expected: Expected = None) -> dict:
    """A state dict from an .npz (no torch needed) or from a torch checkpoint / state dict.

    `expected` (key -> shape, as model_weights gives, or a set of keys) is what the caller's model holds: an .npz
    is then checked from its headers, before anything is decompressed, to hold only those keys (with those
    shapes) and at most SPEC_SHARE times the model's size; a checkpoint at most CHECKPOINT_SHARE times."""
    if not path.endswith(".npz"):
        return state_dict_of(load_checkpoint(path, expected))
    import numpy as np
    budget, why = _budget(expected, SPEC_SHARE)
    try:
        with _open_regular(path, "weights file") as f, np.load(f, allow_pickle=False) as data:
            members = {}
            for member in data.zip.namelist():
                key = member[:-4] if member.endswith(".npy") else member
                members.setdefault(key, member)
            if expected is not None:
                unknown = sorted(k for k in members if k not in expected)
                if unknown:
                    raise WeightsError(f"{path}: {len(unknown)} array(s) are not weights of the spec, e.g. "
                                       f"'{unknown[0][:80]}'", hint="the weights come from a different architecture")
            total = 0
            for key, member in members.items():     # sizes from the headers, before anything is decompressed
                with data.zip.open(member) as m:
                    shape, _, dtype = _npy_header(m)
                if dtype.hasobject or dtype.kind not in "biuf":
                    raise WeightsError(f"cannot read {path}: '{key[:80]}' holds {dtype} values, not numbers")
                if isinstance(expected, Mapping) and tuple(shape) != tuple(expected[key]):
                    raise WeightsError(f"{path}: '{key[:80]}' is {tuple(shape)} there but {tuple(expected[key])} in "
                                       "the spec's model", hint="the weights come from a different architecture")
                total += math.prod(shape) * dtype.itemsize
                if total > budget:
                    raise WeightsError(f"{path}: the arrays take more than {total:,} bytes ({gib(total)}), beyond "
                                       f"{why}")
            state = {}
            for key, member in members.items():
                value = data[key]
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise WeightsError(f"{path}: '{key[:80]}' holds NaN or infinite values",
                                       hint="the weights come from a run that diverged, or the file is damaged")
                state[key] = value
    except WeightsError:
        raise
    except MemoryError:
        raise WeightsError(f"cannot read {path}: out of memory") from None
    except Exception as e:
        raise WeightsError(f"cannot read {path}: {str(e)[:160]}") from None
    if not state:
        raise WeightsError(f"{path} holds no arrays")
    return state
