"""All of torchvision's classification zoo in CI, at full size: each spec named after a torchvision model against
the model built on PyTorch's meta device (no memory, no arithmetic) and run forward there, so that parameters,
buffers, conv+fc MACs and every convolution's output shape are torchvision's own, for the 128-GFLOP models too."""
from __future__ import annotations

import pytest

import cnndsl
from conftest import TORCHVISION, input_size, spec_path
from torch_oracle import measured

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

def meta_measure(model, size: int):
    """(params, buffers, MACs, conv output shapes in the order they ran, output shape) on the meta device."""
    macs, shapes, out = measured(model, size, device="meta", output=True)
    # BatchNorm's num_batches_tracked is a buffer of one element, as cnndsl counts it
    return (sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers()), macs, shapes,
            out)


def build_on_meta(ctor: str, kwargs: dict):
    """torchvision's model with its tensors on the meta device. A builder that computes with tensors while it
    builds (RegNet's width rules call .tolist()) cannot run there: it builds on the CPU with the weight
    initialisers switched off (memory is reserved, never written), then moves to the meta device."""
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(ctor, weights=None, **kwargs).eval()
    except NotImplementedError:
        pass
    from unittest import mock
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    with mock.patch.multiple(torch.nn.init, **{n: (lambda tensor, *a, **k: tensor) for n in names}):
        model = torchvision.models.get_model(ctor, weights=None, **kwargs)
    return model.to("meta").eval()


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_counts_and_shapes_against_torchvision_on_the_meta_device(name):
    ctor, kwargs = TORCHVISION[name]
    model = build_on_meta(ctor, kwargs)
    size = input_size(name)
    params, buffers, macs, shapes, out = meta_measure(model, size)
    report = cnndsl.analyze(cnndsl.compile(spec_path(name)))
    assert report.graph.input_shape == (3, size, size)
    assert report.totals["params"] == params
    assert report.totals["buffers"] == buffers
    assert report.totals["macs"] == macs
    ours = [n.shape for n in report.graph.nodes if n.op == "conv"]
    assert ours == shapes, "convolutions differ in number, order or output shape"
    assert report.graph.output.shape == out == (1000,)
def test_the_zoo_is_complete():
    """Every CNN of torchvision's classification zoo (all but vit_*, swin_* and maxvit_t) has a spec checked here."""
    models = {m for m in torchvision.models.list_models(module=torchvision.models)
              if not m.startswith(("vit_", "swin_", "maxvit"))}
    missing = sorted(m for m in models if not spec_path(m).exists())
    assert not missing, f"{len(missing)} of {len(models)} torchvision CNNs have no spec: {missing}"
    assert models <= set(TORCHVISION)
