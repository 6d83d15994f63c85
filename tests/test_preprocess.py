"""The one preprocessing (cnndsl/preprocess.py) against independent oracles: PyTorch's antialiased bilinear
interpolation and F.pad for the fit, and its three executors (numpy, torch, ONNX Runtime) against each other."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
F = torch.nn.functional

from cnndsl.preprocess import (Preprocessing, PreprocessError, channel_matrix, fit_kind, pad_matrix,  # noqa: E402
                               resample_matrix, statistics)

sides = st.integers(1, 80)


@settings(max_examples=150, deadline=None)
@given(n_in=sides, n_out=sides)
def test_resampling_is_torchs_antialiased_bilinear(n_in, n_out):
    x = torch.rand(1, 1, n_in, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(n_in * 97 + n_out))
    want = F.interpolate(x, size=(n_out, 3), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    got = torch.from_numpy(resample_matrix(n_in, n_out)) @ x[0, 0]
    assert torch.allclose(got, want, atol=1e-12)
    if n_out >= n_in:       # enlarging: plain bilinear interpolation (no antialiasing to do)
        plain = F.interpolate(x, size=(n_out, 3), mode="bilinear", align_corners=False)[0, 0]
        assert torch.allclose(got, plain, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(n_in=sides, extra=st.integers(0, 20))
def test_padding_is_centred_with_the_odd_cell_after(n_in, extra):
    x = torch.rand(1, 1, n_in, 2, dtype=torch.float64)
    before = extra // 2
    want = F.pad(x, (0, 0, before, extra - before))[0, 0]
    assert torch.equal(torch.from_numpy(pad_matrix(n_in, n_in + extra)) @ x[0, 0], want)


def test_fit_rule():
    assert fit_kind((28, 28), (32, 32)) == "pad"           # MNIST into LeNet
    assert fit_kind((26, 26), (32, 32)) == "pad"            # 6 pixels short: at most a quarter of 26
    assert fit_kind((25, 26), (32, 32)) == "resample"      # 7 short: more than a quarter of 25
    assert fit_kind((8, 8), (32, 32)) == "resample" and fit_kind((40, 40), (32, 32)) == "resample"
    assert fit_kind((32, 30), (32, 32)) == "pad" and fit_kind((32, 32), (32, 32)) == "same"
    assert fit_kind((33, 30), (32, 32)) == "resample"      # one side larger: resample both


def test_channel_steps_are_pillows_conversions():
    assert np.allclose(channel_matrix(3, 1) * 255, [[0.299, 0.587, 0.114]])
    assert np.allclose(channel_matrix(1, 3) * 255, np.ones((3, 1)))
    assert np.allclose(channel_matrix(4, 3) * 255, np.hstack([np.eye(3), np.zeros((3, 1))]))    # alpha dropped
    assert np.allclose(channel_matrix(2, 3) * 255, np.hstack([np.ones((3, 1)), np.zeros((3, 1))]))
    with pytest.raises(PreprocessError, match="cannot turn 3-channel"):
        channel_matrix(3, 2)


def test_statistics_are_the_pixels_mean_and_std():
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 9, 7), dtype=np.uint8)
    mean, std = statistics(x, 3)
    ref = torch.as_tensor(x).double() / 255
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).numpy()) and np.allclose(std, ref.std(dim=(0, 2, 3)).numpy())
    assert statistics(np.full((2, 1, 4, 4), 7, np.uint8), 1)[1] == (1e-3,)     # a constant channel: not 0


def plan_for(c, tc, side, target, classes=("a", "b")):
    rng = np.random.default_rng(c * 1000 + tc * 100 + side)
    return Preprocessing((tc, target, target), (c, side, side), tuple(rng.random(tc) * 0.5),
                         tuple(rng.random(tc) * 0.5 + 0.1), classes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.sampled_from([1, 2, 3, 4]), tc=st.sampled_from([1, 3]), side=st.integers(4, 40),
       target=st.integers(4, 40), n=st.integers(1, 3))
def test_numpy_and_torch_executors_agree(c, tc, side, target, n):
    from cnndsl.train.augment import Preprocess
    plan = plan_for(c, tc, side, target)
    x = np.random.default_rng(side).integers(0, 256, (n, c, side, side), dtype=np.uint8)
    a = plan.apply(x)
    b = Preprocess.of(plan)(torch.as_tensor(x)).numpy()
    assert a.shape == (n, tc, target, target) and a.dtype == np.float32
    assert np.allclose(a, b, atol=1e-5, rtol=1e-5)
    # the numpy executor against a float64 reference built from torch's own operations
    ref = torch.einsum("oc,nchw->nohw", torch.from_numpy(channel_matrix(c, tc)), torch.as_tensor(x).double())
    kind = fit_kind((side, side), (target, target))
    if kind == "pad":
        extra = target - side
        ref = F.pad(ref, (extra // 2, extra - extra // 2, extra // 2, extra - extra // 2))
    elif kind == "resample":
        ref = F.interpolate(ref, size=(target, target), mode="bilinear", align_corners=False, antialias=True)
    ref = (ref - torch.tensor(plan.mean).view(1, -1, 1, 1)) / torch.tensor(plan.std).view(1, -1, 1, 1)
    assert np.allclose(a, ref.numpy(), atol=1e-4)


@pytest.mark.parametrize("c,tc,side,target", [(1, 1, 28, 32), (1, 3, 8, 32), (3, 1, 40, 32), (3, 3, 32, 32),
                                              (4, 3, 20, 16), (2, 1, 12, 12)])
def test_onnx_nodes_agree_with_numpy(c, tc, side, target):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    plan = plan_for(c, tc, side, target)
    nodes, inits, image = plan.onnx_nodes("net_input")
    out = helper.make_tensor_value_info("net_input", TensorProto.FLOAT, ["N", tc, target, target])
    model = helper.make_model(helper.make_graph(nodes, "pre", [image], [out], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    fc = plan.file_channels()
    x = np.random.default_rng(0).integers(0, 256, (3, side, side, fc), dtype=np.uint8)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0]
    want = Preprocessing(plan.input, (fc, side, side), plan.mean, plan.std).apply(x.transpose(0, 3, 1, 2))
    assert np.allclose(got, want, atol=1e-5)


def test_records_round_trip_and_hostile_ones_are_refused():
    plan = plan_for(1, 1, 28, 32, classes=("t-shirt/top", "<b>$x$</b>"))
    assert Preprocessing.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    good = plan.to_dict()
    bad = [None, [], {}, dict(good, format="other"), dict(good, layout="NHWC"), dict(good, input=[1, 32]),
           dict(good, input=[1, 0, 32]), dict(good, input=[1, 1 << 20, 32]), dict(good, input=[9, 32, 32]),
           dict(good, input=[1, True, 32]), dict(good, source=[1, 28, "28"]), dict(good, mean=[0.1, 0.2]),
           dict(good, mean=[float("nan")]), dict(good, std=[0.0]), dict(good, std=[-1.0]), dict(good, std=["1"]),
           dict(good, mean=[1e300]), dict(good, classes="ab"), dict(good, classes=[1, 2]),
           dict(good, classes=["x" * 5000]), dict(good, source=[3, 28, 28], input=[2, 32, 32], mean=[0, 0],
                                                   std=[1, 1])]
    for d in bad:
        with pytest.raises(PreprocessError):
            Preprocessing.from_dict(d)


def test_cnndsl_run_refuses_a_hostile_preprocessing_record(tmp_path, cli):
    pytest.importorskip("onnxruntime")
    import cnndsl
    from cnndsl.backends.to_onnx import PREPROCESSING_KEY, save, to_onnx
    from onnx import helper
    from PIL import Image
    model = to_onnx(cnndsl.compile_text("input 8x8x1\nconv3-4 | gap | fc3"))
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    plain = tmp_path / "plain.onnx"
    save(model, str(plain))
    result = cli("run", str(plain), str(image))
    assert result.exit_code == 1 and "records no preprocessing" in result.output
    for i, value in enumerate(["{not json", json.dumps({"format": "cnndsl-preprocessing/1", "input": [1, 8, 8]}),
                               json.dumps(dict(plan_for(1, 1, 8, 8).to_dict(), std=[0.0]))]):
        helper.set_model_props(model, {PREPROCESSING_KEY: value})
        path = tmp_path / f"m{i}.onnx"
        save(model, str(path))
        result = cli("run", str(path), str(image))
        assert result.exit_code == 1 and "preprocessing record" in result.output, result.output
        assert "Traceback" not in result.output and "internal error" not in result.output
