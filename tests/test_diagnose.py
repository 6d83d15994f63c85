"""`cnndsl diagnose`: a deep plain sigmoid network's first layers get vanishing gradients; residuals cure it."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli import main

torch = pytest.importorskip("torch")
from cnndsl.instruments.gradients import diagnose  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"
PLAIN = "input 16x16x3\nactivation sigmoid\nconv3-8 x20 | gap | fc10"
RESIDUAL = "input 16x16x3\nactivation sigmoid\nconv3-8 + res(conv3-8 + conv3-8 none) x10 | gap | fc10"


def test_sigmoid_plain_vanishes_residual_does_not():
    plain = diagnose(cnndsl.compile_text(PLAIN))
    res = diagnose(cnndsl.compile_text(RESIDUAL))
    ratio = plain["layers"][0]["grad_norm"] / res["layers"][0]["grad_norm"]
    assert ratio < 1e-2, ratio
    assert plain["layers"][0]["flag"] == "vanishing" and plain["layers"][1]["flag"] == "vanishing"
    assert plain["vanishing"][:3] == ["conv1", "conv2", "conv3"]
    assert res["vanishing"] == [] and res["exploding"] == []
    assert plain["layers"][-1]["flag"] == "ok"


def test_resnet20_matches_the_paper():
    plain, res = cnndsl.analyze(cnndsl.compile(SPECS / "plain20.cnn")), cnndsl.analyze(cnndsl.compile(SPECS / "resnet20.cnn"))
    assert plain.totals["params"] == 269_722                    # He et al.'s 0.27M (option A shortcuts)
    assert res.totals["params"] == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)   # 1x1 projections + BN
    assert plain.totals["weight_layers"] == 20 and res.totals["weight_layers"] == 22     # + 2 projections


def test_cli_json_and_picture(tmp_path):
    spec = tmp_path / "p.cnn"
    spec.write_text(PLAIN + "\n")
    out = tmp_path / "g.svg"
    r = CliRunner().invoke(main, ["diagnose", str(spec), "--json", "-o", str(out), "--steps", "2"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [set(("name", "grad_norm", "flag")) <= set(x) for x in d["layers"]] == [True] * 21
    assert d["layers"][0]["flag"] == "vanishing" and "trained" in d["layers"][0]
    assert out.read_bytes().startswith(b"<?xml")
    r = CliRunner().invoke(main, ["diagnose", str(spec)])
    assert r.exit_code == 0 and "vanishing: " in r.output


def test_deterministic():
    g = cnndsl.compile_text(PLAIN)
    a, b = diagnose(g, seed=3), diagnose(g, seed=3)
    assert [x["grad_norm"] for x in a["layers"]] == [x["grad_norm"] for x in b["layers"]]
