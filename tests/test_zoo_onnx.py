"""torchvision's own ONNX exports of one model per modern family import to torchvision's exact figures.

bench/zoo_onnx_import.py runs all 68 at full size (bench/RESULTS.md); CI runs one per family that the older
tests (test_onnx_import) do not cover, at a reduced input so export stays quick. The oracle is torchvision:
its parameter count and a real forward pass (torch_oracle.measured) at the same input."""
from __future__ import annotations

import warnings

import pytest

import cnndsl
from conftest import TORCHVISION
from torch_oracle import measured

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnndsl.backends.from_onnx import import_onnx  # noqa: E402

FAMILIES = {"mobilenet_v3_small": 96, "efficientnet_b0": 96, "regnet_y_400mf": 96, "shufflenet_v2_x0_5": 96,
            "convnext_tiny": 64, "squeezenet1_1": 96, "densenet121": 64, "mnasnet0_5": 96, "inception_v3": 107}
# CI: the families whose ONNX forms are new (squeeze-and-excitation, hardswish, silu, channel split and shuffle,
# channels-last layer norm and its opset-13 composite); the rest, and opset 13 for most, run with -m slow
CI = {("mobilenet_v3_small", 17), ("mobilenet_v3_small", 13), ("efficientnet_b0", 17), ("regnet_y_400mf", 17),
      ("shufflenet_v2_x0_5", 17), ("convnext_tiny", 17), ("convnext_tiny", 13)}
CASES = [pytest.param(name, opset, id=f"{name}-{opset}",
                      marks=[] if (name, opset) in CI else [pytest.mark.slow])
         for name in sorted(FAMILIES) for opset in (13, 17)]


@pytest.mark.parametrize("name, opset", CASES)
def test_torchvision_export_imports_exactly(tmp_path, name, opset):
    ctor, kwargs = TORCHVISION[name]
    torch.manual_seed(0)
    model = torchvision.models.get_model(ctor, weights=None, **kwargs).eval()
    size = FAMILIES[name]
    file = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # eval mode, batch norm kept as its own node (the default eval export folds it into the convolutions)
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(file), dynamo=False, opset_version=opset,
                          training=torch.onnx.TrainingMode.PRESERVE)
    report = cnndsl.analyze(import_onnx(str(file)))
    macs, conv_shapes = measured(model, image=size)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == macs
    assert [n.shape for n in report.graph.nodes if n.op == "conv"] == conv_shapes
    assert report.graph.output.shape == (1000,)
