"""ONNX import: our own exports round-trip; torchvision's exports analyze to torchvision's figures."""
from __future__ import annotations

import warnings

import pytest

import cnndsl
from conftest import SPECS, TORCHVISION, spec_params, spec_path
from torch_oracle import measured

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from cnndsl.backends.to_onnx import save, to_onnx  # noqa: E402
from cnndsl.backends.from_onnx import import_onnx  # noqa: E402


# the VGG variants share their ops with vgg16, vgg16_bn, vgg16c and vgg11-lrn; CI time goes to the others
ROUND_TRIP = [p for p in SPECS if not p.stem.startswith("vgg") or p.stem in ("vgg16", "vgg16_bn", "vgg16c", "vgg11-lrn")]


@pytest.mark.parametrize("path", spec_params(ROUND_TRIP))
def test_round_trip_spec_onnx_import(path):
    graph = cnndsl.compile(path)
    back = import_onnx(to_onnx(graph))      # the ModelProto itself: no need to serialise 500 MB of VGG
    a, b = cnndsl.analyze(graph), cnndsl.analyze(back)
    for key in ("params", "buffers", "macs"):
        assert a.totals[key] == b.totals[key]
    for n in back.nodes:
        assert graph[n.name].shape == n.shape
        assert a.rf[n.name].size == b.rf[n.name].size and a.rf[n.name].stride == b.rf[n.name].stride
    lost = {n.name for n in graph.nodes} - {n.name for n in back.nodes}
    assert all(graph[name].op.startswith("adaptive") for name in lost)   # emitted as Identity (a no-op here)


@pytest.mark.parametrize("opset", [13, 18])     # ReduceMean/ReduceMax take their axes as an attribute, then an input
def test_uneven_adaptive_pooling_round_trips(opset):
    # 13x11 -> 5x3 (avg) and 13x11 -> 6x4 (max) have overlapping, uneven windows: the emitter writes
    # Slice/Reduce/Concat bands, and the importer reads them back as the adaptive pooling they are
    graph = cnndsl.compile_text("input 13x11x3\nconv3-8 + adaptiveavgpool5x3 + conv1-8 + adaptive_maxpool(4) | fc4")
    back = import_onnx(to_onnx(graph, opset=opset))
    pools = [(n.name, n.op, n.attrs["output"], n.shape) for n in back.nodes if n.op.startswith("adaptive")]
    assert pools == [(n.name, n.op, n.attrs["output"], n.shape) for n in graph.nodes if n.op.startswith("adaptive")]
    a, b = cnndsl.analyze(graph), cnndsl.analyze(back)
    assert [n.name for n in back.nodes] == [n.name for n in graph.nodes]
    assert all(a.rf[n.name] == b.rf[n.name] for n in back.nodes) and a.totals == b.totals


def test_a_stray_slice_is_a_clear_error():
    from onnx import TensorProto, helper
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 1), ("a", 0))]
    g = helper.make_graph([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="cut")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    with pytest.raises(cnndsl.CnnDslError, match="Slice 'cut' works on axis 0"):
        import_onnx(helper.make_model(g))


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet50", "googlenet", "mobilenet_v2"])
def test_torchvision_exports_analyze_to_torchvision_figures(tmp_path, name):
    ctor, kwargs = TORCHVISION[name]
    model = torchvision.models.get_model(ctor, weights=None, **kwargs).eval()
    file = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # without constant folding the exporter keeps batch norm as its own node, as the model has it
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(file), dynamo=False, opset_version=17,
                          do_constant_folding=False)
    report = cnndsl.analyze(import_onnx(str(file)))
    macs, conv_shapes = measured(model)         # counted from torch's own forward pass, not from cnndsl
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == macs
    assert [n.shape for n in report.graph.nodes if n.op == "conv"] == conv_shapes
    assert report.graph.output.shape == (1000,)


def test_import_prints_an_equivalent_spec(tmp_path, cli):
    graph = cnndsl.compile(spec_path("googlenet"), input_shape=(96, 96, 3))
    file = tmp_path / "g.onnx"
    save(to_onnx(graph), str(file))
    result = cli("import", str(file))
    assert result.exit_code == 0, result.output
    rebuilt = cnndsl.analyze(cnndsl.compile_text(result.output))
    assert rebuilt.totals["params"] == cnndsl.analyze(graph).totals["params"]
    assert "cat(" in result.output


def test_bad_files_give_clear_errors(tmp_path, cli):
    graph = cnndsl.compile_text("input 16x16x3\nconv3-4 + maxpool | fc2")
    good = tmp_path / "good.onnx"
    save(to_onnx(graph), str(good))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 100)
    for path in (truncated, garbage, tmp_path / "missing.onnx"):
        for command in ("analyze", "import"):
            result = cli(command, str(path))
            assert result.exit_code == 1 and "Traceback" not in result.output and str(path) in result.output
    result = cli("run", str(truncated))
    assert result.exit_code == 1 and str(truncated) in result.output and "not a readable ONNX model" in result.output
    # an unsupported op is named
    model = onnx.load(str(good))
    model.graph.node[1].op_type = "Selu"
    weird = tmp_path / "weird.onnx"
    onnx.save(model, str(weird))
    result = cli("analyze", str(weird))
    assert result.exit_code == 1 and "unsupported ONNX op Selu" in result.output
    # a wrong input shape for run
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), dtype=np.float32))
    result = cli("run", str(good), "--input-file", str(tmp_path / "x.npy"))
    assert result.exit_code == 1 and "the model takes" in result.output


def test_run_outputs_and_bench(tmp_path, cli):
    graph = cnndsl.compile_text("input 16x16x3\nconv3-4 + maxpool | fc5 | softmax")
    good = tmp_path / "m.onnx"
    save(to_onnx(graph), str(good))
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = cli("run", str(good), "--input-file", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                 "--bench", "--seconds", "0.2")
    assert result.exit_code == 0, result.output
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (4, 5) and np.allclose(y.sum(1), 1, atol=1e-5)
    assert "CPUExecutionProvider" in result.output and "images/s" in result.output
    top = cli("run", str(good), "--top-k", "2", "--batch", "3")
    assert top.exit_code == 0 and top.output.count("[") >= 3


def test_weights_that_do_not_fit_name_the_spec_and_its_line(tmp_path, cli, monkeypatch):
    """`build --target onnx SPEC --weights W`: an error about a layer's weights points into SPEC, not <spec>."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.cnn").write_text("input 8x8x3\nconv3-4 + maxpool | fc5\n")
    assert cli("build", "--target", "torch", "good.cnn", "-o", "good.py", "--weights", "good.pt").exit_code == 0
    cases = {"wider.cnn": ("input 8x8x3\nconv3-6 + maxpool | fc5\n", "wider.cnn:2:1: onnx error: "
                           "'stage1.conv1.weight' has shape (4, 3, 3, 3), the spec needs (6, 3, 3, 3)"),
             "longer.cnn": ("input 8x8x3\nconv3-4 + maxpool | fc5 | fc3\n", "longer.cnn:2:27: onnx error: the "
                            "weights have no"),
             "shorter.cnn": ("input 8x8x3\nconv3-4 + maxpool\n", "shorter.cnn: onnx error: 2 weights are not used")}
    for name, (text, first) in cases.items():
        (tmp_path / name).write_text(text)
        result = cli("build", "--target", "onnx", name, "-o", "x.onnx", "--weights", "good.pt")
        assert result.exit_code == 1 and "<spec>" not in result.output, result.output
        assert result.output.startswith(first), result.output
        if ":2:" in first:      # the line and a caret under the layer
            assert f"   2 | {text.splitlines()[1]}" in result.output and "^" in result.output
    assert not (tmp_path / "x.onnx").exists()
    # the API says the same: the error carries the graph's file and text
    graph = cnndsl.compile_text(cases["wider.cnn"][0], filename="wider.cnn")
    from cnndsl.train.weights import read_state_dict
    state = read_state_dict(str(tmp_path / "good.pt"))
    with pytest.raises(cnndsl.CnnDslError) as info:
        to_onnx(graph, weights=state)
    assert info.value.filename == "wider.cnn" and info.value.source == graph.source


def test_activations_written_as_several_nodes_import_only_in_their_exact_form():
    """x * Sigmoid(x) is silu; x * Sigmoid(y) with another y, or a Sigmoid also read elsewhere, is not (the
    rewrite would change what the other reader gets): those are a sigmoid and a product (mul), never a silu;
    a product by a constant that is not one factor per channel is refused."""
    from onnx import TensorProto, helper, numpy_helper

    def model(nodes, output="y"):
        w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"])] + nodes, "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 2, 4, 4])], [w])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m
    good = model([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])])
    assert [n.op for n in import_onnx(good).nodes] == ["input", "conv", "silu"]
    other = model([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])])
    shared = model([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["m"]),
                    helper.make_node("Add", ["m", "s"], ["y"])])
    scaled = model([helper.make_node("Mul", ["c", "w"], ["y"])])
    assert [n.op for n in import_onnx(other).nodes] == ["input", "conv", "sigmoid", "mul"]
    assert [n.op for n in import_onnx(shared).nodes] == ["input", "conv", "sigmoid", "mul", "add"]
    with pytest.raises(cnndsl.CnnDslError, match="Mul|multiplies|scales"):
        import_onnx(scaled)


def test_activations_written_as_a_gate_and_a_product_keep_their_names():
    # cnndsl writes silu (and hardswish before opset 14) as Gate(x) then Mul named as the node: the importer's
    # node takes the Mul's name, as it does for gelu and mish, so a spec's names round-trip (EfficientNet's SE)
    graph = cnndsl.compile_text("input 8x8x3\nconv3-8 bn silu + conv3-8 bn hardswish"
                                " + mul(identity, gap + conv1-2[bias] silu + conv1-8[bias] hardsigmoid)")
    for opset in (13, 18):
        back = import_onnx(to_onnx(graph, opset=opset))
        assert [(n.name, n.op, n.inputs) for n in back.nodes] == [(n.name, n.op, n.inputs) for n in graph.nodes]


def test_single_node_activations_follow_their_module_declaration():
    """The importer reads an activation from the ONNX op its module names; HardSigmoid is hardsigmoid only
    with PyTorch's alpha 1/6 (ONNX's default alpha is 0.2, refused)."""
    from onnx import TensorProto, helper

    def model(**attrs):
        graph = helper.make_graph([helper.make_node("HardSigmoid", ["x"], ["y"], **attrs)], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m
    assert [n.op for n in import_onnx(model(alpha=1 / 6)).nodes] == ["input", "hardsigmoid"]
    with pytest.raises(cnndsl.CnnDslError, match="alpha 0.2"):
        import_onnx(model())
