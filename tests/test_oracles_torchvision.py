"""Parameter counts, MACs and layer structure against torchvision's models (built here, nothing downloaded)."""
from __future__ import annotations

import pytest

import cnndsl
from conftest import TORCHVISION, input_size, spec_path, torchvision_params
from torch_oracle import measured

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def torchvision_model(name):
    ctor, kwargs = TORCHVISION[name]
    return torchvision.models.get_model(ctor, weights=None, **kwargs).eval()


@pytest.mark.parametrize("name", torchvision_params())
def test_params_macs_and_structure_match_torchvision(name):
    model = torchvision_model(name)
    report = cnndsl.analyze(cnndsl.compile(spec_path(name)))
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    macs, conv_shapes = measured(model, input_size(name))   # the size the spec says and the weights know
    assert report.totals["params"] == params
    assert report.totals["buffers"] == buffers
    assert report.totals["macs"] == macs
    assert report.totals["flops"] == 2 * macs
    ours = [n.shape for n in report.graph.nodes if n.op == "conv"]
    assert ours == conv_shapes, "convolutions differ in number, order or output shape"
    assert report.graph.output.shape == (1000,)


WEIGHTS_META = {  # torchvision's published metadata, read from the installed package (no download)
    "alexnet": "AlexNet_Weights", "vgg16": "VGG16_Weights", "vgg19_bn": "VGG19_BN_Weights",
    "resnet50": "ResNet50_Weights", "resnet152": "ResNet152_Weights", "googlenet": "GoogLeNet_Weights",
    "mobilenet_v2": "MobileNet_V2_Weights",
}


@pytest.mark.parametrize("name", sorted(WEIGHTS_META))
def test_published_metadata(name):
    meta = getattr(torchvision.models, WEIGHTS_META[name]).IMAGENET1K_V1.meta
    report = cnndsl.analyze(cnndsl.compile(spec_path(name)))
    assert report.totals["params"] == meta["num_params"]
    # torchvision's "GFLOPS" are conv+linear multiply-accumulates, rounded to 3 decimals
    assert abs(report.totals["macs"] / 1e9 - meta["_ops"]) <= 0.0005 + 1e-9
