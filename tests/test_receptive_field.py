"""Receptive fields against an independent, gradient-based measurement: which input pixels move one output unit."""
from __future__ import annotations

import pytest

import cnndsl
from conftest import spec_path

torch = pytest.importorskip("torch")
nn = torch.nn


def _spread(n: int):
    """n positive factors from 0.5 to 1.5, fixed and in no pattern (so no two channels are copies)."""
    return torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) + 0.5


def positive_model(graph, nodes):
    """The spec's torch model with every weight positive, max-pools as average pools (same windows) and
    ReLU6 as ReLU (a residual stack of positive values passes 6), so no gradient path cancels or is cut:
    a pixel influences an output exactly when it lies in its field. Weights differ from channel to channel, and a
    layer norm's weights from each other: a layer norm is blind to a change shared by all channels (and the sum
    of its outputs under equal weights is a constant), so equal channels would hide every field through it."""
    model = cnndsl.to_torch(graph, return_nodes=nodes).double().eval()

    def swap(parent):
        for key, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, key, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, key, nn.AdaptiveAvgPool2d(child.output_size))
            elif isinstance(child, nn.ReLU6):
                setattr(parent, key, nn.ReLU())
            else:
                swap(child)
    swap(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(_spread(m.weight.numel()).view(m.weight.shape) / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.fill_(0.01)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(_spread(m.weight.numel()))
                m.bias.fill_(0.01)
    return model


def measured_field(model, graph, node, y, x):
    c, h, w = graph.input_shape
    image = torch.ones(1, c, h, w, dtype=torch.float64, requires_grad=True)
    out = model(image)[node]
    unit = out[0, :, y, x].sum() if out.dim() == 4 else out[0].sum()   # all channels: a concat's field is the union
    unit.backward()
    hit = image.grad[0].abs().sum(0).nonzero()
    return (hit[:, 0].min().item(), hit[:, 0].max().item()), (hit[:, 1].min().item(), hit[:, 1].max().item())


def predicted_field(rf, graph, y, x):
    _, h, w = graph.input_shape
    box = []
    for axis, (i, size) in enumerate(((y, h), (x, w))):
        start = i * rf.stride[axis] - rf.padding[axis]
        end = start + rf.size[axis] - 1
        box.append((max(start, 0), min(end, size - 1)))
    return tuple(box)


def check(graph, picks):
    report = cnndsl.analyze(graph)
    model = positive_model(graph, [n for n, _ in picks])
    for name, where in picks:
        shape = graph[name].shape
        y, x = where if len(shape) == 3 else (0, 0)
        assert measured_field(model, graph, name, y, x) == predicted_field(report.rf[name], graph, y, x), name


def names(graph, op):
    return [n.name for n in graph.nodes if n.op == op]


def test_sequential_lenet():
    g = cnndsl.compile(spec_path("lenet5"))
    picks = [(names(g, "conv")[0], (3, 5)), (names(g, "avgpool")[1], (2, 2)), (names(g, "fc")[0], None)]
    check(g, picks)


def test_vgg_stack_with_pools():
    g = cnndsl.compile(spec_path("vgg11"), input_shape=(96, 96, 3))
    convs = names(g, "conv")
    check(g, [(convs[1], (10, 7)), (convs[4], (5, 5)), (names(g, "maxpool")[3], (3, 2)), (convs[-1], (2, 3))])


def test_residual_resnet18():
    g = cnndsl.compile(spec_path("resnet18"), input_shape=(160, 160, 3))
    adds = names(g, "add")
    check(g, [(adds[0], (20, 21)), (adds[3], (6, 9)), (adds[5], (4, 4))])


def test_concat_inception_and_ceil_pools():
    g = cnndsl.compile(spec_path("googlenet"), input_shape=(96, 96, 3))
    cats = names(g, "concat")
    check(g, [(cats[0], (5, 6)), (cats[2], (2, 3))])


def test_depthwise_and_linear_bottlenecks_mobilenet_v2():
    g = cnndsl.compile(spec_path("mobilenet_v2"), input_shape=(96, 96, 3))
    adds, convs = names(g, "add"), names(g, "conv")
    check(g, [(adds[0], (10, 13)), (adds[4], (5, 3)), (convs[-1], (1, 2))])


def test_dilation_strides_and_rectangular_kernels():
    g = cnndsl.compile_text("input 161x141x2\nconv3-4[dilation=2] + conv1x5-4/2 + maxpool3/2[pad=1] + conv5x3-3/2x1[pad=1x2]"
                       " + avgpool2/1 + conv3-2[dilation=3, pad=2]")
    # units at the centre: no window reaches into an intermediate map's padding, so the whole field is real
    picks = [(n.name, (n.shape[1] // 2, n.shape[2] // 2)) for n in g.nodes if n.op in ("conv", "maxpool", "avgpool")]
    check(g, picks)


def test_unaligned_merge_is_reported():
    # aligned: centred branches of different sizes; unaligned: a 1x1/2 beside a 2x2/2 pool (half a pixel)
    g = cnndsl.compile_text("input 16x16x1\nadd(conv3-2[pad=1], conv3-2[pad=1] + conv3-2[pad=1x1] + conv1-2)")
    assert not any("unaligned" in w["message"] for w in cnndsl.analyze(g).warnings)
    g = cnndsl.compile_text("input 16x16x1\nadd(conv1-2/2, maxpool2/2 + conv1-2)")   # centres 0 and 0.5
    report = cnndsl.analyze(g)
    assert any("unaligned" in w["message"] for w in report.warnings)
