"""The RegNetY, ConvNeXt and ShuffleNet V2 families (specs/families/regnet.cnn, convnext.cnn, shufflenet_v2.cnn):
what each model's few lines give beyond the counts test_zoo and test_zoo_meta check, against torchvision's own
settings: RegNetY's stage table (torchvision's BlockParams: widths, depths, groups) and squeeze widths,
ConvNeXt's stochastic depth rates, layer norm eps and layer scale init, and the family params on the command
line. Nothing here builds a model's weights."""
from __future__ import annotations

import json
from unittest import mock

import pytest

import cnndsl
from conftest import spec_path

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

REGNETS_Y = [f"regnet_y_{s}" for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")]
CONVNEXTS = [f"convnext_{s}" for s in ("tiny", "small", "base", "large")]
SHUFFLENETS = [f"shufflenet_v2_x{s}" for s in ("0_5", "1_0", "1_5", "2_0")]


def block_params(name):
    """torchvision's BlockParams for a RegNet, from its own builder (stopped before it builds the model)."""
    from torchvision.models import regnet
    with mock.patch.object(regnet, "_regnet", lambda params, *args, **kwargs: params):
        return getattr(regnet, name)()


@pytest.mark.parametrize("name", REGNETS_Y)
def test_regnet_y_stage_table_is_torchvisions(name):
    """Every block's 3x3 group convolution (width, groups, stride) and squeeze width in order, from torchvision's
    BlockParams: width w, w // group width groups, the stride on a stage's first block, and round(0.25 x the
    block's input width) squeeze channels (32, the stem's, for the first)."""
    params = block_params(name)
    assert params.se_ratio == 0.25 and params.bottleneck_multipliers == [1.0] * 4
    want_convs, want_squeeze, w_in = [], [], 32
    for w, d, g, s in zip(params.widths, params.depths, params.group_widths, params.strides):
        for i in range(d):
            want_convs.append((w, w // g, s if i == 0 else 1))
            want_squeeze.append(int(round(0.25 * (w_in if i == 0 else w))))
        w_in = w
    graph = cnndsl.compile(spec_path(name))
    convs = [n for n in graph.nodes if n.op == "conv"]
    assert [(n.attrs["out"], n.attrs["groups"], n.attrs["stride"][0]) for n in convs[1:]     # after the stem
            if n.attrs["kernel"] == (3, 3)] == want_convs
    # the squeeze: the 1x1 convolution with bias on the pooled 1x1 map, right after global pooling
    assert [n.attrs["out"] for n in convs if graph[n.inputs[0]].op == "adaptive_avgpool"] == want_squeeze


def on_meta(name):
    with torch.device("meta"):      # structure only: no memory, no initialisation
        return torchvision.models.get_model(name, weights=None)


@pytest.mark.parametrize("name", CONVNEXTS)
def test_convnext_rates_eps_and_layer_scale_are_torchvisions(name):
    from torchvision.models.convnext import CNBlock
    model = on_meta(name)
    graph = cnndsl.compile(spec_path(name))
    blocks = [m for m in model.modules() if isinstance(m, CNBlock)]
    # the ramp p * i / (N - 1) over all N blocks, as torchvision's StochasticDepth modules hold it
    assert [n.attrs["p"] for n in graph.nodes if n.op == "droppath"] == \
        pytest.approx([b.stochastic_depth.p for b in blocks], abs=1e-15)
    assert [n.attrs["eps"] for n in graph.nodes if n.op == "layernorm"] == \
        [m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    # layer scale's init: torchvision's default layer_scale argument (its tensor is on the meta device)
    import inspect
    init = inspect.signature(torchvision.models.convnext.ConvNeXt).parameters["layer_scale"].default
    assert [n.attrs["init"] for n in graph.nodes if n.op == "layerscale"] == [init] * len(blocks)
    # every droppath ends a block's branch, right before the addition of its input
    assert sum(graph[n.inputs[0]].op == "droppath" for n in graph.nodes if n.op == "add") == len(blocks)


def test_drop_path_on_the_command_line(cli):
    plain = cli("ir", str(spec_path("convnext_tiny")))
    more = cli("ir", str(spec_path("convnext_tiny")), "--set", "drop_path=0.3")
    assert plain.exit_code == more.exit_code == 0, more.output
    assert "0.1" in plain.output and "0.3" in more.output
    graph = cnndsl.compile(spec_path("convnext_small"), overrides={"drop_path": 0.2})
    rates = [n.attrs["p"] for n in graph.nodes if n.op == "droppath"]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2) and len(rates) == 36
    same = cli("analyze", str(spec_path("convnext_tiny")), "--json", "--set", "drop_path=0.5")
    assert json.loads(same.output)["totals"]["params"] == 28589128     # a rate, not a weight


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_shufflenet_v2_widths_are_torchvisions(name):
    """Each stage's output width and number of units, and the last convolution's width (torchvision's
    _stage_out_channels and stages_repeats 4, 8, 4)."""
    model = on_meta(name)
    graph = cnndsl.compile(spec_path(name))
    shuffles = [n for n in graph.nodes if n.op == "shuffle"]
    per_stage = {}
    for n in shuffles:
        per_stage.setdefault(n.stage, []).append(n.shape[0])
    widths = model._stage_out_channels
    assert list(per_stage.values()) == [[w] * r for w, r in zip(widths[1:4], (4, 8, 4))]
    assert [n for n in graph.nodes if n.op == "conv"][-1].attrs["out"] == widths[4]


def test_load_torchvision_pairs_a_convnext_block():
    """torchvision's CNBlock (position-wise Linear layers, a bare layer_scale parameter listed before its layers)
    into the library's cnblock: 1x1 convolutions get the Linear weights, layerscale gets layer_scale, and
    what does not pair is named."""
    from torchvision.models.convnext import CNBlock
    from cnndsl.backends.torchvision import WeightMismatch
    from conftest import ROOT
    torch.manual_seed(0)
    theirs = CNBlock(8, 1e-6, 0.0).eval()
    with torch.no_grad():
        theirs.layer_scale.copy_(torch.rand(8, 1, 1) + 0.5)
        theirs.block[2].weight.copy_(torch.rand(8) + 0.5)
    spec = 'use "lib/blocks.cnn"\ninput 6x6x8\n'
    ours = cnndsl.to_torch(cnndsl.compile_text(spec + "cnblock(8)", base=ROOT / "specs")).eval()
    pairs = cnndsl.load_torchvision(ours, theirs)
    assert [t for t, _ in pairs] == ["block.0", "block.2", "block.3", "block.5", ""]
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    two = cnndsl.to_torch(cnndsl.compile_text(spec + "cnblock(8) x2", base=ROOT / "specs"))
    with pytest.raises(WeightMismatch, match="the spec has 4 more weight layers"):
        cnndsl.load_torchvision(two, theirs)
    assert len(cnndsl.load_torchvision(two, theirs, strict=False)) == 5
    plain = cnndsl.to_torch(cnndsl.compile_text(
        spec + "res(dwconv7[bias] none + layernorm + conv1-32 gelu + conv1-8 none)", base=ROOT / "specs"))
    with pytest.raises(WeightMismatch, match="the source has 1 more layer scales"):
        cnndsl.load_torchvision(plain, theirs)
    wide = cnndsl.to_torch(cnndsl.compile_text(spec + "cnblock(8) + conv1-16 none + layerscale",
                                               base=ROOT / "specs"))
    with pytest.raises(WeightMismatch, match="the spec has 1 more weight layers"):
        cnndsl.load_torchvision(wide, theirs)
