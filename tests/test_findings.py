"""Warnings and notes: the classics print notes only, real mistakes still warn; the RF column after a collapse;
`jump` in the JSON."""
from __future__ import annotations

import json

import pytest

import cnndsl
from cnndsl.ir import Graph, make_node
from conftest import spec_path

CLASSICS = ["lenet5", "alexnet", "alexnet-paper", "vgg11", "vgg11-lrn", "vgg13", "vgg16c", "vgg16", "vgg19",
            "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101",
            "resnet152", "googlenet", "densenet121", "inception_v3", "mobilenet_v2", "bottleneck", "plain3x3"]
# squeeze-and-excitation gates: every unit of the gated map sees the whole input, so no merge after one is
# unaligned (these printed dozens of "unaligned" warnings before)
GATED = ["efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf"]


def kinds(items) -> list[str]:
    return [w["kind"] for w in items]


@pytest.mark.parametrize("name", CLASSICS + GATED)
def test_the_classics_print_no_warning(name):
    report = cnndsl.analyze(cnndsl.compile(spec_path(name)))
    assert report.warnings == [], report.warnings


@pytest.mark.parametrize("name, expected", [
    ("lenet5", ["fc-heavy", "small-field"]), ("alexnet", ["fc-heavy", "small-field"]),
    ("vgg16", ["fc-heavy", "small-field"]), ("vgg19", ["fc-heavy"]), ("resnet50", [])])
def test_the_classics_choices_are_notes(name, expected):
    assert kinds(cnndsl.analyze(cnndsl.compile(spec_path(name))).notes) == expected


def test_the_table_dims_notes_and_prints_no_warning(cli):
    out = cli("analyze", str(spec_path("vgg16"))).stdout
    assert "note: fully-connected layers hold 89.4% of the parameters" in out and "warning" not in out
    from rich.console import Console

    from cnndsl.cli.render import print_report
    console = Console(record=True, width=300, force_terminal=True, color_system="standard")
    print_report(cnndsl.analyze(cnndsl.compile(spec_path("lenet5"))), console)
    styled = console.export_text(styles=True)
    assert "\x1b[2m" in styled.split("note:")[0].rsplit("\n", 1)[-1]       # the note's line is dim


def test_json_has_notes_and_warnings_apart(cli):
    data = json.loads(cli("analyze", "--json", str(spec_path("alexnet"))).stdout)
    assert data["warnings"] == []
    assert kinds(data["notes"]) == ["fc-heavy", "small-field"]
    assert {"kind", "node", "message", "line", "column"} <= set(data["notes"][0])
    md = cli("analyze", "--format", "markdown", str(spec_path("alexnet"))).stdout
    assert "- note: line" in md and "- warning" not in md


MISTAKES = {
    # a 2x2 pool on a 7x7 map loses a seventh of it
    "truncation": "input 7x7x8\nconv3-8 + maxpool2 + fc10",
    # six stride-1 convolutions and a global pooling: each feature sees 13 of 224 pixels
    "small-field": "input 224x224x3\nconv3-16 x6 + gap + fc10",
    # a 1x1/2 projection beside a 2x2/2 pool: centres half a pixel apart
    "unaligned": "input 16x16x1\nadd(conv1-2/2, maxpool2/2 + conv1-2)",
    # a 3x3 convolution on a 1x1 map: 8 of its 9 taps read only padding
    "dead-weights": "input 8x8x3\nconv3-8/2 x3 + conv3-8 + gap + fc10",
    "input-layout": "input 3x32x32\nconv3-8 + gap + fc10",
}


@pytest.mark.parametrize("kind", sorted(MISTAKES))
def test_a_real_mistake_still_warns(kind, cli, tmp_path):
    report = cnndsl.analyze(cnndsl.compile_text(MISTAKES[kind], filename="m.cnn"))
    assert kind in kinds(report.warnings), report.warnings
    warning = next(w for w in report.warnings if w["kind"] == kind)
    assert warning["line"] and warning["column"] and warning.get("hint")
    spec = tmp_path / "m.cnn"
    spec.write_text(MISTAKES[kind])
    out = cli("analyze", str(spec)).stdout
    assert f"{spec}:{warning['line']}:{warning['column']}: warning: {warning['message']}" in out
    assert f"  hint: {warning['hint']}" in out


def test_small_shallow_fields_and_thin_truncations_are_notes():
    # the Keras MNIST example: two convolutions, a 6x6 field on 28x28, by design
    report = cnndsl.analyze(cnndsl.compile_text("input 28x28x1\nconv3-32 + conv3-64 + maxpool + fc128 + fc10"))
    assert report.warnings == [] and "small-field" in kinds(report.notes)
    # a 7x7/2 convolution without padding drops one row of 224
    report = cnndsl.analyze(cnndsl.compile_text("conv7-8/2[pad=0] + gap + fc10"))
    assert report.warnings == [] and "truncation" in kinds(report.notes)


def test_an_unused_node_of_a_graph_made_by_hand_warns():
    nodes = (make_node("input", "input", (), {}, (3, 8, 8), "input", None),
             make_node("relu1", "relu", ("input",), {}, (3, 8, 8), "stage1", None),
             make_node("relu2", "relu", ("input",), {}, (3, 8, 8), "stage1", None))
    assert kinds(cnndsl.analyze(Graph(nodes)).warnings) == ["unused"]


def test_the_input_layout_warning_is_only_for_channels_first_sizes():
    for text in ("input 32x32x3\nconv3-8", "input 1x1x64\nfc10", "input 4x4x3\nconv3-8", "conv3-8"):
        assert cnndsl.analyze(cnndsl.compile_text(text)).warnings == [], text
    # a size given in place of the spec's (--input, input_shape=) is checked where it is read
    graph = cnndsl.compile_text("input 3x32x32\nconv3-8", input_shape=(32, 32, 3))
    assert cnndsl.analyze(graph).warnings == []


def test_input_layout_on_the_command_line(cli, tmp_path):
    plain = tmp_path / "plain.cnn"
    plain.write_text("conv3-8 + gap + fc10\n")
    result = cli("check", str(plain), "--input", "1x32x32")
    assert result.exit_code == 0
    assert "warning: --input 1x32x32 is read as HxWxC" in result.stderr
    assert "hint: did you mean --input 32x32x1?" in result.stderr
    assert "warning" not in cli("check", str(plain), "--input", "32x32x1").stderr
    spec = tmp_path / "cf.cnn"
    spec.write_text("# channels first\ninput 3x64x64\nconv3-8 + gap + fc10\n")
    result = cli("check", str(spec))
    assert f"{spec}:2:1: warning: input 3x64x64 is read as HxWxC" in result.stderr
    assert "hint: did you mean input 64x64x3?" in result.stderr
    assert "warning" not in cli("check", str(spec_path("vgg16"))).stderr
    analyzed = cli("analyze", str(spec))
    assert analyzed.stdout.count("warning: input 3x64x64") == 1 and "warning" not in analyzed.stderr


def test_the_rf_column_says_all_after_a_collapse(cli):
    out = cli("analyze", str(spec_path("vgg16"))).stdout
    row = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert row["fc1"].endswith(" all") and row["avgpool1"].endswith("212 /32")
    assert row["flatten1"].endswith("212 /32")            # each element of the flattened map: one unit's field
    assert "404 /224" not in out
    stage = cli("analyze", "--depth", "stage", str(spec_path("resnet152"))).stdout
    head = [line.split()[-1] for line in stage.splitlines() if line.startswith("stage") and "/jump" not in line]
    assert head == ["all", "all", "all"]
    # the JSON keeps the exact numbers, under the table's name `jump` (and the former `stride`)
    data = json.loads(cli("analyze", "--json", str(spec_path("vgg16"))).stdout)
    fc1 = next(layer for layer in data["layers"] if layer["name"] == "classifier.fc1")
    assert fc1["rf"]["size"] == [404, 404] and fc1["rf"]["jump"] == fc1["rf"]["stride"] == [224, 224]


def test_a_field_smaller_than_the_input_after_a_collapse_keeps_its_numbers():
    from cnndsl.cli.render import rf_cell
    assert rf_cell([404, 404], [224, 224], [90, 90], (4096,), (224, 224)) == "all"
    assert rf_cell([16, 16], [4, 4], [0, 0], (120,), (32, 32)) == "16 /4"
    assert rf_cell([16, 16], [4, 4], [0, 0], (8, 2, 2), (32, 32)) == "16 /4"
    assert rf_cell([32, 32], [4, 4], [0, 0], (120, 1, 1), (32, 32)) == "all"
