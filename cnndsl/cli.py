"""The command line (click + rich): the only place that prints."""
from __future__ import annotations

import json
import sys
from typing import Optional

import click

from .errors import CnnDslError

EXIT_INPUT_ERROR = 1
EXIT_INTERNAL = 70


def _human(n: float, unit: str = "") -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def _bytes(n: int) -> str:
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n} B"


def _input_shape(value: Optional[str]):
    if value is None:
        return None
    parts = value.lower().replace("\u00d7", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and 0 < int(p) for p in parts):
        raise click.BadParameter(f"expected HxWxC such as 224x224x3, got {value!r}")
    return tuple(int(p) for p in parts)


def _load(path: str, input_shape=None):
    """Compile a spec file (or '-' for standard input); errors propagate as CnnDslError."""
    import cnndsl
    if path.lower().endswith(".onnx"):   # analyze a model cnndsl did not write
        from .onnx_import import import_onnx
        return import_onnx(path, input_shape)
    if path == "-":
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            from .errors import SyntaxError_
            from .syntax import _offset_span
            head = data[:e.start].decode("utf-8", "replace")
            raise SyntaxError_(f"byte 0x{data[e.start]:02x} is not UTF-8 text", _offset_span(head + "?", len(head)),
                               "is this a binary file? specs are UTF-8 text").attach(head, "<stdin>") from None
        return cnndsl.compile(text, input_shape=input_shape, filename="<stdin>")
    from pathlib import Path
    try:
        text = cnndsl.read_spec(path)
    except (OSError, IsADirectoryError) as e:
        raise click.FileError(path, hint=e.strerror or str(e)) from None
    return cnndsl.compile(text, input_shape=input_shape, filename=path)


def _guard(fn):
    """Turn input errors into diagnostics and unexpected failures into a one-line report, never a traceback."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnnDslError as e:
            click.echo(e.render(), err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except RecursionError:
            click.echo("error: input nests too deeply to process", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except MemoryError:
            click.echo("error: out of memory while processing the input", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except Exception as e:  # a bug in cnndsl: say so plainly
            click.echo(f"internal error: {type(e).__name__}: {e}\n"
                       "this is a bug in cnndsl; please report it with the spec that caused it", err=True)
            sys.exit(EXIT_INTERNAL)
    return run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnndsl", message="cnndsl %(version)s")
def main():
    """cnndsl: compile and analyze compact CNN specs such as
    `(conv3-64 x2 + maxpool) x5 | fc4096 | fc1000 | softmax`."""


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Batch size for MACs and memory.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16", "float64", "int8"]),
              help="Element type for memory figures.")
@_guard
def analyze(spec, as_json, input_shape, batch, dtype):
    """Per-layer shapes, parameters, MACs, memory and receptive fields of SPEC ('-' reads stdin, a .onnx
    file is imported)."""
    from .report import Report
    graph = _load(spec, _input_shape(input_shape))
    report = Report(graph, batch=batch, dtype=dtype)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    from .render import print_report
    print_report(report)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def check(spec, input_shape):
    """Parse and verify SPEC only; exit 0 when it is a valid network."""
    graph = _load(spec, _input_shape(input_shape))
    shape = "x".join(map(str, graph.output.shape))
    click.echo(f"{graph.filename}: ok ({len(graph.nodes) - 1} layers, output {shape})")


@main.command("fmt")
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@_guard
def fmt(spec):
    """Print SPEC in canonical form (comments are dropped)."""
    import cnndsl
    text = sys.stdin.read() if spec == "-" else cnndsl.read_spec(spec)
    name = "<stdin>" if spec == "-" else spec
    click.echo(cnndsl.format_spec(text, name), nl=False)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--target", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="Backend to emit.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True,
              help="File to write: a Python module (torch) or a .onnx model (onnx).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="torch: also WRITE the initial weights here (torch.save). onnx: READ weights from this "
                   "state dict or checkpoint (.pt/.pth/.ckpt, or .npz).")
@click.option("--class-name", default="Net", show_default=True, help="torch: name of the generated class.")
@click.option("--logits", is_flag=True, help="Leave out a final softmax (for training with cross-entropy).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initial weights.")
@click.option("--opset", type=int, default=None, help="onnx: opset version (default 18; 13..21 supported).")
@click.option("--fp16", is_flag=True, help="onnx: store weights and run in float16.")
@click.option("--static-batch", is_flag=True, help="onnx: fix the batch to 1 instead of a dynamic 'N' axis.")
@click.option("--external-data", is_flag=True, help="onnx: weights in FILE.data (automatic above 2 GB).")
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def build(spec, target, output, weights, class_name, logits, seed, opset, fp16, static_batch, external_data,
          input_shape):
    """Emit SPEC for a backend: a self-contained PyTorch source file, or an ONNX model."""
    graph = _load(spec, _input_shape(input_shape))
    if target == "onnx":
        from .onnx_backend import DEFAULT_OPSET, save, to_onnx
        state = _read_weights(weights) if weights else None
        model = to_onnx(graph, weights=state, opset=opset or DEFAULT_OPSET, seed=seed, fp16=fp16,
                        dynamic_batch=not static_batch, logits=logits)
        save(model, output, external_data=True if external_data else None)
        source = "given weights" if weights else f"seeded weights (seed {seed})"
        click.echo(f"wrote {output} (opset {opset or DEFAULT_OPSET}, {len(model.graph.node)} ONNX nodes, {source})",
                   err=True)
        return
    if not class_name.isidentifier():
        raise click.BadParameter(f"{class_name!r} is not a Python identifier", param_hint="--class-name")
    from .torch_backend import generate_source
    _write_atomic(output, generate_source(graph, class_name=class_name, logits=logits).encode())
    message = f"wrote {output} (class {class_name}, {len(graph.nodes) - 1} layers)"
    if weights:
        import io

        import torch

        from .torch_backend import to_torch
        torch.manual_seed(seed)
        model = to_torch(graph, class_name=class_name, logits=logits)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        _write_atomic(weights, buf.getvalue())
        message += f" and {weights} ({sum(p.numel() for p in model.parameters()):,} parameters)"
    click.echo(message, err=True)


def _read_weights(path: str) -> dict:
    """A state dict from .npz, or from a torch state dict / checkpoint ({'model': ...} or {'state_dict': ...})."""
    from .errors import CnnDslError
    try:
        if path.endswith(".npz"):
            import numpy as np
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        import torch
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise click.FileError(path, hint="no such file") from None
    except Exception as e:
        raise CnnDslError(f"cannot read weights from {path}: {type(e).__name__}: {str(e)[:200]}",
                          hint="give a state dict saved with torch.save, a cnndsl checkpoint, or an .npz") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CnnDslError(f"{path} holds a {type(state).__name__}, not a state dict")
    clean = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        clean[k] = v
    return clean


@main.command("run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--input-file", type=click.Path(exists=True, dir_okay=False), help="Input array (.npy); random if absent.")
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
              help="Batch size of a random input.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the output array here (.npy).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=5, show_default=True, help="Classes to print.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--bench", is_flag=True, help="Report latency and throughput.")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="How long --bench runs.")
@_guard
def run_model(model, input_file, batch, output, top_k, provider, bench, seconds):
    """Run an ONNX MODEL with ONNX Runtime (CUDA when available, else CPU)."""
    import numpy as np

    from . import onnx_run
    session, used, why = onnx_run.load_session(model, provider)
    click.echo(f"provider: {used} ({why})", err=True)
    data = None
    if input_file:
        try:
            data = np.load(input_file, allow_pickle=False)
        except Exception as e:
            raise onnx_run.RunError(f"cannot read {input_file}: {str(e)[:200]}", hint="give a .npy array") from None
    name, data = onnx_run.make_input(session, data, batch)
    result = onnx_run.run(session, name, data)
    if output:
        np.save(output, result)
        click.echo(f"wrote {output} ({'x'.join(map(str, result.shape))})", err=True)
    else:
        for i, row in enumerate(onnx_run.top_k(result, top_k)):
            click.echo(f"[{i}] " + "  ".join(f"{cls}:{score:.4f}" for cls, score in row))
    if bench:
        b = onnx_run.benchmark(session, name, data, seconds)
        click.echo(f"{b['runs']} runs at batch {b['batch']}: mean {b['mean_ms']:.2f} ms, p50 {b['p50_ms']:.2f} ms, "
                   f"p90 {b['p90_ms']:.2f} ms, {b['images_per_s']:.1f} images/s ({used})")


def _write_atomic(path: str, data: bytes) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    import os
    import tempfile
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cnndsl-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@main.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Input size, where the model leaves it open.")
@_guard
def import_model(model, input_shape):
    """Print the cnndsl spec equivalent to an ONNX MODEL (checked by compiling it back)."""
    from .onnx_import import import_onnx
    from .spec_writer import write_spec
    click.echo(write_spec(import_onnx(model, _input_shape(input_shape))), nl=False)


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--input", "input_shape", metavar="HxWxC", help="Override the spec's input size.")
@_guard
def ir(spec, input_shape):
    """Print the lowered IR of SPEC, one node per line."""
    click.echo(_load(spec, _input_shape(input_shape)).dump())


if __name__ == "__main__":  # pragma: no cover
    main()
