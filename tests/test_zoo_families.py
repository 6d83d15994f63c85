"""Families of the zoo (specs/families/efficientnet.cnn, mobilenet_v3.cnn): what one file of blocks and params
gives each model beyond the counts test_zoo and test_oracles_torchvision check (stochastic depth rates, batch-norm
settings, the params on the command line), and the computed zero repeat a family's one-block stage needs."""
from __future__ import annotations

import pytest

import cnndsl
from cnndsl.errors import ValueError_
from conftest import spec_path

EFFICIENTNETS = [f"efficientnet_b{i}" for i in range(8)] + [f"efficientnet_v2_{s}" for s in "sml"]
MOBILENETS_V3 = ["mobilenet_v3_large", "mobilenet_v3_small"]


def ops(graph):
    return [n.op for n in graph.nodes]


def test_a_computed_repeat_count_may_be_zero():
    # `first + rest x{n - 1}`: a stage of n blocks, n = 1 included (EfficientNet-B0's first and last stages)
    text = "param n = {}\ninput 8x8x4\nconv3-8 bn + res(conv3-8 bn) x{{n - 1}} + gap"
    assert ops(cnndsl.compile_text(text.format(1))) == ["input", "conv", "bn", "relu", "adaptive_avgpool"]
    assert ops(cnndsl.compile_text(text.format(2))).count("add") == 1
    assert ops(cnndsl.compile_text("param d = 1.0\ninput 8x8x4\nconv3-8 + relu x{ceil(1 * d) - 1}")) == \
        ["input", "conv", "relu"]
    block = "block stage(n) = conv3-8 + conv1-8 x{n - 1}\ninput 8x8x4\nstage(1) | stage(2)"
    assert ops(cnndsl.compile_text(block)) == ["input"] + ["conv", "relu"] * 3
    # a written count is at least 1, a computed one at least 0
    for text, least, got in (("input 8x8x4\nconv3-8 x0", 1, 0), ("input 8x8x4\nconv3-8 x{0}", 1, 0),
                             ("param n = 1\ninput 8x8x4\nconv3-8 x{n - 2}", 0, -1)):
        with pytest.raises(ValueError_) as err:
            cnndsl.compile_text(text)
        assert f"at least {least}, got {got}" in err.value.message, text


torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def on_meta(name, **kwargs):
    with torch.device("meta"):      # structure only: no memory, no initialisation
        return torchvision.models.get_model(name, weights=None, **kwargs)


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_stochastic_depth_rates_are_torchvisions(name):
    """torchvision's ramp: block i of N has p = 0.2 * i / N, used where the block adds its input back; the spec's
    blocks without a residual keep rate 0 (droppath[p=0, ramp]) but count in N."""
    from torchvision.models.efficientnet import FusedMBConv, MBConv
    blocks = [m for m in on_meta(name).modules() if isinstance(m, (MBConv, FusedMBConv))]
    graph = cnndsl.compile(spec_path(name))
    rates = [n.attrs["p"] for n in graph.nodes if n.op == "droppath"]
    assert rates == [b.stochastic_depth.p if b.use_res_connect else 0.0 for b in blocks]
    assert [b.stochastic_depth.p for b in blocks] == [0.2 * i / len(blocks) for i in range(len(blocks))]
    # each droppath ends a residual branch exactly where torchvision's block adds its input back
    assert sum(graph[n.inputs[0]].op == "droppath" for n in graph.nodes if n.op == "add") == \
        sum(b.use_res_connect for b in blocks)


@pytest.mark.parametrize("name", EFFICIENTNETS + MOBILENETS_V3)
def test_batch_norm_and_dropout_settings_are_torchvisions(name):
    model = on_meta(name)
    graph = cnndsl.compile(spec_path(name))
    theirs = [(m.eps, m.momentum) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ours = [(n.attrs["eps"], n.attrs["momentum"]) for n in graph.nodes if n.op == "bn"]
    assert ours == theirs
    assert [n.attrs["p"] for n in graph.nodes if n.op == "dropout"] == \
        [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]


def totals(graph):
    report = cnndsl.analyze(graph)
    return (report.totals["params"], report.totals["buffers"], report.totals["macs"],
            [n.shape for n in graph.nodes if n.op == "conv"])


def test_the_family_params_make_each_efficientnet_from_b0():
    # B0 with B_N's width, depth and input size is B_N but for dropout and (B5-B7) batch norm settings
    scaling = {1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8), 5: (1.6, 2.2), 6: (1.8, 2.6), 7: (2.0, 3.1)}
    for i, (width, depth) in scaling.items():
        size = cnndsl.compile(spec_path(f"efficientnet_b{i}")).input_shape[1]
        b0 = cnndsl.compile(spec_path("efficientnet_b0"), overrides={"width": width, "depth": depth},
                            input_shape=(size, size, 3))
        assert totals(b0) == totals(cnndsl.compile(spec_path(f"efficientnet_b{i}"))), i


@pytest.mark.parametrize("width,depth", [(0.5, 0.5), (1.3, 1.5)])
def test_efficientnet_width_and_depth_as_torchvision_scales_them(width, depth):
    """Any multipliers, against torchvision's EfficientNet built from _efficientnet_conf with them: parameters,
    buffers, conv+fc MACs and every convolution's shape (measured on a forward pass at 64x64)."""
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    from torch_oracle import measured
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=depth)
    model = EfficientNet(setting, 0.2, last_channel=last).eval()
    graph = cnndsl.compile(spec_path("efficientnet_b0"), overrides={"width": width, "depth": depth},
                           input_shape=(64, 64, 3))
    macs, shapes = measured(model, 64)
    assert totals(graph) == (sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers()),
                             macs, shapes)


@pytest.mark.parametrize("name,width", [("mobilenet_v3_large", 0.75), ("mobilenet_v3_small", 0.5),
                                        ("mobilenet_v3_small", 1.25)])
def test_mobilenet_v3_width_as_torchvision_scales_it(name, width):
    from torch_oracle import measured
    model = torchvision.models.get_model(name, weights=None, width_mult=width).eval()
    graph = cnndsl.compile(spec_path(name), overrides={"width": width}, input_shape=(64, 64, 3))
    macs, shapes = measured(model, 64)
    assert totals(graph) == (sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers()),
                             macs, shapes)


def test_set_width_on_the_command_line(cli):
    plain = cli("analyze", str(spec_path("efficientnet_b3")), "--json")
    wider = cli("analyze", str(spec_path("efficientnet_b3")), "--json", "--set", "width=1.4")
    assert plain.exit_code == wider.exit_code == 0, wider.output
    import json
    assert json.loads(wider.output)["totals"]["params"] > json.loads(plain.output)["totals"]["params"]
    bad = cli("analyze", str(spec_path("efficientnet_b3")), "--set", "widht=1.4")
    assert bad.exit_code != 0 and "width" in bad.output


def test_fused_mbconv_weights_pair_in_ci():
    """EfficientNetV2's FusedMBConv stages (and V2's BN) pair with torchvision's modules: test_zoo pairs V2-S at
    full size with -m slow only (8.4 GMACs), so CI pairs it at 64x64 here."""
    from test_zoo import calibrate
    torch.manual_seed(0)
    theirs = calibrate(torchvision.models.efficientnet_v2_s(), 64)
    ours = cnndsl.to_torch(cnndsl.compile(spec_path("efficientnet_v2_s"), input_shape=(64, 64, 3)), logits=True)
    pairs = cnndsl.load_torchvision(ours.eval(), theirs)
    assert len(pairs) == sum(1 for m in theirs.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                                                                          torch.nn.BatchNorm2d)))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert want.std() > 0 and (got - want).abs().max() <= 1e-4 * want.abs().max()
