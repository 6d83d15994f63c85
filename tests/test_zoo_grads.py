"""Training mode, one model per family: with torchvision's weights copied in (cnndsl.load_torchvision), the spec's
PyTorch module gives torchvision's outputs and the same gradient for every paired weight, batch norm using the
batch's statistics. Dropout and stochastic depth draw from the same seeded stream in the same order in both."""
from __future__ import annotations

import pytest

import cnndsl
from conftest import TORCHVISION, spec_path

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

FAMILIES = {"resnet18": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64, "regnet_y_400mf": 64,
            "shufflenet_v2_x0_5": 64, "convnext_tiny": 64, "densenet121": 64, "squeezenet1_1": 64,
            "mnasnet0_5": 64, "googlenet": 64, "vgg11_bn": 32, "alexnet": 64, "inception_v3": 96,
            "resnext50_32x4d": 64, "mobilenet_v2": 64}


CI = {"resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "convnext_tiny"}   # the rest with -m slow


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in CI else [pytest.mark.slow]) for n in sorted(FAMILIES)])
def test_training_mode_gradients_match_torchvision(name):
    size = FAMILIES[name]
    ctor, kwargs = TORCHVISION[name]
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(ctor, weights=None, **kwargs).train()
    ours = cnndsl.to_torch(cnndsl.compile(spec_path(name), input_shape=(size, size, 3)), logits=True).train()
    pairs = cnndsl.load_torchvision(ours, theirs)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    weight = torch.randn(2, 1000, generator=torch.Generator().manual_seed(2))
    outs = []
    for model in (theirs, ours):
        torch.manual_seed(3)
        out = model(x)
        (out * weight).sum().backward()
        outs.append(out.detach())
    scale = outs[0].abs().max().item()
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-4 * scale
    their_params, our_params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    checked = 0
    for their_prefix, our_prefix in pairs:
        for leaf in ("weight", "bias", "layer_scale"):
            a = their_params.get(f"{their_prefix}.{leaf}" if their_prefix else leaf)
            b = our_params.get(f"{our_prefix}.{leaf}" if our_prefix else leaf)
            if a is None or b is None:
                continue
            ga, gb = a.grad.reshape(-1), b.grad.reshape(-1)
            assert (ga - gb).abs().max().item() <= 1e-4 * max(ga.abs().max().item(), 1e-6), (their_prefix, leaf)
            checked += 1
    assert checked >= len(pairs)
