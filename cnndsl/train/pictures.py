"""Pictures of a training run: loss and accuracy curves per epoch, and a confusion matrix (SVG, PNG, PDF).

matplotlib is imported lazily, only when a picture is drawn, and only through its object API (a `Figure`
with an Agg canvas, never pyplot): no display is needed and no global figure state is kept. The rcParams a
picture depends on are set for the duration of one drawing (under a lock), so a user's matplotlibrc
changes nothing and the same input gives the same bytes.

Class names and titles come from user data: they are shown as plain text (never mathtext or TeX), with
control characters escaped (`printable`) and long names shortened.
"""
from __future__ import annotations

import io
import math
import numbers
import os
import threading
from pathlib import Path

from ..errors import CnnDslError, printable
from ..files import atomic_path

FORMATS = ("svg", "png", "pdf")
MAX_CLASSES = 4096          # a confusion matrix larger than this is refused (16M cells)
MAX_EPOCHS = 10_000_000     # records of a history
NAME_CHARS = 24             # characters of a class name shown on an axis
TITLE_CHARS = 120           # characters of a user-given title
COUNTS_UP_TO = 30           # classes up to which each cell shows its count
NAMES_UP_TO = 60            # classes up to which the axes show the class names (else indices)
OFF_SCALE = 1e100           # a metric beyond this is drawn as a gap, like a NaN
POOLED_CELLS = 450          # squares a side of a confusion picture at most (larger ones show blocks of classes)
CURVE_POINTS = 2000         # points drawn per curve at most: longer runs are downsampled (min and max kept)
MARKERS_UP_TO = 60          # points up to which a curve also draws markers (one epoch is a dot)
DPI = 100

_LOCK = threading.Lock()    # rcParams are global: one drawing at a time
_RC = {
    "svg.hashsalt": "cnndsl",           # deterministic ids in SVG
    "svg.fonttype": "path",             # glyphs as paths: looks the same in every viewer
    "svg.image_inline": True,
    "text.usetex": False,
    "text.parse_math": False,           # a "$" in any text is a dollar sign (each user text also says so)
    "axes.formatter.use_mathtext": False,
    "font.family": "sans-serif",
    "font.size": 10,
    "pdf.compression": 6,
    "path.simplify": True,
}
_METADATA = {"svg": {"Date": None, "Creator": "cnndsl"},
             "png": {"Software": "cnndsl"},
             "pdf": {"CreationDate": None, "ModDate": None, "Creator": "cnndsl", "Producer": "cnndsl"}}


class PictureError(CnnDslError):
    """A picture cannot be drawn from the given data, or cannot be written."""

    kind = "picture error"


# ------------------------------------------------------------------------------------------ checking input

def _format(fmt) -> str:
    if not isinstance(fmt, str) or fmt.lower().lstrip(".") not in FORMATS:
        raise PictureError(f"unknown picture format {printable(repr(fmt), 40)}; use one of {', '.join(FORMATS)}")
    return fmt.lower().lstrip(".")


def _formats(formats) -> list[str]:
    if isinstance(formats, str):
        formats = (formats,)
    try:
        out = list(dict.fromkeys(_format(f) for f in formats))
    except TypeError:
        raise PictureError("formats must be a list of format names such as ('svg', 'png')") from None
    if not out:
        raise PictureError("no picture format given; use one or more of " + ", ".join(FORMATS))
    return out


def _number(value, what: str) -> float:
    """A metric as a float. None (not measured that epoch) is NaN: the point is left out and the curve goes on
    across it. A non-finite value (a diverged run), or one beyond +-OFF_SCALE, is inf: left out, and the curve
    shows a gap there. Anything else (a string, a bool) is refused."""
    if type(value) is float:                 # the common case, fast (a NaN fails both comparisons)
        return value if -OFF_SCALE <= value <= OFF_SCALE else math.inf
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PictureError(f"{what} is {printable(repr(value), 60)}, not a number")
    try:
        value = float(value)
    except (OverflowError, ValueError):      # an int beyond a float's range
        return math.inf
    return value if math.isfinite(value) and abs(value) <= OFF_SCALE else math.inf


def _history(history):
    """Epochs and the four metrics as float arrays (NaN where missing), sorted by epoch; the last record of
    an epoch logged twice (a resumed run) wins."""
    import numpy as np

    if isinstance(history, (str, bytes, dict)) or not hasattr(history, "__iter__"):
        raise PictureError("the history must be a list of per-epoch records (dicts, as in metrics.jsonl)")
    records: dict[int, dict] = {}
    for i, record in enumerate(history):
        if i >= MAX_EPOCHS:
            raise PictureError(f"the history has more than {MAX_EPOCHS} records")
        if not isinstance(record, dict):
            raise PictureError(f"record {i + 1} of the history is {type(record).__name__}, not a dict")
        epoch = record.get("epoch")
        if (type(epoch) is not int and (isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral))) \
                or epoch < 0 or epoch > 1 << 53:
            raise PictureError(f"record {i + 1} of the history has epoch {printable(repr(epoch), 60)}; "
                               "expected a whole number from 1 up")
        records[int(epoch)] = record
    if not records:
        raise PictureError("the history is empty: no epoch was recorded, so there is nothing to draw")
    epochs = sorted(records)
    columns = {}
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        columns[key] = np.array([_number(records[e].get(key), f"{key} of epoch {e}") for e in epochs], dtype=float)
    return np.array(epochs, dtype=float), columns


def _matrix(confusion):
    """The confusion matrix as an int64 array, or a PictureError saying what is wrong with it."""
    import numpy as np

    if isinstance(confusion, (str, bytes, dict)):
        raise PictureError("the confusion matrix must be a square list of lists of counts")
    if hasattr(confusion, "tolist") and not isinstance(confusion, list):     # a numpy array or a tensor
        confusion = confusion.tolist()
    try:
        rows = list(confusion)
    except TypeError:
        raise PictureError("the confusion matrix must be a square list of lists of counts") from None
    n = len(rows)
    if n == 0:
        raise PictureError("the confusion matrix is empty (no classes)")
    if n > MAX_CLASSES:
        raise PictureError(f"the confusion matrix has {n} classes; at most {MAX_CLASSES} can be drawn")
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes, dict)) or not hasattr(row, "__len__"):
            raise PictureError(f"row {i} of the confusion matrix is {type(row).__name__}, not a list of counts")
        if len(row) != n:
            raise PictureError(f"the confusion matrix is not square: it has {n} rows but row {i} has "
                               f"{len(row)} columns")
    try:
        matrix = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        matrix = np.array(rows, dtype=object)
    if matrix.shape != (n, n):
        raise PictureError("the confusion matrix must be a square list of lists of counts (numbers), "
                           f"not an array of shape {matrix.shape}")
    if matrix.dtype.kind not in "iu":
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise PictureError(f"the confusion matrix holds {printable(repr(value), 40)} at row {i}, "
                                       f"column {j}; counts must be whole numbers")
                if not -(1 << 62) < value < 1 << 62:
                    raise PictureError(f"the count at row {i}, column {j} of the confusion matrix is too large")
        matrix = matrix.astype(np.int64)
    elif matrix.dtype.kind == "u" and matrix.size and matrix.max() >= 1 << 62:
        raise PictureError("a count of the confusion matrix is too large")
    matrix = matrix.astype(np.int64, copy=False)
    if matrix.size and matrix.min() < 0:
        i, j = np.argwhere(matrix < 0)[0]
        raise PictureError(f"the confusion matrix holds a negative count ({matrix[i, j]}) at row {i}, column {j}")
    if matrix.sum(dtype=np.float64) >= 2.0 ** 62:
        raise PictureError("the counts of the confusion matrix add up to more than can be drawn")
    return matrix


def _classes(classes, n: int) -> list[str]:
    if isinstance(classes, (str, bytes, dict)) or not hasattr(classes, "__len__"):
        raise PictureError("the class names must be a list of strings, one per row of the confusion matrix")
    if len(classes) != n:
        few = "fewer" if len(classes) < n else "more"
        raise PictureError(f"{len(classes)} class names for a {n}x{n} confusion matrix: {few} names than classes")
    return [_label(name, NAME_CHARS) for name in classes]


def _label(text, limit: int) -> str:
    """Text safe to draw: control, format, line-break characters and lone surrogates escaped (printable),
    at most `limit` characters (and "..."). Drawn with parse_math=False: a "$" is a dollar sign."""
    return printable("" if text is None else text, limit)


# -------------------------------------------------------------------------------------------- drawing

def _figure(figsize, layout: str = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, fmt: str, tight: bool) -> bytes:
    buf = io.BytesIO()
    # `tight`: the saved box is fitted to what is drawn, so nothing is cut off at an edge
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=_METADATA[fmt],
                **({"bbox_inches": "tight", "pad_inches": 0.15} if tight else {}))
    return buf.getvalue()


def _render(draw, formats: list[str], tight: bool = False) -> dict[str, bytes]:
    """Draw one figure with our rcParams (whatever the user's matplotlibrc says) and save it in each format."""
    import warnings

    import matplotlib
    import matplotlib.style

    with _LOCK, matplotlib.rc_context(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")   # emoji and scripts the font lacks
        matplotlib.style.use("default")
        matplotlib.rcParams.update(_RC)
        fig = draw()
        return {fmt: _save(fig, fmt, tight) for fmt in formats}


def _downsample(x, y, points: int = CURVE_POINTS):
    """The points of a curve to draw: the finite ones, with a NaN (a gap in the line) where non-finite
    values (inf, see _number) were left out; at most about `points` of them: per bucket of neighbouring
    epochs the first, last, lowest and highest point is kept, so spikes survive and the ends stay put."""
    import numpy as np

    keep = np.isfinite(y)
    segment = np.cumsum(np.isinf(y))[keep]      # a new segment after each non-finite value
    x, y = x[keep], y[keep]
    if len(x) > points:
        index = _extremes(y, points)
        x, y, segment = x[index], y[index], segment[index]
    gaps = np.flatnonzero(np.diff(segment)) + 1
    return np.insert(x, gaps, np.nan), np.insert(y, gaps, np.nan)


def _extremes(y, points: int):
    """Indices of the first, last, lowest and highest value in each of points/4 buckets of `y`."""
    import numpy as np

    buckets = points // 4
    edges = np.linspace(0, len(y), buckets + 1).astype(np.int64)
    starts = edges[:-1]
    lows = np.minimum.reduceat(y, starts)
    highs = np.maximum.reduceat(y, starts)
    # the index of the first low and the first high of each bucket
    bucket = np.repeat(np.arange(buckets), np.diff(edges))
    low_at = np.flatnonzero(y == lows[bucket])
    high_at = np.flatnonzero(y == highs[bucket])
    first_low = low_at[np.unique(bucket[low_at], return_index=True)[1]]
    first_high = high_at[np.unique(bucket[high_at], return_index=True)[1]]
    return np.unique(np.concatenate([starts, edges[1:] - 1, first_low, first_high]))


def _curve(ax, x, y, label: str, color: str, dashed: bool) -> bool:
    import numpy as np

    xs, ys = _downsample(x, y)
    if not len(xs):
        return False
    points = len(xs) - int(np.isnan(xs).sum())      # the gaps are NaN
    marker = "o" if points <= MARKERS_UP_TO else None
    ax.plot(xs, ys, label=label, color=color, linestyle="--" if dashed else "-", linewidth=1.8,
            marker=marker, markersize=5 if points > 1 else 7)
    return True


def _draw_curves(epochs, columns):
    import numpy as np
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig = _figure((12, 4.6))
    loss_ax, acc_ax = fig.subplots(1, 2)
    first, last = float(epochs[0]), float(epochs[-1])
    pad = 0.5 if last - first < 10 else (last - first) * 0.02
    blue, orange = "#1f77b4", "#ff7f0e"

    drawn = [_curve(loss_ax, epochs, columns["train_loss"], "train", blue, False),
             _curve(loss_ax, epochs, columns["test_loss"], "test", orange, True)]
    finite = np.concatenate([v[np.isfinite(v)] for v in (columns["train_loss"], columns["test_loss"])])
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 1e3:
        loss_ax.set_yscale("log")        # a loss spanning orders of magnitude (a run that blew up)
        loss_ax.set_ylabel("loss (log scale)")
    else:
        loss_ax.set_ylabel("loss")
        if len(finite) and finite.min() >= 0:
            loss_ax.set_ylim(bottom=0, top=max(finite.max() * 1.05, 1e-12))
    broken = int((np.isinf(columns["train_loss"]) | np.isinf(columns["test_loss"])).sum())
    loss_ax.set_title("loss per epoch" + (f" ({broken:,} epoch{'s' if broken != 1 else ''} not finite: gaps)"
                                          if broken else ""))

    acc_drawn = [_curve(acc_ax, epochs, columns["train_accuracy"], "train", blue, False),
                 _curve(acc_ax, epochs, columns["test_accuracy"], "test", orange, True)]
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.set_yticks(np.linspace(0, 1, 6))
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    acc_ax.set_ylabel("accuracy")
    test = columns["test_accuracy"]
    if np.isfinite(test).any():
        best = int(np.argmax(np.where(np.isfinite(test), test, -np.inf)))
        acc_ax.set_title(f"accuracy per epoch (best test {test[best]:.1%} at epoch {int(epochs[best])})")
        acc_ax.plot([epochs[best]], [test[best]], marker="*", markersize=14, color=orange,
                    markeredgecolor="black", markeredgewidth=0.6, linestyle="none", zorder=5)
    else:
        acc_ax.set_title("accuracy per epoch")

    for ax, any_drawn in ((loss_ax, any(drawn)), (acc_ax, any(acc_drawn))):
        ax.set_xlim(first - pad, last + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins="auto", min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if any_drawn:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center",
                    color="0.4", parse_math=False)
    count = len(epochs)
    fig.suptitle(f"Training run: {count:,} epoch{'s' if count != 1 else ''}", fontsize=13, parse_math=False)
    return fig


def _pool(fraction):
    """(block, matrix): the matrix itself, or for more than POOLED_CELLS classes the largest share in each
    block x block square of classes (ignoring NaN), so the picture stays a bounded size and a lone
    misclassified cell still shows."""
    import numpy as np

    n = fraction.shape[0]
    block = -(-n // POOLED_CELLS)
    if block == 1:
        return 1, fraction
    m = -(-n // block)
    padded = np.full((m * block, m * block), np.nan)
    padded[:n, :n] = fraction
    blocks = padded.reshape(m, block, m, block).transpose(0, 2, 1, 3).reshape(m, m, block * block)
    empty = np.isnan(blocks).all(axis=2)
    pooled = np.where(empty, np.nan, np.nanmax(np.where(np.isnan(blocks), -1.0, blocks), axis=2))
    return block, pooled


def _compact(count: int) -> str:
    if count < 10_000:
        return str(count)
    for size, unit in ((10 ** 12, "T"), (10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if count >= size:
            value = count / size
            return (f"{value:.0f}" if value >= 10 else f"{value:.1f}") + unit
    return str(count)


def _draw_confusion(matrix, names: list[str], title: str):
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    n = matrix.shape[0]
    rows = matrix.sum(axis=1)
    fraction = matrix / np.maximum(rows, 1)[:, None]
    fraction[rows == 0] = np.nan                # a class with no images: grey, not "0%"
    block, shown = _pool(fraction)
    cmap = colormaps["Blues"].with_extremes(bad="#dddddd")

    side = 5.5 if n <= 4 else min(10.5, 5.0 + 0.2 * n)
    names_shown = n <= NAMES_UP_TO
    longest = max((len(name) for name in names), default=1) if names_shown else 4
    label_room = min(longest, NAME_CHARS + 3) * 0.065 if names_shown else 0.3
    # "compressed": constrained layout that knows the matrix keeps its aspect (constrained alone can push
    # the row label off the left edge); the saved box is then fitted to what is drawn (tight)
    fig = _figure((side + label_room + 2.0, side + label_room * 0.75 + 0.9), layout="compressed")
    ax = fig.add_subplot()
    # one image, never resampled: every cell (or block) is at least two pixels wide, so no cell is
    # dropped; in SVG and PDF the image is embedded at its own size (at most POOLED_CELLS a side)
    edge = shown.shape[0] * block - 0.5
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="none",
                      aspect="equal", extent=(-0.5, edge, edge, -0.5))
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, shrink=0.9)
    colorbar.set_label("share of the true class's images", parse_math=False)
    colorbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))

    if names_shown:
        size = 10 if n <= 12 else 9 if n <= 25 else 7 if n <= 40 else 5.5
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=size,
                      parse_math=False)
        ax.set_yticks(range(n), names, fontsize=size, parse_math=False)
    else:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True, steps=[1, 2, 2.5, 5, 10]))
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("predicted class" if names_shown else "predicted class (index)")
    ax.set_ylabel("true class" if names_shown else "true class (index)")
    ax.tick_params(length=2 if names_shown else 3)

    if n <= COUNTS_UP_TO:
        texts = [_compact(int(v)) for v in matrix.ravel()]
        widest = max(len(t) for t in texts)
        cell = side * 72 / n                     # points per cell, about
        size = max(4.5, min(11.0, cell * 0.8 / max(widest * 0.62, 1.0), cell * 0.5))
        for i in range(n):
            for j in range(n):
                if rows[i] == 0:
                    text, color = "\u2013", "0.35"
                else:
                    text = _compact(int(matrix[i, j]))
                    color = "white" if fraction[i, j] > 0.55 else ("0.15" if matrix[i, j] else "0.6")
                ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color, parse_math=False)

    total, correct = int(rows.sum()), int(np.trace(matrix))
    stats = (f"accuracy {correct / total:.1%} of {total:,} images, {n} classes" if total
             else f"no images, {n} classes")
    empty = int((rows == 0).sum())
    if empty:
        stats += f" ({empty} with no images, grey)"
    if block > 1:
        stats += f"\neach square: the largest share in a block of {block}x{block} classes"
    heading = _label(title, TITLE_CHARS) if title else "Confusion matrix"
    ax.set_title(f"{heading}\n{stats}", fontsize=11, parse_math=False)
    return fig


# ---------------------------------------------------------------------------------------------- API

def render_curves(history, fmt: str) -> bytes:
    """The bytes of one picture (svg, png or pdf) of a run's loss and accuracy per epoch."""
    fmt = _format(fmt)
    epochs, columns = _history(history)
    return _render(lambda: _draw_curves(epochs, columns), [fmt])[fmt]


def render_confusion(confusion, classes, fmt: str, title: str = "") -> bytes:
    """The bytes of one picture (svg, png or pdf) of a confusion matrix: rows are the true class, columns
    the predicted one, coloured by the share of the row."""
    fmt = _format(fmt)
    matrix = _matrix(confusion)
    names = _classes(classes, matrix.shape[0])
    return _render(lambda: _draw_confusion(matrix, names, title), [fmt], tight=True)[fmt]


def _write(pictures: dict[str, bytes], stem: str) -> list[Path]:
    written = []
    for fmt, data in pictures.items():
        path = Path(f"{stem}.{fmt}")
        try:
            with atomic_path(str(path)) as tmp:
                with open(tmp, "wb") as f:
                    f.write(data)
        except (OSError, ValueError) as e:        # ValueError: a NUL in the name
            raise PictureError(f"cannot write {printable(str(path))}: {getattr(e, 'strerror', None) or e}") from None
        written.append(path)
    return written


def _path(path, what: str) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise PictureError(f"the {what} must be a str or a Path, not {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise PictureError(f"the {what} must be a str or a Path")
    return path


def write_curves(history: list[dict], folder, stem: str = "curves", formats=("svg", "png")) -> list[Path]:
    """Write the loss and accuracy curves of a run as `folder/stem.svg`, `.png`, ... (each atomically);
    the folder is made if missing. Returns the paths written."""
    fmts = _formats(formats)
    if not isinstance(stem, str) or not stem or os.sep in stem or (os.altsep and os.altsep in stem) \
            or stem in (".", ".."):
        raise PictureError(f"the picture name {printable(repr(stem), 60)} is not a plain file name")
    epochs, columns = _history(history)
    folder = Path(_path(folder, "folder"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        raise PictureError(f"cannot make the folder {printable(str(folder))}: "
                           f"{getattr(e, 'strerror', None) or e}") from None
    pictures = _render(lambda: _draw_curves(epochs, columns), fmts)
    return _write(pictures, str(folder / stem))


def write_confusion(confusion: list[list[int]], classes: list[str], path_stem, formats=("svg", "png"),
                    title: str = "") -> list[Path]:
    """Write a confusion matrix as `path_stem.svg`, `.png`, ... (each atomically). Returns the paths written."""
    fmts = _formats(formats)
    matrix = _matrix(confusion)
    names = _classes(classes, matrix.shape[0])
    stem = _path(path_stem, "picture path")
    if not stem or stem.endswith(("/", os.sep)):
        raise PictureError(f"the picture path {printable(repr(stem), 200)} names no file")
    pictures = _render(lambda: _draw_confusion(matrix, names, title), fmts, tight=True)
    return _write(pictures, stem)
