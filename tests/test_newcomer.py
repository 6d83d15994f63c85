"""What a newcomer meets first: stage names that do not jump, `--json` on check and ir, the license and the
type-hint marker the package ships."""
from __future__ import annotations

import json

import pytest

import cnndsl
from conftest import ROOT, spec_path


@pytest.mark.parametrize("name, stages", [
    ("vgg16", ["stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "classifier", "stage7"]),
    ("alexnet", ["features", "stage2", "classifier", "stage3"]),
    ("resnet152", ["stem", "layer1", "layer2", "layer3", "layer4", "stage6", "stage7", "stage8"]),
    ("mobilenet_v2", ["stem"] + [f"stage{i}" for i in range(2, 11)] + ["classifier", "stage11"]),
    ("lenet5", [f"stage{i}" for i in range(1, 7)]),
])
def test_unlabelled_stages_number_on_from_the_one_before(name, stages):
    assert cnndsl.compile(spec_path(name)).stages == stages


def test_stage_numbers_skip_labels_and_never_repeat():
    g = cnndsl.compile_text("input 8x8x3\nconv3-4 | a: (conv3-4) | conv3-4 | b: (conv3-4) | conv3-4")
    assert g.stages == ["stage1", "a", "stage2", "b", "stage3"]
    g = cnndsl.compile_text("input 8x8x3\nx: (conv3-4) | conv3-4 | stage3: (conv3-4) | conv3-4 | conv3-4")
    assert g.stages == ["x", "stage2", "stage3", "stage4", "stage5"]
    g = cnndsl.compile_text("input 8x8x3\nconv3-4 | stage2: (conv3-4) | conv3-4 | conv3-4")
    assert g.stages == ["stage1", "stage2", "stage3", "stage4"]


# the stage names before unlabelled stages numbered on from the one before (each its position then)
BEFORE = {
    "vgg16": ["stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "classifier", "stage8"],
    "alexnet": ["features", "stage2", "classifier", "stage4"],
    "mobilenet_v2": ["stem"] + [f"stage{i}" for i in range(2, 11)] + ["classifier", "stage12"],
    "efficientnet_b0": ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head", "stage10", "classifier", "stage12"],
    "squeezenet1_0": ["conv1", "fire2", "fire3", "fire4", "stage5", "fire5", "fire6", "fire7", "fire8", "stage10",
                      "fire9", "classifier", "stage13", "stage14"],
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_renamed_stages_hold_no_weights(name):
    """The stages whose number changed hold no weights in the bundled specs (a softmax, a pooling): every
    state-dict key stays as it was, so weights saved before load by name."""
    g = cnndsl.compile(spec_path(name))
    report = cnndsl.analyze(g)
    renamed = {new for new, old in zip(g.stages, BEFORE[name]) if new != old}
    assert renamed and len(g.stages) == len(BEFORE[name])
    assert not [n.name for n in g.nodes[1:] if n.stage in renamed and report.params[n.name] + report.buffers[n.name]]


def test_check_json(cli):
    result = cli("check", "--json", str(spec_path("resnet18")))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    g = cnndsl.compile(spec_path("resnet18"))
    assert data == {"spec": str(spec_path("resnet18")), "ok": True, "layers": len(g.nodes) - 1,
                    "input_shape": [3, 224, 224], "output_shape": [1000], "stages": g.stages, "warnings": []}


def test_check_json_carries_the_input_layout_warning(cli, tmp_path):
    spec = tmp_path / "cf.cnn"
    spec.write_text("input 3x32x32\nconv3-8 + gap + fc10\n")
    result = cli("check", "--json", str(spec))
    assert result.exit_code == 0 and result.stderr == ""
    (warning,) = json.loads(result.stdout)["warnings"]
    assert warning["kind"] == "input-layout" and (warning["line"], warning["column"]) == (1, 1)
    assert warning["hint"].startswith("did you mean input 32x32x3?")


def test_ir_json(cli):
    result = cli("ir", "--json", str(spec_path("lenet5")))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    g = cnndsl.compile(spec_path("lenet5"))
    assert [n["name"] for n in data["nodes"]] == [n.name for n in g.nodes]
    conv = data["nodes"][1]
    assert conv["op"] == "conv" and conv["inputs"] == ["input"] and conv["shape"] == [6, 28, 28]
    assert conv["attrs"]["kernel"] == [5, 5] and conv["stage"] == "stage1" and conv["line"] == 5
    assert data["input_shape"] == [1, 32, 32] and data["output_shape"] == [10]


def test_errors_stay_diagnostics_with_json(cli, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv3-64 + maxpol\n")
    for command in ("check", "ir"):
        result = cli(command, "--json", str(bad))
        assert result.exit_code == 1 and result.stdout == ""
        assert "error: unknown layer 'maxpol'" in result.stderr


def test_the_license_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")      # Python 3.11 on
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "cnndsl contributors" in text
    assert "LICENSE" in project["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_the_package_ships_its_type_hints():
    tomllib = pytest.importorskip("tomllib")
    assert (ROOT / "cnndsl" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["cnndsl"]   # all of cnndsl/


def test_shell_completion_works():
    from click.testing import CliRunner

    from cnndsl.cli import main
    result = CliRunner().invoke(main, [], prog_name="cnndsl", env={"_CNNDSL_COMPLETE": "bash_source"})
    assert "_cnndsl_completion" in result.output and "complete " in result.output
