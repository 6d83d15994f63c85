"""torchvision's classification zoo: every spec named after a torchvision model, against torchvision itself.

The oracles are independent of cnndsl: torchvision's published metadata (read from the installed package;
nothing is downloaded), the model built here with weights=None and measured on a real forward pass
(torch_oracle.measured), and its outputs once its weights are copied into the spec's PyTorch module.
Parameters, buffers, MACs and convolution shapes at full size are test_oracles_torchvision's (a real forward
pass) and test_zoo_meta's (the meta device, every model in CI); the models in SLOW_TORCHVISION run their real
full-size checks, and a real forward at 80x80 here, with -m slow.
"""
from __future__ import annotations

import pytest

import cnndsl
from conftest import (BACKEND_CHECKED, HUGE_TORCHVISION, SIBLINGS, SLOW_TORCHVISION, SPEC_IDS, TORCHVISION,
                      input_size, spec_path)
from torch_oracle import measured

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# What torchvision's published num_params counts and a spec leaves out (its header says why): Inception v3's
# auxiliary classifier on Mixed_6e, which the released weights hold but only training runs, and which the
# language's single output cannot describe: a 1x1-128 convolution and BN, a 5x5-768 convolution and BN, and
# a 768 -> 1000 fully connected layer (no bias on the convolutions; BN has a weight and a bias per channel).
LEFT_OUT = {"inception_v3": (768 * 128 + 2 * 128) + (128 * 768 * 5 * 5 + 2 * 768) + (768 * 1000 + 1000)}

SMALL = 80   # the slow models' CI size (every stage keeps at least 2x2), and the calibration images'


def weights(name):
    return torchvision.models.get_model_weights(TORCHVISION[name][0]).DEFAULT


def torchvision_model(name):
    ctor, kwargs = TORCHVISION[name]
    return torchvision.models.get_model(ctor, weights=None, **kwargs).eval()


def test_every_spec_named_after_a_torchvision_model_is_checked():
    models = set(torchvision.models.list_models(module=torchvision.models))   # the classification models
    assert all(ctor == name for name, (ctor, _) in TORCHVISION.items())
    assert set(TORCHVISION) <= set(SPEC_IDS)
    assert set(SPEC_IDS) & models == set(TORCHVISION)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_input_size_is_what_the_weights_were_trained_at(name):
    size = input_size(name)
    assert weights(name).transforms().crop_size == [size]
    assert cnndsl.compile(spec_path(name)).input_shape == (3, size, size)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_published_metadata(name):
    meta = weights(name).meta
    report = cnndsl.analyze(cnndsl.compile(spec_path(name)))
    assert report.totals["params"] + LEFT_OUT.get(name, 0) == meta["num_params"]
    # torchvision's "GFLOPS" are conv+linear multiply-accumulates at the input size above, rounded to 3 decimals
    assert round(report.totals["macs"] / 1e9, 3) == meta["_ops"]


def calibrate(model, image, seed=0):
    """Random BN affine parameters, and running statistics gathered from random images (a train-mode pass,
    cumulative averages): every layer's output then has a healthy scale in eval mode (the defaults, 0 and 1,
    make MnasNet's logits ~1e-8) and depends on each BN being copied to its own place. Layer norms' affine
    parameters and ConvNeXt's layer scales (init 1e-6: the blocks would add nothing) are drawn too."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5)
        model.train()
        model(torch.randn(2, 3, image, image, generator=gen))
    return model.eval()


def slow_here(name):
    """Pairing at full size runs with -m slow for a model over 40M weights or 6 GMACs (building both models and
    running both takes seconds on a 2-core CPU), for a sibling over 3 GMACs whose family's lighter member CI
    pairs (SIBLINGS; CI checks its counts and shapes at full size elsewhere), and for the models that
    test_torch_backend pairs at 64x64 in CI (BACKEND_CHECKED)."""
    meta = weights(name).meta
    return (name in SLOW_TORCHVISION or name in BACKEND_CHECKED or meta["num_params"] > 40e6 or meta["_ops"] > 6
            or (name in SIBLINGS and meta["_ops"] > 3))


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if slow_here(n) else [])
                                  for n in sorted(TORCHVISION)])
def test_torchvision_weights_give_torchvisions_outputs(name):
    size = input_size(name)
    torch.manual_seed(0)
    theirs = calibrate(torchvision_model(name), SMALL)
    ours = cnndsl.to_torch(cnndsl.compile(spec_path(name)), logits=True).eval()
    pairs = cnndsl.load_torchvision(ours, theirs)
    assert len(pairs) == sum(1 for m in theirs.modules() if isinstance(
        m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm))) + sum(
        1 for name, _ in theirs.named_parameters() if name.endswith("layer_scale"))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    scale = want.abs().max().item()
    assert torch.isfinite(want).all() and want.std().item() > 1e-3 * scale > 0
    assert (got - want).abs().max().item() <= 1e-4 * scale


@pytest.mark.slow   # CI has their counts and shapes at full size on the meta device (test_zoo_meta)
@pytest.mark.parametrize("name", sorted(SLOW_TORCHVISION - HUGE_TORCHVISION))
def test_slow_models_structure_at_80x80(name):
    model = torchvision_model(name)
    report = cnndsl.analyze(cnndsl.compile(spec_path(name), input_shape=(SMALL, SMALL, 3)))
    macs, conv_shapes = measured(model, SMALL)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["buffers"] == sum(b.numel() for b in model.buffers())
    assert report.totals["macs"] == macs
    assert [n.shape for n in report.graph.nodes if n.op == "conv"] == conv_shapes
    assert report.graph.output.shape == (1000,)


@pytest.mark.parametrize("name", sorted(SIBLINGS))
def test_siblings_use_only_their_familys_ops(name):
    # what SIBLINGS claims, so that the every-spec tests lose nothing by running these only with -m slow
    ops = {n.op for n in cnndsl.compile(spec_path(name)).nodes}
    assert ops <= {n.op for n in cnndsl.compile(spec_path(SIBLINGS[name])).nodes}
