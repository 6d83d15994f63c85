"""Latency estimates: a roofline model per layer, summed over the graph (eager execution, one kernel after another).

Per layer:
  compute  = FLOPs / (peak[dtype] x efficiency[class]) (+ ramp_s for convolutions)
  memory   = bytes / (bandwidth(bytes) x efficiency["memory"])       bytes = inputs + output + weights
  seconds  = max(compute, memory) + launch_s x kernels
`ramp_s` and `spatial_half` are how "small convs reach little of peak" is modelled: a conv on a map of
P output pixels (batch x H x W) reaches P / (P + spatial_half) of its class efficiency, and a conv of W FLOPs
pays a fixed ramp_s more (it reaches W / (W + peak*e*ramp_s) of the rest). Classes: fc -> matmul;
conv -> depthwise (groups = input channels), grouped (its efficiency depends on the channels per group),
conv1x1, stem (a reduction of <= 160 inputs per output: the first conv) or conv. Pooling ("pool": FLOPs =
outputs x window, adaptive pooling = inputs read) and every other op ("elementwise": FLOPs = elements read) have
their own efficiencies: on a GPU they come out memory bound; on a CPU, calibrated, batch norm, activations and
pooling often run below the copy bandwidth and are then reported compute bound. Flatten, dropout and droppath
move nothing at inference (a view or the identity) and cost one dispatch. fc at batch 1 comes out memory bound
by itself: its weights are read once for few FLOPs.

On a GPU, float32 convolutions use the TF32 rate where the profile has one (PyTorch's cuDNN default,
torch.backends.cudnn.allow_tf32 = True); float32 matmuls use the plain float32 rate (PyTorch's default,
torch.backends.cuda.matmul.allow_tf32 = False); depthwise convs run on CUDA cores (float32 rate).

Training (`train=True`): forward + backward ~ 3x the forward FLOPs, ~2x the bytes, 3 kernels per weight layer
(forward, input gradient, weight gradient) and 2 per other layer; the optimizer step is not counted.
Nothing here imports torch.
"""
from __future__ import annotations

import math
from math import prod
from typing import Any

from ..ir import Graph
from ..ir.ops import OPS
from .passes import DTYPE_BYTES, counts
from .profiles import ProfileError

NOOP_OPS = frozenset({"flatten", "dropout", "droppath"})   # a view or the identity at inference
STEM_REDUCTION = 160          # inputs per output (cin/groups x kh x kw) at or below which a conv is a "stem" conv
DTYPE_KEYS = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
              "bfloat16": "bfloat16", "bf16": "bfloat16"}


def conv_class(attrs: dict, cin: int) -> str:
    groups, (kh, kw) = attrs["groups"], attrs["kernel"]
    if groups > 1 and groups == cin:
        return "depthwise"
    if groups > 1:
        return "grouped"
    if (kh, kw) == (1, 1):
        return "conv1x1"
    if cin * kh * kw <= STEM_REDUCTION:
        return "stem"
    return "conv"


def op_class(node, in_shapes: list) -> str:
    """The efficiency class of a node: matmul, a conv class, pool, elementwise or noop."""
    if node.op == "conv":
        return conv_class(node.attrs, in_shapes[0][0])
    if node.op == "fc":
        return "matmul"
    if node.op in NOOP_OPS:
        return "noop"
    if OPS[node.op].slides or node.op.startswith("adaptive_"):
        return "pool"
    return "elementwise"


def _window_flops(node, in_shapes: list) -> int:
    """FLOPs per image of a non-weight op: per output element its window (pooling), else one per element read."""
    out = prod(node.shape)
    kernel = node.attrs.get("kernel")
    if kernel is not None and OPS[node.op].slides:
        return out * kernel[0] * kernel[1]
    return max(out, sum(prod(s) for s in in_shapes))


def peak_for(profile: dict, cls: str, dtype: str) -> float:
    """The FLOP/s ceiling of a class at a dtype (see the module's note on TF32)."""
    key = DTYPE_KEYS.get(dtype)
    peaks = profile["peak_flops"]
    if key is None:
        raise ProfileError(f"no latency model for dtype {dtype}: use float32, float16 or bfloat16")
    if cls in ("pool", "elementwise", "noop", "depthwise") and profile["kind"] == "gpu":
        return peaks["float32"]
    if key == "float32":
        if profile["kind"] == "gpu" and cls != "matmul" and "tf32" in peaks:
            return peaks["tf32"]
        return peaks["float32"]
    if key not in peaks:
        raise ProfileError(f"device '{profile['name']}' has no {dtype} rate"
                           + ("; `cnndsl calibrate` measures float32" if profile["kind"] == "cpu" else ""))
    return peaks[key]


def bandwidth_for(profile: dict, nbytes: float) -> float:
    """Bytes/s for a kernel moving `nbytes`: the calibrated curve (log-log interpolation, flat beyond its ends)
    where the profile has one, else the main-memory bandwidth."""
    curve = profile.get("bandwidth_curve")
    if not curve:
        return profile["bandwidth"]
    if nbytes <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if nbytes <= x1:
            t = (math.log(nbytes) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    return curve[-1][1]


def grouped_efficiency(eff: dict, per_group: int) -> float:
    """A grouped conv's efficiency: `grouped` at <= 4 channels per group, `grouped_wide` at >= 32, log-linear
    between, never above a dense conv's."""
    t = min(max((math.log2(max(per_group, 1)) - 2.0) / 3.0, 0.0), 1.0)
    return min(eff["conv"], math.exp((1 - t) * math.log(eff["grouped"]) + t * math.log(eff["grouped_wide"])))


def layer_time(profile: dict, cls: str, flops: float, nbytes: float, dtype: str = "float32",
               kernels: int = 1, pixels: float = 0, per_group: int = 4) -> tuple[float, str, float, float]:
    """(seconds, bound, compute seconds, memory seconds) of one kernel-group by the roofline model; `pixels`
    is a conv's output positions (batch x H x W), for the profile's spatial_half; `per_group` a grouped conv's
    input channels per group."""
    eff = profile["efficiency"]
    if cls == "noop":
        return profile["launch_s"] * kernels, "memory", 0.0, 0.0
    e = eff[cls] if cls != "grouped" else grouped_efficiency(eff, per_group)
    half = profile.get("spatial_half", 0)
    if half and pixels and cls not in ("matmul", "pool", "elementwise"):
        e *= pixels / (pixels + half)
    compute = flops / (peak_for(profile, cls, dtype) * e) if flops else 0.0
    if cls not in ("pool", "elementwise", "matmul") and flops:     # conv classes
        compute += profile["ramp_s"]
    memory = nbytes / (bandwidth_for(profile, nbytes) * eff["memory"]) if nbytes else 0.0
    bound = "compute" if compute > memory else "memory"
    return max(compute, memory) + profile["launch_s"] * kernels, bound, compute, memory


def estimate(graph: Graph, profile: dict, batch: int = 1, dtype: str = "float32", train: bool = False
             ) -> dict[str, Any]:
    """{"totals": {device, dtype, batch, train, seconds, images_per_s, bound, compute_seconds, memory_seconds,
    overhead_seconds}, "layers": {name: {seconds, bound}}} for `graph` on `profile` (profiles.load)."""
    if dtype not in DTYPE_BYTES:
        raise ProfileError(f"unknown dtype {dtype!r}")
    peak_for(profile, "conv", dtype)            # refuse a dtype the device has no rate for, once, up front
    size = DTYPE_BYTES[dtype]
    params, buffers, macs = counts(graph)
    shapes = {n.name: n.shape for n in graph.nodes}
    layers: dict[str, dict[str, Any]] = {}
    parts = {"compute": 0.0, "memory": 0.0, "overhead": 0.0}
    for n in graph.nodes:
        if not n.inputs:
            layers[n.name] = {"seconds": 0.0, "bound": "memory"}
            continue
        ins = [shapes[i] for i in n.inputs]
        cls = op_class(n, ins)
        weight = cls not in ("pool", "elementwise", "noop")
        flops = 2 * macs[n.name] if weight else _window_flops(n, ins)
        flops *= batch
        nbytes = (sum(prod(s) for s in ins) + prod(n.shape)) * batch * size + \
            (params[n.name] + buffers[n.name]) * size
        kernels = 1
        if train:
            flops, nbytes, kernels = 3 * flops, 2 * nbytes, (3 if weight else 2)
        pixels = batch * prod(n.shape[1:]) if len(n.shape) == 3 else batch
        per_group = ins[0][0] // n.attrs["groups"] if n.op == "conv" else 1
        seconds, bound, compute, memory = layer_time(profile, cls, flops, nbytes, dtype, kernels, pixels, per_group)
        layers[n.name] = {"seconds": seconds, "bound": bound}
        overhead = profile["launch_s"] * kernels
        parts["overhead"] += overhead
        parts[bound] += seconds - overhead
    total = sum(r["seconds"] for r in layers.values())
    totals = {"device": profile["name"], "dtype": dtype, "batch": batch, "train": train, "seconds": total,
              "images_per_s": batch / total if total > 0 else None,
              "bound": max(parts, key=parts.__getitem__),
              "compute_seconds": parts["compute"], "memory_seconds": parts["memory"],
              "overhead_seconds": parts["overhead"]}
    return {"totals": totals, "layers": layers}


def attach(report, result: dict[str, Any]) -> None:
    """Put an estimate into a Report's output: totals.latency, and `latency` in each layer row."""
    report.totals["latency"] = result["totals"]
    layer = report.layer
    per_layer = result["layers"]

    def layer_with_latency(name: str) -> dict[str, Any]:
        row = layer(name)
        if name in per_layer:
            row["latency"] = dict(per_layer[name])
        return row
    report.layer = layer_with_latency


def summary_line(totals: dict[str, Any]) -> str:
    """One line for the table view."""
    ms = totals["seconds"] * 1e3
    rate = totals["images_per_s"]
    what = "train step" if totals["train"] else "forward"
    return (f"latency on {totals['device']} ({totals['dtype']}, batch {totals['batch']}, {what}): {ms:,.3f} ms"
            + (f", {rate:,.1f} images/s" if rate else "") + f", mostly {totals['bound']}-bound (roofline estimate)")
