"""Generated code takes no text on trust, and generated PyTorch never aliases what it overwrites.

Hostile names (quotes, new lines, triple quotes, Python code, unicode confusables, reserved words) reach the
PyTorch backend, the ONNX backend and the spec writer through imported ONNX files, spec file names and the
Python API. Each case checks the outcome against independent oracles: Python's own parser, a canary file
that code injection would create, the analyzer's parameter count, ONNX's checker and ONNX Runtime.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.ir import Graph, make_node, verify
from cnndsl.ir.names import module_paths
from cnndsl.backends.to_torch import generate_source

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnndsl.backends.to_onnx import save, to_onnx  # noqa: E402
from cnndsl.backends.from_onnx import import_onnx  # noqa: E402
from cnndsl.backends.to_spec import write_spec  # noqa: E402

HOSTILE = [
    'q=getattr(__import__("os"),"system")("touch CANARY");self.r',
    "a\nimport os; os.system('touch CANARY')\n",
    '"""; open("CANARY", "w"); """',
    "'''\nopen('CANARY','w')\n'''",
    "x\r\ny = open('CANARY', 'w')",
    "\u017fb", "sb", "\u212a", "K", "class", "None", "forward", "training", "_modules", "__class__", "1x",
    " ", ".", "..", "a.b", "a..b", "\x00", "\u202egnp.exe", "\u2028open('CANARY','w')", "é", "e\u0301",
    "x" * 500, "stage1", "reset_parameters", "torch", "nn",
]
SPEC = """input 10x10x3
conv3-4 bn + res(conv3-4 bn + conv3-4 bn) | cat(conv1-2, maxpool3/1[pad=1]) + dropout0.2
| gap | fc5 | softmax"""


def rename(graph: Graph, names: list[str], stages: list[str]) -> Graph:
    """The same network with every node (but the input) and stage renamed to the given texts."""
    mapping = {graph.nodes[0].name: graph.nodes[0].name}
    stage_map: dict[str, str] = {}
    nodes = [graph.nodes[0]]
    for i, n in enumerate(graph.nodes[1:]):
        mapping[n.name] = names[i % len(names)] + ("" if i < len(names) else f"#{i}")
        stage = stage_map.setdefault(n.stage, stages[len(stage_map) % len(stages)])
        nodes.append(make_node(mapping[n.name], n.op, tuple(mapping[s] for s in n.inputs), dict(n.attrs), n.shape,
                               stage, None))
    return verify(Graph(tuple(nodes), graph.source, names[0]))


def assert_source_safe(source: str, tmp_path) -> None:
    """The source parses, defines one class and runs (in tmp_path, the tests' working folder) without
    creating the canary."""
    assert os.getcwd() == str(tmp_path)
    tree = ast.parse(source)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert len(classes) == 1
    exec(compile(source, "<test>", "exec"), {"__name__": "t"})
    assert not (tmp_path / "CANARY").exists()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own folder, where a canary would appear; the working folder is restored after."""
    monkeypatch.chdir(tmp_path)


def check_graph(graph: Graph, tmp_path) -> None:
    source = generate_source(graph)
    assert_source_safe(source, tmp_path)
    paths = module_paths(graph)
    assert len(set(paths.values())) == len(paths)
    for path in paths.values():
        assert all(p.isascii() and p.isidentifier() for p in path)
    model = cnndsl.to_torch(graph).eval()
    assert not (tmp_path / "CANARY").exists()
    report = cnndsl.analyze(graph)
    assert sum(p.numel() for p in model.parameters()) == report.totals["params"]
    assert sum(b.numel() for b in model.buffers()) == report.totals["buffers"]
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        want = model(x).numpy()
    exported = to_onnx(graph, weights=model.state_dict())
    onnx.checker.check_model(exported, full_check=True)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.allclose(got, want, atol=1e-5)
    written = write_spec(graph)
    rebuilt = cnndsl.analyze(cnndsl.compile_text(written))
    assert (rebuilt.totals["params"], rebuilt.totals["macs"]) == (report.totals["params"], report.totals["macs"])


def test_hostile_node_and_stage_names(tmp_path):
    graph = rename(cnndsl.compile_text(SPEC), HOSTILE, HOSTILE[::-1])
    check_graph(graph, tmp_path)


def test_names_that_collide_after_normalising(tmp_path):
    """'ſb' and 'sb' are one Python identifier after NFKC; 'a' and 'a.b' would make a key both a module
    and a container; all get distinct keys."""
    names = ["\u017fb", "sb", "a", "a.b", "a.b.c", "a_2", "stage1.a", "K", "\u212a", "class", "class_"]
    graph = rename(cnndsl.compile_text(SPEC), names, ["stage1", "a", "\u017ftage1"])
    check_graph(graph, tmp_path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=12), min_size=14, max_size=14, unique=True),
       st.lists(st.text(min_size=1, max_size=6), min_size=3, max_size=3))
def test_arbitrary_unicode_names(tmp_path, names, stages):
    graph = rename(cnndsl.compile_text(SPEC), [n if n != "input" else "input_" for n in names],
                   [s if s != "input" else "input_" for s in stages])
    check_graph(graph, tmp_path)


def hostile_onnx(tmp_path, node_name: str, graph_name: str):
    """cnndsl's own export of a small network with one node and the graph renamed."""
    graph = cnndsl.compile_text("input 8x8x1\nconv3-4 | conv3-4 | gap | fc3")
    model = to_onnx(graph)
    target = model.graph.node[1]
    old = target.output[0]
    target.name = node_name
    for node in model.graph.node:
        node.input[:] = [node_name if i == old else i for i in node.input]
        node.output[:] = [node_name if o == old else o for o in node.output]
    model.graph.name = graph_name
    path = tmp_path / "model.onnx"
    save(model, str(path))
    return path


@pytest.mark.parametrize("name", HOSTILE[:6] + ["\u017fb"])
def test_cli_build_torch_from_hostile_onnx(tmp_path, cli, name):
    path = hostile_onnx(tmp_path, name, '"""+open("CANARY","w")+"""')
    out = tmp_path / "net.py"
    result = cli("build", "--target", "torch", str(path), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert_source_safe(out.read_text(), tmp_path)
    for command in (["analyze", str(path)], ["import", str(path)]):
        result = cli(*command)
        assert result.exit_code == 0, result.output
        assert "\n" + "import os" not in result.output and "\x00" not in result.output
    written = cli("import", str(path)).output
    assert cnndsl.analyze(cnndsl.compile_text(written)).totals["params"] == cnndsl.analyze(import_onnx(str(path))).totals["params"]
    assert not (tmp_path / "CANARY").exists()


def test_graph_name_through_the_api(tmp_path):
    path = hostile_onnx(tmp_path, "conv", '"""+open("CANARY","w")+"""')
    model = onnx.load(str(path))
    module = cnndsl.to_torch(import_onnx(model))
    assert sum(p.numel() for p in module.parameters()) == cnndsl.analyze(import_onnx(model)).totals["params"]
    assert not (tmp_path / "CANARY").exists()


@pytest.mark.parametrize("filename", ['a"""+open("CANARY","w")+""".cnn', "b\nimport os.cnn", "c'''.cnn",
                                      "d\\.cnn", "e\u2028f.cnn"])
def test_spec_file_names_never_run(tmp_path, cli, filename):
    (tmp_path / filename).write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    out = tmp_path / "net.py"
    result = cli("build", "--target", "torch", filename, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert_source_safe(out.read_text(), tmp_path)
    result = cli("analyze", filename)
    assert result.exit_code == 0 and "\n" + "import os" not in result.output


def test_class_names_are_checked(cli, tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    for bad in ("nn", "torch", "class", "\u017f", "a b", "x;import os"):
        result = cli("build", str(spec), "-o", str(tmp_path / "net.py"), "--class-name", bad)
        assert result.exit_code == 2 and "--class-name" in result.output
        with pytest.raises(ValueError):
            generate_source(cnndsl.compile(str(spec)), class_name=bad)


# ------------------------------------------------------- tensor discipline --

ACTS = ["relu", "relu6", "tanh", "sigmoid", "elu", "leakyrelu[slope=0.2]", "gelu", "silu", "hardswish", "hardsigmoid",
        "mish"]


@st.composite
def structured_spec(draw):
    """Blocks, labels, res/cat/add, dropout, flatten and every activation, in shapes that always fit."""
    act = st.sampled_from(ACTS)
    c = draw(st.integers(1, 3))
    lines = [f"input {draw(st.integers(5, 9))}x{draw(st.integers(5, 9))}x{c}"]
    if draw(st.booleans()):
        lines.append(f"activation {draw(act)}")
    lines.append(f"block unit(k) = conv3-k {draw(act)} + dropout0.2 + {draw(act)}")
    units = []
    for i in range(draw(st.integers(1, 5))):
        units.append(draw(st.sampled_from([
            f"res(dropout0.1 + {draw(act)})",
            f"res(conv3-{draw(st.integers(1, 4))} bn + {draw(act)})",
            f"res(dropout0.3 + {draw(act)}, dropout0.5 + {draw(act)})",
            f"cat(none, dropout0.2 + {draw(act)}, conv1-2)",
            f"add(none, dropout0.4, {draw(act)})",
            f"lab{i}: conv3-{draw(st.integers(1, 4))} {draw(act)}",
            f"unit({draw(st.integers(1, 4))})",
            f"{draw(act)} + {draw(act)}",
            "dropout0.3 + bn",
            "maxpool3/1[pad=1]",
        ])))
    head = draw(st.sampled_from([
        f"flatten + {draw(act)} + fc5",
        f"gap + flatten + dropout0.1 + {draw(act)} + fc4 {draw(act)} + fc3",
        f"flatten + dropout0.5 + fc6 + dropout0.1 + {draw(act)} | fc2",
        "gap",
    ]))
    lines.append(" | ".join(units + [head]))
    return "\n".join(lines) + "\n"


def _no_inplace(model):
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured_spec())
def test_torch_agrees_with_onnx_runtime_and_never_mutates_its_input(text):
    graph = cnndsl.compile_text(text)
    torch.manual_seed(0)
    model = cnndsl.to_torch(graph)
    reference = _no_inplace(cnndsl.to_torch(graph))
    reference.load_state_dict(model.state_dict())
    x = torch.randn(3, *graph.input_shape)
    original = x.clone()
    # eval: equal to ONNX Runtime on the same weights
    model.eval()
    with torch.no_grad():
        want = model(x)
    assert torch.equal(x, original)
    exported = to_onnx(graph, weights=model.state_dict())
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    # train: the same outputs and gradients as the model with every in-place flag off
    results = []
    for m in (model, reference):
        m.train()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(1)
        out = m(xi)
        out.float().sum().backward()
        results.append((out.detach(), xi.grad, [p.grad for p in m.parameters()]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
    for a, b in zip(results[0][2], results[1][2]):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6))


@pytest.mark.parametrize("text", [
    "input 6x6x2\nres(dropout0.1 + leakyrelu[slope=0.2]) | gap",
    "input 6x6x2\nflatten + relu + fc3",
    "input 6x6x2\nconv3-2 + res(dropout0.5 + relu, dropout0.2) | gap",
    "input 6x6x2\nconv3-2 none + sigmoid + silu | gap",
])
def test_the_reported_aliasing_cases(text):
    graph = cnndsl.compile_text(text)
    model = cnndsl.to_torch(graph).eval()
    x = torch.randn(2, *graph.input_shape)
    original = x.clone()
    with torch.no_grad():
        want = model(x)
    assert torch.equal(x, original)
    session = ort.InferenceSession(to_onnx(graph, weights=model.state_dict()).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"input": x.numpy()})[0], want.numpy(), atol=1e-5)
    model.train()
    model(x.clone().requires_grad_(True)).sum().backward()


# ----------------------------------------------------------- bounded work --

def _limited(code: str, tmp_path, seconds: int = 5, megabytes: int = 500):
    """Run code in a fresh interpreter under an address-space limit; return (returncode, output)."""
    wrapper = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({megabytes << 20}, {megabytes << 20}))\n"
               + code)
    proc = subprocess.run([sys.executable, "-c", wrapper], cwd=tmp_path, capture_output=True, text=True,
                          timeout=seconds + 30)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_huge_spec_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.cnn"
    with open(big, "wb") as f:
        f.truncate(1_500_000_000)      # sparse: 1.5 GB that the check must not read
    code = ("import sys, time\nfrom click.testing import CliRunner\nfrom cnndsl.cli import main\n"
            "t = time.perf_counter()\nr = CliRunner().invoke(main, ['analyze', 'big.cnn'])\n"
            "print(r.exit_code, round(time.perf_counter() - t, 2)); print(r.output)")
    status, output = _limited(code, tmp_path)
    assert status == 0, output
    code_line = output.split("\n")[0].split()
    assert code_line[0] == "1" and float(code_line[1]) < 5
    assert "larger than" in output and "Traceback" not in output


def test_run_refuses_a_huge_declared_input(tmp_path):
    graph = cnndsl.compile_text("input 8x8x1\nconv3-2 | gap | fc3")
    model = to_onnx(graph, dynamic_batch=False)
    value = model.graph.input[0]
    dims = value.type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 30000, 30000
    save(model, str(tmp_path / "m.onnx"))
    code = ("import time\nfrom click.testing import CliRunner\nfrom cnndsl.cli import main\n"
            "t = time.perf_counter()\nr = CliRunner().invoke(main, ['run', 'm.onnx'])\n"
            "print(r.exit_code, round(time.perf_counter() - t, 2)); print(r.output)")
    status, output = _limited(code, tmp_path, megabytes=1500)   # ONNX Runtime maps ~1 GB of address space
    assert status == 0, output
    first = output.split("\n")[0].split()
    assert first[0] == "1" and float(first[1]) < 5, output
    assert "limit" in output and "Traceback" not in output


def test_run_refuses_symbolic_sizes_without_data(tmp_path, cli):
    graph = cnndsl.compile_text("input 8x8x1\nconv3-2 | gap | fc3")
    model = to_onnx(graph)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    save(model, str(tmp_path / "m.onnx"))
    result = cli("run", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1 and "not fixed" in result.output


def test_uneven_adaptive_pooling_beyond_the_band_limit_is_refused(cli, tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 3x3x1\nadaptiveavgpool1048576x1\n")
    result = cli("build", "--target", "onnx", str(spec), "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1 and "at most 256" in result.output
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------- outputs --

def test_outputs_that_cannot_be_written_are_diagnostics(cli, tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    for target, name in (("torch", "net.py"), ("onnx", "m.onnx")):
        result = cli("build", "--target", target, str(spec), "-o", str(tmp_path / "missing" / name))
        assert result.exit_code == 1 and "cannot write" in result.output and "internal" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cnn"]


def test_disk_full_leaves_no_partial_file(cli, tmp_path, monkeypatch):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    real_replace = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    for target, name in (("torch", "net.py"), ("onnx", "m.onnx")):
        result = cli("build", "--target", target, str(spec), "-o", str(tmp_path / name))
        assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cnn"]


def test_fmt_of_a_missing_file_is_a_diagnostic(cli, tmp_path):
    result = cli("fmt", str(tmp_path / "nope.cnn"))
    assert result.exit_code in (1, 2) and "internal" not in result.output and "nope.cnn" in result.output


@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--warmup", "--label-smoothing", "--backbone-lr"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "abc"])
def test_cli_floats_are_finite(cli, tmp_path, option, value):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    result = cli("train", str(spec), "--data", "digits", option, value)
    assert result.exit_code == 2 and option in result.output


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=40)
       .filter(lambda stem: not stem.startswith("-")))        # a leading "-" reads as an option
def test_arbitrary_file_names_through_build_and_fmt(tmp_path, cli, stem):
    name = stem + ".cnn"            # at most 40 * 4 + 4 bytes: a legal file name everywhere
    (tmp_path / name).write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    out = tmp_path / "net.py"
    result = cli("build", "--target", "torch", name, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert_source_safe(out.read_text(), tmp_path)
    assert cli("fmt", name).output == "input 8x8x1\nconv3-4\n| gap\n| fc3\n"
    (tmp_path / name).unlink()


@pytest.mark.parametrize("location", ["../secret.bin", "/SECRET", "link.bin"])
def test_run_reads_external_data_only_beside_the_model(cli, tmp_path, location):
    from onnx import TensorProto, helper, numpy_helper
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "link.bin").symlink_to(secret)
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", location.replace("/SECRET", str(secret))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "m.onnx"))
    result = cli("run", str(folder / "m.onnx"))
    assert result.exit_code == 1 and "outside the model's folder" in result.output, result.output


def test_backends_refuse_to_allocate_absurd_networks(cli, tmp_path):
    """Within the language's limits a spec can ask for ~5e13 weights; the backends refuse before allocating."""
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x4096\nconv4096-1048576 | gap\n")
    assert cli("analyze", str(spec)).exit_code == 0
    for target in ("torch", "onnx"):
        args = ["build", "--target", target, str(spec), "-o", str(tmp_path / "out")]
        result = cli(*(args + (["--weights", str(tmp_path / "w.pt")] if target == "torch" else [])))
        assert result.exit_code == 1 and "more than cnndsl builds" in result.output and "s.cnn:2:1" in result.output
    with pytest.raises(cnndsl.LimitError):
        cnndsl.to_torch(cnndsl.compile(str(spec)))


def test_outputs_never_replace_special_files_and_follow_links(cli, tmp_path):
    """-o /dev/null, a pipe or a folder is refused (renaming over it would replace it); a symlink's target is
    written (the link stays); an output keeps the permissions of the file it replaces; a failed build leaves
    neither of its files."""
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | gap | fc3\n")
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "dir.py").mkdir()
    for target in ("/dev/null", str(tmp_path / "pipe.py"), str(tmp_path / "dir.py"), ""):
        result = cli("build", str(spec), "-o", target)
        assert result.exit_code in (1, 2) and "internal" not in result.output, result.output
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    real = tmp_path / "real.py"
    real.write_text("old")
    real.chmod(0o640)
    (tmp_path / "link.py").symlink_to(real)
    assert cli("build", str(spec), "-o", str(tmp_path / "link.py")).exit_code == 0
    assert (tmp_path / "link.py").is_symlink() and "class Net" in real.read_text()
    assert (real.stat().st_mode & 0o777) == 0o640
    result = cli("build", str(spec), "-o", str(tmp_path / "w1.py"), "--weights", str(tmp_path / "nodir" / "w.pt"))
    assert result.exit_code == 1 and not (tmp_path / "w1.py").exists()


def test_a_pipe_as_a_spec_is_refused_not_waited_on(cli, tmp_path):
    os.mkfifo(tmp_path / "f.cnn")
    for command in ("check", "fmt", "analyze"):
        result = cli(command, str(tmp_path / "f.cnn"))
        assert result.exit_code in (1, 2) and "not a regular file" in result.output
    with pytest.raises(cnndsl.SpecFileError, match="not a regular file"):
        cnndsl.compile(tmp_path / "f.cnn")
