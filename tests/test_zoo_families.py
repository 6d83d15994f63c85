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
