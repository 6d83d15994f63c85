"""Running ONNX models with ONNX Runtime: provider choice, inputs, top-k and timing (no printing).

The model is untrusted: from_onnx.check_before_run looks at it before ONNX Runtime loads it, every run can be
stopped after a time limit, and what the model returns is checked before anything reads it as scores.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np

from ..errors import CnnDslError
from ..errors import printable


class RunError(CnnDslError):
    """The model cannot be loaded or run as asked."""

    kind = "run error"


def choose_providers(requested: str = "auto") -> tuple[list[str], str]:
    """Execution providers for a session, and why: CUDA when onnxruntime-gpu can use a GPU, else the CPU."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    if requested == "cpu":
        return ["CPUExecutionProvider"], "the CPU was asked for"
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "onnxruntime-gpu offers CUDA"
    if requested == "cuda":
        raise RunError("CUDA was asked for, but this ONNX Runtime has no CUDA provider "
                       f"(it offers: {', '.join(available)})",
                       hint="install onnxruntime-gpu with a matching CUDA, or use --provider cpu")
    return ["CPUExecutionProvider"], f"no CUDA provider in this ONNX Runtime (it offers: {', '.join(available)})"


def load_session(path: str, provider: str = "auto"):
    import onnxruntime as ort
    providers, why = choose_providers(provider)
    try:
        session = ort.InferenceSession(path, providers=providers)
    except Exception as e:  # ORT raises its own exception types for corrupt or invalid files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"ONNX Runtime cannot load {path}: {first[:300]}",
                       hint="is it a complete .onnx file? cnndsl analyze can check one") from None
    used = session.get_providers()[0]
    if used != providers[0]:
        why = f"{providers[0]} could not start, fell back to {used}"
    return session, used, why


MAX_INPUT_BYTES = 1 << 30     # an input array larger than this is refused before it is made


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) if len(shape) else "a scalar"


def make_input(session, data: Optional[np.ndarray], batch: int, seed: int = 0,
               max_bytes: int = MAX_INPUT_BYTES) -> tuple[str, np.ndarray]:
    """The model's input name and array: `data` checked against the model's input, or random data.

    The first dimension may be symbolic (the batch); any other symbolic dimension needs real data. Sizes are
    checked before anything is allocated.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RunError(f"the model has {len(inputs)} inputs; cnndsl run feeds models with one input")
    meta = inputs[0]
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    if meta.type not in types:
        raise RunError(f"the model's input '{printable(meta.name)}' is a {meta.type}; cnndsl run feeds float tensors")
    dtype = types[meta.type]
    want = [d if isinstance(d, int) and d > 0 else None for d in (meta.shape or ())]
    shown = "x".join("N" if i == 0 and w is None else ("?" if w is None else str(w)) for i, w in enumerate(want))
    shown = shown or "a scalar"
    if data is None:
        if None in want[1:]:
            raise RunError(f"the model's input is {shown}: its size is not fixed, so no random input can be made",
                           hint="give an input array with --input-file")
        dims = [batch if want[0] is None else want[0], *want[1:]] if want else []
        size = int(np.prod(dims, dtype=object)) * np.dtype(dtype).itemsize
        if size > max_bytes:
            raise RunError(f"an input of {'x'.join(map(str, dims))} would take {size:,} bytes, more than the "
                           f"limit of {max_bytes:,}", hint="lower --batch, or check the model's input size")
        data = np.asarray(np.random.default_rng(seed).standard_normal(dims), dtype=dtype)
    else:
        if data.dtype.kind not in "fiub":
            raise RunError(f"the input array holds {data.dtype}, not numbers")
        if data.ndim == len(want) - 1:
            data = data[None]
        if data.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, data.shape)):
            got = f"has shape {_shape_text(data.shape)}" if data.ndim else "is a scalar"
            raise RunError(f"the input {got}, the model takes {shown}",
                           hint="reshape the array, or analyze the model to see its input")
        if data.size == 0:
            raise RunError(f"the input array is empty (shape {_shape_text(data.shape)})",
                           hint="give at least one sample")
        if data.size * np.dtype(dtype).itemsize > max_bytes:
            raise RunError(f"the input array takes more than the limit of {max_bytes:,} bytes")
        data = data.astype(dtype)
    return meta.name, data


def _call(session, name: str, data: np.ndarray, timeout: Optional[float]) -> list:
    """session.run, stopped by ONNX Runtime's terminate flag once `timeout` seconds have passed."""
    import onnxruntime as ort
    options = ort.RunOptions()
    options.log_severity_level = 4      # the failure is reported here, once, not also in ONNX Runtime's log
    timer = None
    if timeout:
        timer = threading.Timer(timeout, lambda: setattr(options, "terminate", True))
        timer.daemon = True
        timer.start()
    try:
        return session.run(None, {name: data}, options)
    except Exception as e:
        if options.terminate:
            raise RunError(f"ONNX Runtime was stopped after {timeout:g} s", hint="raise --timeout if the model is "
                           "meant to take this long") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"ONNX Runtime failed: {printable(first, 300)}") from None
    finally:
        if timer is not None:
            timer.cancel()


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        kind = "strings" if value.dtype.kind in "OSU" else "booleans" if value.dtype.kind == "b" else value.dtype.name
        return f"a tensor of {kind} ({'shape ' + _shape_text(value.shape) if value.ndim else 'a scalar'})"
    if isinstance(value, (list, tuple)):
        return "a sequence"
    if isinstance(value, dict):
        return "a map"
    return f"a {type(value).__name__}"


def run(session, name: str, data: np.ndarray, timeout: Optional[float] = None) -> np.ndarray:
    """The model's first output, which must be a tensor of numbers or booleans (not strings, a sequence or a map)."""
    outputs = _call(session, name, data, timeout)
    if not outputs:
        raise RunError("the model returned no output")
    result = outputs[0]
    if not isinstance(result, np.ndarray) or result.dtype.kind not in "fiub":
        raise RunError(f"the model's first output is {_describe(result)}; cnndsl run handles tensors of numbers",
                       hint="run the model with ONNX Runtime directly")
    return result


def preprocessing_of(session):
    """(the Preprocessing a cnndsl model records in its metadata, its output kind, whether it is embedded), or a
    RunError for a model without one. The metadata is untrusted: Preprocessing.from_dict checks every value."""
    import json

    from ..preprocess import MAX_CLASSES, MAX_NAME, Preprocessing, PreprocessError
    from .to_onnx import EMBEDDED_KEY, OUTPUT_KEY, PREPROCESSING_KEY
    meta = session.get_modelmeta().custom_metadata_map
    text = meta.get(PREPROCESSING_KEY)
    if text is None:
        raise RunError("the model records no preprocessing, so images cannot be prepared for it",
                       hint="export it from a checkpoint of cnndsl train (cnndsl build --target onnx --weights "
                            "run/best.pt), or give a prepared array with --input-file")
    if len(text) > (MAX_CLASSES * (MAX_NAME + 4) + 100_000):
        raise RunError("the model's preprocessing record is too large")
    try:
        plan = Preprocessing.from_dict(json.loads(text), "the model's preprocessing record")
    except ValueError as e:
        raise RunError(f"the model's preprocessing record is not JSON: {printable(str(e), 100)}") from None
    except PreprocessError as e:
        raise RunError(e.message, hint=e.hint) from None
    kind = meta.get(OUTPUT_KEY, "probabilities")
    if kind not in ("logits", "probabilities"):
        raise RunError(f"the model's output kind {printable(kind, 20)!r} is neither logits nor probabilities")
    return plan, kind, meta.get(EMBEDDED_KEY) == "true"


MAX_IMAGES = 1 << 16        # image files classified in one call


def classify(session, paths, top: int, timeout: Optional[float] = None) -> list:
    """[(path, [(class name, probability), ...])] for image files, each prepared with the model's recorded
    preprocessing (numpy, cnndsl/preprocess.py) or fed as uint8 to a model with the preprocessing embedded."""
    from ..train.data import DataError, _pillow, read_image
    if len(paths) > MAX_IMAGES:
        raise RunError(f"{len(paths):,} images at once; classify at most {MAX_IMAGES:,}")
    plan, kind, embedded = preprocessing_of(session)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RunError(f"the model has {len(inputs)} inputs; cnndsl run feeds models with one input")
    meta = inputs[0]
    Image = _pillow()
    out = []
    for path in paths:
        try:
            image = read_image(path, plan.file_channels(), None, Image)
        except DataError as e:
            raise RunError(e.message, hint=e.hint) from None
        if embedded:
            want = [d if isinstance(d, int) else None for d in meta.shape or ()]
            if meta.type != "tensor(uint8)" or len(want) != 4:
                raise RunError("the model says its preprocessing is embedded but its input is not uint8 images")
            x = image.transpose(1, 2, 0)[None]
            if any(w is not None and w != s for w, s in zip(want[1:], x.shape[1:])):
                raise RunError(f"{printable(path)} is {x.shape[1]}x{x.shape[2]}x{x.shape[3]} but the model takes "
                               f"{want[1]}x{want[2]}x{want[3]} images (its preprocessing is embedded for that size)",
                               hint="export without --embed-preprocessing to classify images of any size")
        else:
            want = [d if isinstance(d, int) else None for d in meta.shape or ()]
            if len(want) != 4 or any(w is not None and w != p for w, p in zip(want[1:], plan.input)):
                raise RunError(f"the model's preprocessing record makes {plan.input[1]}x{plan.input[2]}x"
                               f"{plan.input[0]} inputs but the model takes {printable(str(meta.shape), 60)}",
                               hint="the metadata does not belong to this model")
            x = plan.apply(image[None])
            if meta.type == "tensor(float16)":
                x = x.astype(np.float16)
        scores = run(session, meta.name, np.ascontiguousarray(x), timeout).astype(np.float64).reshape(1, -1)
        if kind == "logits":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        row = scores[0]
        if not np.isfinite(row).all():
            raise RunError(f"the model's outputs for {printable(path)} are not finite numbers")
        order = np.argsort(-row, kind="stable")[:top]
        names = plan.classes
        out.append((path, [(names[i] if i < len(names) else str(i), float(row[i])) for i in order]))
    return out


def top_k(output: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """The k largest scores of each sample: the output must hold numbers, one row (or more) per sample."""
    if not isinstance(output, np.ndarray) or output.dtype.kind not in "fiu":
        raise RunError(f"the model's output is {_describe(output)}, not scores to rank",
                       hint="write it to a file with -o")
    if output.ndim == 0:
        raise RunError(f"the model's output is a scalar ({output.dtype.name}), not scores per sample",
                       hint="write it to a file with -o")
    if output.shape[0] == 0 or output.size == 0:
        raise RunError(f"the model's output is empty (shape {_shape_text(output.shape)})",
                       hint="check the input's batch and the model's output")
    flat = output.reshape(output.shape[0], -1).astype(np.float64)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(row[i])) for i in idx] for row, idx in zip(flat, order)]


def benchmark(session, name: str, data: np.ndarray, seconds: float = 2.0, warmup: int = 3,
              timeout: Optional[float] = None) -> dict:
    for _ in range(warmup):
        _call(session, name, data, timeout)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        _call(session, name, data, timeout)
        times.append(time.perf_counter() - start)
    times.sort()
    mean = sum(times) / len(times)
    batch = int(data.shape[0]) if data.ndim else 1
    return {"runs": len(times), "batch": batch, "mean_ms": mean * 1e3,
            "p50_ms": times[len(times) // 2] * 1e3, "p90_ms": times[int(len(times) * 0.9)] * 1e3,
            "images_per_s": batch / mean if mean > 0 else float("inf")}
