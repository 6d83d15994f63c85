"""Every node's predicted shape and the parameter/buffer totals against a real PyTorch forward pass."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

import cnndsl
from conftest import SPEC_IDS, SPECS
from strategies import spec as random_spec

torch = pytest.importorskip("torch")


def check_against_torch(graph, batch=2):
    model = cnndsl.to_torch(graph, return_nodes=[n.name for n in graph.nodes]).eval()
    report = cnndsl.analyze(graph)
    assert sum(p.numel() for p in model.parameters()) == report.totals["params"]
    assert sum(b.numel() for b in model.buffers()) == report.totals["buffers"]
    with torch.no_grad():
        outs = model(torch.randn(batch, *graph.input_shape))
    for n in graph.nodes:
        assert tuple(outs[n.name].shape) == (batch,) + n.shape, n.name


@pytest.mark.parametrize("path", SPECS, ids=SPEC_IDS)
def test_every_spec_shapes_match_forward(path):
    graph = cnndsl.compile(path)
    if graph.input_shape[1] > 64:   # keep CI fast: the same network at a smaller size exercises the same rules
        graph = cnndsl.compile(path, input_shape=(112, 96, graph.input_shape[0]))
    check_against_torch(graph, batch=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_spec())
def test_generated_specs_shapes_match_forward(text):
    try:
        graph = cnndsl.compile_text(text)
    except cnndsl.ShapeError:
        return   # e.g. a size collapsing below 1; test_collapse_agrees_with_torch covers the refusal
    check_against_torch(graph)


@settings(max_examples=40, deadline=None)
@given(random_spec(max_units=3))
def test_collapse_agrees_with_torch(text):
    """When the analyzer refuses a sequential spec for a collapsing size, torch cannot run it either."""
    if "res(" in text or "cat(" in text or "fc" in text or "adaptive" in text:
        return   # sequential bodies without a size-dependent head: a bigger input builds the same layers
    try:
        cnndsl.compile_text(text)
        return
    except cnndsl.ShapeError as e:
        if "collapses" not in e.message:
            return
    # rebuild layer by layer in torch until it fails
    lines = text.splitlines()
    h, w, c = map(int, lines[0].split()[1].split("x"))
    body = "\n".join(lines[1:])
    with pytest.raises(Exception):
        model = cnndsl.to_torch(cnndsl.compile_text(f"input {h}x{w}x{c}\n{body}", input_shape=(h * 64, w * 64, c))).eval()
        with torch.no_grad():
            model(torch.randn(1, c, h, w))   # the original, too small input


def test_dag_shapes_resnet_and_inception_blocks():
    text = """
    input 20x18x3
    block incep(a, b) = cat(conv1-a bn, conv1-b + conv3-a, maxpool3/1[pad=1] + conv1-b)
    conv3-8 + res(conv3-16/2 bn + conv3-16 bn) + incep(4, 6) + res(conv3-14 + conv3-14, conv1-14)
    + add(conv3-4, conv1-4, avgpool3/1[pad=1] + conv1-4) | gap | fc3
    """
    check_against_torch(cnndsl.compile_text(text))
