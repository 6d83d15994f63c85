"""Device profiles for latency estimates: built-in GPUs from published peak rates, and machine-specific
profiles measured by `cnndsl calibrate` (JSON files, untrusted: bounded, validated, clean diagnostics).

A profile is a dict:
  name, kind ("gpu" | "cpu"), source (where the numbers come from)
  peak_flops   {dtype: FLOP/s}: float32 (plain, non-tensor), tf32, float16, bfloat16 (dense tensor-core rates)
  bandwidth    bytes/s of main memory (DRAM/HBM)
  bandwidth_curve  optional [[bytes moved, bytes/s], ...]: measured rates by working-set size (caches), ascending
  launch_s     seconds of fixed cost per kernel (launch + framework dispatch in eager PyTorch)
  ramp_s       seconds of extra time a compute-bound kernel pays before it fills the machine: a kernel of
               W FLOPs reaches W / (W + peak*eff*ramp_s) of its class efficiency (small ops reach little)
  spatial_half optional: output pixels (batch x H x W) at which a conv reaches half its class efficiency
               (small maps, e.g. 7x7 at batch 1, under-fill the vector units); 0 or absent: no such loss
  efficiency   {class: fraction of peak}: matmul, conv, conv1x1, stem, grouped (4 channels per group),
               grouped_wide (32 channels per group; between them log-linear), depthwise (FLOPs = 2 x MACs),
               pool (FLOPs = outputs x window), elementwise (FLOPs = elements read), memory (of bandwidth)
Nothing here imports torch.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

MAX_PROFILE_BYTES = 64 * 1024          # a profile is a few hundred bytes; anything bigger is refused unread
EFFICIENCY_CLASSES = ("matmul", "conv", "conv1x1", "stem", "grouped", "grouped_wide", "depthwise", "pool", "elementwise",
                      "memory")
PEAK_KEYS = ("float32", "tf32", "float16", "bfloat16")
MAX_CURVE = 64

# Efficiencies for GPUs: typical fractions of the datasheet peak reached by cuDNN/cuBLAS kernels in eager
# PyTorch (not measured on the hardware here: no GPU was available when these were written).
_GPU_EFF = {"matmul": 0.7, "conv": 0.6, "conv1x1": 0.6, "stem": 0.3, "grouped": 0.25, "grouped_wide": 0.4, "depthwise": 0.2,
            "pool": 0.25, "elementwise": 0.25, "memory": 0.8}
_GPU_LAUNCH_S = 8e-6      # eager PyTorch: kernel launch + dispatch, a few microseconds per op
_GPU_RAMP_S = 4e-6        # a tile wave: batch-1 convs under-fill the SMs


def _gpu(name, source, fp32, tf32, fp16, bf16, bandwidth_gbs) -> dict[str, Any]:
    peaks = {"float32": fp32 * 1e12}
    for key, value in (("tf32", tf32), ("float16", fp16), ("bfloat16", bf16)):
        if value is not None:
            peaks[key] = value * 1e12
    return {"name": name, "kind": "gpu", "source": source, "peak_flops": peaks, "bandwidth": bandwidth_gbs * 1e9,
            "launch_s": _GPU_LAUNCH_S, "ramp_s": _GPU_RAMP_S, "efficiency": dict(_GPU_EFF)}


# Dense rates (the datasheets' tensor-core figures marked * are with 2:4 sparsity; these are half of them).
# TFLOP/s: fp32 (non-tensor), tf32 tensor, fp16 tensor, bf16 tensor; memory bandwidth in GB/s.
BUILTIN: dict[str, dict[str, Any]] = {
    # NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): FP32 67, TF32 989*, BF16/FP16 1,979*, 3.35 TB/s
    "h100-sxm": _gpu("h100-sxm", "NVIDIA H100 datasheet, SXM5 80GB", 67, 494.5, 989.5, 989.5, 3350),
    # NVIDIA H100 datasheet (H100 PCIe 80GB): FP32 51, TF32 756*, BF16/FP16 1,513*, 2 TB/s
    "h100-pcie": _gpu("h100-pcie", "NVIDIA H100 datasheet, PCIe 80GB", 51, 378, 756, 756, 2000),
    # NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM): FP32 19.5, TF32 156, BF16/FP16 312, 2,039 GB/s
    "a100-80gb-sxm": _gpu("a100-80gb-sxm", "NVIDIA A100 datasheet, 80GB SXM", 19.5, 156, 312, 312, 2039),
    # NVIDIA A100 datasheet (A100 40GB PCIe): FP32 19.5, TF32 156, BF16/FP16 312, 1,555 GB/s
    "a100-40gb-pcie": _gpu("a100-40gb-pcie", "NVIDIA A100 datasheet, 40GB PCIe", 19.5, 156, 312, 312, 1555),
    # NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3, TF32 120*, BF16/FP16 242*, 300 GB/s
    "l4": _gpu("l4", "NVIDIA L4 datasheet", 30.3, 60, 121, 121, 300),
    # NVIDIA T4 Tensor Core GPU datasheet: FP32 8.1, mixed-precision FP16/FP32 65, 320 GB/s (Turing: no TF32, no BF16)
    "t4": _gpu("t4", "NVIDIA T4 datasheet", 8.1, None, 65, None, 320),
    # NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090): FP32 82.6, TF32 82.6 (165.2*),
    # FP16/BF16 tensor with FP32 accumulate (what PyTorch uses) 165.2 (330.4*), 1,008 GB/s
    "rtx4090": _gpu("rtx4090", "NVIDIA Ada Lovelace whitepaper, RTX 4090", 82.6, 82.6, 165.2, 165.2, 1008),
    # NVIDIA Tesla V100 datasheet (V100 SXM2): FP32 15.7, Tensor (FP16) 125, 900 GB/s (Volta: no TF32, no BF16)
    "v100": _gpu("v100", "NVIDIA V100 datasheet, SXM2", 15.7, None, 125, None, 900),
}
ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb-sxm", "a100-80gb": "a100-80gb-sxm", "a100-40gb": "a100-40gb-pcie",
           "4090": "rtx4090", "rtx-4090": "rtx4090", "v100-sxm2": "v100"}


class ProfileError(ValueError):
    """A device name or profile file that cannot be used; the message is a complete diagnostic."""


def config_dir() -> str:
    """$XDG_CONFIG_HOME/cnndsl/profiles (default ~/.config/cnndsl/profiles)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cnndsl", "profiles")


def local_path() -> str:
    return os.path.join(config_dir(), "local.json")


def _positive(value, what: str, high: float = 1e18) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= high:
        raise ProfileError(f"{what} must be a finite positive number (at most {high:g}), got {_show(value)}")
    return float(value)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate(data: Any, where: str = "profile") -> dict[str, Any]:
    """A clean profile from untrusted data: known keys only, every number finite and positive; else ProfileError."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile is a JSON object, got {type(data).__name__}")
    name = data.get("name", "local")
    if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= 64:
        raise ProfileError(f"{where}: name must be a short printable string")
    kind = data.get("kind", "cpu")
    if kind not in ("cpu", "gpu"):
        raise ProfileError(f"{where}: kind must be 'cpu' or 'gpu', got {_show(kind)}")
    source = data.get("source", "")
    if not isinstance(source, str) or len(source) > 500:
        raise ProfileError(f"{where}: source must be a string of at most 500 characters")
    peaks = data.get("peak_flops")
    if not isinstance(peaks, dict) or not peaks:
        raise ProfileError(f"{where}: peak_flops must be an object of dtype -> FLOP/s")
    clean_peaks = {}
    for key, value in peaks.items():
        if key not in PEAK_KEYS:
            raise ProfileError(f"{where}: peak_flops has unknown dtype {_show(key)}; known: {', '.join(PEAK_KEYS)}")
        clean_peaks[key] = _positive(value, f"{where}: peak_flops.{key}", 1e19)
    if "float32" not in clean_peaks:
        raise ProfileError(f"{where}: peak_flops needs float32")
    out = {"name": name, "kind": kind, "source": source, "peak_flops": clean_peaks,
           "bandwidth": _positive(data.get("bandwidth"), f"{where}: bandwidth", 1e15),
           "launch_s": _positive(data.get("launch_s"), f"{where}: launch_s", 1.0),
           "ramp_s": _positive(data.get("ramp_s", 1e-9), f"{where}: ramp_s", 1.0)}
    half = data.get("spatial_half", 0)
    out["spatial_half"] = 0.0 if half == 0 and not isinstance(half, bool) else \
        _positive(half, f"{where}: spatial_half", 1e9)
    eff = data.get("efficiency")
    if not isinstance(eff, dict):
        raise ProfileError(f"{where}: efficiency must be an object of class -> fraction")
    for key in eff:
        if key not in EFFICIENCY_CLASSES:
            raise ProfileError(f"{where}: efficiency has unknown class {_show(key)}; "
                               f"known: {', '.join(EFFICIENCY_CLASSES)}")
    out["efficiency"] = {k: _positive(eff.get(k, 0.5), f"{where}: efficiency.{k}", 1.0) for k in EFFICIENCY_CLASSES}
    curve = data.get("bandwidth_curve")
    if curve is not None:
        if not isinstance(curve, list) or not 0 < len(curve) <= MAX_CURVE:
            raise ProfileError(f"{where}: bandwidth_curve must be a list of 1 to {MAX_CURVE} [bytes, bytes/s] pairs")
        points = []
        for i, point in enumerate(curve):
            if not isinstance(point, list) or len(point) != 2:
                raise ProfileError(f"{where}: bandwidth_curve[{i}] must be a [bytes, bytes/s] pair")
            points.append((_positive(point[0], f"{where}: bandwidth_curve[{i}][0]", 1e15),
                           _positive(point[1], f"{where}: bandwidth_curve[{i}][1]", 1e15)))
        if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise ProfileError(f"{where}: bandwidth_curve sizes must increase")
        out["bandwidth_curve"] = [list(p) for p in points]
    return out


def read_profile(path: str) -> dict[str, Any]:
    """A profile JSON file: at most MAX_PROFILE_BYTES, a regular file, strict JSON, validated."""
    from ..errors import printable
    from ..files import open_regular, read_at_most
    where = printable(path, 200)
    try:
        with open_regular(path) as f:
            raw = read_at_most(f, MAX_PROFILE_BYTES)
    except OSError as e:
        raise ProfileError(f"cannot read profile {where}: {e.strerror or e}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"profile {where} is larger than {MAX_PROFILE_BYTES // 1024} KiB; not a profile")

    def no_constants(name):     # NaN and Infinity are not JSON
        raise ProfileError(f"profile {where}: {name} is not a number")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ProfileError(f"profile {where} is not valid JSON: {printable(str(e), 120)}") from None
    return validate(data, f"profile {where}")


def load(device: str) -> dict[str, Any]:
    """A built-in name (see BUILTIN, ALIASES), 'local' (the calibrated profile) or a path to a profile JSON."""
    key = device.strip().lower()
    key = ALIASES.get(key, key)
    if key in BUILTIN:
        return validate(BUILTIN[key], key)
    if key in ("local", "cpu"):
        path = local_path()
        if not os.path.exists(path):
            raise ProfileError(f"no calibrated profile at {path}; run `cnndsl calibrate` first "
                               "(or give --device a built-in GPU or a profile file)")
        return read_profile(path)
    if device.endswith(".json") or os.sep in device or os.path.exists(device):
        return read_profile(device)
    import difflib
    names = sorted(BUILTIN) + ["local"]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ProfileError(f"unknown device {_show(device)}: {hint}choose one of {', '.join(names)}, "
                       "or a path to a profile JSON")
