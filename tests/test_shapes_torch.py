"""Every node's predicted shape and the parameter/buffer totals against a real PyTorch forward pass."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, event, given, settings

import cnndsl
from cnndsl.ir.names import module_paths
from conftest import spec_params
from strategies import compiles, sequential_spec
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


@pytest.mark.parametrize("path", spec_params())
def test_every_spec_shapes_match_forward(path):
    graph = cnndsl.compile(path)
    if graph.input_shape[1] > 64:   # keep CI fast: the same network at a smaller size exercises the same rules
        graph = cnndsl.compile(path, input_shape=(112, 96, graph.input_shape[0]))
    check_against_torch(graph, batch=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_spec())
def test_generated_specs_shapes_match_forward(text):
    check_against_torch(compiles(text))


BIG = 1 << 19   # an input no generated chain shrinks below 1 pixel (limits.MAX_DIM is 2^20)


def run_layer_by_layer(text):
    """Run the chain of layers in `text` in PyTorch, on the spec's own (small) input, and say where it fails.

    The modules come from the same spec compiled for a huge input (a chain without joins or a size-dependent
    head builds the same modules at any size). Returns None when torch runs it all, or (node, the H x W torch
    gave that node, the RuntimeError) for the first node it cannot run."""
    h, w, c = map(int, text.splitlines()[0].split()[1].split("x"))
    graph = cnndsl.compile_text(text, input_shape=(BIG, BIG, c))      # must not fail: outside any pytest.raises
    model = cnndsl.to_torch(graph).eval()
    node_at = {".".join(path): graph[name] for name, path in module_paths(graph).items()}
    entered, finished = [], set()
    for name, module in model.named_modules():
        if name in node_at:
            node = node_at[name]
            module.register_forward_pre_hook(lambda m, args, node=node: entered.append((node, args[0].shape)))
            module.register_forward_hook(lambda m, args, out, node=node: finished.add(node.name))
    try:
        with torch.no_grad():
            model(torch.randn(1, c, h, w))
    except RuntimeError as e:
        node, shape = entered[-1]
        assert node.name not in finished
        return node, tuple(shape[-2:]), e
    return None


@settings(max_examples=40, deadline=None)
@given(sequential_spec())
def test_collapse_agrees_with_torch(text):
    """cnndsl refuses a chain of layers for a size collapsing below 1 exactly when PyTorch cannot run it: at the
    layer where PyTorch fails, for the input size PyTorch gave that layer. When it accepts, every node's shape
    is the one PyTorch computes."""
    failure = run_layer_by_layer(text)
    if failure is None:
        event("torch runs it")
        check_against_torch(cnndsl.compile_text(text), batch=1)
        return
    event("torch refuses it")
    node, (h, w), err = failure
    assert re.search(r"too small|can't be greater than actual input size", str(err)), err
    with pytest.raises(cnndsl.ShapeError) as info:
        cnndsl.compile_text(text)
    assert re.fullmatch(rf"{node.op} \S+ shrinks the {h}x{w} input to -?\d+x-?\d+: the spatial size collapses below 1",
                        info.value.message), (info.value.message, node.name, (h, w))
    assert info.value.span.start == node.span.start, (info.value.render(), node.name)


def test_dag_shapes_resnet_and_inception_blocks():
    text = """
    input 20x18x3
    block incep(a, b) = cat(conv1-a bn, conv1-b + conv3-a, maxpool3/1[pad=1] + conv1-b)
    conv3-8 + res(conv3-16/2 bn + conv3-16 bn) + incep(4, 6) + res(conv3-14 + conv3-14, conv1-14)
    + add(conv3-4, conv1-4, avgpool3/1[pad=1] + conv1-4) | gap | fc3
    """
    check_against_torch(cnndsl.compile_text(text))
