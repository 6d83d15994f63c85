"""`cnndsl train`, eval and predict on real and tiny data: learning, exact resume, SIGINT, transfer, DDP."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnndsl
from conftest import ROOT

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from cnndsl.train import data as data_mod  # noqa: E402
from cnndsl.train.trainer import Interrupted, TrainConfig, Trainer, load_checkpoint, train_distributed  # noqa: E402

SMALL = "input 16x16x1\nconv3-8 + maxpool | conv3-16 + maxpool | fc32 + dropout0.2 | fc4"
SMALL_NO_DROPOUT = "input 16x16x1\nconv3-8 + maxpool | conv3-8 + maxpool | fc4"


def quadrant_data(n=384, seed=0):
    """Images whose label is the brightest quadrant: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 80, (n, 1, 16, 16)).astype(np.uint8)
    y = rng.integers(0, 4, n)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 0, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 120
    return x, y


def write_npz(path: Path, n=384) -> Path:
    x, y = quadrant_data(n)
    xt, yt = quadrant_data(128, seed=1)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def trainer(tmp_path, spec=SMALL, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    dataset = data_mod.load(str(write_npz(tmp_path / "q.npz")))
    config = TrainConfig(**{"epochs": 2, "batch_size": 32, "device": "cpu", **kw})
    return Trainer(cnndsl.compile_text(spec), dataset, config, tmp_path / "run")


def test_learns_the_quadrant_task(tmp_path):
    t = trainer(tmp_path, epochs=3, augment={"crop": 1, "exposure": 0.1})   # no flip: it would swap quadrants
    summary = t.run()
    assert summary["best_test_accuracy"] > 0.9
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "best.pt").exists()


def test_resume_mid_epoch_is_bit_exact(tmp_path):
    cfg = dict(epochs=2, augment={"flip": 0.5, "crop": 2, "exposure": 0.2})
    straight = trainer(tmp_path / "a", **cfg)
    straight.run()
    # interrupt in the middle of the first epoch (as Ctrl-C would), then resume in a fresh trainer
    first = trainer(tmp_path / "b", **cfg)
    first.progress_every = 1
    first.progress = lambda e: setattr(first, "stop_requested", e["event"] == "step" and e["step"] >= 5)
    with pytest.raises(Interrupted):
        first.run()
    payload = load_checkpoint(str(tmp_path / "b" / "run" / "last.pt"))
    assert payload["epoch"] == 0 and 0 < payload["step"] < first.steps_per_epoch
    second = trainer(tmp_path / "b", **cfg)
    second.restore(payload)
    second.run()
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigint_saves_and_resume_finishes(tmp_path):
    npz = write_npz(tmp_path / "q.npz", n=1024)
    run = tmp_path / "run"
    spec = tmp_path / "small.cnn"
    spec.write_text(SMALL)
    # many short epochs, so the signal sent as soon as epoch 1 is logged lands mid-run on any machine
    # --lr 0.01: at the default 0.05 this net without batch norm diverges in epoch 2 (loss ~1e12), which the
    # trainer now reports as an error instead of finishing with NaN-sized weights
    args = [sys.executable, "-m", "cnndsl", "train", str(spec), "--data", str(npz), "--epochs", "12",
            "--batch-size", "16", "--device", "cpu", "--quiet", "--lr", "0.01"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args + ["--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    saved = load_checkpoint(str(run / "last.pt"))
    assert 1 <= saved["epoch"] < 12
    done = subprocess.run(args + ["--resume", str(run)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["epochs"] == 12
    logged = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))      # every epoch logged exactly once across the two runs


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, cli):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    npz = write_npz(tmp_path / "q.npz")
    spec = tmp_path / "s.cnn"
    spec.write_text(SMALL)
    result = cli("eval", str(spec), "--weights", str(bad), "--data", str(npz))
    assert result.exit_code == 1 and "cannot read checkpoint" in result.output and "Traceback" not in result.output


def test_class_count_must_match_or_be_replaced(tmp_path):
    with pytest.raises(cnndsl.CnnDslError, match="--classes 4"):
        trainer(tmp_path, spec=SMALL.replace("fc4", "fc10"))
    t = trainer(tmp_path, spec=SMALL.replace("fc4", "fc10"), classes=4, epochs=1)
    assert t.graph.output.shape == (4,)


def test_transfer_learning_freezes_backbone_and_replaces_head(tmp_path, cli):
    source = trainer(tmp_path / "src", epochs=1)
    source.run()
    ckpt = tmp_path / "src" / "run" / "best.pt"
    spec = SMALL.replace("fc4", "fc3")       # a new task with 3 classes
    x, y = quadrant_data(256)
    keep = y < 3
    np.savez(tmp_path / "three.npz", x_train=x[keep], y_train=y[keep], x_test=x[keep][:64], y_test=y[keep][:64])
    dataset = data_mod.load(str(tmp_path / "three.npz"))
    config = TrainConfig(epochs=1, batch_size=32, device="cpu", init=str(ckpt), freeze=("backbone",))
    t = Trainer(cnndsl.compile_text(spec), dataset, config, tmp_path / "dst")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    src = load_checkpoint(str(ckpt))["model"]
    assert torch.equal(before["stage1.conv1.weight"], src["stage1.conv1.weight"])      # conv weights carried over
    t.run()
    after = t.model.state_dict()
    head = t.head_prefix
    for k, v in after.items():
        if k.startswith(head):
            assert not torch.equal(v, before[k])
        elif v.dtype.is_floating_point:
            assert torch.equal(v, before[k]), k


def test_distributed_two_processes_match_one(tmp_path):
    dataset = data_mod.load(str(write_npz(tmp_path / "q.npz", n=256)))
    graph = cnndsl.compile_text(SMALL_NO_DROPOUT)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", augment={"flip": 0.5, "crop": 1}, lr=0.05)
    single = Trainer(graph, dataset, config, tmp_path / "one")
    single.run()
    summary = train_distributed(graph, dataset, config, tmp_path / "two", nproc=2)
    assert summary["epochs"] == 2
    two = load_checkpoint(str(tmp_path / "two" / "last.pt"))["model"]
    one = single.model.state_dict()
    for k in one:
        assert torch.allclose(one[k].float(), two[k].float(), atol=1e-5, rtol=1e-4), k


def test_distributed_worker_errors_and_divergence(tmp_path):
    """A CnnDslError inside a worker (rank 0 cannot write metrics.jsonl) comes back as that diagnostic, not as a
    ProcessRaisedException with a traceback; a diverging DDP run stops in every process at the same step."""
    from cnndsl.train.trainer import TrainError
    dataset = data_mod.load(str(write_npz(tmp_path / "q.npz", n=64)))
    graph = cnndsl.compile_text(SMALL_NO_DROPOUT)
    (tmp_path / "run" / "metrics.jsonl").mkdir(parents=True)
    with pytest.raises(TrainError, match="cannot write .*metrics.jsonl") as info:
        train_distributed(graph, dataset, TrainConfig(epochs=1, batch_size=32, device="cpu"), tmp_path / "run", 2)
    assert "Traceback" not in str(info.value) and "Process" not in str(info.value)
    summary = train_distributed(graph, dataset, TrainConfig(epochs=3, batch_size=16, device="cpu", lr=1000.0),
                                tmp_path / "wild", 2)
    assert summary["diverged"] and summary["diverged_at"]["epoch"] == 1


def _idx(path: Path, array: np.ndarray):
    kind = 0x08
    header = struct.pack(">BBBB", 0, 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_tiny_fixtures_idx_npz_image_folder(tmp_path):
    x, y = quadrant_data(64)
    idx = tmp_path / "idx"
    idx.mkdir()
    _idx(idx / "train-images-idx3-ubyte", x[:, 0])
    _idx(idx / "train-labels-idx1-ubyte", y)
    _idx(idx / "t10k-images-idx3-ubyte", x[:16, 0])
    _idx(idx / "t10k-labels-idx1-ubyte", y[:16])
    d = data_mod.load(str(idx))
    assert d.train.images.shape == (64, 1, 16, 16) and d.test.labels.tolist() == y[:16].tolist()
    from PIL import Image
    folder = tmp_path / "imgs"
    for split, (xs, ys) in (("train", (x, y)), ("test", (x[:8], y[:8]))):
        for i, (img, label) in enumerate(zip(xs, ys)):
            (folder / split / f"class{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(folder / split / f"class{label}" / f"{i}.png")
    d = data_mod.load(str(folder), size=(20, 20))
    assert d.train.images.shape == (64, 3, 20, 20) and d.classes == ["class0", "class1", "class2", "class3"]
    t = Trainer(cnndsl.compile_text("input 20x20x1\nconv3-4 + maxpool | fc4"), d, TrainConfig(epochs=1, batch_size=16,
                device="cpu"), tmp_path / "run")
    assert t.run()["epochs"] == 1
    (idx / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 16, 16, 16) + b"\x00")
    with pytest.raises(cnndsl.CnnDslError, match="truncated"):
        data_mod.load(str(idx))


def test_missing_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNDSL_DATA", str(tmp_path))
    with pytest.raises(cnndsl.CnnDslError) as info:
        data_mod.load_cifar10(str(tmp_path))
    assert "cifar-10-batches-py" in info.value.hint


def test_sklearn_digits(tmp_path):
    pytest.importorskip("sklearn")
    d = data_mod.load("digits")
    t = Trainer(cnndsl.compile_text("input 8x8x1\nconv3-16 + maxpool | fc10"), d,
                TrainConfig(epochs=4, batch_size=64, device="cpu"), tmp_path / "run")
    assert t.run()["best_test_accuracy"] > 0.8


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="Debian's dataset-fashion-mnist")
def test_lenet_on_fashion_mnist(tmp_path, cli):
    result = cli("train", str(ROOT / "specs" / "lenet5.cnn"), "--data", "fashion-mnist", "--epochs", "2",
                 "--limit-train", "8000", "--optimizer", "adamw", "--lr", "0.003", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["best_test_accuracy"] > 0.6          # chance is 0.1
    records = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    ev = cli("eval", str(ROOT / "specs" / "lenet5.cnn"), "--weights", str(tmp_path / "run" / "best.pt"),
             "--data", "fashion-mnist", "--json")
    report = json.loads(ev.output)
    assert abs(report["accuracy"] - summary["best_test_accuracy"]) < 1e-9
    assert len(report["confusion"]) == 10 and sum(map(sum, report["confusion"])) == 10000


def test_predict_and_onnx_export_of_a_checkpoint(tmp_path, cli):
    t = trainer(tmp_path, epochs=1)
    t.run()
    ckpt = tmp_path / "run" / "best.pt"
    spec = tmp_path / "s.cnn"
    spec.write_text(SMALL)
    from PIL import Image
    x, y = quadrant_data(4, seed=5)
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(x[i, 0]).save(p)
        paths.append(str(p))
    result = cli("predict", str(spec), *paths, "--weights", str(ckpt))
    assert result.exit_code == 0 and result.output.count("img") == 4
    onnx_path = tmp_path / "m.onnx"
    built = cli("build", "--target", "onnx", str(spec), "--weights", str(ckpt), "-o", str(onnx_path), "--logits")
    assert built.exit_code == 0, built.output
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    model = t.model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(inp)).numpy()
    assert np.allclose(sess.run(None, {"input": inp})[0], want, atol=1e-4)
