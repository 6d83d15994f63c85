"""A run folder is a record: what was trained, on what, with which settings and where, and who writes it.

`run.json` holds the spec's text and graph fingerprint, every setting, the data source with a fingerprint of its
bytes, the preprocessing and the environment. `--resume DIR` alone continues a run with its own settings; a flag
that would change what the run learns is refused, except those in RESUME_SAFE. A folder that holds a run is
refused to a new run (unless --force moves the old run aside). A lock (flock on `run.lock`, released by the
kernel when the process dies, even by SIGKILL) stops two writers.

`metrics.jsonl` is a log derived from the checkpoint: every checkpoint carries the epoch records it covers, the
line is appended only after the checkpoint is on disk, and on resume the file is rewritten from the checkpoint,
which repairs a torn last line, a line of an epoch the checkpoint does not cover, or a missing one.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import CnnDslError, printable

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
METRICS_FILE = "metrics.jsonl"
FORMAT = "cnndsl-run/1"
# what marks a folder as holding a run (a new run is refused there)
RUN_MARKERS = (RUN_FILE, "last.pt", "best.pt", METRICS_FILE)
MAX_RECORD_BYTES = 16 << 20        # run.json is read bounded: it holds the spec text and class names

# settings that may differ on --resume, and what changing them does
RESUME_SAFE = {
    "epochs": "extends or shortens the run (not below the epochs done); the learning-rate schedule is recomputed "
              "over the new length",
    "device": "where the run continues (cpu, cuda, ...)",
    "compile": "whether the model is torch.compile'd",
    "channels_last": "the memory format of activations",
    "data_dir": "where the data files are; their fingerprint must still match",
}


class RunFolderError(CnnDslError):
    """A run folder cannot be used as asked: it holds another run, another process writes it, or its record is
    missing or damaged."""

    kind = "run folder error"


# ------------------------------------------------------------ fingerprints --

def graph_layers(graph) -> list[list]:
    """One entry per node: [name, label, description, output shape]; what `layer_mismatch` compares."""
    from ..ir.ops import OPS
    out = []
    for n in graph.nodes:
        try:
            text = OPS[n.op].describe(dict(n.attrs))
        except Exception:                   # a description is for people; the fingerprint is what counts
            text = n.op
        out.append([n.name, n.label, text, list(n.shape), n.op, list(n.inputs)])
    return out


def graph_fingerprint(graph) -> str:
    """A hash of everything that makes two IRs the same network (Node.key: names, ops, inputs, attributes,
    shapes, stages), not the spec's spelling or comments."""
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(repr(n.key()).encode())
        h.update(b"\n")
    return h.hexdigest()


def layer_mismatch(saved_layers, graph):
    """(a sentence naming the first layer where a checkpoint's network, its `layers` record, and `graph` differ,
    the span of that layer in `graph`'s spec or None), or None when they are the same network layer by layer."""
    if not isinstance(saved_layers, list):
        return None
    now = graph_layers(graph)
    for i, (old, new) in enumerate(zip(saved_layers, now)):
        if not (isinstance(old, list) and len(old) >= 6):
            return f"the checkpoint's layer record {i} is malformed", None
        if [old[2], old[3], old[4], old[5]] != [new[2], new[3], new[4], new[5]]:
            where = _layer_name(new)
            return (f"layer {i} ({where}) is '{printable(str(old[2]), 60)}' with output {_shape(old[3])} in the "
                    f"checkpoint's network but '{printable(new[2], 60)}' with output {_shape(new[3])} in this spec",
                    graph.nodes[i].span)
    if len(saved_layers) != len(now):
        extra = "more" if len(saved_layers) > len(now) else "fewer"
        i = min(len(saved_layers), len(now))
        at = now[i] if i < len(now) else saved_layers[i]
        name = _layer_name(at) if isinstance(at, list) and len(at) >= 3 else f"#{i}"
        return (f"the checkpoint's network has {len(saved_layers)} layers, this spec {len(now)} ({extra} in the "
                f"checkpoint, from layer {i}, {name})", graph.nodes[min(i, len(now) - 1)].span)
    return None


def _layer_name(entry) -> str:
    label = entry[1] if isinstance(entry[1], str) and entry[1] else None
    return printable(f"'{label}'" if label else str(entry[0]), 60)


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape) if isinstance(shape, list) else printable(str(shape), 40)


def data_fingerprint(dataset) -> str:
    """sha256 over the data a run learns from and is tested on: images and labels of both splits (their bytes,
    shapes and dtypes) and the class names."""
    import numpy as np
    h = hashlib.sha256()
    for split in (dataset.train, dataset.test):
        for array in (split.images, split.labels):
            a = np.ascontiguousarray(array)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    h.update(json.dumps(list(dataset.classes)).encode())
    return h.hexdigest()


def environment(device: str) -> dict:
    """Versions and the machine a run used: enough to reproduce it or to explain a difference."""
    from ..version import __version__
    env = {"cnndsl": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "device": device}
    for name in ("torch", "numpy", "onnx", "onnxruntime"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = getattr(module, "__version__", "?")
    try:
        import torch
        env["cuda"] = torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    except Exception:
        pass
    env["cpus"] = os.cpu_count()
    return env


# ------------------------------------------------------------------ record --

def settings_of(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def config_from(settings: dict, config_type):
    """The TrainConfig a record holds; an unknown or missing setting is a RunFolderError (checked again by
    check_config, which bounds every value)."""
    names = {f.name for f in fields(config_type)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise RunFolderError(f"the run record has unknown settings: {', '.join(printable(u, 40) for u in unknown[:5])}",
                             hint="was it written by a newer cnndsl?")
    values = dict(settings)
    if isinstance(values.get("freeze"), list):
        values["freeze"] = tuple(values["freeze"])
    return config_type(**values)


def make_record(spec_text: str, spec_file: str, graph, config, data: dict, preprocessing: dict,
                device: str, network=None) -> dict:
    """run.json's content. `graph` is the spec's own network (what its text compiles to); `network` the one
    trained (with --classes, another classifier), when it differs."""
    return {"format": FORMAT, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": [printable(a, 1000) for a in sys.argv[1:]][:200],
            "spec": {"file": spec_file, "text": spec_text,
                     "path": None if spec_file.startswith("<") else os.path.abspath(spec_file),
                     "sha256": hashlib.sha256(spec_text.encode()).hexdigest(),
                     "graph": graph_fingerprint(graph),
                     "network": graph_fingerprint(network if network is not None else graph)},
            "settings": settings_of(config), "data": data, "preprocessing": preprocessing,
            "environment": environment(device)}


def read_record(folder: Path) -> dict:
    """run.json of a run folder, bounded and checked for the parts resume needs."""
    from ..files import open_regular, read_at_most
    path = Path(folder) / RUN_FILE
    try:
        with open_regular(str(path)) as f:
            raw = read_at_most(f, MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise RunFolderError(f"{printable(str(folder))} holds no run record ({RUN_FILE})",
                             hint="--resume continues a run that `cnndsl train` started in that folder") from None
    except OSError as e:
        raise RunFolderError(f"cannot read {printable(str(path))}: {e.strerror or e}") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise RunFolderError(f"{printable(str(path))} is larger than {MAX_RECORD_BYTES:,} bytes")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(f"{printable(str(path))} is not JSON: {printable(str(e), 120)}") from None
    ok = (isinstance(record, dict) and record.get("format") == FORMAT and isinstance(record.get("spec"), dict)
          and isinstance(record["spec"].get("text"), str) and isinstance(record["spec"].get("file"), str)
          and isinstance(record["spec"].get("graph"), str) and isinstance(record.get("settings"), dict)
          and (record["spec"].get("path") is None or isinstance(record["spec"].get("path"), str))
          and isinstance(record.get("data"), dict)
          and (record["data"].get("source") is None or isinstance(record["data"].get("source"), str))
          and (record["data"].get("data_dir") is None or isinstance(record["data"].get("data_dir"), str)))
    if not ok:
        raise RunFolderError(f"{printable(str(path))} is not a cnndsl run record ({FORMAT})")
    return record


def write_json_atomic(path: Path, value) -> None:
    from ..files import atomic_path
    data = (json.dumps(value, indent=1) + "\n").encode()
    with atomic_path(str(path)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def holds_run(folder: Path) -> bool:
    return any((Path(folder) / m).is_file() for m in RUN_MARKERS)


def move_aside(folder: Path) -> Path:
    """--force: rename a folder holding a run to FOLDER.old-YYYYmmdd-HHMMSS[-N] beside it; returns the new name."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = folder.with_name(f"{folder.name}.old-{stamp}" + (f"-{i}" if i else ""))
        if not target.exists():
            try:
                os.rename(folder, target)
            except OSError as e:
                raise RunFolderError(f"cannot move {printable(str(folder))} aside: {e.strerror or e}") from None
            return target
    raise RunFolderError(f"cannot move {printable(str(folder))} aside: no free name")


class RunLock:
    """An exclusive lock on a run folder (flock on run.lock): a second writer is refused, not queued. The kernel
    drops the lock when the process ends, however it ends, so a stale lock file never blocks a resume."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.fd = None

    def acquire(self, write_pid: bool = True) -> "RunLock":
        import fcntl
        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:
            raise RunFolderError(f"cannot lock the run folder {printable(str(self.folder))}: {e.strerror or e}") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise RunFolderError(f"another process{' (pid ' + printable(holder, 20) + ')' if holder else ''} is "
                                 f"writing the run folder {printable(str(self.folder))}",
                                 hint="wait for it to finish, or use another --out") from None
        if write_pid:       # for the message another writer gets
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- metrics --

def rewrite_metrics(folder: Path, history: list) -> None:
    """metrics.jsonl as the checkpoint's history says: one line per epoch it covers, written atomically."""
    from ..files import atomic_path
    data = "".join(json.dumps(r) + "\n" for r in history).encode()
    with atomic_path(str(Path(folder) / METRICS_FILE)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_metrics(folder: Path) -> list[dict]:
    """The records of metrics.jsonl that parse (a torn last line is left out)."""
    out = []
    try:
        text = (Path(folder) / METRICS_FILE).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
