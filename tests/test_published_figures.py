"""Figures from the papers and the seed notes: VGG Table 2, LeNet's 60K, the 1x1 bottleneck's 69K vs 589K."""
from __future__ import annotations

import pytest

import cnndsl
from conftest import spec_path

# Simonyan & Zisserman 2015, Table 2: number of parameters (in millions) for configurations A..E
VGG_TABLE2 = {"vgg11": 133, "vgg11-lrn": 133, "vgg13": 133, "vgg16c": 134, "vgg16": 138, "vgg19": 144}


@pytest.mark.parametrize("name,millions", sorted(VGG_TABLE2.items()))
def test_vgg_table2(name, millions):
    report = cnndsl.analyze(cnndsl.compile(spec_path(name)))
    assert round(report.totals["params"] / 1e6) == millions


def test_vgg_weight_layer_counts():
    layers = {"vgg11": 11, "vgg11-lrn": 11, "vgg13": 13, "vgg16c": 16, "vgg16": 16, "vgg19": 19}
    for name, count in layers.items():
        assert cnndsl.analyze(cnndsl.compile(spec_path(name))).totals["weight_layers"] == count, name


def test_vgg_fc_layers_hold_the_seeds_120M():
    report = cnndsl.analyze(cnndsl.compile(spec_path("vgg16")))
    fc = sum(report.params[n.name] for n in report.graph.nodes if n.op == "fc")
    assert 120e6 <= fc <= 125e6            # "120M parameters in the three FC-layers"
    assert any("fully-connected" in w["message"] for w in report.notes)      # VGG's choice: a note, no warning
    assert not report.warnings


def test_lenet_about_60k():
    report = cnndsl.analyze(cnndsl.compile(spec_path("lenet5")))
    assert 55_000 <= report.totals["params"] <= 65_000
    assert report.graph.output.shape == (10,)
    assert [n.shape for n in report.graph.nodes if n.op == "conv"] == [(6, 28, 28), (16, 10, 10)]


def test_seed_bottleneck_69k_vs_589k():
    bottleneck = cnndsl.analyze(cnndsl.compile(spec_path("bottleneck"))).totals["params"]
    plain = cnndsl.analyze(cnndsl.compile(spec_path("plain3x3"))).totals["params"]
    assert bottleneck == 64 * 1 * 1 * 256 + 64 * 3 * 3 * 64 + 256 * 1 * 1 * 64 == 69_632
    assert plain == 256 * 3 * 3 * 256 == 589_824


def test_alexnet_paper_about_60m_and_227_input():
    report = cnndsl.analyze(cnndsl.compile(spec_path("alexnet-paper")))
    assert 60e6 <= report.totals["params"] <= 62e6
    convs = [n for n in report.graph.nodes if n.op == "conv"]
    assert convs[0].shape == (96, 55, 55)
    assert [n.attrs["groups"] for n in convs] == [1, 2, 1, 2, 2]
    assert sum(1 for n in report.graph.nodes if n.op == "lrn") == 2


def test_resnet_has_fewer_parameters_than_vgg():
    resnet152 = cnndsl.analyze(cnndsl.compile(spec_path("resnet152"))).totals["params"]
    vgg19 = cnndsl.analyze(cnndsl.compile(spec_path("vgg19"))).totals["params"]
    assert round(resnet152 / 1e6) == 60 and round(vgg19 / 1e6) == 144   # the seed's "60M vs 144M"


def test_receptive_fields_from_the_literature():
    # Araujo, Norris & Sim, "Computing Receptive Fields of CNNs", Distill 2019: VGG-16 212, AlexNet 195
    vgg = cnndsl.analyze(cnndsl.compile(spec_path("vgg16")))
    last_pool = [n.name for n in vgg.graph.nodes if n.op == "maxpool"][-1]
    assert vgg.rf[last_pool].size == (212, 212) and vgg.rf[last_pool].stride == (32, 32)
    alex = cnndsl.analyze(cnndsl.compile(spec_path("alexnet")))
    last_pool = [n.name for n in alex.graph.nodes if n.op == "maxpool"][-1]
    assert alex.rf[last_pool].size == (195, 195) and alex.rf[last_pool].stride == (32, 32)


def test_stacked_3x3_fields_are_5_and_7_not_9_and_27():
    # The seed says 9x9 and 27x27; with stride 1 two 3x3 layers see 5x5 and three see 7x7 (VGG paper, sec. 2.3).
    report = cnndsl.analyze(cnndsl.compile_text("input 32x32x3\nconv3-8 x3"))
    convs = [n.name for n in report.graph.nodes if n.op == "conv"]
    assert [report.rf[c].size for c in convs] == [(3, 3), (5, 5), (7, 7)]
