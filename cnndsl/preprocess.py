"""One preprocessing for training, evaluation, prediction, ONNX export and `cnndsl run`.

An image (uint8, channels x height x width, at any size) becomes the network's input in three linear steps and
one affine step, always in this order and always in float32:

1. channels: a C x c matrix over the channels, scaled by 1/255 (grey -> RGB repeats the grey value; RGB -> grey
   weighs ITU-R 601 luma, 0.299 R + 0.587 G + 0.114 B; an alpha channel is dropped);
2. rows: an H x h matrix;  3. columns: a w x W matrix (y = R_rows @ x @ R_cols);
4. normalisation: (y - mean) / std per channel, with the training images' statistics.

The row and column matrices fit an image to the spec's size: an image at most a quarter smaller on both sides is
zero-padded, centred (MNIST's 28 into LeNet's 32, with the odd pixel after); any other size is resampled with a
triangle (bilinear) filter whose support widens when shrinking, which is antialiased downscaling as Pillow does it
and plain bilinear interpolation (half-pixel centres, edges clamped) when enlarging.

`Preprocessing` is the record a checkpoint and an ONNX model carry (`to_dict`/`from_dict`, validated: the record
comes from files that may be hostile); `apply` runs it with numpy, `augment.Preprocess` with torch on the training
device, and `onnx_nodes` writes it as ONNX graph nodes. All three use the matrices made here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import CnnDslError, printable

LUMA = (0.299, 0.587, 0.114)
PAD_FRACTION = 4            # pad (rather than resample) an image at most 1/PAD_FRACTION smaller on each side
MAX_SIDE = 1 << 15          # the largest image side a record may name
MAX_PIXELS = 1 << 24        # and the most pixels (4096 x 4096) of its input or source images
MAX_CHANNELS = 4
MAX_CLASSES = 100_000
MAX_NAME = 1000
LAYOUT = "NCHW"
FORMAT = "cnndsl-preprocessing/1"


class PreprocessError(CnnDslError):
    """A preprocessing record is malformed, or an image cannot be brought to the network's input."""

    kind = "preprocessing error"


def fit_kind(size: tuple[int, int], target: tuple[int, int]) -> str:
    """How an image of `size` (h, w) is brought to `target`: 'same', 'pad' or 'resample'."""
    (h, w), (th, tw) = size, target
    if (h, w) == (th, tw):
        return "same"
    if h <= th and w <= tw and (th - h) * PAD_FRACTION <= h and (tw - w) * PAD_FRACTION <= w:
        return "pad"
    return "resample"


def pad_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in: the input centred in the output, zeros around it (the odd cell after)."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    start = (n_out - n_in) // 2
    m[np.arange(n_in) + start, np.arange(n_in)] = 1.0
    return m


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in triangle-filter weights (rows sum to 1): output cell i is centred at (i + 0.5) * n_in / n_out
    in input coordinates; the filter's half-width is max(1, n_in / n_out) input cells."""
    scale = n_in / n_out
    support = max(1.0, scale)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        low = max(0, int(math.floor(centre - support)))
        high = min(n_in, int(math.ceil(centre + support)))
        x = np.arange(low, high)
        w = np.clip(1.0 - np.abs(x + 0.5 - centre) / support, 0.0, None)
        if w.sum() <= 0:            # cannot happen for support >= 1; kept as a guard for rounding
            w = np.ones_like(w)
        m[i, low:high] = w / w.sum()
    return m


def axis_matrix(n_in: int, n_out: int, kind: str) -> np.ndarray:
    if kind == "same":
        return np.eye(n_in, dtype=np.float64)
    return pad_matrix(n_in, n_out) if kind == "pad" else resample_matrix(n_in, n_out)


def channel_matrix(c: int, tc: int) -> np.ndarray:
    """tc x c, scaled by 1/255: uint8 pixels of c channels to tc channels in [0, 1]."""
    if c in (2, 4) and c != tc:         # grey + alpha, RGBA: the alpha channel is dropped, as Pillow does
        base = channel_matrix(c - 1, tc)
        return np.concatenate([base, np.zeros((tc, 1))], axis=1)
    if c == tc:
        m = np.eye(c)
    elif c == 1:
        m = np.ones((tc, 1))
    elif tc == 1 and c == 3:
        m = np.array([LUMA])
    else:
        raise PreprocessError(f"cannot turn {c}-channel images into the spec's {tc} channels",
                              hint="give grey or RGB images, or a spec whose input has 1 or 3 channels")
    return m / 255.0


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image into the network's input: see the module's docstring."""

    input: tuple            # the network's input, (C, H, W), layout NCHW
    source: tuple           # the training images' (c, h, w)
    mean: tuple             # per network channel, of the training images after steps 1-3 (without padding)
    std: tuple
    classes: tuple = field(default=())

    def matrices(self, channels: int, size: tuple[int, int]):
        """(channels C x c, rows H x h, columns w x W) as float32 for an image of `channels` and `size`."""
        c, (h, w) = channels, size
        tc, th, tw = self.input
        kind = fit_kind((h, w), (th, tw))
        return (channel_matrix(c, tc).astype(np.float32), axis_matrix(h, th, kind).astype(np.float32),
                axis_matrix(w, tw, kind).T.astype(np.float32).copy())

    def file_channels(self) -> int:
        """How image files are read for this plan: grey for grey (or grey + alpha) training images, else RGB; the
        channel step then makes the network's channels."""
        return 1 if self.source[0] in (1, 2) else 3

    def fit(self, size: tuple[int, int]) -> str:
        return fit_kind(tuple(size), tuple(self.input[1:]))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x c x h x w -> float32 N x C x H x W, the network's input."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise PreprocessError(f"expected images as N x C x H x W, got shape {images.shape}")
        mc, mr, mw = self.matrices(images.shape[1], images.shape[2:])
        x = images.astype(np.float32)
        x = np.einsum("oc,nchw->nohw", mc, x, dtype=np.float32)
        x = np.matmul(np.matmul(mr, x), mw)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return ((x - mean) / std).astype(np.float32)

    def describe(self) -> str:
        c, h, w = self.source
        tc, th, tw = self.input
        kind = self.fit((h, w))
        how = {"same": "as they are", "pad": "zero-padded, centred", "resample": "resampled (triangle filter)"}[kind]
        return (f"{h}x{w}x{c} images {how} to {th}x{tw}x{tc}, scaled by 1/255, normalised by mean "
                f"{_floats(self.mean)} and std {_floats(self.std)}")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "layout": LAYOUT, "input": list(self.input), "source": list(self.source),
                "fit": self.fit(self.source[1:]), "scale": "1/255", "luma": list(LUMA), "pad_fraction": PAD_FRACTION,
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d, where: str = "the preprocessing record") -> "Preprocessing":
        """The record in `d`, every value checked: shapes bounded, statistics finite (std > 0), one mean and std
        per input channel, class names strings of bounded length."""
        def bad(what):
            return PreprocessError(f"{where}: {what}")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f"not a {FORMAT} record")
        if d.get("layout", LAYOUT) != LAYOUT:
            raise bad(f"layout {printable(str(d.get('layout')), 20)!r} is not {LAYOUT}")

        def shape(key):
            v = d.get(key)
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                 for x in v)
                    and 1 <= v[0] <= MAX_CHANNELS and all(1 <= x <= MAX_SIDE for x in v[1:])):
                raise bad(f"{key} must be [channels 1..{MAX_CHANNELS}, height, width] (sides 1..{MAX_SIDE:,}), got "
                          f"{printable(str(v), 60)}")
            return tuple(v)
        inp, src = shape("input"), shape("source")
        for key, v in (("input", inp), ("source", src)):
            if v[1] * v[2] > MAX_PIXELS:
                raise bad(f"{key} has {v[1]:,} x {v[2]:,} pixels, more than {MAX_PIXELS:,}")
        stats = []
        for key in ("mean", "std"):
            v = d.get(key)
            if not (isinstance(v, list) and len(v) == inp[0] and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) < 1e6
                    for x in v)):
                raise bad(f"{key} must be {inp[0]} finite numbers, got {printable(str(v), 60)}")
            stats.append(tuple(float(x) for x in v))
        if not all(s >= 1e-6 for s in stats[1]):
            raise bad("std must be positive")
        classes = d.get("classes", [])
        if not (isinstance(classes, list) and len(classes) <= MAX_CLASSES
                and all(isinstance(c, str) and len(c) <= MAX_NAME for c in classes)):
            raise bad(f"classes must be at most {MAX_CLASSES:,} names of at most {MAX_NAME} characters")
        try:
            channel_matrix(src[0], inp[0])
        except PreprocessError as e:
            raise bad(e.message) from None
        return cls(inp, src, stats[0], stats[1], tuple(classes))

    def onnx_nodes(self, network_input: str, image_input: str = "image"):
        """ONNX nodes, initializers and the graph input that turn uint8 N x h x w x c images (the training
        images' size, with c = file_channels(), channels last as image files hold them) into `network_input`."""
        from onnx import TensorProto, helper, numpy_helper
        h, w = self.source[1:]
        c = self.file_channels()
        mc, mr, mw = self.matrices(c, (h, w))
        tc = self.input[0]
        p = "preprocess_"
        inits = [numpy_helper.from_array(mc.reshape(tc, c, 1, 1), p + "channels"),
                 numpy_helper.from_array(mr, p + "rows"), numpy_helper.from_array(mw, p + "cols"),
                 numpy_helper.from_array(np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1), p + "mean"),
                 numpy_helper.from_array(np.asarray(self.std, np.float32).reshape(1, -1, 1, 1), p + "std")]
        nodes = [helper.make_node("Cast", [image_input], [p + "float"], to=TensorProto.FLOAT),
                 helper.make_node("Transpose", [p + "float"], [p + "nchw"], perm=[0, 3, 1, 2]),
                 helper.make_node("Conv", [p + "nchw", p + "channels"], [p + "unit"], kernel_shape=[1, 1]),
                 helper.make_node("MatMul", [p + "rows", p + "unit"], [p + "rowed"]),
                 helper.make_node("MatMul", [p + "rowed", p + "cols"], [p + "fitted"]),
                 helper.make_node("Sub", [p + "fitted", p + "mean"], [p + "centred"]),
                 helper.make_node("Div", [p + "centred", p + "std"], [network_input])]
        graph_input = helper.make_tensor_value_info(image_input, TensorProto.UINT8, ["N", h, w, c])
        return nodes, inits, graph_input


def _floats(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def statistics(images: np.ndarray, channels: int, sample: int = 10000, size: Optional[tuple] = None):
    """Per-channel mean and std of training images (uint8 N x c x h x w) after the channel step, over at most
    `sample` images: what normalisation divides by. A constant channel gets std 1e-3, not 0."""
    x = np.asarray(images[:sample])
    m = channel_matrix(x.shape[1], channels)
    total = np.zeros(channels)
    square = np.zeros(channels)
    count = 0
    for start in range(0, len(x), 512):
        y = np.einsum("oc,nchw->nohw", m, x[start:start + 512].astype(np.float64))
        total += y.sum(axis=(0, 2, 3))
        square += (y * y).sum(axis=(0, 2, 3))
        count += y.shape[0] * y.shape[2] * y.shape[3]
    mean = total / max(count, 1)
    var = np.maximum(square / max(count, 1) - mean * mean, 0.0) * (count / max(count - 1, 1))
    std = np.sqrt(var)
    std = np.where(np.isfinite(std), std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(max(v, 1e-3)) for v in std)
