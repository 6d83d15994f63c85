"""Exact receptive fields of every unit (Report.rf_box) against the gradient measurement: which input pixels
move one output unit. Includes the layers whose units are not one grid (uneven and enlarging adaptive pooling)
and everything after them."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl

torch = pytest.importorskip("torch")
from test_receptive_field import positive_model  # noqa: E402


class InfAsZero(torch.nn.Module):
    def forward(self, x):
        return torch.where(torch.isinf(x), torch.zeros((), dtype=x.dtype), x)


def measuring_model(graph, nodes):
    """positive_model (every path adds, none cancels), with a dilated max pool measured as what it reads: a
    depthwise convolution with the same dilated windows (an average pool has no dilation), after explicit end
    padding where it pools in ceil mode."""
    from cnndsl.ir.names import module_paths
    model = positive_model(graph, nodes)
    plain = cnndsl.to_torch(graph, return_nodes=nodes)
    node_of = {".".join(path): graph[name] for name, path in module_paths(graph).items()}
    for (name, theirs), (_, ours) in zip(plain.named_modules(), model.named_modules()):
        if not isinstance(theirs, torch.nn.MaxPool2d) or theirs.dilation in (1, (1, 1)):
            continue
        node = node_of[name]
        src = graph[node.inputs[0]].shape
        a = node.attrs
        padded = a["padding"] != a["pad_end"]      # the forward pads with -inf first: read it as zeros
        conv = torch.nn.Conv2d(src[0], src[0], a["kernel"], a["stride"], 0 if padded else a["padding"],
                               a["dilation"], groups=src[0], bias=False).double()
        torch.nn.init.constant_(conv.weight, 1.0)
        ends = [max(0, (node.shape[1 + i] - 1) * a["stride"][i] + a["dilation"][i] * (a["kernel"][i] - 1) + 1
                    - src[1 + i] - a["padding"][i] - a["pad_end"][i]) for i in (0, 1)]
        layer = torch.nn.Sequential(torch.nn.ZeroPad2d((0, ends[1], 0, ends[0])), conv) if any(ends) else conv
        if padded:
            layer = torch.nn.Sequential(InfAsZero(), layer)
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        key = name.rpartition(".")[2]
        if isinstance(parent, torch.nn.ModuleDict):
            parent[key] = layer
        else:
            setattr(parent, key, layer)
    return model


def gradient_boxes(graph, name):
    """For each unit (y, x) of node `name`: the bounding box of the input pixels its value depends on
    (None when it depends on none: a window wholly in padding)."""
    model = measuring_model(graph, [name])
    c, h, w = graph.input_shape
    image = torch.ones(1, c, h, w, dtype=torch.float64, requires_grad=True)
    out = model(image)[name]
    rows, cols = (out.shape[2], out.shape[3]) if out.dim() == 4 else (1, 1)
    boxes = {}
    for y in range(rows):
        for x in range(cols):
            image.grad = None
            unit = out[0, :, y, x].sum() if out.dim() == 4 else out[0].sum()
            unit.backward(retain_graph=True)
            hit = image.grad[0].abs().sum(0).nonzero()
            boxes[y, x] = None if not len(hit) else ((hit[:, 0].min().item(), hit[:, 0].max().item()),
                                                     (hit[:, 1].min().item(), hit[:, 1].max().item()))
    return boxes


def clipped(box, graph):
    """A field's bounds clipped to the image; None for a field with no pixel in it."""
    _, h, w = graph.input_shape
    (t, b), (l, r) = box
    (t, b), (l, r) = (max(t, 0), min(b, h - 1)), (max(l, 0), min(r, w - 1))
    return None if t > b or l > r else ((t, b), (l, r))


def check_every_unit(text):
    graph = cnndsl.compile_text(text)
    report = cnndsl.analyze(graph)
    for n in graph.nodes[1:]:
        for (y, x), want in gradient_boxes(graph, n.name).items():
            assert clipped(report.rf_box(n.name, y, x), graph) == want, (n.name, y, x)


@pytest.mark.parametrize("text", [
    "input 2x2x1\nadaptiveavgpool4",                                   # enlarging: units repeat pixels
    "input 10x10x1\nadaptiveavgpool4",                                 # uneven: 0..2, 2..4, 5..7, 7..9
    "input 11x7x1\nconv3-2 + adaptivemaxpool3x5 + conv3-2 | fc3",      # after an uneven pool, and rectangular
    "input 12x12x1\nconv3-2/2 + maxpool2/2[ceil] + conv3-2[pad=2, dilation=2]",
    "input 9x9x1\ncat(conv3-2, conv5-2 + adaptiveavgpool9) + conv1-1",  # merge of a grid and a pool
    "input 5x5x1\nmaxpool2/2 + conv3-1",                               # a dropped row stays unseen
    "input 8x8x1\nconv1x1-1[pad=2] | gap | fc7",                       # border units see nothing; gap sees all
])
def test_exact_fields_of_every_unit(text):
    check_every_unit(text)


def test_cifar_vgg_head_is_on_the_image():
    """torchvision's VGG head on a 32x32 image: the 1x1 map is pooled up to 7x7; the old formula put the
    adaptive pool's field off the image and 342 pixels at the first fc."""
    graph = cnndsl.compile_text("input 32x32x3\n(conv3-8 x2 + maxpool) x5 | adaptiveavgpool7 | fc10")
    report = cnndsl.analyze(graph)
    pool = next(n.name for n in graph.nodes if n.op == "adaptive_avgpool")
    assert report.rf_box(pool, 6, 6) == report.rf_box(pool, 0, 0) == ((-1, 32), (-1, 32))
    assert report.rf[graph.output.name].size == (34, 34)
    assert report.to_dict()["layers"][-1]["rf"]["size"] == [34, 34]


def test_uniform_flag_in_json():
    report = cnndsl.analyze(cnndsl.compile_text("input 10x10x1\nconv3-2 + adaptiveavgpool4 + conv1-2 | fc2"))
    flags = {row["name"]: row["rf"]["uniform"] for row in report.to_dict()["layers"]}
    assert flags["conv1"] is True and flags["avgpool1"] is False and flags["conv2"] is False


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 12), st.integers(3, 12), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from(["avg", "max"]), st.sampled_from(["conv3-2 + ", "conv2-2/2[pad=0] + ", "maxpool2 + ", ""]))
def test_adaptive_pooling_fields_for_any_sizes(h, w, oh, ow, kind, before):
    text = f"input {h}x{w}x1\n{before}adaptive{kind}pool{oh}x{ow} + conv3-1"
    try:
        cnndsl.compile_text(text)
    except cnndsl.ShapeError:
        return
    check_every_unit(text)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_specs_every_unit_of_the_last_map(data):
    """Random networks (convs with stride, dilation and padding, pools with ceil, residuals, concats): every
    unit of the last feature map."""
    from strategies import spec as random_spec
    text = data.draw(random_spec(max_units=4))
    try:
        graph = cnndsl.compile_text(text)
    except cnndsl.ShapeError:
        return
    spatial = [n for n in graph.nodes[1:] if len(n.shape) == 3]
    if not spatial:
        return
    last = spatial[-1]
    report = cnndsl.analyze(graph)
    for (y, x), want in gradient_boxes(graph, last.name).items():
        assert clipped(report.rf_box(last.name, y, x), graph) == want, (last.name, y, x)
