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


def _same(theirs: dict, ours: dict) -> bool:
    """The same layer: kinds, tensors and shapes agree, or theirs is a linear layer applied at each position
    (ConvNeXt's nn.Linear on a channels-last map) and ours the 1x1 convolution with the same weights."""
    if set(theirs) != set(ours):
        return False
    if _kind(theirs) == _kind(ours):
        return all(tuple(theirs[k].shape) == tuple(ours[k].shape) for k in ours)
    return (_kind(theirs), _kind(ours)) == ("fc", "conv") and all(
        tuple(ours[k].shape) == tuple(theirs[k].shape) + ((1, 1) if k == "weight" else ()) for k in ours)


# Layer scale: torchvision's CNBlock holds it as a bare parameter `layer_scale` (C x 1 x 1) on the block, which
# its state dict lists before the block's layers; cnndsl's layerscale node holds it as `gamma`. They are paired
# among themselves, in order.
THEIR_SCALE, OUR_SCALE = "layer_scale", "gamma"


def _describe(prefix: str, tensors: dict) -> str:
    w = tensors.get("weight")
    shape = "x".join(map(str, w.shape)) if w is not None else "?"
    bias = "" if _kind(tensors) == "bn" else (" with bias" if "bias" in tensors else " without bias")
    return f"'{prefix}' ({_kind(tensors)} {shape}{bias})"


def load_torchvision(model, source, *, strict: bool = True) -> list[tuple[str, str]]:
    """Copy weights from a torchvision model or state dict into `model` (built by cnndsl.to_torch).

    Layers are paired in order (convolutions, batch norms, layer norms, linear layers as torchvision registers
    them and as the spec's graph runs them); kinds, shapes and biases must agree, except that a linear layer
    applied at each position (ConvNeXt's) pairs with a 1x1 convolution. ConvNeXt's layer scales are paired
    among themselves, in order. Returns the (theirs, ours) pairs, the layer scales' last.
    Raises WeightMismatch naming the first layer that differs.
    """
    import torch

    theirs_state = source.state_dict() if hasattr(source, "state_dict") else source
    graph = model.cnndsl_graph
    paths = model.cnndsl_paths
    ours_state = model.state_dict()
    ours_groups = dict(_layers(ours_state))
    ours, our_scales = [], []
    for n in graph.nodes:
        prefix = ".".join(paths.get(n.name, ()))
        if prefix in ours_groups:
            (our_scales if n.op == "layerscale" else ours).append((prefix, ours_groups[prefix], n))
    theirs = [(p, t) for p, t in _layers(theirs_state) if _kind(t) != "other"]
    their_scales = [(p, t) for p, t in _layers(theirs_state) if set(t) == {THEIR_SCALE}]
    pairs = []
    for i, (their_prefix, their_tensors) in enumerate(theirs):
        if i >= len(ours):
            raise WeightMismatch(f"the source has {len(theirs) - len(ours)} more weight layers, starting at "
                                 f"{_describe(their_prefix, their_tensors)}",
                                 hint="the spec describes a smaller network than the source")
        our_prefix, our_tensors, node = ours[i]
        if not _same(their_tensors, our_tensors):
            raise WeightMismatch(f"weight layer {i + 1} differs: the source's {_describe(their_prefix, their_tensors)}"
                                 f" vs the spec's {_describe(our_prefix, our_tensors)}",
                                 node.span, "the architectures differ from here on")
        pairs.append((their_prefix, our_prefix))
    if strict and len(ours) > len(theirs):
        prefix, tensors, node = ours[len(theirs)]
        raise WeightMismatch(f"the spec has {len(ours) - len(theirs)} more weight layers, starting at "
                             f"{_describe(prefix, tensors)}", node.span)
    scales = _pair_scales(their_scales, our_scales, strict)
    with torch.no_grad():
        for (their_prefix, our_prefix) in pairs:
            for leaf, tensor in dict(_layers(theirs_state))[their_prefix].items():
                mine = ours_state[f"{our_prefix}.{leaf}"]
                mine.copy_(tensor.reshape(mine.shape))      # a position-wise linear's weight into a 1x1 conv's
        for (their_prefix, our_prefix) in scales:
            ours_state[f"{our_prefix}.{OUR_SCALE}"].copy_(dict(their_scales)[their_prefix][THEIR_SCALE])
    return pairs + scales


def _pair_scales(theirs: list, ours: list, strict: bool) -> list[tuple[str, str]]:
    """ConvNeXt's layer scales with the spec's layerscale nodes, in order (see THEIR_SCALE)."""
    for i, (their_prefix, their_tensors) in enumerate(theirs):
        key = f"{their_prefix}.{THEIR_SCALE}" if their_prefix else THEIR_SCALE
        if i >= len(ours):
            raise WeightMismatch(f"the source has {len(theirs) - len(ours)} more layer scales, starting at '{key}'",
                                 hint="the spec describes a smaller network than the source")
        our_prefix, our_tensors, node = ours[i]
        want, got = their_tensors[THEIR_SCALE].shape, our_tensors[OUR_SCALE].shape
        if tuple(want) != tuple(got):
            raise WeightMismatch(f"layer scale {i + 1} differs: the source's '{key}' "
                                 f"({'x'.join(map(str, want))}) vs the spec's '{our_prefix}' "
                                 f"({'x'.join(map(str, got))})", node.span, "the architectures differ from here on")
    if strict and len(ours) > len(theirs):
        prefix, _, node = ours[len(theirs)]
        raise WeightMismatch(f"the spec has {len(ours) - len(theirs)} more layer scales, starting at '{prefix}'",
                             node.span)
    return [(t[0], o[0]) for t, o in zip(theirs, ours)]
