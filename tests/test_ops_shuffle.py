"""ShuffleNetV2's channel split (split(...), the channels op) and channel shuffle (shuffle), against oracles that are
not cnndsl: torch.chunk, torch.nn.ChannelShuffle and torchvision's channel_shuffle, a forward pass of torchvision's
own InvertedResidual units with the same weights, and the ONNX files torch.onnx writes for them."""
from __future__ import annotations

import io
import warnings
from collections import Counter

import pytest

import cnndsl

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402
from torchvision.models.shufflenetv2 import InvertedResidual, channel_shuffle  # noqa: E402

from cnndsl.backends.from_onnx import import_onnx  # noqa: E402
from cnndsl.backends.to_onnx import to_onnx  # noqa: E402
from cnndsl.backends.to_spec import write_spec  # noqa: E402


def layers(graph) -> Counter:
    return Counter((n.op, tuple(sorted(n.attrs.items())), n.shape) for n in graph.nodes)


def run(graph, x):
    torch.manual_seed(0)
    module = cnndsl.to_torch(graph).eval()
    with torch.no_grad():
        return module, module(x)


# ------------------------------------------------------------- shuffle --

@pytest.mark.parametrize("groups,channels", [(2, 6), (3, 12), (4, 8), (1, 5), (6, 6)])
def test_shuffle_is_torchvisions_channel_shuffle(groups, channels):
    graph = cnndsl.compile_text(f"input 5x4x{channels}\nshuffle[groups={groups}]")
    x = torch.randn(2, channels, 5, 4)
    _, y = run(graph, x)
    assert torch.equal(y, channel_shuffle(x, groups))
    assert torch.equal(y, torch.nn.ChannelShuffle(groups)(x))
    # and by hand: output channel i is input channel (i mod g) * C/g + i div g
    order = [(i % groups) * (channels // groups) + i // groups for i in range(channels)]
    assert torch.equal(y, x[:, order])


def test_shuffle_spellings():
    shuffles = [cnndsl.compile_text(f"input 4x4x12\n{text}").output.attrs
                for text in ("shuffle", "shuffle2", "shuffle[groups=2]", "shuffle[g=2]", "shuffle(2)", "channel_shuffle2")]
    assert shuffles == [{"groups": 2}] * 6
    assert cnndsl.compile_text("input 4x4x12\nshuffle3").output.attrs == {"groups": 3}
    report = cnndsl.analyze(cnndsl.compile_text("input 4x4x12\nconv3-12 + shuffle4"))
    assert report.totals["params"] == 12 * 12 * 9 + 12 and report.rf["shuffle1"] == report.rf["relu1"]


@pytest.mark.parametrize("text,message,hint", [
    ("input 4x4x6\nshuffle4", "shuffle in 4 groups needs channels divisible by 4, but the input has 6",
     "use groups that divide 6"),
    ("input 4x4x6\nshuffle2[groups=3]", "shuffle groups given twice", "write it once"),
    ("input 4x4x6\nshuffle0", "shuffle groups must be at least 1", None),
    ("input 4x4x6\ngap + fc4 + shuffle2", "shuffle needs a CxHxW feature map", "before the first fc layer"),
    ("input 4x4x6\nshuffle2-4", "shuffle takes one number", "shuffle2 or shuffle[groups=2]"),
    ("input 4x4x6\nshuffle[groups=2.5]", "shuffle groups must be a whole number", None),
])
def test_shuffle_refusals(text, message, hint):
    with pytest.raises(cnndsl.CnnDslError) as e:
        cnndsl.compile_text(text)
    assert message in e.value.message and (hint is None or hint in (e.value.hint or "")), str(e.value)


# --------------------------------------------------------------- split --

def test_split_is_torch_chunk():
    graph = cnndsl.compile_text("input 7x5x9\nsplit(none, maxpool3/1[pad=1], avgpool3/1[pad=1])")
    x = torch.randn(2, 9, 7, 5)
    _, y = run(graph, x)
    a, b, c = torch.chunk(x, 3, dim=1)
    want = torch.cat([a, torch.nn.functional.max_pool2d(b, 3, 1, 1), torch.nn.functional.avg_pool2d(c, 3, 1, 1)], 1)
    assert torch.equal(y, want)
    ranges = [(n.name, n.attrs["start"], n.attrs["stop"]) for n in graph.nodes if n.op == "channels"]
    assert ranges == [("split1.b1.channels1", 0, 3), ("split1.b2.channels1", 3, 6), ("split1.b3.channels1", 6, 9)]
    assert graph.output.op == "concat" and graph.output.name == "split1.concat"


def test_split_on_a_vector_and_in_a_block():
    graph = cnndsl.compile_text("input 4x4x3\nblock half(c) = split(fc{c}, identity)\ngap + fc8 + half(3) + fc2")
    assert [n.shape for n in graph.nodes if n.op in ("channels", "concat")] == [(4,), (4,), (7,)]
    x = torch.randn(3, 3, 4, 4)
    module, y = run(graph, x)
    assert y.shape == (3, 2)


@pytest.mark.parametrize("text,message,hint", [
    ("input 4x4x6\nsplit(none, none, none, none)", "split(...) cuts its input's 6 channels into 4 equal parts, but 4 "
     "does not divide 6", "give the layer before it a multiple of 4 channels"),
    ("input 4x4x5\nconv1-5 + split(conv1-2, conv1-3)", "but 2 does not divide 5", "channels[start=0, stop=N]"),
    ("input 4x4x6\nchannels[start=4, stop=2]", "channels 4:2 is not a range inside the input's 6 channels",
     "start must be below stop"),
    ("input 4x4x6\nchannels[stop=7]", "channels 0:7 is not a range", "stop at most 6"),
    ("input 4x4x6\nchannels[start=6]", "channels 6:6 is not a range", None),
    ("input 4x4x6\nchannels2", "channels takes its range as options", "channels[start=0, stop=16]"),
    ("input 4x4x6\nchannels[begin=1]", "unknown option 'begin' for channels", None),
])
def test_split_and_channels_refusals(text, message, hint):
    with pytest.raises(cnndsl.CnnDslError) as e:
        cnndsl.compile_text(text)
    assert message in e.value.message and (hint is None or hint in (e.value.hint or "")), str(e.value)


def test_split_is_a_keyword_only_before_a_bracket():
    with pytest.raises(cnndsl.CnnDslError, match="cannot be a block name"):
        cnndsl.compile_text("block split = conv3-4\nsplit")
    graph = cnndsl.compile_text("input 4x4x4\nsplit: conv3-4 + split(none, relu)")    # a label named split
    assert graph.nodes[1].name == "split"


def test_spec_writer_writes_split_and_channel_ranges():
    for text, word in (("conv1-4 + split(identity, conv1-2 bn + dwconv3 bn none + conv1-2 bn) + shuffle2", "split("),
                       ("cat(channels[stop=2] + conv1-3, channels[start=2])", "channels[start=0, stop=2]"),
                       ("cat(channels[stop=3], channels[start=3] + relu, conv1-1)", "channels[start=3, stop=6]")):
        graph = cnndsl.compile_text("input 6x6x6\n" + text)
        spec = write_spec(graph)
        assert word in spec, spec
        assert layers(cnndsl.compile_text(spec)) == layers(graph)


# ------------------------------------------------- ShuffleNetV2's units --

UNITS = """input 8x8x{inp}
down: cat(dwconv3/2 bn none + conv1-{half} bn, conv1-{half} bn + dwconv3/2 bn none + conv1-{half} bn) + shuffle2
unit: split(identity, conv1-{half} bn + dwconv3 bn none + conv1-{half} bn) + shuffle2
"""


def torchvision_units(inp: int, oup: int):
    torch.manual_seed(1)
    model = torch.nn.Sequential(InvertedResidual(inp, oup, 2), InvertedResidual(oup, oup, 1)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("inp,oup", [(8, 16), (24, 116)])
def test_shufflenet_v2_units_equal_torchvisions(inp, oup):
    """A stride-2 unit (both branches on the whole input) and a stride-1 unit (split, the identity half and the
    convolution half, concatenated and shuffled), with torchvision's weights copied in, give torchvision's output."""
    graph = cnndsl.compile_text(UNITS.format(inp=inp, half=oup // 2))
    reference = torchvision_units(inp, oup)
    ours = cnndsl.to_torch(graph).eval()
    theirs_state, ours_state = reference.state_dict(), ours.state_dict()
    assert [v.shape for v in theirs_state.values()] == [v.shape for v in ours_state.values()]
    ours.load_state_dict(dict(zip(ours_state, theirs_state.values())))
    x = torch.randn(2, inp, 8, 8)
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert got.shape == want.shape == (2, oup, 4, 4)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    report = cnndsl.analyze(graph)
    assert report.totals["params"] == sum(p.numel() for p in reference.parameters())
    # ONNX Runtime runs cnndsl's own export of it to the same numbers
    model = to_onnx(graph, weights=ours.state_dict(), opset=17)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"input": x.numpy()})[0], want.numpy(), atol=1e-4, rtol=1e-4)


def torch_export(module, shape, opset, dynamic, folding=False):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(*shape), f, opset_version=opset, dynamo=False, input_names=["x"],
                          do_constant_folding=folding, **({"dynamic_axes": {"x": {0: "N"}}} if dynamic else {}))
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("dynamic", [False, True], ids=["batch1", "batchN"])
def test_torch_onnx_export_of_torchvisions_units_imports_as_the_spec(opset, dynamic):
    """torch.onnx (TorchScript) writes chunk as Slices whose bounds come from Shape/Gather/Add/Div/Mul, and
    channel_shuffle as Reshape/Transpose/Reshape whose targets are constants (a fixed batch) or built from the
    input's Shape (a dynamic one): all of it reads back as the spec's graph."""
    graph = cnndsl.compile_text(UNITS.format(inp=8, half=8))
    back = import_onnx(torch_export(torchvision_units(8, 16), (1, 8, 8, 8), opset, dynamic))
    assert layers(back) == layers(graph)
    assert cnndsl.analyze(back).totals == cnndsl.analyze(graph).totals
    spec = write_spec(back)
    assert "split(none, " in spec and "shuffle[groups=2]" in spec
    assert layers(cnndsl.compile_text(spec)) == layers(graph)


def test_torch_onnx_export_of_torchvisions_shufflenet_v2_imports_as_the_spec():
    """The whole network, as torch.onnx writes it (a dynamic batch; its head's x.mean([2, 3]) is a ReduceMean over
    height and width): torchvision's counts, and the layers of the library's spec."""
    from conftest import spec_path
    from torch_oracle import measured
    model = torchvision.models.shufflenet_v2_x0_5().eval()
    back = import_onnx(torch_export(model, (1, 3, 224, 224), 17, True))
    macs, conv_shapes = measured(model)
    report = cnndsl.analyze(back)
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == macs
    assert [n.shape for n in back.nodes if n.op == "conv"] == conv_shapes
    path = spec_path("shufflenet_v2_x0_5")
    if path.exists():
        spec = cnndsl.compile(path)
        assert layers(back) == layers(spec) - Counter([("softmax", (), (1000,))])


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("dynamic", [False, True], ids=["batch1", "batchN"])
def test_torch_onnx_export_of_channel_shuffle_imports_as_shuffle(opset, dynamic):
    class Shuffle(torch.nn.Module):
        def forward(self, x):
            return channel_shuffle(x, 3)
    back = import_onnx(torch_export(Shuffle(), (1, 12, 5, 4), opset, dynamic))
    assert [(n.op, n.attrs, n.shape) for n in back.nodes] == [("input", {}, (12, 5, 4)),
                                                             ("shuffle", {"groups": 3}, (12, 5, 4))]


@pytest.mark.parametrize("opset", [13, 17])
def test_torch_split_with_sizes_imports_as_channel_ranges(opset):
    class Parts(torch.nn.Module):
        def forward(self, x):
            a, b = torch.split(x, [3, 5], 1)
            return torch.cat([torch.relu(a), x[:, 2:], torch.sigmoid(b)], 1)
    model = torch_export(Parts(), (1, 8, 4, 4), opset, True)
    assert "Split" in [n.op_type for n in model.graph.node]
    back = import_onnx(model)
    assert [(n.op, n.attrs) for n in back.nodes if n.op == "channels"] == [
        ("channels", {"start": 0, "stop": 3}), ("channels", {"start": 3, "stop": 8}), ("channels", {"start": 2, "stop": 8})]
    x = torch.randn(2, 8, 4, 4)
    _, y = run(back, x)
    assert torch.equal(y, Parts()(x))
    spec = write_spec(back)       # uneven parts: written as channel ranges
    assert "channels[start=0, stop=3]" in spec and layers(cnndsl.compile_text(spec)) == layers(back)


# ------------------------------------------------------ hand-made ONNX --

def ints(name, values):
    return nh.from_array(np.asarray(values, np.int64), name)


def model(nodes, inits=(), shape=(1, 6, 4, 4), opset=17, output="y"):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, list(shape))],
                     [h.make_tensor_value_info(output, T.FLOAT, None)], list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def ort_run(m, x):
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


SPLITS = {
    "equal, no sizes (opset 13)": (13, {}, [], [(0, 2), (2, 4), (4, 6)]),
    "sizes as an input": (13, {}, [ints("s", [1, 2, 3])], [(0, 1), (1, 3), (3, 6)]),
    "sizes as an attribute (opset 11)": (11, {"split": [4, 1, 1]}, [], [(0, 4), (4, 5), (5, 6)]),
    "num_outputs, even (opset 18)": (18, {"num_outputs": 3}, [], [(0, 2), (2, 4), (4, 6)]),
    "axis -3": (13, {"axis": -3}, [], [(0, 2), (2, 4), (4, 6)]),
}


@pytest.mark.parametrize("case", SPLITS, ids=list(SPLITS))
def test_split_forms_import_as_channel_ranges(case):
    opset, attrs, inits, want = SPLITS[case]
    attrs = {"axis": 1, **attrs}
    split = h.make_node("Split", ["x"] + [i.name for i in inits], ["p0", "p1", "p2"], name="cut", **attrs)
    m = model([split, h.make_node("Relu", ["p1"], ["r"]), h.make_node("Concat", ["p2", "r", "p0"], ["y"], axis=1)],
              inits, opset=opset)
    back = import_onnx(m)
    assert [(n.attrs["start"], n.attrs["stop"]) for n in back.nodes if n.op == "channels"] == want
    x = np.random.default_rng(0).standard_normal((1, 6, 4, 4)).astype(np.float32)
    _, y = run(back, torch.from_numpy(x))
    assert np.allclose(y.numpy(), ort_run(m, x))


def test_uneven_num_outputs_split_imports_as_onnx_cuts_it():
    m = model([h.make_node("Split", ["x"], ["p0", "p1", "p2"], axis=1, num_outputs=3),
               h.make_node("Concat", ["p2", "p1", "p0"], ["y"], axis=1)], shape=(1, 7, 2, 2), opset=18)
    back = import_onnx(m)
    assert [(n.attrs["start"], n.attrs["stop"]) for n in back.nodes if n.op == "channels"] == [(0, 3), (3, 6), (6, 7)]
    x = np.random.default_rng(0).standard_normal((1, 7, 2, 2)).astype(np.float32)
    _, y = run(back, torch.from_numpy(x))
    assert np.allclose(y.numpy(), ort_run(m, x))


def test_slices_on_channels_clamp_as_onnx_does():
    big = 2 ** 63 - 1
    m = model([h.make_node("Slice", ["x", "s1", "e1", "a"], ["p"]), h.make_node("Slice", ["x", "s2", "e2", "a2"], ["q"]),
               h.make_node("Concat", ["q", "p"], ["y"], axis=1)],
              [ints("s1", [-2]), ints("e1", [big]), ints("a", [1]), ints("s2", [0]), ints("e2", [-4]), ints("a2", [-3])])
    back = import_onnx(m)
    assert [(n.attrs["start"], n.attrs["stop"]) for n in back.nodes if n.op == "channels"] == [(4, 6), (0, 2)]
    x = np.random.default_rng(0).standard_normal((1, 6, 4, 4)).astype(np.float32)
    _, y = run(back, torch.from_numpy(x))
    assert np.allclose(y.numpy(), ort_run(m, x))


def shuffle_nodes(first=(0, 2, 3, 4, 4), perm=(0, 2, 1, 3, 4), last=(0, 6, 4, 4), source="x", out="y"):
    return ([h.make_node("Reshape", [source, "t1"], ["g"], name="group"),
             h.make_node("Transpose", ["g"], ["t"], name="swap", perm=list(perm)),
             h.make_node("Reshape", ["t", "t2"], [out], name="back")],
            [ints("t1", list(first)), ints("t2", list(last))])


def test_shuffle_pattern_variants_import():
    for first, last in (((0, 2, 3, 4, 4), (0, 6, 4, 4)), ((-1, 2, 3, 4, 4), (-1, 6, 4, 4)),
                        ((0, 2, -1, 4, 4), (0, -1, 4, 4)), ((1, 2, 3, 4, 4), (1, 6, 4, 4))):
        nodes, inits = shuffle_nodes(first, last=last)
        back = import_onnx(model(nodes, inits))
        assert [(n.op, n.attrs) for n in back.nodes[1:]] == [("shuffle", {"groups": 2})], (first, last)
        x = np.random.default_rng(0).standard_normal((1, 6, 4, 4)).astype(np.float32)
        assert np.array_equal(ort_run(model(nodes, inits), x), channel_shuffle(torch.from_numpy(x), 2).numpy())


@pytest.mark.parametrize("op,keep", [("ReduceMean", 0), ("ReduceMean", 1), ("ReduceMax", 0)])
def test_reduce_over_height_and_width_is_global_pooling(op, keep):
    m = model([h.make_node(op, ["x", "axes"], ["y"], name="pool", keepdims=keep)], [ints("axes", [-1, 2])], opset=18)
    back = import_onnx(m)
    kind = "adaptive_avgpool" if op == "ReduceMean" else "adaptive_maxpool"
    assert [(n.op, n.shape) for n in back.nodes[1:]] == [(kind, (6, 1, 1))] + ([] if keep else [("flatten", (6,))])
    x = np.random.default_rng(0).standard_normal((1, 6, 4, 4)).astype(np.float32)
    _, y = run(back, torch.from_numpy(x))
    assert np.allclose(y.numpy(), ort_run(m, x), atol=1e-6)


def _hostile():
    bad = {}
    nodes, inits = shuffle_nodes(perm=(0, 1, 2, 4, 3))
    bad["transpose-wrong-perm"] = (model(nodes, inits), "Transpose 'swap' has perm [0, 1, 2, 4, 3]")
    nodes, inits = shuffle_nodes(first=(0, 2, 3, 2, 8))
    bad["grouped-moves-pixels"] = (model(nodes, inits), "Reshape 'group' reshapes its N x 6x4x4 input to N x 2x3x2x8")
    nodes, inits = shuffle_nodes(last=(0, 6, 16))
    bad["back-to-another-shape"] = (model(nodes, inits), "Reshape 'back' reshapes a part of a channel shuffle")
    nodes, inits = shuffle_nodes(first=(2, 2, 3, 4, 4))
    bad["grouped-batch-2"] = (model(nodes, inits), "Reshape 'group' to [2, 2, 3, 4, 4] makes 2 rows")
    nodes, inits = shuffle_nodes()
    bad["no-transpose"] = (model([nodes[0], h.make_node("Reshape", ["g", "t2"], ["y"], name="back")], inits),
                           "Reshape 'back' reshapes a part of a channel shuffle")
    bad["grouped-used-alone"] = (model([nodes[0], h.make_node("Relu", ["g"], ["y"])], inits[:1]),
                                 "the value 'g', part of a channel shuffle, is used on its own")
    bad["transposed-is-output"] = (model(nodes[:2], inits[:1], output="t"), "the output 't' is not produced")
    bad["transpose-of-a-map"] = (model([h.make_node("Transpose", ["x"], ["y"], name="flip", perm=[0, 1, 3, 2])]),
                                 "Transpose 'flip'")
    bad["split-on-width"] = (model([h.make_node("Split", ["x"], ["y", "z"], name="cut", axis=3)], opset=13),
                             "Split 'cut' splits axis 3; cnndsl splits channels (axis 1)")
    bad["split-sizes-short"] = (model([h.make_node("Split", ["x", "s"], ["y", "z"], name="cut", axis=1)],
                                      [ints("s", [2, 2])], opset=13), "Split 'cut' splits its 6 channels into parts of 2, 2")
    bad["split-empty-part"] = (model([h.make_node("Split", ["x", "s"], ["y", "z"], name="cut", axis=1)],
                                     [ints("s", [6, 0])], opset=13), "parts of 6, 0")
    bad["split-uneven"] = (model([h.make_node("Split", ["x"], ["y", "z", "w"], name="cut", axis=1)], shape=(1, 7, 2, 2),
                                 opset=13), "Split 'cut' splits 7 channels into 3 equal parts")
    bad["split-count-mismatch"] = (model([h.make_node("Split", ["x", "s"], ["y", "z"], name="cut", axis=1)],
                                         [ints("s", [1, 2, 3])], opset=13), "gives 3 split sizes for 2 outputs")
    bad["split-empty-output"] = (model([h.make_node("Split", ["x"], ["y", ""], name="cut", axis=1)], opset=13),
                                 "Split 'cut' leaves out an output")
    bad["slice-empty"] = (model([h.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="cut")],
                                [ints("s", [4]), ints("e", [2]), ints("a", [1])]), "Slice 'cut' selects no channels")
    bad["slice-step-2"] = (model([h.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"], name="cut")],
                                 [ints("s", [0]), ints("e", [6]), ints("a", [1]), ints("p", [2])]), "is not one band")
    shape = [h.make_node("Shape", ["x"], ["sh"]), h.make_node("Gather", ["sh", "i0"], ["n"], axis=0)]
    bad["batch-arithmetic"] = (model(shape + [h.make_node("Mul", ["n", "two"], ["n2"], name="twice"),
                                              h.make_node("Relu", ["x"], ["y"])], [ints("i0", 0), ints("two", 2)],
                                     shape=("N", 6, 4, 4)), "Mul 'twice' computes with the batch size")
    bad["divide-by-zero"] = (model(shape + [h.make_node("Div", ["n", "zero"], ["q"], name="div"),
                                            h.make_node("Relu", ["x"], ["y"])], [ints("i0", 1), ints("zero", 0)]),
                             "Div 'div' divides by zero")
    bad["gather-out-of-range"] = (model(shape + [h.make_node("Relu", ["x"], ["y"])], [ints("i0", 4)]),
                                  "index 4 is out of range for 4 sizes")
    bad["gather-of-a-map"] = (model([h.make_node("Gather", ["x", "i"], ["y"], name="pick")], [ints("i", [0])]),
                              "Gather 'pick' gathers from a feature map")
    bad["sizes-as-a-map"] = (model(shape + [h.make_node("Relu", ["n"], ["y"])], [ints("i0", 1)]),
                             "the value 'n', computed from sizes, is used as a feature map")
    bad["cast-of-a-map"] = (model([h.make_node("Cast", ["x"], ["y"], name="c", to=T.INT64)]),
                            "Cast 'c' casts values")
    bad["batch-not-first"] = (model(shape + [h.make_node("Unsqueeze", ["n", "ax"], ["nn"]),
                                             h.make_node("Concat", ["six", "nn", "sixteen"], ["t"], axis=0),
                                             h.make_node("Reshape", ["x", "t"], ["y"], name="r")],
                                    [ints("i0", 0), ints("ax", [0]), ints("six", [6]), ints("sixteen", [16])],
                                    shape=("N", 6, 4, 4)), "Reshape 'r' to [6, None, 16] is not a reshape that keeps")
    bad["sub-of-maps"] = (model([h.make_node("Sub", ["x", "x"], ["y"], name="minus")]), "Sub 'minus' subtracts values")
    return bad


HOSTILE = _hostile()


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_channel_graphs_are_import_errors(case):
    m, fragment = HOSTILE[case]
    with pytest.raises(cnndsl.CnnDslError) as e:
        import_onnx(m)
    assert fragment in str(e.value), str(e.value)
    assert "Traceback" not in str(e.value) and "malformed" not in str(e.value)
