"""Stochastic depth (droppath) and upsampling against oracles of their own: torchvision.ops.stochastic_depth on the
same random stream and torchvision's own rate schedules; repeat_interleave, a half-pixel bilinear written here with
exact weights, ONNX Runtime and the gradient support; what torch.onnx.export writes for nn.Upsample."""
from __future__ import annotations

import io
import warnings
from fractions import Fraction

import pytest

import cnndsl

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402

from cnndsl.backends.from_onnx import import_onnx  # noqa: E402
from cnndsl.backends.to_onnx import to_onnx  # noqa: E402
from cnndsl.backends.to_spec import write_spec  # noqa: E402
from cnndsl.backends.to_torch import generate_source  # noqa: E402


def ops(graph) -> list:
    return [n.op for n in graph.nodes[1:]]


def run_onnx(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# ---------------------------------------------------------------- droppath --

def test_droppath_is_exactly_the_identity_in_eval():
    graph = cnndsl.compile_text("input 5x4x3\nconv3-4 + droppath0.5")
    model = cnndsl.to_torch(graph, return_nodes=["conv1", "droppath1"]).eval()
    out = model(torch.randn(6, 3, 5, 4))
    assert out["droppath1"] is out["conv1"]          # not even a copy (as torchvision returns its input)


@pytest.mark.parametrize("p", [0.3, 0.5, 0.0])
def test_droppath_in_training_is_torchvisions_stochastic_depth_on_the_same_stream(p):
    from torchvision.ops import stochastic_depth
    graph = cnndsl.compile_text(f"input 5x4x3\ndroppath{p} + gap + fc6 + droppath[p={p}] | fc2")
    model = cnndsl.to_torch(graph, return_nodes=["input", "droppath1", "fc1", "droppath2"]).train()
    x = torch.randn(64, 3, 5, 4)
    torch.manual_seed(11)
    out = model(x)
    torch.manual_seed(11)
    want_map = stochastic_depth(x, p, "row", True)
    want_vec = stochastic_depth(out["fc1"], p, "row", True)
    assert torch.equal(out["droppath1"], want_map) and torch.equal(out["droppath2"], want_vec)
    assert torch.equal(x, out["input"])               # the caller's input is never changed


def test_droppath_drops_whole_samples_and_keeps_the_mean():
    p, n = 0.2, 20000
    model = cnndsl.to_torch(cnndsl.compile_text(f"input 3x2x2\ndroppath{p}")).train()
    torch.manual_seed(0)
    out = model(torch.ones(n, 2, 3, 2)).reshape(n, -1)
    kept = out[:, 0] != 0
    assert torch.all(out[kept] == 1 / (1 - p)) and torch.all(out[~kept] == 0)     # all or nothing per sample
    dropped = 1 - kept.double().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / n) ** 0.5
    assert abs(out.double().mean().item() - 1.0) < 4 * (p / (1 - p) / n) ** 0.5


def test_droppath_ends_a_residual_branch_before_its_activation():
    # the branch's last activation stays pending through droppath: after the addition, as the residual puts it
    graph = cnndsl.compile_text("input 6x6x4\nres(conv3-4 bn + conv3-4 bn + droppath0.1)")
    assert ops(graph) == ["conv", "bn", "relu", "conv", "bn", "droppath", "add", "relu"]
    assert graph["res1.droppath1"].inputs == ("res1.bn2",)
    # `none` leaves the addition without one (MobileNet, EfficientNet, ConvNeXt)
    graph = cnndsl.compile_text("input 6x6x4\nres(conv3-4 bn + conv3-4 bn none + droppath0.1)")
    assert ops(graph) == ["conv", "bn", "relu", "conv", "bn", "droppath", "add"]
    # elsewhere the activation follows it; a batch norm after it is not the weight layer's
    graph = cnndsl.compile_text("input 6x6x4\nconv3-4 + droppath0.1 + bn + conv3-4")
    assert ops(graph) == ["conv", "droppath", "relu", "bn", "conv", "relu"]
    assert graph["conv1"].attrs["bias"] is True
    graph = cnndsl.compile_text("input 6x6x4\ndroppath0.1 + conv3-4")
    assert ops(graph) == ["droppath", "conv", "relu"]


def _ramped(text: str) -> list:
    return [n.attrs["p"] for n in cnndsl.compile_text(text).nodes if n.op == "droppath"]


def test_ramp_equals_torchvision_efficientnet_b0():
    """torchvision's EfficientNet gives block i of all N MBConv blocks the rate p*i/N, also to the blocks without a
    residual (where it is not applied): in a spec those count with `droppath[p=0, ramp]`, which stays 0."""
    from torchvision.models.efficientnet import MBConv
    with torch.device("meta"):
        model = torchvision.models.efficientnet_b0()       # stochastic_depth_prob 0.2
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    assert len(blocks) == 16
    # b0's stages: repeats 1, 2, 2, 3, 3, 4, 1; the first block of each has no residual
    text = """input 16x16x8
block first = conv1-8 bn none + droppath[p=0, ramp]
block mb = res(conv1-8 bn + conv3-8 bn none + droppath[p=0.2, ramp])
first | (first + mb) | (first + mb) | (first + mb x2) | (first + mb x2) | (first + mb x3) | first"""
    rates = _ramped(text)
    assert len(rates) == 16
    assert [b.use_res_connect for b in blocks] == [r > 0 for r in rates]
    assert rates == [b.stochastic_depth.p if b.use_res_connect else 0.0 for b in blocks]
    assert [b.stochastic_depth.p for b in blocks] == [0.2 * i / 16 for i in range(16)]


def test_ramp_inclusive_equals_torchvision_convnext_tiny():
    from torchvision.ops import StochasticDepth
    with torch.device("meta"):
        model = torchvision.models.convnext_tiny()         # stochastic_depth_prob 0.1, blocks 3, 3, 9, 3
    want = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert len(want) == 18
    text = """input 8x8x4
block cn = res(dwconv7 bn none + conv1-16 gelu + conv1-4 none + droppath[p=0.1, ramp=inclusive])
(cn x3) | (cn x3) | (cn x9) | (cn x3)"""
    assert _ramped(text) == want


def test_ramp_rules():
    assert _ramped("input 4x4x2\nres(conv1-2 + droppath[p=0.4, ramp]) x4") == [0.0, 0.1, 0.2, 0.30000000000000004]
    assert _ramped("input 4x4x2\nres(conv1-2 + droppath0.3[ramp=inclusive]) x4") == \
        [0.3 * i / 3 for i in range(4)]
    # only ramped nodes count; each scales its own rate; a lone inclusive block has 0
    assert _ramped("input 4x4x2\ndroppath0.5 + res(conv1-2 + droppath[p=0.4, ramp]) x2 + droppath[p=0.2, ramp]") == \
        [0.5, 0.0, 0.4 / 3, 0.2 * 2 / 3]
    assert _ramped("input 4x4x2\ndroppath[p=0.3, ramp=inclusive]") == [0.0]
    # the written spec states every rate; fmt keeps the ramp
    graph = cnndsl.compile_text("input 4x4x2\nres(conv1-2 + droppath[p=0.4, ramp]) x3")
    assert "droppath[p=0.26666666666666666]" in write_spec(graph)
    assert "ramp" in cnndsl.format_spec("input 4x4x2\nres(conv1-2 + droppath[p=0.4, ramp]) x3")


@pytest.mark.parametrize("text,message", [
    ("droppath", "droppath needs a rate"),
    ("droppath1", r"droppath rate must be in \[0, 1\)"),
    ("droppath0.2[p=0.3]", "given twice"),
    ("droppath[p=0.2, ramp=cosine]", "ramp must be linear or inclusive"),
    ("droppath[p=0.2, ramp] + droppath[p=0.2, ramp=inclusive]", "ramps of both kinds"),
    ("droppath2-3", "takes one rate"),
])
def test_droppath_errors(text, message):
    with pytest.raises(cnndsl.CnnDslError, match=message):
        cnndsl.compile_text("input 4x4x2\n" + text)


def _identity_model(doc: str, opset: int = 17):
    node = h.make_node("Identity", ["x"], ["y"], name="sd", doc_string=doc)
    g = h.make_graph([node, h.make_node("Relu", ["y"], ["z"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 2, 4, 4])],
                     [h.make_tensor_value_info("z", T.FLOAT, ["N", 2, 4, 4])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def test_droppath_onnx_is_a_noted_identity_and_a_plain_identity_stays_plumbing():
    graph = cnndsl.compile_text("input 4x4x2\nres(conv1-2 + droppath[p=0.3, ramp=inclusive]) x3")
    model = to_onnx(graph)
    notes = [n.doc_string for n in model.graph.node if n.op_type == "Identity"]
    assert notes == ["cnndsl: droppath p=0.0", "cnndsl: droppath p=0.15", "cnndsl: droppath p=0.3"]
    back = import_onnx(model)
    assert [(n.name, n.attrs) for n in back.nodes if n.op == "droppath"] == \
        [(n.name, n.attrs) for n in graph.nodes if n.op == "droppath"]
    assert ops(import_onnx(_identity_model(""))) == ["relu"]
    assert ops(import_onnx(_identity_model("a note of someone else's"))) == ["relu"]
    assert [n.attrs for n in import_onnx(_identity_model("cnndsl: droppath p=0.25")).nodes[1:]] == [{"p": 0.25}, {}]


@pytest.mark.parametrize("note", ["nan", "inf", "1.0", "-0.1", "0.2; import os", "", "1e-300", "0x1p-3"])
def test_a_bad_droppath_note_is_an_import_error(note):
    with pytest.raises(cnndsl.CnnDslError, match="droppath"):
        import_onnx(_identity_model("cnndsl: droppath p=" + note))


# ---------------------------------------------------------------- upsample --

def bilinear_oracle(x: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Half-pixel bilinear upsampling (align_corners=False), with exact rational weights, one axis after the other."""
    def matrix(n, s):
        m = np.zeros((n * s, n))
        for i in range(n * s):
            src = max(Fraction(2 * i + 1, 2 * s) - Fraction(1, 2), Fraction(0))
            lo = min(int(src), n - 1)
            frac = src - lo if lo < n - 1 else Fraction(0)
            m[i, lo] += float(1 - frac)
            if frac:
                m[i, lo + 1] += float(frac)
        return m
    mh, mw = matrix(x.shape[2], sh), matrix(x.shape[3], sw)
    return np.einsum("ih,nchw,jw->ncij", mh, x, mw)


@pytest.mark.parametrize("scale", [(1, 1), (2, 2), (3, 3), (2, 3), (1, 4), (5, 2), (41, 1), (47, 3)])
def test_upsample_values_against_oracles(scale):
    sh, sw = scale
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    for mode in ("nearest", "bilinear"):
        graph = cnndsl.compile_text(f"input 5x4x3\nupsample[scale={sh}x{sw}, mode={mode}]")
        assert graph.output.shape == (3, 5 * sh, 4 * sw)
        model = cnndsl.to_torch(graph).double().eval()
        got = model(torch.from_numpy(x)).detach().numpy()
        want = x.repeat(sh, 2).repeat(sw, 3) if mode == "nearest" else bilinear_oracle(x, sh, sw)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        for opset in (13, 18, 21):
            out = run_onnx(to_onnx(graph, opset=opset), x.astype(np.float32))
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_nearest_where_pytorchs_float32_rounding_would_pick_another_row():
    # nn.Upsample(scale_factor=41, mode='nearest') reads row k-1 at unit 41k for some k (a float32 1/41 rounds
    # down); cnndsl writes 'nearest-exact' there, which reads floor(i/41) as ONNX's Resize does
    x = torch.arange(6.0).reshape(1, 1, 6, 1)
    plain = torch.nn.Upsample(scale_factor=(41.0, 1.0), mode="nearest")(x).flatten()
    assert not torch.equal(plain, x.repeat_interleave(41, 2).flatten())       # why it is needed
    graph = cnndsl.compile_text("input 6x1x1\nupsample41x1")
    assert "nearest-exact" in generate_source(graph)
    assert "mode='nearest')" in generate_source(cnndsl.compile_text("input 6x1x1\nupsample40x1"))
    got = cnndsl.to_torch(graph)(x).flatten()
    assert torch.equal(got, x.repeat_interleave(41, 2).flatten())


def test_upsample_is_a_fresh_output_an_inplace_activation_may_use():
    graph = cnndsl.compile_text("input 4x4x2\nupsample1 + relu")
    x = torch.randn(2, 2, 4, 4)
    keep = x.clone()
    model = cnndsl.to_torch(graph).train()
    assert "inplace=True" in generate_source(graph)
    model(x)
    assert torch.equal(x, keep)


def test_upsample_fields_are_exact_per_unit():
    """The report's unit fields against the spans the brief states (nearest: floor(i/s); bilinear: floor(src) and
    the next cell where src = (i + 0.5)/s - 0.5, clamped at 0, has a fraction), and rf.uniform is false."""
    from cnndsl.ir.ops.resample import bilinear_span
    for n in (1, 2, 5):
        for s in range(1, 8):
            for i in range(n * s):
                src = max(Fraction(2 * i + 1, 2 * s) - Fraction(1, 2), Fraction(0))
                lo = min(int(src), n - 1)
                assert bilinear_span(i, n, s) == (lo, lo + 1 if lo < n - 1 and src != lo else lo)
    graph = cnndsl.compile_text("input 5x3x1\nupsample3x2[bilinear] + upsample2")
    report = cnndsl.analyze(graph)
    assert report.rf_box("upsample1", 0, 0) == ((0, 0), (0, 0))
    assert report.rf_box("upsample1", 4, 5) == ((1, 1), (2, 2))     # src 1.0 exactly (rows), clamped (columns)
    assert report.rf_box("upsample1", 5, 2) == ((1, 2), (0, 1))
    assert report.rf_box("upsample2", 9, 11) == report.rf_box("upsample1", 4, 5)
    flags = {row["name"]: row["rf"]["uniform"] for row in report.to_dict()["layers"]}
    assert flags == {"input": True, "upsample1": False, "upsample2": False}
    assert cnndsl.analyze(cnndsl.compile_text("input 5x3x1\nupsample1[bilinear]")).rf["upsample1"].uniform


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 6, 7])
def test_bilinear_fields_against_the_gradient(s):
    """Every unit's field (Report.rf_box) against the input cells its value moves with. At odd scales PyTorch's
    floating point gives some units a weight of about 1e-17 on a cell exact arithmetic weighs 0: the field is
    exact arithmetic's, and those are the only cells where the two differ."""
    n = 5
    graph = cnndsl.compile_text(f"input {n}x1x1\nupsample{s}x1[bilinear]")
    report = cnndsl.analyze(graph)
    image = torch.ones(1, 1, n, 1, dtype=torch.float64, requires_grad=True)
    out = cnndsl.to_torch(graph).double().eval()(image)
    for i in range(n * s):
        grad, = torch.autograd.grad(out[0, 0, i, 0], image, retain_graph=True)
        grad = grad.flatten().abs()
        (top, bottom), _ = report.rf_box("upsample1", i, 0)
        inside = torch.zeros(n, dtype=torch.bool)
        inside[top:bottom + 1] = True
        assert torch.all(grad[inside] > 1e-9), (i, grad)
        assert torch.all(grad[~inside] < 1e-12), (i, grad)


def _torch_export(module, shape, opset):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(1, *shape), f, opset_version=opset, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("scale", [2, (2, 3)])
def test_torch_onnx_export_of_upsample_imports(opset, mode, scale):
    factor = tuple(map(float, scale)) if isinstance(scale, tuple) else float(scale)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Upsample(scale_factor=factor, mode=mode),
                              torch.nn.ReLU())
    model = _torch_export(net, (3, 5, 4), opset)
    assert any(n.op_type == "Resize" for n in model.graph.node)
    graph = import_onnx(model)
    (up,) = [n for n in graph.nodes if n.op == "upsample"]
    sh, sw = scale if isinstance(scale, tuple) else (scale, scale)
    assert up.attrs == {"scale": (sh, sw), "bilinear": mode == "bilinear"} and up.shape == (4, 5 * sh, 4 * sw)
    x = torch.randn(2, 3, 5, 4)
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(run_onnx(model, x.numpy()), want, rtol=1e-5, atol=1e-5)
    # the written spec compiles to the same layers
    assert ops(cnndsl.compile_text(write_spec(graph))) == ops(graph)


def _resize_model(inputs, inits, opset=13, shape=(1, 2, 3, 4), **attrs):
    node = h.make_node("Resize", ["x", *inputs], ["y"], name="rs", **attrs)
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, list(shape))],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _scales(values):
    return h.make_tensor("sc", T.FLOAT, [len(values)], values)


def _sizes(values):
    return h.make_tensor("sz", T.INT64, [len(values)], values)


@pytest.mark.parametrize("inputs,inits,opset,attrs,want", [
    # ONNX's defaults for nearest (half_pixel, round_prefer_floor) read floor(i/s) too at whole scales
    (["", "sc"], [_scales([1, 1, 2, 3])], 13, {}, ((2, 3), False)),
    (["", "sc"], [_scales([1, 1, 2, 2])], 13, {"mode": "linear", "coordinate_transformation_mode":
                                                "pytorch_half_pixel"}, ((2, 2), True)),
    (["", "", "sz"], [_sizes([1, 2, 6, 4])], 13, {"coordinate_transformation_mode": "asymmetric",
                                                  "nearest_mode": "floor"}, ((2, 1), False)),
    (["", "sc"], [_scales([3, 2])], 18, {"axes": [2, -1], "mode": "linear"}, ((3, 2), True)),
    (["", "", "sz"], [_sizes([6, 8])], 18, {"axes": [2, 3], "mode": "linear",
                                            "keep_aspect_ratio_policy": "not_larger"}, ((2, 2), True)),
])
def test_resize_forms_that_import(inputs, inits, opset, attrs, want):
    model = _resize_model(inputs, inits, opset, **attrs)
    graph = import_onnx(model)
    (up,) = graph.nodes[1:]
    assert (up.attrs["scale"], up.attrs["bilinear"]) == want
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 4)).astype(np.float32)
    got = cnndsl.to_torch(graph).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(run_onnx(model, x), got, rtol=1e-5, atol=1e-6)     # ONNX Runtime is the oracle


@pytest.mark.parametrize("inputs,inits,attrs,message", [
    (["", "sc"], [_scales([1, 1, 2, 2])], {"mode": "cubic"}, "cubic"),
    (["", "sc"], [_scales([1, 1, 2, 2])], {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     "align_corners coordinates"),
    (["", "sc"], [_scales([1, 1, 2, 2])], {"coordinate_transformation_mode": "asymmetric"}, "floor\\(i/s\\)"),
    (["", "sc"], [_scales([1, 1, 1.5, 2])], {}, "whole-number"),
    (["", "sc"], [_scales([1, 1, 0.5, 0.5])], {}, "whole-number"),
    (["", "sc"], [_scales([1, 2, 2, 2])], {}, "batch or channel"),
    (["", "sc", "sz"], [_scales([1, 1, 2, 2]), _sizes([1, 2, 6, 8])], {}, "exactly one of scales and sizes"),
    (["", "", "sz"], [_sizes([1, 2, 5, 8])], {}, "not a whole multiple"),
    (["", "sc"], [_scales([1, 1, 2])], {}, "3 scales for 4 axes"),
    (["", "", "sz"], [_sizes([9, 8])], {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, "aspect ratio"),
])
def test_resize_forms_refused(inputs, inits, attrs, message):
    with pytest.raises(cnndsl.CnnDslError, match=message):
        import_onnx(_resize_model(inputs, inits, 18 if "axes" in attrs else 13, **attrs))


def test_upsample_fp16_export_keeps_float32_scales():
    graph = cnndsl.compile_text("input 4x4x2\nconv1-2 + upsample2[bilinear] + conv1-2")
    model = to_onnx(graph, fp16=True)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float16)
    assert run_onnx(model, x).shape == (1, 2, 8, 8)


@pytest.mark.parametrize("text,message", [
    ("upsample2[scale=3]", "given twice"),
    ("upsample[mode=bicubic]", "nearest or bilinear"),
    ("upsample2[bilinear, mode=nearest]", "given twice"),
    ("upsample0", "at least 1"),
    ("upsample2-3", "one scale"),
    ("gap + fc3 + upsample2", "CxHxW"),
    ("upsample4096 + upsample4096", "beyond the limit"),
])
def test_upsample_errors(text, message):
    with pytest.raises(cnndsl.CnnDslError, match=message):
        cnndsl.compile_text("input 4x4x2\n" + text)


@pytest.mark.parametrize("text", [
    "input 8x8x1\ncat(none, maxpool2/2 + conv3-2 + upsample2[bilinear]) + conv3-1",      # a U-Net level
    "input 8x8x1\nadd(conv3-2/2 + upsample2x1, conv3-2 + maxpool1x2/1x2) + conv3-1",     # merged unaligned
    "input 6x6x1\nconv3-2/2 + upsample3[bilinear] + maxpool3/2 + upsample2 | gap | fc2",
])
def test_every_unit_after_upsampling_against_the_gradient(text):
    from test_rf_box import check_every_unit
    check_every_unit(text)
