"""Hostile ONNX files: importing one never runs code, reads outside the model's folder, reports an invalid model
as valid, crashes (exit 70) or takes more than linear time. The corpus is crafted here, in tmp_path.

ONNX Runtime is the oracle for validity: each invalid model below is checked to be refused by ORT too, or, where
ORT runs it, the table says why cnndsl refuses it anyway (a value its IR cannot hold, such as NaN).
"""
from __future__ import annotations

import math
import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import limits

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

from cnndsl.cli import main  # noqa: E402
from cnndsl.backends.from_onnx import MAX_FILE_BYTES, MAX_NAME, import_onnx  # noqa: E402

SHAPE = (1, 3, 8, 8)
SECRET = b"TOPSECRET-do-not-print-0123456789abcdef"


# ------------------------------------------------------------ helpers ----

def zeros(name: str, *shape, dtype=np.float32):
    return nh.from_array(np.zeros(shape, dtype), name)


def ints(name: str, values):
    return nh.from_array(np.asarray(values, np.int64), name)


def floats(name: str, values):
    return nh.from_array(np.asarray(values, np.float32), name)


def model(nodes, inits=(), shape=SHAPE, output="y", opset=17, name="g", input_name="x"):
    g = h.make_graph(nodes, name, [h.make_tensor_value_info(input_name, T.FLOAT, list(shape))],
                     [h.make_tensor_value_info(output, T.FLOAT, None)], list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def conv(w=(4, 3, 3, 3), bias=None, **attrs):
    inits = [zeros("w", *w)] + ([zeros("b", *bias)] if bias is not None else [])
    return model([h.make_node("Conv", ["x", "w"] + (["b"] if bias is not None else []), ["y"], name="conv1",
                              **attrs)], inits)


def flat(op: str, inits, shape=SHAPE, **attrs):
    """Flatten, then `op` (a linear layer) on N x 192."""
    return model([h.make_node("Flatten", ["x"], ["f"]), h.make_node(op, ["f"] + [t.name for t in inits], ["y"],
                                                                    name="fc1", **attrs)], inits, shape)


def one(op: str, inputs=("x",), inits=(), opset=17, **attrs):
    return model([h.make_node(op, list(inputs), ["y"], name="n1", **attrs)], inits, opset=opset)


def bn(channels=3, eps=1e-5, momentum=0.9, **attrs):
    inits = [floats(n, np.ones(channels)) for n in ("s", "b", "m", "v")]
    return one("BatchNormalization", ("x", "s", "b", "m", "v"), inits, epsilon=eps, momentum=momentum, **attrs)


def ort_refuses(m, path=None) -> bool:
    """ONNX Runtime's verdict on a model, its bytes or its file: True when it refuses to load or to run it on zeros."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    source = str(path) if path else m if isinstance(m, bytes) else m.SerializeToString()
    try:
        s = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        x = s.get_inputs()[0]
        s.run(None, {x.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in x.shape], np.float32)})
    except Exception:
        return True
    return False


def ort_output(m, shape):
    """ONNX Runtime's output for zeros of `shape`, or None when it refuses to load or to run the model."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return session.run(None, {"x": np.zeros(shape, np.float32)})[0]
    except Exception:
        return None


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def refused(result, path, *fragments):
    """An input error (exit 1) about `path`, no traceback, no internal error, every fragment in the message."""
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert out.startswith(f"{path}: import error: "), out
    for fragment in fragments:
        assert fragment in out, out
    return out


def save(tmp_path, m, name="model.onnx"):
    path = tmp_path / name
    onnx.save(m, str(path))
    return path


def both_refuse(tmp_path, m, *fragments):
    path = save(tmp_path, m)
    for command in ("analyze", "import"):
        refused(cli(command, path), path, *fragments)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, and prove afterwards that nothing dropped a canary there."""
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "CANARY").exists()


# ------------------------------------------------------- hostile names ----

HOSTILE_NAMES = [
    "it's", 'say "hi"', "two\nlines", 'doc"""string', "'''", "back\\slash", "nul\x00byte", "tab\there\r\n",
    'q=getattr(__import__("os"),"system")("touch CANARY");self.r', "__import__('os').system('touch CANARY')",
    "{self.__class__}", "${HOME}", "$(touch CANARY)", "`touch CANARY`", "%s%n%x", "ſelf", "\u202eevil", "\x1b[31mred",
    "input", "graph", "..", "/", "a/b/c", "a..b", "x" * 5000, "\U0001f600", "[bold]markup[/]", "_private",
    "state_dict", "class", "",
]


def _named_model(names, graph_name="g", repeat=False):
    """conv -> relu -> maxpool -> conv -> add(skip) -> gap -> flatten -> gemm, every node and value named from
    `names`, cycled: a name repeats as is (repeat=True; ONNX Runtime refuses equal node names, cnndsl numbers
    them) or with a suffix. Values get a prefix, as ONNX needs distinct non-empty value names."""
    ops = []
    pick = (names[i % len(names)] + ("" if repeat or i < len(names) else f"~{i}") for i in range(100))
    v = {k: f"{k}:{next(pick)}" for k in ("c1", "r1", "p1", "c2", "s", "g", "f", "y")}
    inits = [zeros(f"w1:{next(pick)}", 4, 3, 3, 3), zeros(f"w2:{next(pick)}", 4, 4, 3, 3),
             zeros(f"wf:{next(pick)}", 5, 4), zeros(f"bf:{next(pick)}", 5)]
    w1, w2, wf, bf = (t.name for t in inits)
    ops.append(h.make_node("Conv", ["x", w1], [v["c1"]], name=next(pick), pads=[1, 1, 1, 1]))
    ops.append(h.make_node("Relu", [v["c1"]], [v["r1"]], name=next(pick)))
    ops.append(h.make_node("MaxPool", [v["r1"]], [v["p1"]], name=next(pick), kernel_shape=[2, 2], strides=[2, 2]))
    ops.append(h.make_node("Conv", [v["p1"], w2], [v["c2"]], name=next(pick), pads=[1, 1, 1, 1]))
    ops.append(h.make_node("Add", [v["c2"], v["p1"]], [v["s"]], name=next(pick)))
    ops.append(h.make_node("GlobalAveragePool", [v["s"]], [v["g"]], name=next(pick)))
    ops.append(h.make_node("Flatten", [v["g"]], [v["f"]], name=next(pick)))
    ops.append(h.make_node("Gemm", [v["f"], wf, bf], [v["y"]], name=next(pick), transB=1))
    return model(ops, inits, output=v["y"], name=graph_name)


NAMED_PARAMS = 4 * 3 * 9 + 4 * 4 * 9 + 5 * 4 + 5


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_names_import_and_analyze(tmp_path, name):
    m = _named_model([name], graph_name=name)
    assert not ort_refuses(m)      # a valid model: only its names are odd
    path = save(tmp_path, m)
    graph = import_onnx(str(path))
    names = [n.name for n in graph.nodes]
    assert len(set(names)) == len(names) and all(len(n) <= MAX_NAME + 8 for n in names)
    assert cnndsl.analyze(graph).totals["params"] == NAMED_PARAMS
    for command in ("analyze", "import"):
        result = cli(command, path)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x00" not in result.output and "\u202e" not in result.output
    spec = cli("import", path).output
    assert cnndsl.analyze(cnndsl.compile_text(spec)).totals["params"] == NAMED_PARAMS
    assert "CANARY" not in spec and spec.count("\n") == 8       # the names stay out of the written spec
    # as an in-memory model its graph name labels the graph, escaped and on one line
    assert "\n" not in import_onnx(m).filename


def test_names_in_error_messages_are_escaped_and_bounded(tmp_path):
    m = conv(strides=[0, 1])
    m.graph.node[0].name = "evil\nok: 0 errors\x1b[2J" + "y" * 500
    path = save(tmp_path, m)
    out = refused(cli("analyze", path), path, "Conv 'evil\\nok: 0 errors\\x1b[2J", "strides must be at least 1")
    assert len(out.splitlines()[0]) < 200 and "\x1b" not in out
    assert not any(line.startswith("ok:") for line in out.splitlines())


def test_invalid_utf8_names_import(tmp_path):
    m = _named_model(["PLACEHOLDER"])
    data = m.SerializeToString().replace(b"PLACEHOLDER", b"\xff\xfe\xc0 invalid")     # the same length
    path = tmp_path / "bad-utf8.onnx"
    path.write_bytes(data)
    result = cli("analyze", path)
    assert result.exit_code == 0, result.output
    graph = import_onnx(str(path))
    assert cnndsl.analyze(graph).totals["params"] == NAMED_PARAMS and "\ufffd" in graph.nodes[1].name


def test_duplicate_and_long_names_stay_unique():
    names = ["same"] * 3 + ["same_2", "a" * 1000 + "1", "a" * 1000 + "2"]
    graph = import_onnx(_named_model(names, repeat=True))
    got = [n.name for n in graph.nodes]
    assert len(set(got)) == len(got) and max(map(len, got)) <= MAX_NAME + 8
    long = [n for n in got if n.startswith("a" * 100)]
    assert len(long) >= 2 and len(set(long)) == len(long)
    assert import_onnx(_named_model(names, repeat=True)).dump() == graph.dump()   # shortened deterministically


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(max_size=300), min_size=1, max_size=12), graph_name=st.text(max_size=100))
def test_any_unicode_names_import_and_analyze(tmp_path, names, graph_name):
    m = _named_model(names, graph_name, repeat=True)
    graph = import_onnx(m)
    got = [n.name for n in graph.nodes]
    assert len(set(got)) == len(got) and max(map(len, got)) <= MAX_NAME + 8
    assert cnndsl.analyze(graph).totals["params"] == NAMED_PARAMS
    path = save(tmp_path, m, "u.onnx")
    result = cli("analyze", "--json", path)
    assert result.exit_code == 0, result.output
    assert import_onnx(str(path)).dump() == graph.dump()


# ------------------------------------------------------- external data ----

def _external(t, location, offset=None, length=None):
    """Point a TensorProto's data at `location` (its own bytes are dropped)."""
    t.ClearField("raw_data")
    t.data_location = T.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
    return t


@pytest.fixture
def folders(tmp_path):
    """A model folder, and beside it a folder holding a secret that must never be read or printed."""
    inside, outside = tmp_path / "model", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.bin").write_bytes(SECRET)
    (tmp_path / "secret.bin").write_bytes(SECRET)      # in the current directory, where onnx would look
    return inside, outside


def _reshape_from(location, **where):
    """Reshape whose 2-element int64 target is external: the secret's first 16 bytes, read as numbers."""
    return model([h.make_node("Reshape", ["x", "shape"], ["y"], name="r")], [_external(ints("shape", [0, 0]),
                                                                                       location, **where)])


def _secret_leaked(out: str) -> bool:
    numbers = np.frombuffer(SECRET[:16], np.int64).tolist() + np.frombuffer(SECRET[:8], np.float64).tolist()
    return "TOPSECRET" in out or any(str(n) in out for n in numbers) or SECRET[:16].hex() in out


ESCAPES = ["absolute", "dotdot", "dotdot-inner", "backslash", "drive", "cwd-relative", "dir-link", "file-link",
           "empty", "nul", "folder"]


def _escape_locations(outside):
    return {"absolute": str(outside / "secret.bin"), "dotdot": "../outside/secret.bin",
            "dotdot-inner": "sub/../../outside/secret.bin", "backslash": "..\\outside\\secret.bin",
            "drive": "C:secret.bin", "cwd-relative": "secret.bin", "dir-link": "linkdir/secret.bin",
            "file-link": "link.bin", "empty": "", "nul": "a\x00b", "folder": "."}


@pytest.mark.parametrize("kind", ESCAPES)
def test_external_data_stays_in_the_model_folder(folders, kind):
    inside, outside = folders
    os.symlink(outside, inside / "linkdir")
    os.symlink(outside / "secret.bin", inside / "link.bin")
    location = _escape_locations(outside)[kind]
    for m in (_reshape_from(location), conv()):
        if m.graph.node[0].op_type == "Conv":   # a weight read only for its shape is held to the same rule
            _external(m.graph.initializer[0], location)
        path = save(inside, m)
        for command in ("analyze", "import"):
            out = refused(cli(command, path), path, "external data")
            assert not _secret_leaked(out)


@pytest.mark.parametrize("case, fragment", [
    ({"offset": 30}, "at offset 30"), ({"offset": -8}, "at offset -8"), ({"length": 8}, "is 8 bytes"),
    ({"length": 1 << 40}, "is 1,099,511,627,776 bytes"), ({"offset": "x"}, "not a number"),
    ({"location": "missing.bin"}, "missing beside the model"), ({"location": "fifo"}, "not a file"),
])
def test_external_offsets_and_lengths_must_fit(folders, case, fragment):
    inside, _ = folders
    (inside / "vals.bin").write_bytes(np.asarray([0, -1] * 4, np.int64).tobytes())
    os.mkfifo(inside / "fifo")      # a reader that opened it would block forever
    where = {"location": "vals.bin", **case}
    path = save(inside, _reshape_from(where.pop("location"), **where))
    refused(cli("analyze", path), path, fragment)
    assert ort_refuses(None, path)


def test_external_data_inside_the_folder_is_read(folders):
    inside, _ = folders
    graph = cnndsl.compile_text("input 8x8x3\nconv3-4 + maxpool | flatten | fc5")
    from cnndsl.backends.to_onnx import to_onnx
    m = to_onnx(graph)
    onnx.save_model(m, str(inside / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    assert any(t.data_location == T.EXTERNAL for t in onnx.load(str(inside / "m.onnx"), load_external_data=False)
               .graph.initializer)
    back = import_onnx(str(inside / "m.onnx"))
    assert cnndsl.analyze(back).totals == cnndsl.analyze(graph).totals
    # a Reshape target read from external data works, and a wrong one is not echoed
    (inside / "t.bin").write_bytes(np.asarray([1, -1], np.int64).tobytes())
    path = save(inside, model([h.make_node("Reshape", ["x", "t"], ["y"])], [_external(ints("t", [0, 0]), "t.bin")]))
    assert import_onnx(str(path)).output.shape == (192,)
    (inside / "t.bin").write_bytes(np.asarray([7777777, 3], np.int64).tobytes())
    out = refused(cli("analyze", path), path, "not a flatten", "external values of 't'")
    assert "7777777" not in out


def test_in_memory_model_refuses_external_data(folders):
    m = _reshape_from("secret.bin")
    with pytest.raises(cnndsl.CnnDslError, match="external file, which cnndsl reads only for a model given as a file"):
        import_onnx(m)


# ---------------------------------------------- invalid shapes and attributes ----

W = (4, 3, 3, 3)
SCALE = [floats(n, np.ones(3)) for n in ("s", "b", "m", "v")]
# (id, model, what the message says, whether ONNX Runtime refuses it too)
INVALID = [
    ("conv-channels", lambda: conv(w=(4, 2, 3, 3)), "takes 2 input channels, but its input has 3", True),
    ("conv-zero-kernel", lambda: conv(w=(4, 3, 0, 3)), "the kernel must be at least 1", True),
    ("conv-zero-stride", lambda: conv(strides=[0, 1]), "strides must be at least 1", True),
    ("conv-negative-pads", lambda: conv(pads=[-1, -1, -1, -1]), "pads must be at least 0", True),
    ("conv-zero-dilation", lambda: conv(dilations=[1, 0]), "dilations must be at least 1", True),
    ("conv-strides-length", lambda: conv(strides=[1, 1, 1]), "has 3 values, expected 2", True),
    ("conv-kernel-shape", lambda: conv(kernel_shape=[2, 2]), "kernel_shape 2x2 disagrees with its 4x3x3x3", True),
    ("conv-group-0", lambda: conv(group=0), "group must be at least 1", True),
    ("conv-group-out", lambda: conv(w=(4, 1, 3, 3), group=3), "group=3 does not divide its 4 output", True),
    ("conv-bias", lambda: conv(bias=(5,)), "its bias is 5, expected 4", True),
    ("conv-auto-pad-and-pads", lambda: conv(auto_pad="SAME_UPPER", pads=[1, 1, 1, 1]), "both auto_pad and pads", True),
    ("conv-auto-pad-bogus", lambda: conv(auto_pad="MIDDLE"), "'auto_pad' is 'MIDDLE'", True),
    ("conv-group-float", lambda: conv(group=1.0), "'group' must be an integer", True),
    ("conv-kernel-int", lambda: conv(kernel_shape=3), "'kernel_shape' must be a list of integers", True),
    ("conv-unknown-attr", lambda: conv(foo=1), "unknown attribute 'foo'", True),
    ("conv-rank3-weight", lambda: conv(w=(4, 3, 3)), "rank-3 weight", True),
    ("conv-collapses", lambda: conv(w=(4, 3, 9, 9)), "collapses below 1", True),
    ("conv-huge-kernel", lambda: conv(w=(1, 3, 5000, 1), pads=[2500, 0, 2500, 0]), "kernel 5,000 is beyond",
     False),        # valid, but beyond limits.MAX_KERNEL
    ("conv-float64-weight", lambda: model([h.make_node("Conv", ["x", "w"], ["y"])], [zeros("w", *W, dtype=np.float64)]),
     "its W 'w' holds double, not float", True),
    ("gemm-inner", lambda: flat("Gemm", [zeros("w", 4, 100)], transB=1), "takes 100 input features, but its input has 192",
     True),
    ("gemm-inner-untransposed", lambda: flat("Gemm", [zeros("w", 4, 192)]), "takes 4 input features", True),
    ("gemm-rank3", lambda: flat("Gemm", [zeros("w", 4, 192, 1)], transB=1), "rank-3 weight", True),
    ("matmul-inner", lambda: flat("MatMul", [zeros("w", 100, 4)]), "takes 100 input features", True),
    ("gemm-on-feature-map", lambda: one("Gemm", ("x", "w"), [zeros("w", 3, 4)]), "needs an N x features input", True),
    ("gemm-alpha-nan", lambda: flat("Gemm", [zeros("w", 4, 192)], transB=1, alpha=math.nan), "not a finite number",
     False),        # ORT runs it (NaN outputs); cnndsl's fc has no alpha, and no NaN reaches the IR
    ("gemm-scalar-bias", lambda: flat("Gemm", [zeros("w", 4, 192), zeros("c", 1)], transB=1),
     "bias of one value per output", False),      # valid ONNX, but one shared bias is not cnndsl's fc bias
    ("dropout-ratio-5", lambda: one("Dropout", ("x", "r"), [floats("r", 5.0)]), "must be in [0, 1), got 5", True),
    ("dropout-ratio-attr-5", lambda: one("Dropout", opset=7, ratio=5.0), "must be in [0, 1]", False),  # ORT 7: unchecked
    ("dropout-ratio-nan", lambda: one("Dropout", ("x", "r"), [floats("r", math.nan)]), "is not finite", True),
    ("dropout-ratio-vector", lambda: one("Dropout", ("x", "r"), [floats("r", [0.1, 0.2])]), "must be a scalar, not 2", True),
    ("bn-eps-nan", lambda: bn(eps=math.nan), "not a finite number", False),     # ORT runs it, NaN everywhere
    ("bn-eps-inf", lambda: bn(eps=math.inf), "not a finite number", False),
    ("bn-eps-0", lambda: bn(eps=0.0), "must be in (0, 1]", False),            # cnndsl: eps > 0
    ("bn-eps-2", lambda: bn(eps=2.0), "must be in (0, 1]", False),            # cnndsl's bn takes eps <= 1
    ("bn-momentum-5", lambda: bn(momentum=5.0), "'momentum' must be in [0, 1]", False),
    ("bn-scale-shape", lambda: one("BatchNormalization", ("x", "s", "b", "m", "v"),
                                   [floats("s", np.ones(4))] + SCALE[1:]), "its scale is 4, expected 3", True),
    ("bn-eps-int", lambda: bn(eps=1), "'epsilon' must be a number", True),
    ("lrn-size-0", lambda: one("LRN", size=0), "size must be at least 1", True),
    ("lrn-no-size", lambda: one("LRN"), "has no size", True),
    ("lrn-alpha-nan", lambda: one("LRN", size=3, alpha=math.nan), "not a finite number", True),
    ("lrn-beta-inf", lambda: one("LRN", size=3, beta=math.inf), "not a finite number", False),
    ("elu-alpha-nan", lambda: one("Elu", alpha=math.nan), "not a finite number", False),
    ("leakyrelu-alpha-inf", lambda: one("LeakyRelu", alpha=math.inf), "not a finite number", False),
    ("maxpool-no-kernel", lambda: one("MaxPool"), "has no kernel_shape", True),
    ("maxpool-kernel-rank3", lambda: one("MaxPool", kernel_shape=[2, 2, 2]), "has 3 values, expected 2", True),
    ("maxpool-zero-kernel", lambda: one("MaxPool", kernel_shape=[0, 2]), "kernel_shape must be at least 1", True),
    ("maxpool-zero-stride", lambda: one("MaxPool", kernel_shape=[2, 2], strides=[0, 0]), "strides must be at least 1",
     True),
    ("maxpool-pad-kernel", lambda: one("MaxPool", kernel_shape=[2, 2], pads=[2, 2, 2, 2]),
     "padding 2 is not smaller than its kernel 2", True),
    ("maxpool-huge-kernel", lambda: one("MaxPool", kernel_shape=[5000, 1]), "5,000 is beyond the limit", True),
    ("avgpool-dilations", lambda: one("AveragePool", opset=19, kernel_shape=[2, 2], dilations=[2, 2]),
     "cnndsl's average pooling has none", False),       # valid since opset 19; the IR cannot express it
    ("maxpool-on-vector", lambda: model([h.make_node("Flatten", ["x"], ["f"]),
                                         h.make_node("MaxPool", ["f"], ["y"], kernel_shape=[2, 2])]),
     "needs an N x C x H x W input", True),
    ("concat-no-axis", lambda: one("Concat", ("x", "x")), "has no axis", True),
    ("concat-axis-7", lambda: one("Concat", ("x", "x"), axis=7), "axis 7 is out of range", True),
    ("concat-mismatch", lambda: model([h.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                                       h.make_node("Concat", ["x", "p"], ["y"], axis=1)]), "cannot concatenate", True),
    ("add-mismatch", lambda: model([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Add", ["x", "c"], ["y"])],
                                   [zeros("w", 4, 3, 1, 1)]), "cannot add 3x8x8 and 4x8x8", True),
    ("softmax-axis-5", lambda: one("Softmax", axis=5), "axis 5 is out of range", True),
    ("flatten-axis-9", lambda: one("Flatten", axis=9), "flattens from axis 9", True),
    ("reshape-two-minus-ones", lambda: one("Reshape", ("x", "s"), [ints("s", [-1, -1])]), "to [-1, -1]", True),
    ("reshape-huge-target", lambda: one("Reshape", ("x", "s"), [ints("s", np.arange(1000))]),
     "has 1,000 values; cnndsl reads at most 8", True),
    ("reshape-float-target", lambda: one("Reshape", ("x", "s"), [floats("s", [1, -1])]), "its shape 's' holds float, not int64",
     True),
    ("clip-vector-bound", lambda: one("Clip", ("x", "lo", "hi"), [floats("lo", [0, 0, 0]), floats("hi", 6.0)]),
     "must be one number, got 3", True),
    ("clip-matrix-bound", lambda: one("Clip", ("x", "lo", "hi"), [floats("lo", [[0]]), floats("hi", 6.0)]),
     "must be one number, got 1x1", True),
    ("gelu-approximate", lambda: one("Gelu", opset=20, approximate="bogus"), "'approximate' is 'bogus'", True),
    ("duplicate-output", lambda: model([h.make_node("Relu", ["x"], ["y"]), h.make_node("Sigmoid", ["x"], ["y"])]),
     "the value 'y' is defined twice", True),
    ("duplicate-attribute", lambda: _twice(conv(group=1)), "gives the attribute 'group' twice", True),
    ("weight-data-short", lambda: _short(conv()), "declares 4x3x3x3 (432 bytes) but holds 4 bytes", True),
    ("weight-negative-dim", lambda: _negative(conv()), "has a negative dimension", True),
    ("weight-string", lambda: model([h.make_node("Conv", ["x", "w"], ["y"])],
                                    [h.make_tensor("w", T.STRING, [1], [b"a"])]), "holds string, not float", True),
    ("op-newer-than-opset", lambda: one("HardSwish", opset=10), "ONNX opset 10 has no HardSwish", True),
    ("attribute-older-than-opset", lambda: one("Clip", min=0.0, max=6.0), "unknown attribute 'max'", True),
    ("no-opset", lambda: _opset(one("Relu"), None), "imports no ONNX opset", True),
    ("future-opset", lambda: _opset(one("Relu"), 999), "imports ONNX opset 999", True),
    ("future-ir-version", lambda: _ir(one("Relu"), 96), "has IR version 96", True),
    ("attribute-in-wrong-field", lambda: _wrong_field(one("LeakyRelu", alpha=0.2)),
     "attribute 'alpha' holds a value that is not of its type", True),
    ("output-type-undefined", lambda: _elem(one("Relu"), output=0), "declared as undefined, but the model computes float",
     True),
    ("output-type-double", lambda: _elem(one("Relu"), output=T.DOUBLE), "declared as double", True),
    ("input-type-undefined", lambda: _elem(one("Relu"), input=0), "holds undefined", True),
    ("unused-initializer-bad-type", lambda: _bad_type(one("Relu", inits=[zeros("unused", 2)])),
     "the initializer 'unused' has no valid element type (99)", True),
    # valid ONNX that ORT runs, but that cnndsl's IR would compute differently: refused, never imported wrong
    ("avgpool-uncounted-pads", lambda: one("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
     "leaves its padding out of the average (count_include_pad=0", False),       # ORT differs by 0.376 here
    ("avgpool-uncounted-same", lambda: one("AveragePool", kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
     "count_include_pad=0", False),
    ("avgpool-uncounted-pad-and-own", lambda: model([h.make_node("Pad", ["x", "p"], ["q"]),
                                                     h.make_node("AveragePool", ["q"], ["y"], kernel_shape=[3, 3],
                                                                 pads=[1, 1, 1, 1])], [ints("p", [0, 0, 1, 1] * 2)]),
     "count_include_pad=0", False),
    ("pad-before-maxpool", lambda: model([h.make_node("Pad", ["x", "p"], ["q"]),
                                          h.make_node("MaxPool", ["q"], ["y"], kernel_shape=[3, 3])],
                                         [ints("p", [0, 0, 1, 1] * 2)]), "max pooling pads with -inf", False),
    ("minus-inf-pad-before-avgpool", lambda: model([h.make_node("Pad", ["x", "p", "low"], ["q"]),
                                                    h.make_node("AveragePool", ["q"], ["y"], kernel_shape=[3, 3])],
                                                   [ints("p", [0, 0, 1, 1] * 2), floats("low", -np.inf)]),
     "averages a value padded with -inf", False),
    ("pad-value-nan", lambda: model([h.make_node("Pad", ["x", "p", "v"], ["q"]),
                                     h.make_node("MaxPool", ["q"], ["y"], kernel_shape=[3, 3])],
                                    [ints("p", [0, 0, 1, 1] * 2), floats("v", np.nan)]), "is not finite", False),
    ("pad-asymmetric-zeros", lambda: model([h.make_node("Pad", ["x", "p"], ["q"]),
                                            h.make_node("AveragePool", ["q"], ["y"], kernel_shape=[3, 3])],
                                           [ints("p", [0, 0, 1, 1, 0, 0, 3, 1])]),
     "padding 3 (with the Pad before it) is not smaller than its kernel 3", False),
    ("pad-beyond-half-kernel", lambda: model([h.make_node("Pad", ["x", "p"], ["q"]),
                                              h.make_node("AveragePool", ["q"], ["y"], kernel_shape=[2, 2])],
                                             [ints("p", [0, 0, 2, 2] * 2)]),
     "padding 2 (with the Pad before it) is more than half its kernel 2", False),
    ("maxpool-pad-beyond-half-kernel", lambda: one("MaxPool", kernel_shape=[3, 3], pads=[2, 2, 2, 2]),
     "padding 2 is more than half its kernel 3", False),     # ORT runs it; PyTorch and the spec refuse it
    ("avgpool-asymmetric-last-window", lambda: model([h.make_node("AveragePool", ["x"], ["y"], kernel_shape=[1, 3],
                                                                  strides=[1, 2], pads=[0, 1, 0, 0], ceil_mode=1,
                                                                  count_include_pad=1)], shape=(1, 3, 11, 11)),
     "its last window in ceil mode reaches past its padding", False),     # ORT differs by 1.0
    ("gelu-tanh", lambda: one("Gelu", opset=20, approximate="tanh"), "uses the tanh approximation", False),
    ("bn-training-mode", lambda: _outputs_named(bn(training_mode=1), "y", "mean", "var"),
     "runs in training mode", False),
    ("bn-running-outputs", lambda: _opset(_outputs_named(bn(), "y", "m1", "v1", "m2", "v2"), 9),
     "runs in training mode", False),      # before opset 14, ORT normalizes with the batch's statistics then
    ("dropout-training-mode", lambda: one("Dropout", ("x", "r", "t"), [floats("r", 0.5),
                                                                       nh.from_array(np.array(True), "t")]),
     "runs in training mode (its training_mode is true)", False),
    ("matmul-bias-also-read-without", lambda: model(
        [h.make_node("Flatten", ["x"], ["f"]), h.make_node("MatMul", ["f", "w"], ["mm"]),
         h.make_node("Add", ["mm", "b"], ["a"]), h.make_node("Add", ["a", "mm"], ["y"])],
        [zeros("w", 192, 5), zeros("b", 5)]), "adds a bias to 'mm', which is also used without it", False),
    ("reshape-one-row-of-a-batch", lambda: model([h.make_node("Reshape", ["x", "s"], ["y"])], [ints("s", [1, -1])],
                                                 shape=(2, 3, 8, 8)), "makes one row of a whole batch", False),
    ("reshape-one-row-of-any-batch", lambda: model([h.make_node("Reshape", ["x", "s"], ["y"])], [ints("s", [1, -1])],
                                                   shape=("N", 3, 8, 8)), "the model's batch is not fixed", False),
]


def _outputs_named(m, *names):
    del m.graph.node[0].output[:]
    m.graph.node[0].output.extend(names)
    return m


def _wrong_field(m):
    """A FLOAT attribute whose value sits in its `floats` field (what ORT calls a type/data field mismatch)."""
    a = m.graph.node[0].attribute[0]
    a.ClearField("f")
    a.floats.append(0.2)
    return m


def _elem(m, input=None, output=None):
    if input is not None:
        m.graph.input[0].type.tensor_type.elem_type = input
    if output is not None:
        m.graph.output[0].type.tensor_type.elem_type = output
    return m


def _ir(m, version):
    m.ir_version = version
    return m


def _bad_type(m):
    m.graph.initializer[0].data_type = 99
    return m


def _opset(m, version):
    del m.opset_import[:]
    if version is not None:
        m.opset_import.append(h.make_opsetid("", version))
    return m


def _twice(m):
    m.graph.node[0].attribute.append(h.make_attribute("group", 2))
    return m


def _short(m):
    m.graph.initializer[0].raw_data = b"\0" * 4
    return m


def _negative(m):
    m.graph.initializer[0].dims[2] = -3
    return m


@pytest.mark.parametrize("make, fragment, ort_too", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_models_are_refused(tmp_path, make, fragment, ort_too):
    m = make()
    assert ort_refuses(m) == ort_too
    both_refuse(tmp_path, m, fragment)


# ------------------------------------------------------ malformed nodes ----

def _sequence_input():
    m = one("Relu")
    m.graph.input[0].type.CopyFrom(h.make_sequence_type_proto(h.make_tensor_type_proto(T.FLOAT, [1])))
    return m


def _op_type(m, op):
    m.graph.node[0].op_type = op
    return m


def _bad_utf8_op(m):
    """Bytes of a model whose op type is not valid UTF-8 (protobuf will not write that from a str)."""
    m.graph.node[0].op_type = "ReXXlu"
    return m.SerializeToString().replace(b"ReXXlu", b"Re\xff\xfelu")


MALFORMED = [
    ("conv-no-inputs", lambda: model([h.make_node("Conv", [], ["y"])]), "Conv 'y' has 0 inputs; Conv takes 2 to 3"),
    ("conv-no-weight", lambda: model([h.make_node("Conv", ["x"], ["y"])]), "has 1 input; Conv takes 2 to 3"),
    ("conv-empty-weight-name", lambda: model([h.make_node("Conv", ["x", ""], ["y"])]), "Conv 'y' has no weight"),
    ("conv-computed-weight", lambda: model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Conv", ["x", "r"], ["y"])]),
     "takes a computed weight 'r'"),
    ("gemm-no-weight", lambda: model([h.make_node("Flatten", ["x"], ["f"]), h.make_node("Gemm", ["f"], ["y"])]),
     "has 1 input; Gemm takes 2 to 3"),
    ("relu-no-input", lambda: model([h.make_node("Relu", [], ["y"])]), "has 0 inputs"),
    ("relu-empty-input", lambda: model([h.make_node("Relu", [""], ["y"])]), "leaves out its first input"),
    ("relu-no-output", lambda: model([h.make_node("Relu", ["x"], [])], output="x"), "has no output"),
    ("relu-two-outputs", lambda: model([h.make_node("Relu", ["x"], ["y", "z"])]), "has 2 outputs"),
    ("relu-of-weight", lambda: one("Relu", ("w",), [zeros("w", 3)]), "the constant 'w' is used as a feature map"),
    ("relu-cycle", lambda: model([h.make_node("Relu", ["y"], ["y"])]), "value 'y' is not produced by an earlier"),
    ("pad-into-relu", lambda: model([h.make_node("Pad", ["x", "p"], ["q"]), h.make_node("Relu", ["q"], ["y"])],
                                    [ints("p", [0, 0, 1, 1] * 2)]), "the padded value 'q' feeds something other"),
    ("slice-into-relu", lambda: model([h.make_node("Slice", ["x", "s", "e", "a"], ["q"]),
                                       h.make_node("Relu", ["q"], ["y"])], [ints("s", [0]), ints("e", [2]), ints("a", [2])]),
     "the value 'q', part of an adaptive pooling, is used on its own"),
    ("reshape-no-shape", lambda: one("Reshape"), "has 1 input; Reshape takes 2"),
    ("reshape-empty-shape-name", lambda: one("Reshape", ("x", "")), "Reshape 'n1' has no shape"),
    ("slice-one-input", lambda: one("Slice"), "has 1 input; Slice takes 3 to 5"),
    ("slice-vector-starts", lambda: one("Slice", ("x", "s", "e", "a"), [ints("s", [0, 1]), ints("e", [2, 3]),
                                                                          ints("a", [2, 3])]), "is not one band"),
    ("reduce-alone", lambda: one("ReduceMean", axes=[2]), "outside adaptive pooling"),
    ("concat-no-inputs", lambda: model([h.make_node("Concat", [], ["y"], axis=1)]), "has 0 inputs"),
    ("bn-three-inputs", lambda: one("BatchNormalization", ("x", "s", "b"), SCALE[:2]), "has 3 inputs"),
    ("identity-empty", lambda: model([h.make_node("Identity", [""], ["y"])]), "leaves out its first input"),
    ("constant-empty", lambda: model([h.make_node("Constant", [], ["c"]), h.make_node("Relu", ["x"], ["y"])]),
     "must have exactly one value attribute"),
    ("constant-string", lambda: model([h.make_node("Constant", [], ["c"], value_string="a"),
                                       h.make_node("Relu", ["x"], ["y"])]), "'value_string', which cnndsl does not import"),
    ("maxpool-indices", lambda: model([h.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])]),
     "also returns indices"),
    ("output-not-produced", lambda: model([h.make_node("Relu", ["x"], ["r"])]), "the output 'y' is not produced"),
    ("output-is-input", lambda: model([h.make_node("Relu", ["x"], ["r"])], output="x"), "it has no layers"),
    ("two-outputs", lambda: _outputs(model([h.make_node("Relu", ["x"], ["y"])])), "has 2 outputs"),
    ("no-inputs", lambda: _no_input(one("Relu")), "the model has 0 inputs"),
    ("empty-graph", lambda: model([]), "the model has no nodes"),
    ("symbolic-dims", lambda: model([h.make_node("Relu", ["x"], ["y"])], shape=(1, 3, "H", "W")), "is not fixed"),
    ("zero-dim", lambda: model([h.make_node("Relu", ["x"], ["y"])], shape=(1, 3, 0, 8)), "is not fixed"),
    ("negative-dim", lambda: model([h.make_node("Relu", ["x"], ["y"])], shape=(1, 3, -5, 8)), "negative size -5"),
    ("negative-batch", lambda: model([h.make_node("Relu", ["x"], ["y"])], shape=(-1, 3, 8, 8)), "batch size of -1"),
    ("huge-dim", lambda: model([h.make_node("Relu", ["x"], ["y"])], shape=(1, 3, 1 << 40, 8)), "beyond the limit"),
    ("rank-3-input", lambda: model([h.make_node("Relu", ["x"], ["y"])], shape=(1, 3, 8)), "has rank 3"),
    ("sequence-input", _sequence_input, "is not a tensor"),
    ("int-input", lambda: _int_input(one("Relu")), "holds int64"),
    ("unknown-op", lambda: one("Selu"), "unsupported ONNX op Selu"),
    ("custom-domain", lambda: _domain(one("Relu")), "unsupported ONNX op Relu (domain 'com.evil')"),
    ("op-type-newline", lambda: _op_type(one("Relu"), "Relu\nok"), "unsupported ONNX op Relu\\nok"),
    ("op-type-dunder", lambda: _op_type(one("Relu"), "_pool"), "unsupported ONNX op _pool"),
    ("op-type-bad-utf8", lambda: _bad_utf8_op(one("Relu")), "unsupported ONNX op Re\ufffd\ufffdlu"),
]


def _outputs(m):
    m.graph.output.append(h.make_tensor_value_info("z", T.FLOAT, None))
    return m


def _no_input(m):
    del m.graph.input[:]
    return m


def _int_input(m):
    m.graph.input[0].type.tensor_type.elem_type = T.INT64
    return m


def _domain(m):
    m.graph.node[0].domain = "com.evil"
    return m


# valid ONNX that ONNX Runtime runs, but not a CNN cnndsl can analyze: refused as unsupported, never a crash
VALID_ONNX = {"conv-computed-weight", "pad-into-relu", "slice-into-relu", "relu-of-weight", "slice-vector-starts", "reduce-alone", "constant-string",
              "maxpool-indices", "output-is-input", "symbolic-dims", "negative-dim", "negative-batch", "rank-3-input",
              "unknown-op"}


@pytest.mark.parametrize("case, make, fragment", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_models_are_import_errors(tmp_path, case, make, fragment):
    m = make()
    assert ort_refuses(m) == (case not in VALID_ONNX)
    path = tmp_path / "model.onnx"
    path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    for command in ("analyze", "import"):
        refused(cli(command, path), path, fragment)


def test_unreadable_files(tmp_path):
    good = save(tmp_path, _named_model(["n"]), "good.onnx")
    cases = {"text.onnx": b"hello, this is not protobuf\n", "empty.onnx": b"", "truncated.onnx":
             good.read_bytes()[:len(good.read_bytes()) // 2], "garbage.onnx": bytes(range(256)) * 8}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    os.mkfifo(tmp_path / "fifo.onnx")
    expect = {"text.onnx": "", "empty.onnx": "no nodes", "truncated.onnx": "", "garbage.onnx": "",
              "fifo.onnx": "not a regular file", "missing.onnx": "no such file"}
    for name, fragment in expect.items():
        path = tmp_path / name
        for command in ("analyze", "import"):
            refused(cli(command, path), path, fragment)
    # a hostile model file larger than the limit is refused from its size alone (a sparse file: nothing written)
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    start = time.perf_counter()
    refused(cli("analyze", big), big, "beyond the limit of 2,147,483,648")
    assert time.perf_counter() - start < 1
    (tmp_path / "dir.onnx").mkdir()     # the command line refuses a folder itself; the API says why
    with pytest.raises(cnndsl.CnnDslError, match="not a regular file"):
        import_onnx(str(tmp_path / "dir.onnx"))


@pytest.mark.parametrize("base", ["named", "many-ops"])
def test_byte_flips_never_crash_and_never_pass_what_ort_refuses(tmp_path, base):
    """Random corruption of a valid file: always an answer (exit 0 or 1); exit 0 only for what ORT runs too."""
    data = bytearray((_named_model(["n"]) if base == "named" else _many_ops(17)).SerializeToString())
    rng = np.random.default_rng(0)
    path = tmp_path / "flip.onnx"
    passed = 0
    for _ in range(300):
        mutated = bytearray(data)
        for i in rng.integers(0, len(data), rng.integers(1, 4)):
            mutated[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated))
        result = cli("analyze", "--json", path)
        assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
        if result.exit_code == 0:
            passed += 1
            even_lrn = any(n.op == "lrn" and n.attrs["size"] % 2 == 0 for n in import_onnx(str(path)).nodes)
            assert even_lrn or not ort_refuses(None, path), bytes(mutated)     # even LRN: see the corner cases
    assert 0 < passed < 300


def _many_ops(opset: int):
    """A small model that uses most supported ops (old-opset forms below 11/12/13)."""
    f = lambda name, *shape: floats(name, np.full(shape, 0.1))
    nodes = [h.make_node("Conv", ["x", "w", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
             h.make_node("Relu", ["bn"], ["r"]), h.make_node("Identity", ["r"], ["i"]),
             h.make_node("Concat", ["r", "i"], ["cat"], axis=1),
             h.make_node("Conv", ["cat", "w2"], ["c2"], group=2, strides=[2, 2], kernel_shape=[1, 1]),
             h.make_node("Sum", ["c2", "c2", "c2"], ["sum"]), h.make_node("LeakyRelu", ["sum"], ["lr"], alpha=0.2),
             h.make_node("LRN", ["lr"], ["lrn"], size=3), h.make_node("Pad", ["lrn", "p"], ["pad"], mode="constant")
             if opset >= 11 else h.make_node("Pad", ["lrn"], ["pad"], pads=[0, 0, 1, 1, 0, 0, 1, 1]),
             h.make_node("AveragePool", ["pad"], ["ap"], kernel_shape=[3, 3], strides=[1, 1]),
             h.make_node("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
             h.make_node("GlobalMaxPool", ["mp"], ["g"]),
             h.make_node("Constant", [], ["shape"], value=nh.from_array(np.array([0, -1], np.int64))),
             h.make_node("Reshape", ["g", "shape"], ["flat"]), h.make_node("MatMul", ["flat", "wm"], ["mm"]),
             h.make_node("Add", ["mm", "bm"], ["fc"]), h.make_node("Tanh", ["fc"], ["t"]),
             h.make_node("Dropout", ["t", "ratio"], ["d"]) if opset >= 12 else h.make_node("Dropout", ["t"], ["d"]),
             h.make_node("Clip", ["d", "lo", "hi"], ["cl"]) if opset >= 11 else
             h.make_node("Clip", ["d"], ["cl"], min=0.0, max=6.0),
             h.make_node("Softmax", ["cl"], ["y"], axis=-1 if opset >= 13 else 1)]
    inits = [f("w", 4, 3, 3, 3), f("cb", 4), f("w2", 6, 4, 1, 1), f("wm", 6, 5), f("bm", 5), ints("p", [0, 0, 1, 1] * 2),
             floats("ratio", 0.25), floats("lo", 0.0), floats("hi", 6.0)] + [f(n, 4) for n in "sbmv"]
    m = model(nodes, inits, shape=(1, 3, 9, 8), opset=opset)
    m.ir_version = 7 if opset < 13 else 10
    return m


VALUES = [0, 1, -1, 2, 3, 7, 1 << 31, -(1 << 40)]
FLOAT_VALUES = [0.0, -1.0, 1.0, 2.0, 0.5, math.nan, math.inf, 1e30, 6.0]
ATTRIBUTES = ["axis", "pads", "strides", "kernel_shape", "group", "epsilon", "alpha", "ceil_mode", "auto_pad", "size"]


def _mutate(m, rng):
    """One random structural change: an attribute's value, a tensor's dims or values, a rewired input, an added or
    dropped attribute, a dropped or doubled node."""
    g, kind = m.graph, rng.randrange(6)
    node = g.node[rng.randrange(len(g.node))]
    if kind == 0 and node.attribute:
        a = node.attribute[rng.randrange(len(node.attribute))]
        if a.type == a.INT:
            a.i = rng.choice(VALUES)
        elif a.type == a.INTS and a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice(VALUES)
        elif a.type == a.FLOAT:
            a.f = rng.choice(FLOAT_VALUES)
    elif kind == 1:
        t = g.initializer[rng.randrange(len(g.initializer))]
        if t.dims and rng.random() < .7:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(VALUES)
        else:
            t.dims.append(1)
    elif kind == 2 and node.input:
        values = [o for n in g.node for o in n.output] + [t.name for t in g.initializer] + ["x", "", "nowhere"]
        node.input[rng.randrange(len(node.input))] = rng.choice(values)
    elif kind == 3:
        if node.attribute and rng.random() < .5:
            del node.attribute[rng.randrange(len(node.attribute))]
        else:
            node.attribute.append(h.make_attribute(rng.choice(ATTRIBUTES), rng.choice([1, 0.5, [1, 1], [0, 0, 1, 1],
                                                                                        "SAME_UPPER", -1, [2]])))
    elif kind == 4:
        t = rng.choice([t for t in g.initializer if len(t.raw_data) <= 64])
        array = nh.to_array(t).copy()
        if array.size:
            array.flat[rng.randrange(array.size)] = rng.choice(VALUES[:6] if array.dtype.kind == "i" else FLOAT_VALUES)
        t.CopyFrom(nh.from_array(array, t.name))
    else:
        i = rng.randrange(len(g.node))
        if rng.random() < .5:
            del g.node[i]
        else:
            g.node.insert(i, g.node[i])


@pytest.mark.parametrize("opset", [10, 17])
def test_mutated_models_never_crash_and_never_pass_what_ort_refuses(opset):
    """Structural corruption of a valid many-op model: always an answer; when cnndsl accepts a mutant, ORT runs
    it too and computes the output shape cnndsl reports."""
    import random
    rng = random.Random(opset)
    base = _many_ops(opset)
    assert import_onnx(base).output.shape == (5,) and not ort_refuses(base)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    accepted = 0
    for _ in range(1000):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        for _ in range(rng.randint(1, 2)):
            _mutate(m, rng)
        try:
            graph = import_onnx(m)
        except cnndsl.CnnDslError:
            continue
        accepted += 1
        if any(n.op == "lrn" and n.attrs["size"] % 2 == 0 for n in graph.nodes):
            continue    # valid ONNX (and PyTorch), which only ORT's CPU kernel refuses: kept on purpose
        session = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        y, = session.run(None, {"x": np.zeros((1, 3, 9, 8), np.float32)})
        assert y.shape[1:] == graph.output.shape
    assert 100 < accepted < 900


SIZES = st.sampled_from([1, 1, 2, 2, 3, 3, 4, 5, 0])     # mostly valid, sometimes not
# models ORT runs that cnndsl refuses on purpose: windows its layers cannot describe (one symmetric padding per
# axis, no dilated SAME pooling), and auto_pad beside pads, which the ONNX spec forbids and ORT does not enforce
REFUSED_ON_PURPOSE = (r"pads asymmetrically|last window in ceil mode reaches past its padding|is not smaller than its kernel|leaves its padding out of the average|more than half its kernel|^MaxPool '\w+' has auto_pad=SAME_(UPPER|LOWER) with dilations"
                  r"|^\w+ '\w+' has both auto_pad and pads$")


def window_wider_than_input(k, attrs, size=(9, 7)) -> bool:
    """A dilated window wider than the padded input along an axis: the ONNX formula floor((in + pads - window) /
    stride) + 1 gives less than 1, but ORT divides rounding toward zero (-2 / 3 -> 0) and still gives 1."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):             # SAME_UPPER and SAME_LOWER give ceil(in / stride) >= 1
        return False
    pads = attrs.get("pads", [0, 0, 0, 0]) if auto == "NOTSET" else [0, 0, 0, 0]
    dilations = attrs.get("dilations", [1, 1])
    return any((k[i] - 1) * dilations[i] + 1 > size[i] + pads[i] + pads[i + 2] for i in (0, 1))


@settings(max_examples=200, deadline=None)
@given(op=st.sampled_from(["Conv", "MaxPool", "AveragePool"]), k=st.tuples(SIZES, SIZES),
       s=st.none() | st.tuples(SIZES, SIZES), d=st.none() | st.tuples(SIZES, SIZES),
       pads=st.none() | st.lists(st.sampled_from([0, 0, 1, 1, 2, 3, -1]), min_size=4, max_size=4),
       auto=st.none() | st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
       ceil=st.none() | st.integers(0, 1), groups=st.sampled_from([(1, 3), (1, 3), (3, 1), (2, 1), (1, 2)]))
def test_window_attributes_agree_with_onnx_runtime(op, k, s, d, pads, auto, ceil, groups):
    """Whatever the attributes: cnndsl gives an answer, and when it accepts the model ORT runs it and computes
    the output shape cnndsl reports; when it refuses, ORT refuses too, or its output would be empty, or the model is one
    cnndsl refuses on purpose."""
    attrs = {key: value for key, value in (("strides", s), ("dilations", d), ("pads", pads), ("auto_pad", auto))
             if value is not None}
    inits = []
    if op == "Conv":
        group, cin = groups
        inits = [zeros("w", 6, cin, *k)]
        attrs["group"] = group
    else:
        attrs["kernel_shape"] = list(k)
        if ceil is not None:
            attrs["ceil_mode"] = ceil
    if "dilations" in attrs and op == "AveragePool":
        attrs.pop("dilations")
    m = model([h.make_node(op, ["x"] + [t.name for t in inits], ["y"], **attrs)], inits, shape=(1, 3, 9, 7), opset=18)
    try:
        graph = import_onnx(m)
    except cnndsl.CnnDslError as e:
        if not re.search(REFUSED_ON_PURPOSE, e.message):
            y = ort_output(m, (1, 3, 9, 7))
            assert (y is None or 0 in y.shape                    # ORT refuses it too, or gives nothing
                    or "below 1x1" in e.message and window_wider_than_input(k, attrs)), (e.message, y.shape)
        return
    y = ort_output(m, (1, 3, 9, 7))
    assert y is not None and y.shape[1:] == graph.output.shape


# ------------------------------------------- values: ONNX Runtime as the oracle ----

def _state_dict(m, graph) -> dict:
    """The weights of an imported graph, from the ONNX model's own tensors, keyed as to_onnx reads them; the
    test models name each node after its output, so an IR node finds the ONNX node it came from."""
    from cnndsl.ir.names import module_paths
    consts = {t.name: nh.to_array(t) for t in m.graph.initializer}
    made, readers = {}, {}
    for n in m.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = nh.to_array(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
        made[n.name or n.output[0]] = n
        for i in n.input:
            readers.setdefault(i, []).append(n)
    paths, state = module_paths(graph), {}
    for node in graph.nodes[1:]:
        key, src = ".".join(paths[node.name]), made.get(node.name)
        if node.op == "conv":
            state[key + ".weight"] = consts[src.input[1]]
            if node.attrs["bias"]:
                state[key + ".bias"] = consts[src.input[2]]
        elif node.op == "fc":
            w = consts[src.input[1]]
            transposed = src.op_type == "Gemm" and any(a.name == "transB" and a.i for a in src.attribute)
            state[key + ".weight"] = w if transposed else w.T
            if node.attrs["bias"]:
                bias = src.input[2] if src.op_type == "Gemm" and len(src.input) > 2 else \
                    next(i for i in readers[src.output[0]][0].input if i in consts)
                state[key + ".bias"] = consts[bias].reshape(-1)
        elif node.op == "bn":
            for leaf, i in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
                state[f"{key}.{leaf}"] = consts[src.input[i]]
            state[key + ".num_batches_tracked"] = np.zeros((), np.int64)
    return state


def _ort_run(m, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _disagreement(m, seed=0) -> float:
    """Import `m`, write the IR back to ONNX with `m`'s weights, run both in ORT on random inputs (centred and
    mostly negative, where zero and -inf padding differ): the largest difference, relative to the output."""
    from cnndsl.backends.to_onnx import to_onnx
    graph = import_onnx(m)
    back = to_onnx(graph, weights=_state_dict(m, graph))
    dims = [d.dim_value or 2 for d in m.graph.input[0].type.tensor_type.shape.dim]
    worst = 0.0
    for shift in (0.0, -2.0):
        x = (np.random.default_rng(seed).standard_normal(dims) + shift).astype(np.float32)
        a, b = _ort_run(m, x), _ort_run(back, x)
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        assert a.shape == b.shape
        worst = max(worst, float(np.max(np.abs(a - b) / (1 + np.abs(a)))))
    return worst


def _rand(name, *shape, positive=False, seed=[0]):
    seed[0] += 1
    a = np.random.default_rng(seed[0]).standard_normal(shape).astype(np.float32)
    return nh.from_array(np.abs(a) + 0.5 if positive else a, name)


def _node(op, inputs, output, **attrs):
    return h.make_node(op, list(inputs), [output], name=output, **attrs)


def _bn_inits(c=3):
    return [_rand("s", c), _rand("b", c), _rand("m", c), _rand("v", c, positive=True)]


PADS = [ints("p", [0, 0, 1, 1] * 2)]
CONV = [_rand("w", 4, 3, 3, 3), _rand("cb", 4)]
ACCEPTED = {
    "pad-avgpool": lambda: model([_node("Pad", ["x", "p"], "q"), _node("AveragePool", ["q"], "y", kernel_shape=[3, 3])],
                                 PADS),
    "pad-avgpool-ceil": lambda: model([_node("Pad", ["x", "p"], "q"),
                                       _node("AveragePool", ["q"], "y", kernel_shape=[3, 3], strides=[2, 2],
                                             ceil_mode=1)], PADS),
    "pad-avgpool-counted-pads": lambda: model([_node("Pad", ["x", "p"], "q"),
                                               _node("AveragePool", ["q"], "y", kernel_shape=[3, 3], pads=[0, 0, 0, 0],
                                                     count_include_pad=0)], PADS),
    "pad-old-attribute": lambda: model([_node("Pad", ["x"], "q", pads=[0, 0, 1, 1] * 2),
                                        _node("AveragePool", ["q"], "y", kernel_shape=[3, 3])], opset=10),
    "minus-inf-pad-maxpool": lambda: model([_node("Pad", ["x", "p", "low"], "q"),
                                            _node("MaxPool", ["q"], "y", kernel_shape=[3, 2], strides=[2, 2])],
                                           [ints("p", [0, 0, 1, 1, 0, 0, 2, 2]), floats("low", -np.inf)]),
    "minus-inf-pad-old-attribute": lambda: model([_node("Pad", ["x"], "q", pads=[0, 0, 1, 1] * 2, value=-np.inf),
                                                  _node("MaxPool", ["q"], "y", kernel_shape=[3, 3])], opset=10),
    "avgpool-counted-pads": lambda: one("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
    "avgpool-ceil": lambda: one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "avgpool-ceil-counted-pads": lambda: one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                             ceil_mode=1, count_include_pad=1),
    "avgpool-uncounted-no-pads": lambda: one("AveragePool", kernel_shape=[2, 2], strides=[2, 2]),
    "avgpool-same-no-padding": lambda: one("AveragePool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    "maxpool-ceil-pads": lambda: one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    "maxpool-asymmetric": lambda: one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
    "maxpool-same-upper": lambda: one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    "maxpool-dilated": lambda: one("MaxPool", kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
    "conv-same": lambda: model([_node("Conv", ["x", "w", "cb"], "y", auto_pad="SAME_UPPER")], CONV),
    "conv-depthwise-dilated": lambda: model([_node("Conv", ["x", "w"], "y", group=3, pads=[2, 2, 2, 2],
                                                   dilations=[2, 2])], [_rand("w", 6, 1, 3, 3)]),
    "conv-shared-weight": lambda: model([_node("Identity", ["w"], "w2"), _node("Conv", ["x", "w2"], "y")], CONV[:1]),
    "gemm-transposed": lambda: flat("Gemm", [_rand("w", 5, 192), _rand("b", 1, 5)], transB=1),
    "gemm": lambda: flat("Gemm", [_rand("w", 192, 5), _rand("b", 5)]),
    "matmul-add": lambda: model([_node("Flatten", ["x"], "f"), _node("MatMul", ["f", "w"], "fc"),
                                 _node("Add", ["b", "fc"], "y")], [_rand("w", 192, 5), _rand("b", 5)]),
    "bn": lambda: model([_node("BatchNormalization", ["x", "s", "b", "m", "v"], "y", epsilon=1e-3)], _bn_inits()),
    "bn-opset-15": lambda: model([_node("BatchNormalization", ["x", "s", "b", "m", "v"], "y", training_mode=0)],
                                 _bn_inits(), opset=15),
    "lrn": lambda: one("LRN", size=3, alpha=1e-3, beta=0.7, bias=1.5),
    "softmax-channels": lambda: one("Softmax", axis=1),
    "softmax-old-opset": lambda: model([_node("GlobalAveragePool", ["x"], "g"), _node("Softmax", ["g"], "y", axis=1)],
                                       opset=11),
    "activations": lambda: model([_node("Elu", ["x"], "e", alpha=0.3), _node("LeakyRelu", ["e"], "l", alpha=0.3),
                                  _node("HardSwish", ["l"], "s"), _node("Clip", ["s", "lo", "hi"], "c"),
                                  _node("Gelu", ["c"], "g"), _node("Tanh", ["g"], "y")],
                                 [floats("lo", 0.0), floats("hi", 6.0)], opset=20),
    "dropout-not-training": lambda: one("Dropout", ("x", "r", "t"), [floats("r", 0.5),
                                                                     nh.from_array(np.array(False), "t")]),
    "reshape-batch-kept": lambda: model([_node("Reshape", ["x", "s"], "y")], [ints("s", [0, -1])], shape=("N", 3, 8, 8)),
    "reshape-one-row-of-one": lambda: model([_node("Reshape", ["x", "s"], "y")], [ints("s", [1, -1])]),
    "merge": lambda: model([_node("Relu", ["x"], "r"), _node("Add", ["x", "r"], "a"), _node("Sum", ["a", "r", "x"], "s"),
                            _node("Concat", ["s", "r"], "y", axis=-3)]),
    "many-ops-10": lambda: _many_ops(10),
    "many-ops-17": lambda: _many_ops(17),
}


@pytest.mark.parametrize("make", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_patterns_compute_what_onnx_runtime_computes(make):
    assert _disagreement(make()) < 1e-4


def _random_cnn(r):
    """A small random model: feature-map layers with random attributes (many invalid, or beyond the IR), then
    sometimes a flatten (Flatten or Reshape) and a head of Gemm / MatMul (+Add) layers."""
    nodes, inits, cur, channels, count = [], [], "x", 3, iter(range(1000))
    hw = [r.randint(5, 12), r.randint(5, 12)]

    def new(prefix):
        return f"{prefix}{next(count)}"
    for _ in range(r.randint(1, 4)):
        kind, out = r.choice(["conv", "pool", "padpool", "bn", "act", "lrn", "merge", "concat", "global"]), new("v")
        if kind == "conv":
            group = r.choice([1, 1, channels])
            width = r.choice([2, 4]) * group
            w, b = new("w"), new("b")
            inits += [_rand(w, width, channels // group, r.choice([1, 2, 3]), r.choice([1, 2, 3])), _rand(b, width)]
            attrs = {"strides": [r.choice([1, 2]), r.choice([1, 2])], "group": group, "dilations": [r.choice([1, 2])] * 2}
            if r.random() < .3:
                attrs["auto_pad"] = r.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
            else:
                attrs["pads"] = [r.choice([0, 1]), r.choice([0, 1])] * 2
            nodes.append(_node("Conv", [cur, w, b], out, **attrs))
            channels = width
        elif kind in ("pool", "padpool"):
            low = kind == "padpool" and r.random() < .4        # a -inf Pad, before a MaxPool
            op = r.choice(["MaxPool", "AveragePool"]) if kind == "pool" else "MaxPool" if low else "AveragePool"
            attrs = {"kernel_shape": [r.choice([1, 2, 3]), r.choice([1, 2, 3])], "ceil_mode": r.choice([0, 1]),
                     "strides": [r.choice([1, 2, 3]), r.choice([1, 2])]}
            if op == "AveragePool":
                attrs["count_include_pad"] = r.choice([0, 1])
            elif r.random() < .3:
                attrs["dilations"] = [r.choice([1, 2])] * 2
            if r.random() < .3:
                attrs["auto_pad"] = r.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
            elif r.random() < .6:
                attrs["pads"] = [r.choice([0, 1]) for _ in range(4)]
            if kind == "padpool":
                padded, amounts, ph, pw = new("pad"), new("pads"), r.choice([0, 1, 2]), r.choice([0, 1, 2])
                ends = [r.choice([0, 1, 2]), r.choice([0, 1, 2])] if low else [ph, pw]
                inits.append(ints(amounts, [0, 0, ph, pw, 0, 0, *ends]))
                if low:
                    inits.append(floats(amounts + "low", -np.inf))
                nodes.append(_node("Pad", [cur, amounts] + ([amounts + "low"] if low else []), padded))
                cur = padded
            nodes.append(_node(op, [cur], out, **attrs))
        elif kind == "bn":
            names = [new(p) for p in "sbmv"]
            inits += [_rand(names[0], channels), _rand(names[1], channels), _rand(names[2], channels),
                      _rand(names[3], channels, positive=True)]
            nodes.append(_node("BatchNormalization", [cur] + names, out, epsilon=r.choice([1e-5, 0.1])))
        elif kind == "act":
            op = r.choice(["Relu", "Tanh", "Sigmoid", "Elu", "LeakyRelu", "HardSwish", "Dropout", "Identity"])
            nodes.append(_node(op, [cur], out, **({"alpha": r.choice([0.1, 1.7])} if op in ("Elu", "LeakyRelu")
                                                   else {})))
        elif kind == "lrn":
            nodes.append(_node("LRN", [cur], out, size=r.choice([1, 3, 5]), alpha=r.choice([1e-4, 0.5]), beta=0.75))
        elif kind in ("merge", "concat"):
            other = new("r")
            nodes.append(_node("Sigmoid", [cur], other))
            if kind == "merge":
                nodes.append(_node(r.choice(["Add", "Sum"]), [cur, other], out))
            else:
                nodes.append(_node("Concat", [cur, other], out, axis=r.choice([1, -3])))
                channels *= 2
        else:
            nodes.append(_node(r.choice(["GlobalAveragePool", "GlobalMaxPool"]), [cur], out))
        cur = out
    batch = r.choice([1, 2, "N"])
    if r.random() < .5:
        probe = model(list(nodes), list(inits), shape=(1, 3, *hw), output=cur)
        try:
            features = int(np.prod(_ort_run(probe, np.zeros((1, 3, *hw), np.float32)).shape[1:]))
        except Exception:       # ORT refuses the body: the importer must too
            features = 7
        out, how = new("f"), r.choice(["Flatten", [0, -1], [1, -1], [-1, features]])
        if how == "Flatten":
            nodes.append(_node("Flatten", [cur], out))
        else:
            shape = new("shape")
            inits.append(ints(shape, how))
            nodes.append(_node("Reshape", [cur, shape], out))
        cur = out
        for _ in range(r.randint(1, 3)):
            out, width, kind, w, b = new("fc"), r.choice([3, 5]), r.choice(["gemmT", "gemm", "matmul", "add"]), \
                new("w"), new("b")
            if kind.startswith("gemm"):
                inits.append(_rand(w, *((width, features) if kind == "gemmT" else (features, width))))
                bias = r.choice([None, (width,), (1, width)])
                if bias:
                    inits.append(_rand(b, *bias))
                nodes.append(_node("Gemm", [cur, w] + ([b] if bias else []), out, transB=int(kind == "gemmT")))
            else:
                inits.append(_rand(w, features, width))
                if kind == "matmul":
                    nodes.append(_node("MatMul", [cur, w], out))
                else:
                    product = new("mm")
                    inits.append(_rand(b, *r.choice([(width,), (1, width)])))
                    nodes.append(_node("MatMul", [cur, w], product))
                    nodes.append(_node("Add", r.choice([[product, b], [b, product]]), out))
            features, cur = width, out
    return model(nodes, inits, shape=(batch, 3, *hw), output=cur, opset=r.choice([13, 17, 18]))


def test_random_models_that_import_compute_what_onnx_runtime_computes():
    """Random pooling, padding, convolution and head patterns: whatever the importer accepts, written back to
    ONNX by cnndsl, computes what ONNX Runtime computes on the original (and ORT runs the original)."""
    import random
    r = random.Random(2024)
    accepted = 0
    for i in range(300):
        m = _random_cnn(r)
        try:
            import_onnx(m)
        except cnndsl.CnnDslError:
            continue
        accepted += 1
        assert _disagreement(m, seed=i) < 1e-4, (i, [(n.op_type, list(n.input)) for n in m.graph.node])
    assert accepted > 100


# ------------------------------------------------------ cnndsl run ----

def run_refused(result, *fragments, path=None):
    """A run error (exit 1) with every fragment in the message; no traceback, no internal error."""
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert "run error: " in out, out
    if path is not None:
        assert f"{path}: run error: " in out, out
    for fragment in fragments:
        assert fragment in out, out
    return out


def typed(nodes, inits=(), out_type=T.FLOAT, shape=SHAPE, output=None, opset=17, functions=()):
    """A model whose output is declared as `out_type` (or as the value info `output`)."""
    out = output or h.make_tensor_value_info("y", out_type, None)
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, list(shape))], [out], list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], functions=list(functions))
    m.ir_version = 10
    return m


OUTPUTS = {   # outputs ORT computes but that are no scores to rank: (model, message, whether -o writes it)
    "scalar": (lambda: typed([h.make_node("ReduceSum", ["x"], ["y"], keepdims=0)]), "is a scalar (float32)", True),
    "bool": (lambda: typed([h.make_node("Greater", ["x", "z"], ["y"])], [floats("z", 0.0)], T.BOOL),
             "is a tensor of booleans (shape 1x3x8x8), not scores", True),
    "string": (lambda: typed([h.make_node("Cast", ["x"], ["y"], to=T.STRING)], out_type=T.STRING),
               "is a tensor of strings (shape 1x3x8x8)", False),
    "sequence": (lambda: typed([h.make_node("SequenceConstruct", ["x"], ["y"])],
                               output=h.make_tensor_sequence_value_info("y", T.FLOAT, None)), "is a sequence", False),
    "empty": (lambda: typed([h.make_node("Slice", ["x", "s", "e", "a"], ["y"])],
                            [ints("s", [0]), ints("e", [0]), ints("a", [1])]), "is empty (shape 1x0x8x8)", True),
}


@pytest.mark.parametrize("case", OUTPUTS, ids=list(OUTPUTS))
def test_run_refuses_outputs_that_are_not_scores(tmp_path, case):
    make, fragment, writable = OUTPUTS[case]
    path = save(tmp_path, make())
    run_refused(cli("run", path), fragment)
    result = cli("run", path, "-o", tmp_path / "out.npy")
    if writable:        # a tensor of numbers or booleans, whatever its shape, is written as it is
        assert result.exit_code == 0, result.output
        assert np.load(tmp_path / "out.npy", allow_pickle=False).dtype != object
    else:
        run_refused(result, "cnndsl run handles tensors of numbers")
        assert not (tmp_path / "out.npy").exists()


def test_run_ranks_integer_outputs_and_handles_a_scalar_input(tmp_path):
    path = save(tmp_path, typed([h.make_node("Cast", ["x"], ["c"], to=T.UINT8),
                                 h.make_node("Flatten", ["c"], ["y"])], out_type=T.UINT8))
    np.save(tmp_path / "x.npy", np.arange(192, dtype=np.float32).reshape(1, 3, 8, 8) % 200)
    result = cli("run", path, "--input-file", tmp_path / "x.npy", "--top-k", "2")
    assert result.exit_code == 0 and "[0] 191:191.0000  190:190.0000" in result.output, result.output
    scalar = save(tmp_path, typed([h.make_node("Relu", ["x"], ["y"])], shape=()), "scalar.onnx")
    run_refused(cli("run", scalar), "is a scalar")
    result = cli("run", scalar, "-o", tmp_path / "s.npy", "--bench", "--seconds", "0.05")
    assert result.exit_code == 0 and "runs at batch 1" in result.output, result.output


def test_run_refuses_empty_and_scalar_inputs(tmp_path):
    path = save(tmp_path, typed([h.make_node("Relu", ["x"], ["y"])], shape=("N", 3, 8, 8)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 8, 8), np.float32))
    run_refused(cli("run", path, "--input-file", tmp_path / "empty.npy"), "the input array is empty (shape 0x3x8x8)")
    np.save(tmp_path / "scalar.npy", np.float32(3))
    run_refused(cli("run", path, "--input-file", tmp_path / "scalar.npy"),
                "the input is a scalar, the model takes Nx3x8x8")


def test_run_refuses_input_files_that_are_not_arrays_it_can_read(tmp_path):
    import threading
    path = save(tmp_path, typed([h.make_node("Relu", ["x"], ["y"])]))
    os.mkfifo(tmp_path / "fifo.npy")
    done = threading.Event()

    def unblock():      # if the command opened the FIFO for reading, open it for writing so the test ends
        while not done.wait(0.5):
            try:
                os.close(os.open(tmp_path / "fifo.npy", os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    threading.Thread(target=unblock, daemon=True).start()
    try:
        start = time.perf_counter()
        run_refused(cli("run", path, "--input-file", tmp_path / "fifo.npy"), "fifo.npy is not a regular file")
        assert time.perf_counter() - start < 5
        os.mkfifo(tmp_path / "fifo.onnx")     # the model itself too
        run_refused(cli("run", tmp_path / "fifo.onnx"), "fifo.onnx is not a regular file")
    finally:
        done.set()
    # a .npy header that declares more data than the file holds is refused before anything is allocated
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    data = (tmp_path / "x.npy").read_bytes().replace(b"(1, 3, 8, 8)", b"(9999999999, 3)")
    (tmp_path / "lies.npy").write_bytes(data)
    run_refused(cli("run", path, "--input-file", tmp_path / "lies.npy"), "its header declares 119,999,999,988 bytes")
    (tmp_path / "pickle.npy").write_bytes(b"\x80\x04K\x01.")
    run_refused(cli("run", path, "--input-file", tmp_path / "pickle.npy"), "cannot read")
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    run_refused(cli("run", path, "--input-file", tmp_path / "two.npz"), "is not a .npy array")


def _loop(trip=2 ** 62):
    """Loop with a huge trip count and a condition that stays true: ORT would run it for ever."""
    body = h.make_graph([h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Relu", ["v_in"], ["v_out"])],
                        "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
                                 h.make_tensor_value_info("v_in", T.FLOAT, None)],
                        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, None)])
    return [h.make_node("Loop", ["M", "c", "x"], ["y"], name="forever", body=body)], \
        [nh.from_array(np.array(trip, np.int64), "M"), nh.from_array(np.array(True), "c")]


def _in_if(nodes, inits, depth=1):
    """`nodes` inside the then-branch of an If (nested `depth` times); the constants stay in the outer graph."""
    for level in range(depth):
        result = nodes[-1].output[0]
        branch = h.make_graph(nodes, f"then{level}", [], [h.make_tensor_value_info(result, T.FLOAT, None)])
        other = h.make_graph([h.make_node("Identity", ["x"], [f"else{level}"])], f"else{level}", [],
                             [h.make_tensor_value_info(f"else{level}", T.FLOAT, None)])
        nodes = [h.make_node("If", ["flag"], [f"if{level}" if level < depth - 1 else "y"], name=f"choose{level}",
                             then_branch=branch, else_branch=other)]
    return nodes, inits + [nh.from_array(np.array(True), "flag")]


def _scan():
    body = h.make_graph([h.make_node("Add", ["s_in", "e"], ["s_out"]), h.make_node("Identity", ["s_out"], ["o"])], "b",
                        [h.make_tensor_value_info("s_in", T.FLOAT, [8]), h.make_tensor_value_info("e", T.FLOAT, [8])],
                        [h.make_tensor_value_info("s_out", T.FLOAT, [8]), h.make_tensor_value_info("o", T.FLOAT, [8])])
    return typed([h.make_node("Scan", ["s0", "x2"], ["y", "all"], name="scan", body=body, num_scan_inputs=1)],
                 [zeros("s0", 8), zeros("x2", 4, 8)])


def _function_with_loop():
    nodes, inits = _loop()
    f = h.make_function("local", "Forever", ["x", "M", "c"], ["y"], nodes, [h.make_opsetid("", 17)])
    return typed([h.make_node("Forever", ["x", "M", "c"], ["y"], domain="local")], inits, opset=17, functions=[f])


def _model_with_opsets(m):
    m.opset_import.append(h.make_opsetid("local", 1))
    return m


LOOPS = {
    "loop": lambda: typed(*_loop()),
    "loop-in-if": lambda: typed(*_in_if(*_loop())),
    "loop-deep-in-if": lambda: typed(*_in_if(*_loop(), depth=5)),
    "scan": _scan,
    "loop-in-function": lambda: _model_with_opsets(_function_with_loop()),
}


@pytest.mark.parametrize("case", LOOPS, ids=list(LOOPS))
def test_run_refuses_loops_before_onnx_runtime_runs_them(tmp_path, case, monkeypatch):
    path = save(tmp_path, LOOPS[case]())
    import onnxruntime

    def never(*a, **k):
        raise AssertionError("ONNX Runtime was given the model")
    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    start = time.perf_counter()
    run_refused(cli("run", path), "runs a graph as many times as the model says", path=path)
    assert time.perf_counter() - start < 5


def test_run_stops_a_model_that_overstays_its_timeout(tmp_path, monkeypatch):
    """Whatever the pre-check misses, --timeout stops ONNX Runtime (here: the Loop, with the check skipped)."""
    from cnndsl.backends import from_onnx
    path = save(tmp_path, typed(*_loop()))
    monkeypatch.setattr(from_onnx, "check_before_run", lambda path: None)
    start = time.perf_counter()
    run_refused(cli("run", path, "--timeout", "0.5"), "ONNX Runtime was stopped after 0.5 s")
    assert time.perf_counter() - start < 10


SIZES = {   # ops whose output size comes from values: (model, message); these are refused before ORT loads them
    "constantofshape-computed": (lambda: typed([h.make_node("Shape", ["x"], ["s"]),
                                                h.make_node("ConstantOfShape", ["s"], ["y"])]),
                                 "ConstantOfShape 'y' takes its shape from 's', which is not a small constant"),
    "constantofshape-huge": (lambda: typed([h.make_node("ConstantOfShape", ["s"], ["y"])], [ints("s", [1 << 20] * 2)]),
                             "would make 1,099,511,627,776 elements (its shape)"),
    "expand-data-dependent": (lambda: typed([h.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                                             h.make_node("Cast", ["m"], ["n"], to=T.INT64),
                                             h.make_node("Reshape", ["n", "one"], ["s"]),
                                             h.make_node("Expand", ["x", "s"], ["y"])], [ints("one", [1])]),
                              "Expand 'y' takes its shape from 's'"),
    "tile-huge": (lambda: typed([h.make_node("Tile", ["x", "r"], ["y"])], [ints("r", [1, 1, 1000, 1000])]),
                  "would make 1,000,000 times its input (its repeats)"),
    "range-huge": (lambda: typed([h.make_node("Range", ["a", "b", "c"], ["y"])],
                                 [floats("a", 0.0), floats("b", 1e12), floats("c", 1.0)]), "Range 'y' would make"),
    "range-overflow": (lambda: typed([h.make_node("Range", ["a", "b", "c"], ["y"])],
                                     [nh.from_array(np.array(v), n) for n, v in (("a", -1e308), ("b", 1e308),
                                                                                 ("c", 1e-308))], T.DOUBLE),
                       "Range 'y' would make infinitely many elements"),
    "range-computed": (lambda: typed([h.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                                      h.make_node("Range", ["a", "m", "c"], ["y"])], [floats("a", 0.0), floats("c", 1e-9)]),
                       "Range 'y' takes its range from 'm'"),
    "resize-huge": (lambda: typed([h.make_node("Resize", ["x", "", "sc"], ["y"])], [floats("sc", [1, 1, 1000, 1000])]),
                    "would make 1,000,000 times its input (its scales)"),
    "pad-huge": (lambda: typed([h.make_node("Pad", ["x", "p"], ["y"])], [ints("p", [0, 0, 1000, 1000] * 2)]),
                 "times its input (its pads)"),
    "random-huge": (lambda: typed([h.make_node("RandomNormal", [], ["y"], shape=[1 << 16, 1 << 16])]),
                    "RandomNormal 'y' would make 4,294,967,296 elements"),
    "onehot-computed": (lambda: typed([h.make_node("ReduceMax", ["x"], ["d"], keepdims=0),
                                       h.make_node("OneHot", ["x", "d", "v"], ["y"])], [floats("v", [0, 1])]),
                        "OneHot 'y' takes its depth from 'd'"),
    "in-if": (lambda: typed(*_in_if([h.make_node("ConstantOfShape", ["s"], ["t"])], [ints("s", [1 << 20] * 2)])),
              "would make 1,099,511,627,776 elements"),
}


@pytest.mark.parametrize("case", SIZES, ids=list(SIZES))
def test_run_refuses_sizes_it_cannot_bound(tmp_path, case, monkeypatch):
    make, fragment = SIZES[case]
    path = save(tmp_path, make())
    import onnxruntime

    def never(*a, **k):
        raise AssertionError("ONNX Runtime was given the model")
    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    run_refused(cli("run", path), fragment, path=path)


def test_run_still_runs_models_with_small_constant_sizes(tmp_path):
    cases = [typed([h.make_node("ConstantOfShape", ["s"], ["y"], value=floats("v", [1.5]))], [ints("s", [1, 5])]),
             typed([h.make_node("Resize", ["x", "", "sc"], ["y"])], [floats("sc", [1, 1, 2, 2])]),
             typed([h.make_node("Constant", [], ["r"], value_ints=[1, 1, 2, 2]), h.make_node("Tile", ["x", "r"], ["y"])]),
             typed(*_in_if([h.make_node("Relu", ["x"], ["t"])], [])),
             typed([h.make_node("Pad", ["x", "p"], ["y"])], [ints("p", [0, 0, 1, 1] * 2)])]
    for i, m in enumerate(cases):
        result = cli("run", save(tmp_path, m, f"m{i}.onnx"))
        assert result.exit_code == 0 and "[0] " in result.output, (i, result.output)


def test_run_refuses_external_data_outside_the_folder_anywhere_in_the_model(folders):
    inside, outside = folders
    m = typed(*_in_if([h.make_node("Add", ["x", "w"], ["t"])], []))
    branch = m.graph.node[0].attribute[0].g if m.graph.node[0].attribute[0].name == "then_branch" else \
        m.graph.node[0].attribute[1].g
    branch.initializer.append(_external(zeros("w", 1), str(outside / "secret.bin")))
    path = save(inside, m)
    out = cli("run", path).output
    assert "external data" in out and not _secret_leaked(out), out


# ------------------------------------------------------------- limits ----

def _residual(units: int, same_name=None):
    nodes, x = [], "x"
    for i in range(units):
        name = (lambda part: same_name) if same_name else (lambda part: f"unit{i}/{part}")
        nodes += [h.make_node("Conv", [x, "w"], [f"a{i}"], name=name("conv1"), pads=[1, 1, 1, 1]),
                  h.make_node("Relu", [f"a{i}"], [f"b{i}"], name=name("relu1")),
                  h.make_node("Conv", [f"b{i}", "w"], [f"c{i}"], name=name("conv2"), pads=[1, 1, 1, 1]),
                  h.make_node("Add", [f"c{i}", x], [f"d{i}"], name=name("add")),
                  h.make_node("Relu", [f"d{i}"], [f"e{i}"], name=name("relu2"))]
        x = f"e{i}"
    return model(nodes, [zeros("w", 4, 4, 3, 3)], shape=(1, 4, 8, 8), output=x)


@pytest.mark.parametrize("same_name", [None, "same"])
def test_ten_thousand_residual_units_import_in_linear_time(tmp_path, same_name):
    """10x the units must cost about 10x the time (renaming 50,000 equal names one by one was quadratic: minutes);
    timed against 1,000 units in the same run, so a loaded machine slows both alike (best of 3 for the small)."""
    small = save(tmp_path, _residual(1_000, same_name), "small.onnx")
    large = save(tmp_path, _residual(10_000, same_name), "large.onnx")
    times = []
    for path, tries in ((small, 3), (large, 1)):
        best = float("inf")
        for _ in range(tries):
            start = time.perf_counter()
            graph = import_onnx(str(path))
            best = min(best, time.perf_counter() - start)
        times.append(best)
    assert len(graph) == 50_001 and len({n.name for n in graph.nodes}) == 50_001
    assert times[1] < 25 * times[0] + 0.5, times     # linear: ~10x; quadratic: ~100x


def test_node_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_NODES", 45)
    path = save(tmp_path, _residual(9))
    assert len(import_onnx(str(path))) == 46
    path = save(tmp_path, _residual(10))
    refused(cli("analyze", path), path, "the model has 50 nodes, beyond the limit of 45")


@pytest.mark.slow
def test_node_count_limit_for_real(tmp_path):
    path = save(tmp_path, _residual(limits.MAX_NODES // 5 + 1))
    refused(cli("analyze", path), path, f"beyond the limit of {limits.MAX_NODES:,}")


def test_dimension_limits(tmp_path):
    # an output channel count beyond MAX_DIM, its weight in a sparse external file (nothing is read)
    out = limits.MAX_DIM + 1
    (tmp_path / "w.bin").open("wb").truncate(out * 3 * 4)
    m = model([h.make_node("Conv", ["x", "w"], ["y"], name="wide")], [_external(zeros("w", 1, 3, 1, 1), "w.bin")])
    m.graph.initializer[0].dims[0] = out
    path = save(tmp_path, m)
    refused(cli("analyze", path), path, f"output channel count {out:,} is beyond the limit")
    # channels that sum past it in a concat
    m = model([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Concat", ["c", "c"], ["y"], axis=1)],
              [_external(zeros("w", 1, 3, 1, 1), "w.bin")])
    m.graph.initializer[0].dims[0] = limits.MAX_DIM
    (tmp_path / "w.bin").open("wb").truncate(limits.MAX_DIM * 3 * 4)
    path = save(tmp_path, m)
    refused(cli("analyze", path), path, "beyond the limit of 1,048,576 per dimension")
    # an input size override beyond it
    with pytest.raises(cnndsl.CnnDslError, match="input size 2000000x8x3 is beyond the limit"):
        import_onnx(one("Relu"), (2_000_000, 8, 3))
    # a value tensor of 10,000 numbers is refused unread
    path = save(tmp_path, one("Pad", ("x", "p"), [ints("p", np.zeros(10_000))]))
    refused(cli("analyze", path), path, "has 10,000 values; cnndsl reads at most 64")


def test_valid_corner_cases_still_import(tmp_path):
    """Valid ONNX that the checks must not refuse."""
    add_self = model([h.make_node("Add", ["x", "x"], ["y"])])
    sum_one = model([h.make_node("Sum", ["x"], ["s"]), h.make_node("Relu", ["s"], ["y"])])
    concat_one = model([h.make_node("Concat", ["x"], ["c"], axis=-3), h.make_node("Relu", ["c"], ["y"])])
    depthwise = conv(w=(6, 1, 3, 3), group=3, auto_pad="SAME_LOWER")
    old_clip = one("Clip", opset=6, min=0.0, max=6.0)
    for m, shape in ((add_self, (3, 8, 8)), (sum_one, (3, 8, 8)), (concat_one, (3, 8, 8)), (depthwise, (6, 8, 8)),
                     (old_clip, (3, 8, 8))):
        assert not ort_refuses(m)
        path = save(tmp_path, m)
        assert import_onnx(str(path)).output.shape == shape
        assert cli("analyze", path).exit_code == 0
    # an even LRN size is valid ONNX and PyTorch; only ORT's CPU kernel refuses it, and cnndsl keeps it
    even = one("LRN", size=4)
    assert ort_refuses(even) and import_onnx(even).output.attrs["size"] == 4
