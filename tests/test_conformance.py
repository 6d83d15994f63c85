"""The conformance harness: every op in the registry, through every example its module lists (covering its
options), held to every oracle. An op without examples, or without any facet, fails here.

For each example: the analyzer's shapes equal a PyTorch forward pass; its parameter and buffer counts equal the
module's; the ONNX export passes onnx.checker's full check and ONNX shape inference agrees with the analyzer;
ONNX Runtime agrees with PyTorch on the same weights; cnndsl's own ONNX imports back to the same layers at
opsets 13, 17, 18 and 21; the spec writer's text compiles to the same layers; and every unit's exact receptive
field (Report.rf_box) equals the gradient support.
"""
from __future__ import annotations

from collections import Counter

import pytest

import cnndsl
from cnndsl.ir.ops import EXAMPLES, OPS

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnndsl.backends.from_onnx import import_onnx  # noqa: E402
from cnndsl.backends.to_onnx import to_onnx  # noqa: E402
from cnndsl.backends.to_spec import write_spec  # noqa: E402
from test_rf_box import clipped, gradient_boxes  # noqa: E402

INPUT = "input 9x8x6\n"
CASES = [(op, text) for op in sorted(OPS) for text in EXAMPLES.get(op, ())]
OPSETS = (13, 17, 18, 21)


def layers(graph) -> list:
    """What must survive a round trip: each layer's op, attributes and shape, in order."""
    return [(n.op, tuple(sorted(n.attrs.items())), n.shape) for n in graph.nodes]


def test_every_op_lists_examples():
    missing = sorted(set(OPS) - set(EXAMPLES))
    assert not missing, f"ops without conformance examples: {missing}"
    assert all(EXAMPLES[op] for op in OPS)


# Facets still missing, each failing until it is built (strict: a fixed one must come off this list).
GAPS = {
}


def _case(op, text):
    gap = GAPS.get(f"{op}:{text}")
    return pytest.param(op, text, id=f"{op}:{text}",
                        marks=[pytest.mark.xfail(strict=True, reason=gap)] if gap else [])


@pytest.mark.parametrize("op,text", [_case(op, text) for op, text in CASES])
def test_op_conformance(op, text):
    graph = cnndsl.compile_text(INPUT + text)
    assert any(n.op == op for n in graph.nodes), f"the example does not use {op}"
    report = cnndsl.analyze(graph)
    names = [n.name for n in graph.nodes]

    # shapes, parameters and buffers against a real forward pass
    torch.manual_seed(0)
    module = cnndsl.to_torch(graph, return_nodes=names).eval()
    for m in module.modules():       # non-trivial statistics, so batch norm is not the identity
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        outs = module(x)
    for n in graph.nodes:
        assert tuple(outs[n.name].shape[1:]) == n.shape, n.name
    assert sum(p.numel() for p in module.parameters()) == report.totals["params"]
    assert sum(b.numel() for b in module.buffers()) == report.totals["buffers"]

    # ONNX: checker, shape inference, ONNX Runtime against PyTorch
    want = outs[graph.output.name].numpy()
    for opset in OPSETS:
        model = to_onnx(graph, weights=module.state_dict(), opset=opset)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        dims = {v.name: tuple(d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim)
                for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for n in graph.nodes[1:]:
            assert dims[n.name] == ("N", *n.shape), (opset, n.name)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
        assert np.allclose(got, want, rtol=1e-4, atol=1e-5), opset
        # cnndsl's own ONNX imports back to the same layers
        assert layers(import_onnx(model)) == layers(graph), opset

    # the spec writer's text compiles to the same layers (write_spec also checks this itself)
    assert Counter(layers(cnndsl.compile_text(write_spec(graph)))) == Counter(layers(graph))

    # every unit's exact field against the gradient support, at the op's nodes and the last feature map
    spatial = [n for n in graph.nodes[1:] if len(n.shape) == 3]
    for name in {*(n.name for n in graph.nodes if n.op == op and len(n.shape) == 3), *(n.name for n in spatial[-1:])}:
        for (y, xx), box in gradient_boxes(graph, name).items():
            assert clipped(report.rf_box(name, y, xx), graph) == box, (name, y, xx)


def test_even_lrn_is_not_written_to_onnx():
    """PyTorch centres an even LRN window at c - size//2 .. c + (size-1)//2, ONNX at c - (size-1)//2 ..: the
    exporter refuses instead of writing a model that computes something else."""
    graph = cnndsl.compile_text(INPUT + "lrn4")
    with pytest.raises(cnndsl.CnnDslError, match="odd size"):
        to_onnx(graph)
