"""The modern CNN zoo's ops — mul (squeeze-and-excitation), layerscale and layernorm (ConvNeXt) — and the blocks
of specs/lib/blocks.cnn, held to independent oracles: torchvision's own modules (ops.SqueezeExcitation and the
SE layers inside MobileNetV3, EfficientNet and RegNetY; convnext.LayerNorm2d and CNBlock), torch.nn.LayerNorm,
real forward passes, ONNX Runtime, and what torch.onnx.export writes for them. tests/test_conformance.py holds
every example of the three ops to the harness's oracles besides."""
from __future__ import annotations

import io
import warnings

import pytest

import cnndsl
from conftest import ROOT

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402
from torchvision.models.convnext import CNBlock, LayerNorm2d  # noqa: E402
from torchvision.ops import SqueezeExcitation  # noqa: E402

from cnndsl.backends.from_onnx import import_onnx  # noqa: E402
from cnndsl.backends.to_onnx import to_onnx  # noqa: E402
from cnndsl.backends.to_spec import write_spec  # noqa: E402

SPECS = ROOT / "specs"
OPSETS = (13, 17, 18, 21)


def compile_blocks(text: str):
    """A spec that uses the shipped block library (specs/lib/blocks.cnn)."""
    return cnndsl.compile_text('use "lib/blocks.cnn"\n' + text, base=str(SPECS))


def load_in_order(model, tensors) -> None:
    """Copy `tensors` into the model's parameters in order, each reshaped to the parameter's shape (a Linear's
    D x C weight becomes a 1x1 convolution's D x C x 1 x 1)."""
    params = list(model.parameters())
    assert len(params) == len(tensors)
    with torch.no_grad():
        for p, t in zip(params, tensors):
            assert p.numel() == t.numel(), (p.shape, t.shape)
            p.copy_(t.reshape(p.shape))


def randomize(module) -> None:
    """Weights away from their initial values (a LayerNorm's 1 and 0, a layer scale's 1e-6), reproducibly."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() == 1 else 0.0))


def torch_export(module, shape, opset, fold=True):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(1, *shape), f, opset_version=opset, dynamo=False,
                          do_constant_folding=fold)
    return onnx.load_from_string(f.getvalue())


def ops(graph) -> list:
    return [n.op for n in graph.nodes]


def run_onnx(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def onnx_model(nodes, inits=(), shape=(1, 4, 3, 3), out=None, opset=17, output="y"):
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, list(shape))],
                         [h.make_tensor_value_info(output, T.FLOAT, list(out or shape))], list(inits))
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def const(name, array):
    return nh.from_array(np.asarray(array, np.float32), name)


# ------------------------------------------------------------------------------------------------ mul ----

def test_mul_shapes_and_the_merge_word_comes_from_the_registry():
    from cnndsl.frontend.lower import MERGE_OPS
    assert MERGE_OPS == {"add": "add", "cat": "concat", "mul": "mul"}
    g = cnndsl.compile_text("input 6x5x4\nmul(conv3-8, gap + conv1-8 sigmoid, conv1-8 tanh)")
    (m,) = [n for n in g.nodes if n.op == "mul"]
    assert m.shape == (8, 6, 5) and len(m.inputs) == 3
    assert cnndsl.compile_text("input 6x5x4\ngap + fc3 + mul(fc3, fc3 sigmoid)").output.shape == (3,)
    for text, fragment in [("mul(conv3-8, conv3-4)", "branch 1 gives 8x6x5, branch 2 gives 4x6x5"),
                           ("mul(conv3-8/2, conv3-8)", "branch 1 gives 8x3x3"),
                           ("mul(gap + conv1-3, conv3-8)", "cannot multiply branches")]:
        with pytest.raises(cnndsl.CnnDslError, match=fragment) as info:
            cnndsl.compile_text("input 6x5x4\n" + text)
        assert "C x 1 x 1 beside C x H x W" in info.value.hint
    # `mul` is a keyword only before '(': a name elsewhere
    g = cnndsl.compile_text("param mul = 3\ninput 6x5x4\nconv3-{mul}")
    assert g.output.shape == (3, 6, 5)


def test_mul_is_the_product_and_counts_no_macs():
    g = cnndsl.compile_text("input 6x5x4\nmul(none, gap + conv1-4[bias] sigmoid)")
    model = cnndsl.to_torch(g, return_nodes=[n.name for n in g.nodes]).eval()
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        outs = model(x)
    gate = outs[g.nodes[-2].name]
    assert gate.shape == (2, 4, 1, 1)
    assert torch.equal(outs[g.output.name], x * gate)
    report = cnndsl.analyze(g)
    assert report.macs[g.output.name] == 0 and report.totals["macs"] == 4 * 4     # the 1x1 conv on 1x1 only
    assert "mul(" in cnndsl.format_spec("input 6x5x4\nmul(none, gap + conv1-4 sigmoid)")
    assert [n.op for n in cnndsl.compile_text(write_spec(g)).nodes] == ops(g)


def test_a_gate_joins_every_unit_to_its_global_field_without_a_warning():
    """The gate's field is the whole input, so every unit of the product sees it all (the gradient agrees, in
    tests/test_conformance.py); the gate's pooling is no classifier, and the gate is no unaligned merge."""
    g = cnndsl.compile_text("input 12x10x3\nconv3-4 + mul(none, gap + conv1-4 sigmoid) + conv3-4 + gap + fc2")
    report = cnndsl.analyze(g)
    mul = next(n.name for n in g.nodes if n.op == "mul")
    for y, x in ((0, 0), (5, 4), (11, 9)):
        assert report.rf_box(mul, y, x) == ((-1, 12), (-1, 10))
    assert report.rf[mul].size == (14, 12)
    assert not any("unaligned" in w["message"] or "classifier" in w["message"] for w in report.to_dict()["warnings"])


def test_squeeze_excitation_blocks_equal_torchvisions():
    """Each SE block of specs/lib/blocks.cnn against torchvision.ops.SqueezeExcitation with the same weights."""
    cases = [("se", torch.nn.ReLU, torch.nn.Sigmoid), ("se_relu_sigmoid", torch.nn.ReLU, torch.nn.Sigmoid),
             ("se_relu_hardsigmoid", torch.nn.ReLU, torch.nn.Hardsigmoid),
             ("se_silu_sigmoid", torch.nn.SiLU, torch.nn.Sigmoid)]
    x = torch.randn(3, 12, 7, 5)
    for block, act, gate in cases:
        torch.manual_seed(1)
        theirs = SqueezeExcitation(12, 5, activation=act, scale_activation=gate).eval()
        randomize(theirs)
        g = compile_blocks(f"input 7x5x12\n{block}(12, 5)")
        ours = cnndsl.to_torch(g).eval()
        assert cnndsl.analyze(g).totals["params"] == sum(p.numel() for p in theirs.parameters()) == 2 * 12 * 5 + 17
        load_in_order(ours, [theirs.fc1.weight, theirs.fc1.bias, theirs.fc2.weight, theirs.fc2.bias])
        with torch.no_grad():
            assert torch.allclose(ours(x), theirs(x), atol=1e-6), block
        # and its ONNX, run by ONNX Runtime, at every opset
        for opset in OPSETS:
            assert np.allclose(run_onnx(to_onnx(g, weights=ours.state_dict(), opset=opset), x),
                               theirs(x).detach().numpy(), atol=1e-5), (block, opset)


@pytest.mark.parametrize("family,block,squeeze", [
    ("mobilenet_v3_small", "se_relu_hardsigmoid", "make_divisible(c // 4, 8)"),
    ("efficientnet_b0", "se_silu_sigmoid", "max(1, cin // 4)"),
    ("regnet_y_400mf", "se_relu_sigmoid", "round(0.25 * cin)"),
])
def test_squeeze_excitation_inside_torchvisions_networks(family, block, squeeze):
    """The SE layers torchvision builds into MobileNetV3, EfficientNet and RegNetY: the block with the family's
    squeeze width, written as spec arithmetic (c: the SE's channels, cin: its block's input channels), has their
    parameters and gives their outputs."""
    net = getattr(torchvision.models, family)().eval()
    seen = set()
    for container in net.modules():     # InvertedResidual.block, MBConv.block, BottleneckTransform
        se = next((m for m in container.children() if isinstance(m, SqueezeExcitation)), None)
        if se is None:
            continue
        first_conv = next(m for m in container.modules() if isinstance(m, torch.nn.Conv2d))
        c, cin = se.fc2.out_channels, first_conv.in_channels
        if (c, cin) in seen:
            continue
        seen.add((c, cin))
        g = compile_blocks(f"param c = {c}\nparam cin = {cin}\ninput 4x4x{c}\n{block}(c, {squeeze})")
        assert next(n for n in g.nodes if n.op == "conv").shape[0] == se.fc1.out_channels, (family, c, cin)
        ours = cnndsl.to_torch(g).eval()
        load_in_order(ours, [se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias])
        x = torch.randn(2, c, 4, 4)
        with torch.no_grad():
            assert torch.allclose(ours(x), se(x), atol=1e-6)
    assert len(seen) >= 5


def test_torchvisions_squeeze_excitation_imports_as_mul():
    for opset in (13, 17):
        theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), SqueezeExcitation(8, 2, torch.nn.SiLU))
        g = import_onnx(torch_export(theirs, (3, 6, 6), opset))
        assert ops(g) == ["input", "conv", "adaptive_avgpool", "conv", "silu", "conv", "sigmoid", "mul"]
        assert cnndsl.analyze(g).totals["params"] == sum(p.numel() for p in theirs.parameters())


def test_a_chain_of_products_imports_as_one_mul():
    g = cnndsl.compile_text("input 5x5x4\nmul(conv1-4, conv3-4 tanh, gap + conv1-4 sigmoid)")
    back = import_onnx(to_onnx(g))
    (m,) = [n for n in back.nodes if n.op == "mul"]
    assert len(m.inputs) == 3 and m.shape == (4, 5, 5)
    # a product also read elsewhere stays a mul of its own
    mul = h.make_node("Mul", ["x", "x"], ["p"])
    twice = onnx_model([mul, h.make_node("Mul", ["p", "x"], ["q"]), h.make_node("Add", ["p", "q"], ["y"])])
    assert ops(import_onnx(twice)) == ["input", "mul", "mul", "add"]


@pytest.mark.parametrize("nodes,inits,fragment", [
    ([h.make_node("ReduceMean", ["x"], ["m"], axes=[1]), h.make_node("Mul", ["m", "x"], ["y"])], [],
     "the value 'm' \\(ln mean\\) is used on its own"),
    ([h.make_node("Mul", ["x", "w"], ["y"])], [const("w", np.ones((4, 3, 1)))], "scales by a constant of 4x3x1"),
    ([h.make_node("Mul", ["x", "w"], ["y"])], [const("w", np.ones((1, 1, 3)))], "neither a gelu's 1/2 nor"),
    ([h.make_node("Mul", ["w", "v"], ["y"])], [const("w", np.ones(4)), const("v", np.ones(4))], "constants only"),
    ([h.make_node("GlobalAveragePool", ["x"], ["g"]), h.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 3, 1]),
      h.make_node("Mul", ["t", "x"], ["y"])], [], "joins the channels-last value 't' and the channels-first"),
])
def test_products_cnndsl_cannot_state_are_refused(nodes, inits, fragment):
    with pytest.raises(cnndsl.CnnDslError, match=fragment):
        import_onnx(onnx_model(nodes, inits))


def test_mul_of_shapes_that_do_not_broadcast_is_an_import_error():
    conv = h.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1])
    m = onnx_model([conv, h.make_node("Mul", ["c", "x"], ["y"])], [const("w", np.ones((2, 4, 1, 1)))])
    with pytest.raises(cnndsl.CnnDslError, match="cannot multiply 4x3x3 and 2x3x3") as info:
        import_onnx(m)
    assert "Mul" in info.value.message


# ----------------------------------------------------------------------------------------- layerscale ----

def test_layerscale_is_torchvisions_layer_scale():
    g = cnndsl.compile_text("input 5x4x6\nconv3-6 none + layerscale")
    report = cnndsl.analyze(g)
    ls = g.output
    assert ls.attrs == {"init": 1e-6} and report.params[ls.name] == 6 and report.macs[ls.name] == 0
    model = cnndsl.to_torch(g, return_nodes=[g.nodes[1].name, ls.name]).eval()
    gamma = model.state_dict()[".".join(model.cnndsl_paths[ls.name]) + ".gamma"]
    theirs = CNBlock(6, 1e-6, 0.0)
    assert gamma.shape == theirs.layer_scale.shape and torch.equal(gamma, theirs.layer_scale.detach())
    x = torch.randn(2, 6, 5, 4)
    with torch.no_grad():
        outs = model(x)
    assert torch.equal(outs[ls.name], outs[g.nodes[1].name] * gamma)
    vector = cnndsl.to_torch(cnndsl.compile_text("input 5x4x6\ngap + fc3 + layerscale[init=0.25]"))
    assert [tuple(p.shape) for n, p in vector.named_parameters() if n.endswith("gamma")] == [(3,)]
    assert cnndsl.compile_text("input 5x4x6\nlayerscale[init=-2]").output.attrs == {"init": -2.0}


@pytest.mark.parametrize("text,fragment", [("layerscale[init=0.5, init=1]", "given twice"),
                                           ("layerscale[init=1e300]", "init must be in"),
                                           ("layerscale[init=1e-45]", "float32"), ("layerscale3", "no size"),
                                           ("layerscale[scale=2]", "unknown option 'scale'")])
def test_layerscale_options_are_checked(text, fragment):
    with pytest.raises(cnndsl.CnnDslError, match=fragment):
        cnndsl.compile_text("input 5x4x6\n" + text)


def test_layerscale_onnx_reads_back_with_its_init_or_convnexts():
    g = cnndsl.compile_text("input 5x4x6\nconv3-6 none + layerscale[init=0.125]")
    m = to_onnx(g)
    mul = m.graph.node[-1]
    assert mul.op_type == "Mul" and [tuple(t.dims) for t in m.graph.initializer if t.name == mul.input[1]] == [(6, 1, 1)]
    assert import_onnx(m).output.attrs == {"init": 0.125}
    mul.doc_string = ""        # another exporter's Mul: ConvNeXt's init
    assert import_onnx(m).output.attrs == {"init": 1e-6}
    for note in ("cnndsl: layerscale init=nan", "cnndsl: layerscale init=seven", "cnndsl: layerscale init=1e-50",
                 "cnndsl: layerscale init=" + "1" * 50):
        mul.doc_string = note
        with pytest.raises(cnndsl.CnnDslError, match="layer scale"):
            import_onnx(m)


def test_a_per_channel_factor_reads_as_layerscale_in_either_order():
    for order in (["w", "x"], ["x", "w"]):
        for shape in ((4, 1, 1), (1, 4, 1, 1)):
            g = import_onnx(onnx_model([h.make_node("Mul", order, ["y"])], [const("w", np.full(shape, 0.5))]))
            assert ops(g) == ["input", "layerscale"] and cnndsl.analyze(g).totals["params"] == 4


# ------------------------------------------------------------------------------------------ layernorm ----

def test_layernorm_is_torchvisions_layernorm2d_exactly():
    g = cnndsl.compile_text("input 7x5x8\nlayernorm")
    assert g.output.attrs == {"eps": 1e-6}
    ours = cnndsl.to_torch(g).eval()
    theirs = LayerNorm2d(8, eps=1e-6).eval()
    randomize(theirs)
    load_in_order(ours, [theirs.weight, theirs.bias])
    x = torch.randn(3, 8, 7, 5) * 3 + 1
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    report = cnndsl.analyze(g)
    assert report.totals["params"] == 16 and report.totals["macs"] == 0 and report.totals["buffers"] == 0


def test_layernorm_on_a_vector_is_nn_layernorm_exactly():
    g = cnndsl.compile_text("input 3x3x4\nflatten + layernorm[eps=1e-5]")
    ours = cnndsl.to_torch(g).eval()
    theirs = torch.nn.LayerNorm(36).eval()
    randomize(theirs)
    load_in_order(ours, list(theirs.parameters()))
    x = torch.randn(5, 4, 3, 3)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x.flatten(1)))


@pytest.mark.parametrize("text,fragment", [("layernorm[eps=0]", "at least 1e-12"), ("layernorm[eps=nan]", "eps"),
                                           ("layernorm[eps=2]", "eps"), ("layernorm4", "no size"),
                                           ("layernorm[momentum=0.1]", "unknown option")])
def test_layernorm_options_are_checked(text, fragment):
    with pytest.raises(cnndsl.CnnDslError, match=fragment):
        cnndsl.compile_text("input 5x4x6\n" + text)


@pytest.mark.parametrize("p,scale", [(0, 1e-6), (0.1, 0.5)])
def test_cnblock_is_torchvisions_convnext_block(p, scale):
    theirs = CNBlock(16, scale, p).eval()
    randomize(theirs)
    g = compile_blocks(f"input 9x9x16\ncnblock(16, {p}, {scale})")
    ours = cnndsl.to_torch(g).eval()
    b = theirs.block
    load_in_order(ours, [b[0].weight, b[0].bias, b[2].weight, b[2].bias, b[3].weight, b[3].bias, b[5].weight,
                         b[5].bias, theirs.layer_scale])
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    report = cnndsl.analyze(g)
    assert report.totals["params"] == sum(q.numel() for q in theirs.parameters())
    # torchvision's "_ops" convention: conv and linear multiply-accumulates only
    assert report.totals["macs"] == 9 * 9 * (16 * 49 + 2 * 16 * 64)
    for opset in OPSETS:
        model = to_onnx(g, weights=ours.state_dict(), opset=opset)
        assert np.allclose(run_onnx(model, x), theirs(x).detach().numpy(), atol=1e-4), opset
        assert ops(import_onnx(model)) == ops(g)


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
@pytest.mark.parametrize("fold", [True, False])
def test_torch_onnx_exports_of_convnext_pieces_import(opset, fold):
    """What torch.onnx.export writes: LayerNorm2d as Transpose / LayerNormalization (its ReduceMean ... form
    before opset 17) / Transpose; CNBlock's Linear layers as MatMul + Add on the channels-last value (a Transpose
    of the weight too, without constant folding), GELU as x * (1 + erf(x / sqrt 2)) * 0.5; nn.LayerNorm."""
    block = CNBlock(4, 1e-6, 0.0)
    cases = [(LayerNorm2d(4, eps=1e-6), (4, 3, 3), ["input", "layernorm"], 1e-6),
             (block, (4, 5, 5), ["input", "conv", "layernorm", "conv", "gelu", "conv", "layerscale", "add"], 1e-6),
             (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LayerNorm(36)), (4, 3, 3),
              ["input", "flatten", "layernorm"], 1e-5)]
    for theirs, shape, want, eps in cases:
        randomize(theirs)
        model = torch_export(theirs, shape, opset, fold)
        g = import_onnx(model)
        assert ops(g) == want
        assert cnndsl.analyze(g).totals["params"] == sum(q.numel() for q in theirs.parameters())
        assert next(n for n in g.nodes if n.op == "layernorm").attrs == {"eps": eps}
        # the imported graph, with the file's weights in torch, computes what the file does
        ours = cnndsl.to_torch(g).eval()
        params = list(theirs.parameters())
        load_in_order(ours, params[1:] + params[:1] if theirs is block else params)    # layer_scale comes first
        x = torch.randn(2, *shape)
        with torch.no_grad():
            assert torch.allclose(ours(x), theirs(x), atol=1e-5)
        assert cnndsl.compile_text(write_spec(g)).output.shape == g.output.shape


def _composite(axis, weight_shape, opset=17, eps=1e-5, **change):
    """A layer norm in pieces over `axis` of the input, as older opsets write it."""
    nodes = {"mean": h.make_node("ReduceMean", ["x"], ["m"], axes=[axis]),
             "sub": h.make_node("Sub", ["x", "m"], ["d"]),
             "pow": h.make_node("Pow", ["d", "two"], ["s"]),
             "var": h.make_node("ReduceMean", ["s"], ["v"], axes=[axis]),
             "plus_eps": h.make_node("Add", ["v", "eps"], ["ve"]),
             "sqrt": h.make_node("Sqrt", ["ve"], ["sd"]),
             "div": h.make_node("Div", ["d", "sd"], ["n"]),
             "mul": h.make_node("Mul", ["n", "w"], ["sc"]),
             "add": h.make_node("Add", ["sc", "b"], ["y"])}
    nodes.update(change)
    inits = [const("two", 2.0), const("eps", eps), const("w", np.full(weight_shape, 1.5)),
             const("b", np.full(weight_shape, 0.25))]
    return onnx_model([n for n in nodes.values() if n is not None], inits, opset=opset)


def test_a_layer_norm_over_axis_1_in_pieces_imports_and_runs_as_one():
    """ReduceMean over the channels with keepdims gives the channel layer norm without Transposes at any opset."""
    m = _composite(1, (4, 1, 1), eps=1e-6)
    g = import_onnx(m)
    assert ops(g) == ["input", "layernorm"] and g.output.attrs == {"eps": 1e-6}
    x = torch.randn(1, 4, 3, 3)
    theirs = LayerNorm2d(4, eps=1e-6)
    with torch.no_grad():
        theirs.weight.fill_(1.5)
        theirs.bias.fill_(0.25)
        assert np.allclose(run_onnx(m, x), theirs(x).numpy(), atol=1e-5)
    # (x - mean) * (x - mean) for the square
    square = h.make_node("Mul", ["d", "d"], ["s"])
    assert ops(import_onnx(_composite(-3, (1, 4, 1, 1), pow=square))) == ["input", "layernorm"]


@pytest.mark.parametrize("change,fragment", [
    ({"mean": h.make_node("ReduceMean", ["x"], ["m"], axes=[2])}, "averages over axis 2"),
    ({"mean": h.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0)}, "outside adaptive pooling"),
    ({"pow": h.make_node("Pow", ["d", "eps"], ["s"])}, "not part of a layer norm"),
    ({"sub": h.make_node("Sub", ["m", "x"], ["d"])}, "subtracts values"),
    ({"div": h.make_node("Div", ["x", "sd"], ["n"])}, "does not divide x - mean"),
    ({"plus_eps": None, "sqrt": h.make_node("Sqrt", ["v"], ["sd"])}, "not part of a layer norm"),
    ({"mul": h.make_node("Mul", ["n", "two"], ["sc"])}, "one weight per channel"),
    ({"add": h.make_node("Add", ["sc", "two"], ["y"])}, "one bias per channel"),
    ({"add": h.make_node("Add", ["sc", "x"], ["y"])}, "is used on its own"),
    ({"add": h.make_node("Add", ["sc", "b"], ["y"]), "extra": h.make_node("Relu", ["d"], ["r"])},
     "does not divide x - mean"),
])
def test_a_layer_norm_in_pieces_is_read_only_whole(change, fragment):
    with pytest.raises(cnndsl.CnnDslError, match=fragment):
        import_onnx(_composite(1, (4, 1, 1), **change))


def test_layer_norm_eps_from_a_file_is_checked():
    for eps in (0.0, -1e-5, 2.0, 1e-20):
        with pytest.raises(cnndsl.CnnDslError, match="epsilon"):
            import_onnx(_composite(1, (4, 1, 1), eps=eps))
    with pytest.raises(cnndsl.CnnDslError, match="not finite"):
        import_onnx(_composite(1, (4, 1, 1), eps=float("nan")))


def _nhwc(*middle, inits=(), back=True, opset=17):
    nodes = [h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), *middle]
    if back:
        nodes.append(h.make_node("Transpose", [middle[-1].output[0] if middle else "t"], ["y"], perm=[0, 3, 1, 2]))
    return onnx_model(nodes, list(inits), opset=opset)


LN_INITS = [const("w", np.ones(4)), const("b", np.zeros(4))]


@pytest.mark.parametrize("m,fragment", [
    (lambda: onnx_model([h.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=1)],
                        [const("w", np.ones((4, 3, 3))), const("b", np.zeros((4, 3, 3)))]),
     "normalizes axes 1 to 3 of its N x 4x3x3 input"),
    (lambda: _nhwc(h.make_node("LayerNormalization", ["t", "w", "b"], ["n"], axis=2), inits=LN_INITS),
     "normalizes axes 2 to 3 of its channels-last"),
    (lambda: _nhwc(h.make_node("LayerNormalization", ["t", "w"], ["n"]), inits=LN_INITS), "bias is missing"),
    (lambda: _nhwc(h.make_node("LayerNormalization", ["t", "w", "b"], ["n", "mean"]), inits=LN_INITS),
     "also returns its mean"),
    (lambda: _nhwc(h.make_node("LayerNormalization", ["t", "w", "b"], ["n"], stash_type=0), inits=LN_INITS),
     "stash_type"),
    (lambda: _nhwc(h.make_node("LayerNormalization", ["t", "w", "b"], ["n"], epsilon=float("inf")),
                   inits=LN_INITS), "not a finite number"),
    (lambda: _nhwc(h.make_node("LayerNormalization", ["t", "w", "b"], ["n"]),
                   inits=[const("w", np.ones(3)), const("b", np.zeros(4))]), "its scale is 3, expected 4"),
    (lambda: _nhwc(back=False), "the output 'y' is not produced|channels-last"),
    (lambda: _nhwc(h.make_node("Relu", ["t"], ["y"]), back=False), "the output 'y' is in channels-last layout"),
    (lambda: _nhwc(h.make_node("Conv", ["t", "k"], ["c"], kernel_shape=[1, 1]), inits=[const("k", np.ones((4, 3, 1, 1)))]),
     "reads the channels-last value 't'"),
    (lambda: _nhwc(h.make_node("Transpose", ["t"], ["u"], perm=[0, 2, 1, 3])), "a channels-last value goes back"),
    (lambda: _nhwc(h.make_node("MatMul", ["t", "k"], ["c"]), inits=[const("k", np.ones((3, 4)))]),
     "its 3x4 weight does not map the 4 channels"),
    (lambda: _nhwc(h.make_node("MatMul", ["t", "k"], ["c"]), h.make_node("Add", ["c", "bb"], ["d"]),
                   inits=[const("k", np.ones((4, 4))), const("bb", np.ones((4, 1, 1)))]),
     "adds a constant that is not a linear layer's bias"),
    (lambda: _nhwc(h.make_node("ReduceMean", ["t"], ["m"], axes=[1]), h.make_node("Sub", ["t", "m"], ["d"])),
     "averages over axis 1 of its channels-last"),
])
def test_channels_last_values_are_read_only_where_cnndsl_can_state_them(m, fragment):
    with pytest.raises(cnndsl.CnnDslError, match=fragment):
        import_onnx(m())


def test_a_layer_scale_and_an_activation_may_sit_inside_the_transposes():
    """timm's ConvNeXt multiplies by gamma before it transposes back: a (C,) factor on the channels-last value."""
    m = _nhwc(h.make_node("LayerNormalization", ["t", "w", "b"], ["n"], epsilon=1e-6),
              h.make_node("MatMul", ["n", "k"], ["c"]), h.make_node("Add", ["c", "kb"], ["d"]),
              h.make_node("Relu", ["d"], ["r"]), h.make_node("Mul", ["r", "g"], ["s"]),
              inits=LN_INITS + [const("k", np.ones((4, 6))), const("kb", np.ones(6)), const("g", np.full(6, 0.5))])
    g = import_onnx(onnx_model(list(m.graph.node), list(m.graph.initializer), out=(1, 6, 3, 3)))
    assert ops(g) == ["input", "layernorm", "conv", "relu", "layerscale"]
    conv = g.nodes[2]
    assert conv.attrs["kernel"] == (1, 1) and conv.attrs["bias"] and conv.shape == (6, 3, 3)


def test_the_modern_ops_compile_export_and_run_channels_last():
    """No graph breaks under torch.compile's tracer, torch.export, channels_last and autocast, as for the other ops."""
    g = compile_blocks("input 16x16x3\nconv3-16 + se_silu_sigmoid(16, 4) + cnblock(16, 0.1) + gap + fc4 + layernorm + "
                       "mul(fc4 tanh, layerscale[init=0.5])")
    model = cnndsl.to_torch(g).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        assert torch.allclose(ref, cl, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.allclose(ref, model(x).float(), atol=0.1, rtol=0.1)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), ref, atol=1e-5)
