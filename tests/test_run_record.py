"""Training runs as records: resume alone, refusal of a used folder, the lock, metrics after checkpoints, one
preprocessing for train/eval/predict/ONNX/`cnndsl run`, and mismatches named."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cnndsl
from conftest import ROOT

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from cnndsl.train import data as data_mod  # noqa: E402
from cnndsl.train.record import RunFolderError, RunLock, read_record  # noqa: E402
from cnndsl.train.trainer import TrainConfig, Trainer, load_checkpoint  # noqa: E402

SPEC = "input 16x16x1\nconv3-8 + maxpool | conv3-16 + maxpool | fc32 + dropout0.2 | fc4"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
RESULT_KEYS = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "test_loss", "lr")


def quadrant_npz(path: Path, n=512, side=16, seed=0) -> Path:
    """Images whose label is the brightest quadrant, at `side` x `side` pixels."""
    def make(count, s):
        rng = np.random.default_rng(s)
        x = rng.integers(0, 80, (count, 1, side, side)).astype(np.uint8)
        y = rng.integers(0, 4, count)
        half = side // 2
        for i, label in enumerate(y):
            r, c = divmod(int(label), 2)
            x[i, 0, r * half:(r + 1) * half, c * half:(c + 1) * half] += 120
        return x, y
    x, y = make(n, seed)
    xt, yt = make(128, seed + 1)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def cnndsl_cli(*args, cwd=None, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "cnndsl", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd or ROOT, timeout=timeout, **kw)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_results(a: list[dict], b: list[dict]) -> bool:
    return [[r[k] for k in RESULT_KEYS] for r in a] == [[r[k] for k in RESULT_KEYS] for r in b]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_checkpoint(str(a))["model"], load_checkpoint(str(b))["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A spec, data and one uninterrupted 4-epoch run of it: what interrupted runs must reproduce."""
    root = tmp_path_factory.mktemp("record")
    spec = root / "small.cnn"
    spec.write_text(SPEC)
    npz = quadrant_npz(root / "q.npz")
    base = ["train", spec, "--data", npz, "--epochs", "4", "--batch-size", "16", "--device", "cpu", "--quiet",
            "--lr", "0.01", "--augment", "crop=1,exposure=0.1"]
    done = cnndsl_cli(*base, "--out", root / "straight")
    assert done.returncode == 0, done.stderr
    return root, spec, npz, base


def test_the_run_folder_records_spec_settings_data_and_environment(setup):
    root, spec, npz, _ = setup
    record = read_record(root / "straight")
    assert record["spec"]["text"] == SPEC and record["settings"]["epochs"] == 4
    assert record["settings"]["lr"] == 0.01 and record["settings"]["augment"] == {"crop": 1, "exposure": 0.1}
    assert record["data"]["source"] == str(npz) and len(record["data"]["fingerprint"]) == 64
    assert record["data"]["train_images"] == 512 and record["data"]["classes"] == ["0", "1", "2", "3"]
    assert record["environment"]["torch"] == torch.__version__ and record["environment"]["device"] == "cpu"
    assert record["preprocessing"]["input"] == [1, 16, 16] and record["preprocessing"]["fit"] == "same"
    assert [r["epoch"] for r in metrics(root / "straight")] == [1, 2, 3, 4]
    for picture in ("curves.svg", "curves.png", "confusion.svg", "confusion.png"):
        assert (root / "straight" / picture).stat().st_size > 1000, picture


def test_sigint_then_resume_alone_is_bit_exact(setup):
    root, spec, npz, base = setup
    run = root / "sigint"
    proc = subprocess.Popen([sys.executable, "-m", "cnndsl", *map(str, base), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 1 <= load_checkpoint(str(run / "last.pt"))["epoch"] < 4
    # --resume alone, from another folder: the run's own spec, data and settings
    done = cnndsl_cli("train", "--resume", run, "--quiet", cwd=root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["epochs"] == 4
    assert same_results(metrics(run), metrics(root / "straight"))
    assert same_weights(run / "last.pt", root / "straight" / "last.pt")


KILLER = textwrap.dedent("""
    import os, signal, sys
    import cnndsl.train.trainer as t
    from cnndsl.train import record
    where, nth = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}
    if where == "checkpoint":           # SIGKILL half-way through writing the nth last.pt
        real = __import__("torch").save
        def save(payload, f, *a, **k):
            calls["n"] += 1
            if calls["n"] == nth:
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(payload, f, *a, **k)
        __import__("torch").save = save
    else:                               # SIGKILL after the nth checkpoint, before its metrics line
        real_log = t.Trainer.log
        def log(self, rec):
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_log(self, rec)
        t.Trainer.log = log
    from cnndsl.cli.main import main
    main(sys.argv[3:])
""")


@pytest.mark.parametrize("where,nth", [("checkpoint", 3), ("log", 2)])
def test_sigkill_then_resume_logs_every_epoch_once(setup, where, nth):
    root, spec, npz, base = setup
    run = root / f"kill-{where}"
    killed = subprocess.run([sys.executable, "-c", KILLER, where, str(nth), *map(str, base), "--out", str(run)],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    logged = [r["epoch"] for r in metrics(run)]
    assert len(logged) < 4
    with open(run / "metrics.jsonl", "a") as f:         # and a torn line, as a kill mid-write leaves
        f.write('{"epoch": 9, "train_lo')
    done = cnndsl_cli("train", "--resume", run, "--quiet")
    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3, 4]
    assert same_results(metrics(run), metrics(root / "straight"))
    assert same_weights(run / "last.pt", root / "straight" / "last.pt")


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_used_folder_is_refused_and_left_as_it_was(setup):
    root, spec, npz, base = setup
    before = snapshot(root / "straight")
    again = cnndsl_cli(*base, "--out", root / "straight")
    assert again.returncode != 0 and "already holds a run" in again.stderr and "--resume" in again.stderr
    assert "Traceback" not in again.stderr
    assert snapshot(root / "straight") == before


def test_force_moves_the_old_run_aside(setup, tmp_path):
    root, spec, npz, base = setup
    import shutil
    run = tmp_path / "run"
    shutil.copytree(root / "straight", run)
    before = snapshot(run)
    done = cnndsl_cli(*[a if a != "4" else "1" for a in base], "--out", run, "--force")
    assert done.returncode == 0, done.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before
    assert [r["epoch"] for r in metrics(run)] == [1]


def test_two_writers_one_is_refused(setup, tmp_path):
    root, spec, npz, base = setup
    run = tmp_path / "shared"
    args = [sys.executable, "-m", "cnndsl", *map(str, base), "--out", str(run)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
             for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(r for r in results if r[2] != 0)
    assert "another process" in loser[1] or "already holds a run" in loser[1], loser[1]
    assert "Traceback" not in loser[1]
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3, 4]


def test_the_lock_stops_a_library_writer(tmp_path):
    dataset = data_mod.load(str(quadrant_npz(tmp_path / "q.npz", n=64)))
    t = Trainer(cnndsl.compile_text(SPEC), dataset, TrainConfig(epochs=1, batch_size=32, device="cpu"), tmp_path / "r")
    (tmp_path / "r").mkdir()
    with RunLock(tmp_path / "r"):
        with pytest.raises(RunFolderError, match="another process"):
            t.run()
    t.run()
    with pytest.raises(RunFolderError, match="already holds a run"):
        Trainer(cnndsl.compile_text(SPEC), dataset, TrainConfig(epochs=1, batch_size=32, device="cpu"),
                tmp_path / "r").run()


def test_resume_refuses_changed_settings_but_extends_epochs(setup, tmp_path):
    root, spec, npz, base = setup
    import shutil
    run = tmp_path / "run"
    shutil.copytree(root / "straight", run)
    for flags, needle in ((["--lr", "0.1"], "lr was 0.01, not 0.1"), (["--batch-size", "8"], "batch_size was 16"),
                          (["--augment", "flip"], "augment was"), (["--optimizer", "sgd"], "optimizer was adamw")):
        refused = cnndsl_cli("train", "--resume", run, *flags)
        assert refused.returncode == 1 and needle in refused.stderr and "Traceback" not in refused.stderr, flags
    same = cnndsl_cli("train", "--resume", run, "--lr", "0.01", "--epochs", "5", "--quiet")    # 0.01 is the run's
    assert same.returncode == 0, same.stderr
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3, 4, 5]
    assert read_record(run)["settings"]["epochs"] == 4      # the record says how the run began
    other = tmp_path / "other.cnn"
    other.write_text(SPEC.replace("conv3-16", "conv3-12"))
    wrong = cnndsl_cli("train", other, "--resume", run)
    assert wrong.returncode == 1 and "layer 4 (conv2)" in wrong.stderr and "conv 3x3-12" in wrong.stderr
    assert f"{other}:2:" in wrong.stderr and "^" in wrong.stderr        # the spec's line, with a caret


def test_resume_refuses_data_that_changed(setup, tmp_path):
    root, spec, npz, base = setup
    run = tmp_path / "run"
    data = quadrant_npz(tmp_path / "q.npz", n=64)
    first = cnndsl_cli("train", spec, "--data", data, "--epochs", "2", "--batch-size", "16", "--device", "cpu",
                       "--quiet", "--out", run)
    assert first.returncode == 0, first.stderr
    quadrant_npz(data, n=64, seed=7)
    refused = cnndsl_cli("train", "--resume", run, "--epochs", "3")
    assert refused.returncode == 1 and "fingerprint" in refused.stderr


# ------------------------------------------------------------ one preprocessing --

@pytest.mark.parametrize("side", [14, 16, 24])     # padded, as it is, resampled
def test_predict_eval_and_onnx_run_agree_on_raw_images(tmp_path, side):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from PIL import Image

    from cnndsl.backends import onnx_run
    from cnndsl.train.augment import Preprocess
    from cnndsl.train.predict import model_for, plan_of, predict
    npz = quadrant_npz(tmp_path / "q.npz", n=256, side=side)
    spec = tmp_path / "s.cnn"
    spec.write_text(SPEC)
    run = tmp_path / "run"
    done = cnndsl_cli("train", spec, "--data", npz, "--epochs", "2", "--batch-size", "32", "--device", "cpu",
                      "--quiet", "--out", run)
    assert done.returncode == 0, done.stderr
    test = np.load(npz)["x_test"][:100]
    paths = []
    for i, image in enumerate(test):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(image[0]).save(paths[-1])
    graph, model, payload = model_for(cnndsl.compile_text(SPEC), str(run / "best.pt"))
    plan = plan_of(payload, graph)
    assert plan.fit((side, side)) == {14: "pad", 16: "same", 24: "resample"}[side]
    # eval's path: the data set's arrays through the torch preprocessing and the model
    with torch.no_grad():
        want = torch.softmax(model.eval()(Preprocess.of(plan)(torch.as_tensor(test))), 1).numpy()
    got = predict(graph, model, payload, paths, top=4, device="cpu")
    for row, result in zip(want, got):
        probs = {int(name): p for name, p in result.top}
        assert max(abs(probs[k] - row[k]) for k in range(4)) < 1e-4
    for embed in ([], ["--embed-preprocessing"]):
        onnx_file = tmp_path / f"m{len(embed)}.onnx"
        built = cnndsl_cli("build", "--target", "onnx", spec, "--weights", run / "best.pt", "-o", onnx_file, *embed)
        assert built.returncode == 0, built.stderr
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        ran = onnx_run.classify(session, [str(p) for p in paths], 4)
        for row, (path, top) in zip(want, ran):
            probs = {int(name): p for name, p in top}
            assert max(abs(probs[k] - row[k]) for k in range(4)) < 1e-4, (embed, path)
    shown = cnndsl_cli("run", tmp_path / "m0.onnx", *paths[:3])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(paths[0]) + ": ")


def test_checkpoint_of_another_network_names_the_layer(setup, tmp_path):
    root, spec, npz, base = setup
    ckpt = root / "straight" / "best.pt"
    for text, needle in (("activation tanh\n" + SPEC, "tanh"),
                         (SPEC.replace("maxpool | conv3-16", "avgpool | conv3-16"), "avgpool"),
                         (SPEC.replace("conv3-16", "conv3-12"), "conv 3x3-12")):
        other = tmp_path / "other.cnn"
        other.write_text(text)
        for cmd in (["eval", other, "--weights", ckpt, "--data", npz],
                    ["build", "--target", "onnx", other, "--weights", ckpt, "-o", tmp_path / "x.onnx"]):
            result = cnndsl_cli(*cmd)
            assert result.returncode == 1, (text, cmd, result.stderr)
            assert "layer" in result.stderr and needle in result.stderr, result.stderr
            assert f"{other}:" in result.stderr and "^" in result.stderr, result.stderr
            assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_eval_warns_when_class_names_differ(setup, tmp_path):
    root, spec, npz, base = setup
    x = np.load(npz)
    other = tmp_path / "named.npz"
    np.savez(other, x_train=x["x_train"], y_train=x["y_train"], x_test=x["x_test"], y_test=x["y_test"],
             classes=np.array(["up-left", "up-right", "down-left", "down-right"]))
    result = cnndsl_cli("eval", spec, "--weights", root / "straight" / "best.pt", "--data", other, "--json",
                        "--confusion", tmp_path / "c.svg")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "class names differ" in result.stderr
    assert json.loads(result.stdout)["warnings"] and (tmp_path / "c.svg").read_text().startswith("<?xml")
    quiet = cnndsl_cli("eval", spec, "--weights", root / "straight" / "best.pt", "--data", npz, "--json",
                       "--limit-test", "50")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr and json.loads(quiet.stdout)["count"] == 50


# ------------------------------------------------------- found by attacking it --

def test_resume_a_run_trained_with_another_classifier(tmp_path):
    spec = tmp_path / "ten.cnn"
    spec.write_text(SPEC.replace("fc4", "fc10"))
    data = quadrant_npz(tmp_path / "q.npz", n=64)
    run = tmp_path / "run"
    first = cnndsl_cli("train", spec, "--data", data, "--classes", "4", "--epochs", "1", "--batch-size", "16",
                       "--device", "cpu", "--quiet", "--out", run)
    assert first.returncode == 0, first.stderr
    again = cnndsl_cli("train", "--resume", run, "--epochs", "2", "--quiet")
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in metrics(run)] == [1, 2]


def test_resume_without_last_pt_but_with_finished_epochs_is_refused(setup, tmp_path):
    import shutil
    root, spec, npz, base = setup
    run = tmp_path / "run"
    shutil.copytree(root / "straight", run)
    (run / "last.pt").unlink()
    before = snapshot(run)
    refused = cnndsl_cli("train", "--resume", run, "--epochs", "5")
    assert refused.returncode == 1 and "no last.pt" in refused.stderr
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != "run.lock"} == {k: v for k, v in before.items() if k != "run.lock"}


def test_resume_finds_moved_data_and_does_not_reread_init(tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text(SPEC)
    data = quadrant_npz(tmp_path / "q.npz", n=64)
    start = tmp_path / "start"
    assert cnndsl_cli("train", spec, "--data", data, "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                      "--quiet", "--out", start).returncode == 0
    init = tmp_path / "init.pt"
    (start / "best.pt").rename(init)
    run = tmp_path / "run"
    first = cnndsl_cli("train", spec, "--data", data, "--init", init, "--epochs", "1", "--batch-size", "16",
                       "--device", "cpu", "--quiet", "--out", run)
    assert first.returncode == 0, first.stderr
    assert read_record(run)["settings"]["init"] == str(init)        # recorded as an absolute path
    init.unlink()
    moved = data.rename(tmp_path / "moved.npz")
    lost = cnndsl_cli("train", "--resume", run, "--epochs", "2")
    assert lost.returncode == 1 and "Traceback" not in lost.stderr
    found = cnndsl_cli("train", "--resume", run, "--epochs", "2", "--data", moved, "--quiet")
    assert found.returncode == 0, found.stderr
    other = quadrant_npz(tmp_path / "other.npz", n=64, seed=3)
    wrong = cnndsl_cli("train", "--resume", run, "--epochs", "3", "--data", other)
    assert wrong.returncode == 1 and "fingerprint" in wrong.stderr


def test_an_edited_run_record_is_refused(setup, tmp_path):
    import shutil
    root, spec, npz, base = setup
    for key, value, needle in (("compile", "yes", "compile must be true or false"),
                               ("batch_size", 8, "run.json and last.pt disagree about batch_size"),
                               ("device", 123, "device must be a string")):
        run = tmp_path / f"run-{key}"
        shutil.copytree(root / "straight", run)
        record = json.loads((run / "run.json").read_text())
        record["settings"][key] = value
        (run / "run.json").write_text(json.dumps(record))
        refused = cnndsl_cli("train", "--resume", run, "--epochs", "5")
        assert refused.returncode == 1 and needle in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_eval_of_many_classes_prints_one_row_per_class_and_exact_picture_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 1, 8, 8), dtype=np.uint8)
    y = np.arange(400) % 100
    data = tmp_path / "many.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x[:200], y_test=y[:200])
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv3-4 | fc100")
    run = tmp_path / "run"
    assert cnndsl_cli("train", spec, "--data", data, "--epochs", "1", "--device", "cpu", "--quiet",
                      "--out", run).returncode == 0
    picture = tmp_path / "C.SVG"
    shown = cnndsl_cli("eval", spec, "--weights", run / "best.pt", "--data", data, "--confusion", picture)
    assert shown.returncode == 0, shown.stderr
    assert picture.exists() and not (tmp_path / "C.svg").exists() or picture.samefile(tmp_path / "C.svg")
    lines = shown.stdout.splitlines()
    assert len(lines) < 120 and "most often predicted instead" in shown.stdout
    missing = cnndsl_cli("eval", spec, "--weights", run / "best.pt", "--data", data, "--confusion",
                         tmp_path / "nowhere" / "c.svg")
    assert missing.returncode == 1 and "cannot write" in missing.stderr


def test_plain_state_dicts_are_evaluated_with_a_warning(setup, tmp_path):
    root, spec, npz, base = setup
    state = load_checkpoint(str(root / "straight" / "best.pt"))["model"]
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    result = cnndsl_cli("eval", spec, "--weights", plain, "--data", npz, "--json")
    assert result.returncode == 0 and "carry no preprocessing record" in result.stderr
