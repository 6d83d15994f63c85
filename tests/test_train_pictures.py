"""Pictures of a training run (cnndsl.train.pictures): valid, deterministic, atomic, fast, and safe with
hostile class names."""
from __future__ import annotations

import base64
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ROOT

pytest.importorskip("matplotlib")
np = pytest.importorskip("numpy")

from cnndsl.train import pictures  # noqa: E402
from cnndsl.train.pictures import (PictureError, render_confusion, render_curves, write_confusion,  # noqa: E402
                                   write_curves)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
HOSTILE = ["<script>alert(1)</script>", "$x$", 'a & b "q" \'s\'', "line\nbreak\x00\x1b[31m\x7f", "x" * 5000,
           "\U0001F600\U0001F680 emoji \U0001D54F", "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202e",
           "--> <!-- -", "\ud800lone", "", r"\frac{a}{b} $\alpha$ %s {0}", "]]><![CDATA[x"]


def history(epochs=10):
    out = []
    for e in range(1, epochs + 1):
        loss = 2.3 * math.exp(-0.35 * e) + 0.25
        out.append({"epoch": e, "train_loss": loss, "train_accuracy": 1 - loss / 2.6, "test_loss": loss * 1.1,
                    "test_accuracy": 1 - loss / 2.4, "lr": 0.1, "seconds": 3.0})
    return out


def confusion(n=10, seed=0, zero_rows=()):
    rng = np.random.default_rng(seed)
    m = rng.poisson(2, (n, n))
    m[np.arange(n), np.arange(n)] = rng.integers(50, 1000, n)
    for r in zero_rows:
        m[r] = 0
    return m.tolist()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, after checking it decodes."""
    import io

    import matplotlib.image

    assert data.startswith(PNG_SIGNATURE)
    pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    return pixels.shape[1], pixels.shape[0]


def png_pixels(data: bytes):
    import io

    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")[:, :, :3]


def parse_svg(data: bytes):
    root = ET.fromstring(data, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    assert root.tag == SVG + "svg"
    return root


def text_glyphs(root) -> dict[str, int]:
    """Each text of an SVG drawn with glyphs as paths (the text is in a comment before them) -> its glyph count."""
    out = {}
    for group in root.iter(SVG + "g"):
        if (group.get("id") or "").startswith("text_"):
            children = list(group)                   # a comment, then the glyphs, for each line
            for comment, glyphs in zip(children, children[1:]):
                if comment.tag is ET.Comment:
                    out[comment.text.strip()] = sum(1 for _ in glyphs.iter(SVG + "use"))
    return out


def blue_pixels(rgb) -> int:
    """Pixels about the colour of the train curve (#1f77b4)."""
    target = np.array([0x1F, 0x77, 0xB4]) / 255
    return int((np.abs(rgb - target).max(axis=2) < 0.08).sum())


# ------------------------------------------------------------------------------------------ the API

def test_importing_does_not_import_matplotlib():
    code = "import sys, cnndsl.train.pictures; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_write_curves_png_and_svg(tmp_path):
    paths = write_curves(history(), str(tmp_path / "run"))       # a str folder, made if missing
    assert paths == [tmp_path / "run" / "curves.svg", tmp_path / "run" / "curves.png"]
    assert all(isinstance(p, Path) for p in paths)
    width, height = png_size(paths[1].read_bytes())
    assert 1000 <= width <= 1400 and 350 <= height <= 700
    root = parse_svg(paths[0].read_bytes())
    texts = text_glyphs(root)
    for label in ("epoch", "loss", "accuracy", "train", "test", "Training run: 10 epochs"):
        assert label in texts, f"no {label!r} in the curves"
    assert sorted(os.listdir(tmp_path / "run")) == ["curves.png", "curves.svg"]      # no temp file left


def test_write_confusion_png_svg_pdf(tmp_path):
    paths = write_confusion(confusion(), FASHION, tmp_path / "confusion", formats=("png", "svg", "pdf"),
                            title="Fashion-MNIST test")
    assert [p.name for p in paths] == ["confusion.png", "confusion.svg", "confusion.pdf"]
    width, height = png_size(paths[0].read_bytes())
    assert 700 <= width <= 1500 and 600 <= height <= 1500
    texts = text_glyphs(parse_svg(paths[1].read_bytes()))
    for name in FASHION + ["Fashion-MNIST test", "predicted class", "true class"]:
        assert name in texts
    m = confusion()
    assert str(m[3][3]) in texts                                    # the counts are written in the cells
    assert paths[2].read_bytes().startswith(b"%PDF")
    assert sorted(os.listdir(tmp_path)) == ["confusion.pdf", "confusion.png", "confusion.svg"]


def test_render_returns_one_picture():
    assert render_curves(history(), "png").startswith(PNG_SIGNATURE)
    parse_svg(render_curves(history(), "SVG"))
    assert render_confusion(np.array(confusion(3)), ["a", "b", "c"], ".pdf").startswith(b"%PDF")


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_deterministic_bytes(fmt):
    if fmt != "pdf":
        assert render_curves(history(), fmt) == render_curves(history(), fmt)
    one = render_confusion(confusion(12), [f"c{i}" for i in range(12)], fmt, title="t")
    assert one == render_confusion(confusion(12), [f"c{i}" for i in range(12)], fmt, title="t")


def test_deterministic_across_processes(tmp_path):
    code = ("import sys; from cnndsl.train.pictures import render_confusion as r; "
            "sys.stdout.buffer.write(r([[5, 1], [2, 7]], ['a', 'b'], 'svg'))")
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=ROOT, env=env)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        outs.append(out.stdout)
    assert outs[0] == outs[1] == render_confusion([[5, 1], [2, 7]], ["a", "b"], "svg")


def test_user_rcparams_change_nothing():
    import matplotlib

    before = render_curves(history(), "svg")
    with matplotlib.rc_context({"lines.linewidth": 9, "axes.facecolor": "red", "text.usetex": True,
                                "svg.fonttype": "none", "font.size": 30}):
        assert render_curves(history(), "svg") == before
    assert not matplotlib.rcParams["text.usetex"]


def test_threads_draw_the_same_pictures():
    expected = render_confusion(confusion(5), list("abcde"), "png")
    results, errors = [], []

    def work():
        try:
            results.append(render_confusion(confusion(5), list("abcde"), "png"))
        except Exception as e:          # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == [expected] * 3


# -------------------------------------------------------------------------------------------- files

def test_overwrites_atomically_and_keeps_no_temp_files(tmp_path):
    (tmp_path / "curves.png").write_bytes(b"old")
    write_curves(history(3), tmp_path, formats=["png"])
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    assert os.listdir(tmp_path) == ["curves.png"]


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(PictureError):
        write_confusion([[1, 2], [3]], ["a", "b"], tmp_path / "c")
    with pytest.raises(PictureError):
        write_curves([], tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_unwritable_places_are_picture_errors(tmp_path):
    with pytest.raises(PictureError, match="cannot write"):
        write_confusion([[1]], ["a"], tmp_path / "missing" / "c")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PictureError, match="cannot make the folder"):
        write_curves(history(2), tmp_path / "afile" / "sub")
    with pytest.raises(PictureError):
        write_curves(history(2), tmp_path, stem="../escape")
    with pytest.raises(PictureError):
        write_confusion([[1]], ["a"], str(tmp_path / "nul\0name"))
    with pytest.raises(PictureError):
        write_confusion([[1]], ["a"], 42)
    assert sorted(os.listdir(tmp_path)) == ["afile"]


# ------------------------------------------------------------------------------------------- curves

def test_one_epoch_is_visible():
    one = [{"epoch": 1, "train_loss": 2.1, "train_accuracy": 0.3, "test_loss": 1.9, "test_accuracy": 0.35}]
    rgb = png_pixels(render_curves(one, "png"))
    assert blue_pixels(rgb) > 150         # a marker in each panel, not an invisible one-point line (~60 px)
    fig = pictures._draw_curves(*pictures._history(one))
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert lo < 1 < hi
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1]      # one whole-number epoch tick
        for line in ax.get_lines():
            assert line.get_marker() not in (None, "None", "", " ")


def test_no_test_split():
    runs = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": e / 10, "test_loss": None, "test_accuracy": None}
            for e in range(1, 6)]
    texts = text_glyphs(parse_svg(render_curves(runs, "svg")))
    assert "train" in texts and "test" not in texts


def test_non_finite_values_leave_gaps_and_keep_the_axes():
    runs = [{"epoch": e, "train_loss": v, "train_accuracy": a, "test_loss": None, "test_accuracy": t}
            for e, v, a, t in [(1, 2.0, 0.1, 0.2), (2, 1.0, float("nan"), 0.3), (3, float("nan"), 0.3, float("inf")),
                               (4, float("inf"), 0.4, 0.4), (5, 1e308, 0.5, None), (6, 10 ** 400, 0.6, 0.5),
                               (7, -float("inf"), 0.7, 0.6), (8, 0.5, 0.8, 0.7)]]
    for fmt in ("png", "svg"):
        data = render_curves(runs, fmt)
    texts = text_glyphs(parse_svg(data))
    assert "accuracy per epoch (best test 70.0% at epoch 8)" in texts
    assert any(t.startswith("loss per epoch (5 epochs not finite") for t in texts)
    # the loss axis spans the finite values 0.5 .. 2 (linear, from 0), not 1e308
    ticks = [float(t) for t in texts if t.replace(".", "", 1).isdigit()]
    assert ticks and max(ticks) <= 10


def test_downsample_gaps_and_missing_values():
    x = np.arange(1.0, 8.0)
    y = np.array([1.0, math.nan, 3.0, math.inf, 5.0, 6.0, math.inf])    # None -> nan, non-finite -> inf
    xs, ys = pictures._downsample(x, y)
    assert xs[:2].tolist() == [1.0, 3.0]              # a missing value: the line goes on across it
    assert math.isnan(xs[2]) and math.isnan(ys[2])    # a non-finite value: a gap
    assert xs[3:].tolist() == [5.0, 6.0]


def test_downsample_keeps_spikes_and_ends():
    n = 100_000
    x = np.arange(1.0, n + 1)
    y = np.full(n, 0.5)
    y[55_555], y[77_777] = 9.0, -3.0
    xs, ys = pictures._downsample(x, y)
    assert len(xs) <= pictures.CURVE_POINTS + 10
    assert xs[0] == 1 and xs[-1] == n
    assert 9.0 in ys and -3.0 in ys and 55_556.0 in xs


def test_100k_epochs_fast_and_bounded():
    rng = np.random.default_rng(0)
    loss = (1 / np.arange(1, 100_001) ** 0.3 + rng.random(100_000) * 0.05).tolist()
    runs = [{"epoch": e + 1, "train_loss": v, "train_accuracy": min(1.0, e / 1e5), "test_loss": v * 1.1,
             "test_accuracy": 0.5} for e, v in enumerate(loss)]
    render_curves(history(2), "png")                 # matplotlib warmed up
    for fmt, limit in (("svg", 400_000), ("png", 300_000)):
        start = time.perf_counter()
        data = render_curves(runs, fmt)
        took = time.perf_counter() - start
        assert took < 2.0, f"{fmt}: {took:.2f} s for 100,000 epochs"
        assert len(data) < limit
    texts = text_glyphs(parse_svg(render_curves(runs, "svg")))
    assert "Training run: 100,000 epochs" in texts


def test_epochs_out_of_order_and_repeated():
    runs = history(4)
    runs = [runs[2], runs[0], runs[3], runs[1], {**runs[1], "train_loss": 9.0}]     # epoch 2 logged again
    epochs, columns = pictures._history(runs)
    assert epochs.tolist() == [1, 2, 3, 4]
    assert columns["train_loss"][1] == 9.0


# ---------------------------------------------------------------------------------------- confusion

def test_hostile_class_names_svg():
    n = len(HOSTILE)
    data = render_confusion(confusion(n), HOSTILE, "svg", title="$\\alpha$ <b>bold</b> & \n\x00 title")
    text = data.decode("utf-8")
    root = parse_svg(data)                       # well-formed XML
    tags = {el.tag.rsplit("}", 1)[-1].lower() for el in root.iter() if isinstance(el.tag, str)}
    assert not tags & {"script", "b", "foreignobject", "a", "iframe"}
    assert "<script" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script" in text
    assert "\x00" not in text and "\x1b" not in text and "\x7f" not in text and "\u202e" not in text
    texts = text_glyphs(root)
    assert texts["$x$"] == 3                     # "$", "x", "$": not mathtext (one italic x)
    assert "Oblique" not in text and "Italic" not in text and "cmmi" not in text.lower()
    assert "x" * 24 + "..." in texts             # long names are shortened
    assert "x" * 30 not in text
    assert "line\\nbreak\\x00\\x1b[31m\\..." in texts    # control characters escaped, visibly
    assert "$\\alpha$ &lt;b&gt;bold&lt;/b&gt; &amp; \\n\\x00 title" in text


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_hostile_class_names_other_formats(fmt, recwarn):
    assert render_confusion(confusion(len(HOSTILE)), HOSTILE, fmt, title="$x$ {}")[:4] in (b"%PDF", PNG_SIGNATURE[:4])
    assert not [w for w in recwarn if "Glyph" in str(w.message)]


def test_hostile_names_many_classes():
    names = [HOSTILE[i % len(HOSTILE)] for i in range(45)]     # names on the axes, no counts
    parse_svg(render_confusion(confusion(45), names, "svg"))
    names = [HOSTILE[i % len(HOSTILE)] for i in range(70)]     # indices only
    text = render_confusion(confusion(70), names, "svg").decode()
    assert "script" not in text


def test_zero_rows_do_not_divide_by_zero():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        texts = text_glyphs(parse_svg(render_confusion(confusion(4, zero_rows=[1]), list("abcd"), "svg")))
        assert any("1 with no images" in t for t in texts)
        texts = text_glyphs(parse_svg(render_confusion([[0, 0], [0, 0]], ["a", "b"], "svg")))
        assert any(t.startswith("no images") for t in texts)
        render_confusion([[0] * 600 for _ in range(600)], [""] * 600, "png")
        render_confusion([[3]], ["only"], "png")


def test_large_counts_fit():
    texts = text_glyphs(parse_svg(render_confusion([[123_456_789, 5], [0, 12_345]], ["a", "b"], "svg")))
    assert "123M" in texts and "12k" in texts and "5" in texts


def test_1000_classes_fast_and_small():
    rng = np.random.default_rng(1)
    m = rng.poisson(0.05, (1000, 1000))
    m[np.arange(1000), np.arange(1000)] = rng.integers(20, 50, 1000)
    m[7] = 0
    m = m.tolist()
    names = [f"class number {i} " * 3 for i in range(1000)]
    render_confusion([[1]], ["a"], "png")            # matplotlib warmed up
    data = {}
    for fmt in ("svg", "png"):
        start = time.perf_counter()
        data[fmt] = render_confusion(m, names, fmt)
        took = time.perf_counter() - start
        assert took < 5.0, f"{fmt}: {took:.2f} s for 1000 classes"
        assert len(data[fmt]) < 1_000_000, f"{fmt}: {len(data[fmt])} bytes for 1000 classes"
    root = parse_svg(data["svg"])
    images = list(root.iter(SVG + "image"))
    assert len(images) <= 2                                   # the matrix (and the colour bar): images
    matrix = base64.b64decode(images[0].get("{http://www.w3.org/1999/xlink}href").split(",", 1)[1])
    assert max(png_size(matrix)) <= pictures.POOLED_CELLS   # embedded at its own size, not resampled
    assert sum(1 for _ in root.iter(SVG + "path")) < 300      # not a rectangle per cell
    assert b"class number" not in data["svg"]                 # indices, not names
    width, height = png_size(data["png"])
    assert width <= 1500 and height <= 1500


def test_a_lone_mistake_survives_pooling():
    n = 1000
    m = np.zeros((n, n), dtype=np.int64)
    m[np.arange(n), np.arange(n)] = 10
    m[900, 3] = 10                               # half of class 900 is taken for class 3
    block, pooled = pictures._pool(m / m.sum(1, keepdims=True))
    assert block == 3 and pooled.shape == (334, 334)
    assert pooled[300, 1] == 0.5 and pooled[0, 0] == 1.0 and pooled[0, 1] == 0.0


@pytest.mark.parametrize("matrix, classes, message", [
    ([[1, 2], [3, 4], [5, 6]], ["a", "b", "c"], "not square"),
    ([[1, 2], [3]], ["a", "b"], "not square"),
    ([[1, 2, 3], [4, 5, 6]], ["a", "b"], "not square"),
    ([], [], "empty"),
    ([[1, -2], [3, 4]], ["a", "b"], "negative"),
    ([[1, 2.5], [3, 4]], ["a", "b"], "whole numbers"),
    ([[1, 2.0], [3, 4]], ["a", "b"], "whole numbers"),
    ([[1, float("nan")], [3, 4]], ["a", "b"], "whole numbers"),
    ([[1, "2"], [3, 4]], ["a", "b"], "whole numbers"),
    ([[1, None], [3, 4]], ["a", "b"], "whole numbers"),
    ([[True, False], [False, True]], ["a", "b"], "whole numbers"),
    ([[1, 2 ** 70], [3, 4]], ["a", "b"], "too large"),
    ([[[1], [2]], [[3], [4]]], ["a", "b"], "square"),
    ("[[1]]", ["a"], "square list"),
    (None, ["a"], "square list"),
    ([[1, 2], [3, 4]], ["a"], "fewer names"),
    ([[1, 2], [3, 4]], ["a", "b", "c"], "more names"),
    ([[1, 2], [3, 4]], "ab", "list of strings"),
    ([[0] * 5000] * 5000, [""] * 5000, "at most"),
])
def test_bad_confusion_is_a_picture_error(matrix, classes, message):
    with pytest.raises(PictureError, match=message) as info:
        render_confusion(matrix, classes, "png")
    assert str(info.value).startswith("picture error: ")


@pytest.mark.parametrize("runs, message", [
    ([], "empty"),
    (None, "list of per-epoch records"),
    ("abc", "list of per-epoch records"),
    ({"epoch": 1}, "list of per-epoch records"),
    ([5], "not a dict"),
    ([{"train_loss": 1.0}], "epoch None"),
    ([{"epoch": "1"}], "epoch '1'"),
    ([{"epoch": 1.5}], "epoch 1.5"),
    ([{"epoch": True}], "epoch True"),
    ([{"epoch": -1}], "epoch -1"),
    ([{"epoch": 1, "train_loss": "0.5"}], "train_loss of epoch 1 is '0.5', not a number"),
    ([{"epoch": 1, "test_accuracy": [0.5]}], "not a number"),
])
def test_bad_history_is_a_picture_error(runs, message):
    with pytest.raises(PictureError, match=message.replace(".", r"\.").replace("[", r"\[")):
        render_curves(runs, "svg")


@pytest.mark.parametrize("formats", ["gif", [], ["png", "jpeg"], [None], 5])
def test_bad_formats_are_picture_errors(formats, tmp_path):
    with pytest.raises(PictureError):
        write_curves(history(2), tmp_path, formats=formats)
    with pytest.raises(PictureError):
        render_confusion([[1]], ["a"], formats)
    assert os.listdir(tmp_path) == []


def test_a_single_format_string_is_accepted(tmp_path):
    assert write_curves(history(2), tmp_path, formats="png") == [tmp_path / "curves.png"]


# ------------------------------------------------------------------------------------------ a browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to open the SVG")
def test_svg_opens_in_headless_chromium(tmp_path):
    svg = write_confusion(confusion(), FASHION, tmp_path / "confusion", formats=["svg"])[0]
    shot = tmp_path / "shot.png"
    try:
        subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                        "--window-size=1200,800", svg.as_uri()],
                       capture_output=True, timeout=60, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish in 60 s")
    if not shot.exists():
        pytest.skip("chromium wrote no screenshot")
    rgb = png_pixels(shot.read_bytes())
    assert rgb.shape[:2] == (800, 1200)
    dark_blue = (rgb[:, :, 2] > 0.3) & (rgb[:, :, 0] < 0.2)      # the diagonal cells
    ink = rgb.max(axis=2) < 0.3                                   # text
    assert dark_blue.mean() > 0.02, "the matrix is not drawn"
    assert ink.mean() > 0.002, "no text is drawn"
