"""Weight interchange with torchvision: copy a state dict into a cnndsl module, matched by structure."""
from __future__ import annotations

from collections import OrderedDict

from ..errors import CnnDslError


class WeightMismatch(CnnDslError):
    """The two architectures differ; the message names the first layer that differs."""

    kind = "weight mismatch"


def _layers(state: dict) -> list[tuple[str, dict]]:
    """Group a state dict into weight layers in order: [(module prefix, {param name: tensor})]."""
    groups: "OrderedDict[str, dict]" = OrderedDict()
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = value
    return list(groups.items())


def _kind(tensors: dict) -> str:
    if "running_mean" in tensors:
        return "bn"
    weight = tensors.get("weight")
    if weight is None:
        return "other"
    return {4: "conv", 2: "fc"}.get(weight.dim(), f"{weight.dim()}-d")


def _describe(prefix: str, tensors: dict) -> str:
    w = tensors.get("weight")
    shape = "x".join(map(str, w.shape)) if w is not None else "?"
    bias = "" if _kind(tensors) == "bn" else (" with bias" if "bias" in tensors else " without bias")
    return f"'{prefix}' ({_kind(tensors)} {shape}{bias})"


def load_torchvision(model, source, *, strict: bool = True) -> list[tuple[str, str]]:
    """Copy weights from a torchvision model or state dict into `model` (built by cnndsl.to_torch).

    Layers are paired in order (convolutions, batch norms, linear layers as torchvision registers them and
    as the spec's graph runs them); kinds, shapes and biases must agree. Returns the (theirs, ours) pairs.
    Raises WeightMismatch naming the first layer that differs.
    """
    import torch

    theirs_state = source.state_dict() if hasattr(source, "state_dict") else source
    graph = model.cnndsl_graph
    paths = model.cnndsl_paths
    ours_state = model.state_dict()
    ours_groups = dict(_layers(ours_state))
    ours = []
    for n in graph.nodes:
        prefix = ".".join(paths.get(n.name, ()))
        if prefix in ours_groups:
            ours.append((prefix, ours_groups[prefix], n))
    theirs = [(p, t) for p, t in _layers(theirs_state) if _kind(t) != "other"]
    pairs = []
    for i, (their_prefix, their_tensors) in enumerate(theirs):
        if i >= len(ours):
            raise WeightMismatch(f"the source has {len(theirs) - len(ours)} more weight layers, starting at "
                                 f"{_describe(their_prefix, their_tensors)}",
                                 hint="the spec describes a smaller network than the source")
        our_prefix, our_tensors, node = ours[i]
        same = _kind(their_tensors) == _kind(our_tensors) and set(their_tensors) == set(our_tensors) and all(
            tuple(their_tensors[k].shape) == tuple(our_tensors[k].shape) for k in our_tensors)
        if not same:
            raise WeightMismatch(f"weight layer {i + 1} differs: the source's {_describe(their_prefix, their_tensors)}"
                                 f" vs the spec's {_describe(our_prefix, our_tensors)}",
                                 node.span, "the architectures differ from here on")
        pairs.append((their_prefix, our_prefix))
    if strict and len(ours) > len(theirs):
        prefix, tensors, node = ours[len(theirs)]
        raise WeightMismatch(f"the spec has {len(ours) - len(theirs)} more weight layers, starting at "
                             f"{_describe(prefix, tensors)}", node.span)
    with torch.no_grad():
        for (their_prefix, our_prefix) in pairs:
            for leaf, tensor in dict(_layers(theirs_state))[their_prefix].items():
                ours_state[f"{our_prefix}.{leaf}"].copy_(tensor)
    return pairs
