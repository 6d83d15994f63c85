"""`cnndsl rf`: the drawn box is Report.rf_box, and the effective field's support lies inside it."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli import main
from cnndsl.instruments.receptive import analyse, default_layer, effective_field, support_inside

SMALL = "input 24x20x3\nconv3-8 + maxpool + conv3-8/2 + conv5-8[pad=1] | gap | fc4"


def test_default_layer_is_last_spatial():
    g = cnndsl.compile_text(SMALL)
    assert default_layer(g) == "relu3"
    assert default_layer(cnndsl.compile_text("input 8x8x1\nconv3-4 | gap | fc2")) == "relu1"


@pytest.mark.parametrize("layer,unit", [("relu3", None), ("conv3", "0,0"), ("conv2", "5,4"), ("maxpool1", "11,0")])
def test_box_is_rf_box_and_erf_inside(layer, unit):
    pytest.importorskip("torch")
    g = cnndsl.compile_text(SMALL)
    info = analyse(g, layer, unit, erf=True, samples=2)
    y, x = info["unit"]
    box = cnndsl.analyze(g).rf_box(layer, y, x)
    assert tuple(map(tuple, info["box"])) == box
    heat = info["erf"]["heat"]
    assert heat.shape == (24, 20) and heat.sum() > 0
    assert info["erf"]["support_inside_box"] and support_inside(heat, box)
    # the box is tight where no padding is involved: the support reaches the box's clipped edges
    (top, bottom), (left, right) = box
    ys, xs = np.nonzero(heat)
    assert ys.min() == max(top, 0) and ys.max() == min(bottom, 23)
    assert xs.min() == max(left, 0) and xs.max() == min(right, 19)


def test_erf_of_every_unit_of_a_strided_net_inside_its_box():
    pytest.importorskip("torch")
    g = cnndsl.compile_text("input 17x17x1\nconv3-4/2 + conv3-4[dilation=2] + maxpool3/2[pad=1]")
    report = cnndsl.analyze(g)
    name = g.output.name
    _, h, w = g.output.shape
    for y in range(h):
        for x in range(w):
            heat = effective_field(g, name, y, x, samples=1)
            assert support_inside(heat, report.rf_box(name, y, x)), (y, x)


def test_cli_writes_png_and_svg_escaping_hostile_names(tmp_path):
    runner = CliRunner()
    spec = tmp_path / "s.cnn"
    spec.write_text("input 16x16x3\nconv3-8 + evil_name: conv3-8 | gap | fc2\n")
    out = tmp_path / "rf.svg"
    r = runner.invoke(main, ["rf", str(spec), "--layer", "evil_name", "--no-erf", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"<?xml")
    png = tmp_path / "rf.png"
    r = runner.invoke(main, ["rf", str(spec), "--unit", "0,15", "--samples", "1", "-o", str(png), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["erf"]["support_inside_box"] is True
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_layer_lists_close_names(tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 16x16x3\nconv3-8 x3 | gap | fc2\n")
    r = CliRunner().invoke(main, ["rf", str(spec), "--layer", "conv\x1b[31m4", "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 1
    assert "no layer named" in r.output and "close names" in r.output and "\x1b" not in r.output
    assert not (tmp_path / "x.png").exists()


def test_unit_outside_map(tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 16x16x3\nconv3-8/2\n")
    r = CliRunner().invoke(main, ["rf", str(spec), "--unit", "8,0", "--no-erf", "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "outside" in r.output


def test_image_is_fitted(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from cnndsl.instruments.receptive import fitted_image
    img = tmp_path / "a.png"
    PIL.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(img)
    a = fitted_image(str(img), (3, 16, 20))
    assert a.shape == (16, 20, 3) and np.allclose(a, 200 / 255, atol=1e-6)
    r = CliRunner().invoke(main, ["rf", "-", "--image", str(img), "--no-erf", "-o", str(tmp_path / "o.png")],
                           input="input 16x20x3\nconv3-4 + conv3-4\n")
    assert r.exit_code == 0, r.output
