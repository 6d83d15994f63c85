"""The command line: table, JSON schema, stdin, overrides, check, and the no-torch rule for `analyze`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cnndsl
from conftest import ROOT, spec_path


def test_analyze_table_groups_by_stage(cli):
    result = cli("analyze", str(spec_path("resnet18")))
    assert result.exit_code == 0
    out = result.output
    for stage in ("stem", "layer1", "layer4"):
        assert stage in out
    assert "11,689,512" in out and "FLOPs = 2 x MACs" in out


def test_analyze_json_schema(cli):
    result = cli("analyze", "--json", str(spec_path("vgg16")))
    assert result.exit_code == 0
    data = json.loads(result.output)
    t = data["totals"]
    assert t["params"] == 138_357_544 and t["buffers"] == 0 and t["flops"] == 2 * t["macs"]
    assert data["output_shape"] == [1000]
    layers = data["layers"]
    names = [l["name"] for l in layers]
    assert len(names) == len(set(names))
    for layer in layers:
        assert {"name", "op", "stage", "output_shape", "params", "macs", "rf"} <= set(layer)
        assert set(layer["rf"]) == {"size", "jump", "stride", "padding", "uniform"}
        assert all(len(layer["rf"][k]) == 2 for k in ("size", "jump", "stride", "padding"))
        assert layer["rf"]["stride"] == layer["rf"]["jump"]     # `stride`: the deprecated name of `jump`
        assert layer["rf"]["uniform"] is True       # VGG-16: every layer is one grid
    first_conv = next(l for l in layers if l["op"] == "conv")
    assert first_conv["output_shape"] == [64, 224, 224] and first_conv["params"] == 1792
    assert sum(l["params"] for l in layers) == t["params"]
    assert sum(l["macs"] for l in layers) == t["macs"]


def test_stdin_input_and_batch_override(cli):
    result = cli("analyze", "--json", "--input", "32x32x1", "--batch", "8", "-", input="conv3-4 | fc10\n")
    data = json.loads(result.output)
    assert data["input_shape"] == [1, 32, 32] and data["batch"] == 8
    assert data["totals"]["macs"] == 8 * (32 * 32 * 4 * 9 + 4 * 32 * 32 * 10)


def test_bad_input_override(cli):
    result = cli("analyze", "--input", "32x32", str(spec_path("lenet5")))
    assert result.exit_code == 2 and "HxWxC" in result.output


def test_check_and_fmt_and_ir(cli):
    ok = cli("check", str(spec_path("googlenet")))
    assert ok.exit_code == 0 and "ok" in ok.output
    bad = cli("check", "-", input="conv3-8 +\n")
    assert bad.exit_code == 1 and "<stdin>:1:" in bad.output
    fmt = cli("fmt", str(spec_path("resnet50")))
    assert fmt.exit_code == 0 and "block bottleneck(c, s=1)" in fmt.output
    ir = cli("ir", str(spec_path("lenet5")))
    assert "conv1 = conv(input)" in ir.output


def test_analyze_never_imports_torch_or_onnx():
    code = ("import sys; from cnndsl.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'torchvision', 'numpy') if m in sys.modules]\n"
            "assert not bad, bad")
    for args in (["analyze"], ["analyze", "--json"]):      # the table and the JSON report
        res = subprocess.run([sys.executable, "-c", code, *args, str(spec_path("resnet50"))], capture_output=True,
                             text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        if "--json" in args:
            assert json.loads(res.stdout)["totals"]["params"] == 25_557_032
        else:
            assert "25,557,032" in res.stdout and "FLOPs = 2 x MACs" in res.stdout
    res = subprocess.run([sys.executable, "-m", "cnndsl", "analyze", str(spec_path("vgg16"))], capture_output=True,
                         text=True, cwd=ROOT, env={"PYTHONPROFILEIMPORTTIME": "1", "PATH": ""})
    assert res.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert "cnndsl.cli" in imported and not imported & {"torch", "onnx", "onnxruntime", "torchvision", "numpy"}


def test_library_does_not_print(capsys):
    report = cnndsl.analyze(cnndsl.compile(spec_path("alexnet-paper")))
    report.to_dict()
    with pytest.raises(cnndsl.CnnDslError):
        cnndsl.compile_text("conv3-8 + nope")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_report_memory_figures():
    report = cnndsl.analyze(cnndsl.compile_text("input 8x8x1\nconv3-4 + conv3-4"), batch=2, dtype="float16")
    t = report.totals
    assert t["weight_bytes"] == 2 * (40 + 148)
    per_map = 4 * 8 * 8 * 2 * 2
    assert t["activation_bytes"] == 1 * 8 * 8 * 2 * 2 + 4 * per_map
    # inference peak: an input and an output live at once (conv -> relu -> conv -> relu)
    assert t["peak_activation_bytes"] == 2 * per_map


def test_missing_backend_package_is_a_clean_error(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)       # as if the onnx extra were not installed
    result = cli("build", "--target", "onnx", str(spec_path("lenet5")), "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1 and "cnndsl[onnx]" in result.output and "Traceback" not in result.output
