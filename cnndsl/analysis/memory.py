"""Training memory: weights, gradients, optimizer state and the activations autograd keeps for backward when the
generated PyTorch module trains, from the IR alone (no torch import). Each op says what its backward keeps
(`Op.saved`); here the graph is walked once, every kept tensor is resolved to the storage it lives in (a view or
an in-place layer shares its input's) and each storage is counted once."""
from __future__ import annotations

from math import prod
from typing import Any, Optional

from ..ir import Graph
from ..ir.ops import OPS

OPTIMIZERS = ("adamw", "adam", "sgd", "none")
AMP = ("bf16", "fp16")
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}


def _training_nodes(g: Graph) -> list:
    """The nodes the trained module runs: a softmax tail is left out (training wants logits, as `cnndsl train`
    builds it)."""
    nodes = list(g.nodes)
    if OPS[nodes[-1].op].logits_tail and len(nodes) > 2:
        nodes = nodes[:-1]
    return nodes


def _inplace(nodes: list) -> dict[str, bool]:
    """Which nodes the PyTorch backend runs in place (its rule, cnndsl.backends.to_torch.generate_source): an
    op that can, on a fresh input that nothing else reads."""
    users: dict[str, int] = {n.name: 0 for n in nodes}
    for n in nodes:
        for src in n.inputs:
            users[src] += 1
    ops = {n.name: OPS[n.op] for n in nodes}
    return {n.name: bool(n.inputs) and ops[n.name].inplace and users[n.inputs[0]] == 1
            and ops[n.inputs[0]].fresh_output for n in nodes}


def saved_tensors(g: Graph, batch: int = 1, dtype: str = "float32", amp: Optional[str] = None,
                  device: str = "cuda") -> tuple[dict[tuple, int], dict[str, int], int]:
    """(storage -> bytes of every tensor autograd keeps, bytes of the storages each layer is the first to keep,
    bytes of the half weight copies autocast caches and the backward keeps)."""
    dtype = DTYPES.get(dtype, dtype)
    if dtype not in ITEMSIZE:
        raise ValueError(f"training memory is computed for float types, not {dtype}")
    half = {"bf16": "bfloat16", "fp16": "float16"}[amp] if amp else None
    nodes = _training_nodes(g)
    inplace = _inplace(nodes)
    root: dict[str, tuple] = {}      # node -> the storage its output lives in
    size: dict[tuple, int] = {}      # storage -> bytes
    kind: dict[str, str] = {}        # node -> the type of its output
    storages: dict[tuple, int] = {}
    per_layer: dict[str, int] = {n.name: 0 for n in g.nodes}
    copies = 0
    for n in nodes:
        op = OPS[n.op]
        if not n.inputs:
            root[n.name] = ("out", n.name)
            kind[n.name] = dtype
            size[root[n.name]] = _nbytes(n.shape, batch, dtype)
            continue
        in_kinds = [kind[i] for i in n.inputs]
        casts: dict[int, str] = {}   # input index -> the type autocast casts it to (a copy)
        if half and op.autocast == "lower":
            compute = half
            casts = {k: half for k, t in enumerate(in_kinds) if t == "float32"}
            weights = op.params(n.attrs, [g[i].shape for i in n.inputs])
            if weights:     # the cached half copy of the weight (the bias copy is not kept for backward)
                bias = n.attrs.get("out", 0) if n.attrs.get("bias") else 0
                copies += (weights - bias) * ITEMSIZE[half]
        elif half and op.autocast == "float32":
            compute = "float32"
            casts = {k: "float32" for k, t in enumerate(in_kinds) if t != "float32"}
        else:
            compute = max(in_kinds, key=ITEMSIZE.__getitem__)
        out_kind = "float32" if half and op.autocast == "float32_out" else compute
        shapes = [g[i].shape for i in n.inputs]
        run_inplace = inplace[n.name]
        if op.alias(n.attrs, run_inplace):
            root[n.name] = root[n.inputs[0]]
        else:
            root[n.name] = ("out", n.name)
            size[root[n.name]] = _nbytes(n.shape, batch, out_kind)
        kind[n.name] = out_kind
        for key, nbytes in op.saved(n.attrs, shapes, n.shape, batch, compute, inplace=run_inplace,
                                    autocast=bool(half), device=device):
            if key[0] == "in" and key[1] in casts:
                store, nbytes = ("cast", n.name, key[1]), _nbytes(shapes[key[1]], batch, casts[key[1]])
            elif key[0] == "in":
                store = root[n.inputs[key[1]]]
                nbytes = size[store]
            elif key == ("out",):
                store = root[n.name]
                nbytes = size[store]
            else:
                store = (n.name,) + tuple(key)
            if store not in storages:
                storages[store] = nbytes
                per_layer[n.name] += nbytes
    return storages, per_layer, copies


def _nbytes(shape, batch: int, dtype: str) -> int:
    return prod(shape) * batch * ITEMSIZE[dtype]


def _param_tensors(g: Graph) -> int:
    count = 0
    for n in g.nodes[1:]:
        count += OPS[n.op].param_tensors(n.attrs, [g[i].shape for i in n.inputs])
    return count


def train_memory(g: Graph, batch: int = 1, optimizer: str = "adamw", dtype: str = "float32",
                 amp: Optional[str] = None, device: str = "cuda") -> dict[str, Any]:
    """Bytes of one training step of the generated module at `batch` images:

    weights      parameters and buffers in `dtype` (float32 under amp)
    grads        one gradient per trainable parameter
    optimizer    sgd: the momentum buffer (1x params); adam/adamw: exp_avg and exp_avg_sq (2x params) and a
                 float32 step counter per parameter tensor; none: 0 (state after the first step)
    activations  the tensors autograd keeps for backward, each storage once, parameters left out (amp: the
                 half copies autocast makes of conv/fc inputs, not the float32 originals they replace)
    weight_copies   amp: the half copies of conv/fc weights autocast caches and backward keeps
    peak         weights + grads + optimizer + activations + weight copies + the largest transient of backward:
                 the gradients of one layer's output and of its inputs, live together (an estimate: every
                 activation and every gradient are taken as live at once, as at the start of backward of a
                 second step; allocator fragmentation, cuDNN workspaces and the CUDA context are not counted)
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if amp is not None and amp not in AMP:
        raise ValueError(f"amp must be one of {', '.join(AMP)}, got {amp!r}")
    dtype = DTYPES.get(dtype, dtype)
    if amp and dtype != "float32":
        raise ValueError("mixed precision keeps float32 weights: use --dtype float32 with --amp")
    from .passes import counts
    params, buffers, _ = counts(g)
    size = ITEMSIZE[dtype]
    total_params = sum(params.values())
    storages, per_layer, copies = saved_tensors(g, batch, dtype, amp, device)
    ints = sum(OPS[n.op].int_buffers(n.attrs, [g[i].shape for i in n.inputs]) for n in g.nodes[1:])
    weights = (total_params + sum(buffers.values()) - ints) * size + 8 * ints      # int64 buffers: 8 bytes
    grads = total_params * size
    state = {"none": 0, "sgd": total_params * size,
             "adam": 2 * total_params * size + 4 * _param_tensors(g)}
    state["adamw"] = state["adam"]
    activations = sum(storages.values())
    grad_kind = ITEMSIZE[{"bf16": "bfloat16", "fp16": "float16"}[amp]] if amp else size
    transient = 0
    for n in _training_nodes(g)[1:]:
        live = prod(n.shape) + sum(prod(g[i].shape) for i in n.inputs)
        transient = max(transient, live * batch * grad_kind)
    result = {"optimizer_name": optimizer, "dtype": dtype, "amp": amp, "batch": batch,
              "weights": weights, "grads": grads, "optimizer": state[optimizer], "activations": activations,
              "weight_copies": copies, "transient": transient}
    result["peak"] = weights + grads + state[optimizer] + activations + copies + transient
    result["per_layer"] = per_layer
    return result


def per_image(g: Graph, **kw) -> tuple[int, int]:
    """(fixed bytes, bytes per image) of the peak: it is linear in the batch."""
    one = train_memory(g, batch=1, **kw)["peak"]
    two = train_memory(g, batch=2, **kw)["peak"]
    return 2 * one - two, two - one


def fit_batch(g: Graph, limit: int, **kw) -> int:
    """The largest batch whose peak fits in `limit` bytes (0 when not even one image fits): a binary search
    on the linear model of per_image."""
    fixed, each = per_image(g, **kw)

    def peak(b: int) -> int:
        return fixed + each * b

    if peak(1) > limit:
        return 0
    low, high = 1, 2
    while peak(high) <= limit and high < 1 << 40:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if peak(mid) <= limit else (low, mid)
    return low


UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'80GB' (powers of 1000), '80GiB' (powers of 1024), '512MiB', or a plain number of bytes."""
    import re
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]i?b|b)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a memory size: {text!r} (write e.g. 80GB, 24GiB, 512MiB)")
    value = float(m.group(1)) * UNITS[m.group(2) or "b"]
    if value < 1:
        raise ValueError(f"memory size {text!r} is below one byte")
    return int(value)


def summary(tm: dict[str, Any]) -> dict[str, Any]:
    """The JSON of totals.train_memory (without the per-layer table)."""
    return {k: v for k, v in tm.items() if k != "per_layer"}


def _bytes(n: int) -> str:
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n} B"


def line(tm: dict[str, Any]) -> str:
    """The human line printed after the table."""
    kind = f"amp {tm['amp']}" if tm["amp"] else tm["dtype"]
    text = (f"training memory ({tm['optimizer_name']}, {kind}, batch {tm['batch']}): weights {_bytes(tm['weights'])}, "
            f"grads {_bytes(tm['grads'])}, optimizer {_bytes(tm['optimizer'])}, "
            f"activations {_bytes(tm['activations'])}")
    if tm["weight_copies"]:
        text += f", weight copies {_bytes(tm['weight_copies'])}"
    text += f", peak {_bytes(tm['peak'])}"
    if "fit_batch" in tm:
        limit = tm["fit_limit"]
        text += f"; largest batch within {limit / 1e9:g} GB ({_bytes(limit)}): {tm['fit_batch']}"
    return text


def attach(report, tm: dict[str, Any]) -> None:
    """Put the plan in the report's totals (`totals.train_memory`, in every JSON view)."""
    report.totals["train_memory"] = summary(tm)


def add_saved_bytes(data: dict[str, Any], tm: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The JSON report with each layer's `saved_bytes` (the storages it is the first to keep for backward; a
    softmax tail left out of training keeps 0); unchanged when no plan was asked for."""
    if tm is not None:
        for row in data.get("layers", []):
            row["saved_bytes"] = tm["per_layer"].get(row["name"], 0)
    return data
