"""`cnndsl run`: an ONNX model through ONNX Runtime."""
from __future__ import annotations

import click

from ..errors import printable
from .common import FiniteFloat, _guard, _write_atomic, main


def _regular(path: str, what: str):
    """`path` is a regular file (a pipe or device would block or never end), else a RunError."""
    import os
    import stat

    from ..backends.onnx_run import RunError
    try:
        info = os.stat(path)
    except OSError as e:
        raise RunError(f"cannot read {printable(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunError(f"{printable(path)} is not a regular file", hint=f"give the {what} as a file")


def _read_array(path: str):
    """The array in a .npy file: a regular file, its declared size within the input limit, no pickles."""
    import os

    import numpy as np

    from ..backends import onnx_run
    from ..files import open_regular
    _regular(path, "input array")
    limit = onnx_run.MAX_INPUT_BYTES
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit + 4096:
                raise onnx_run.RunError(f"{printable(path)} is larger than the input limit of {limit:,} bytes")
            declared = _declared_bytes(f)
            if declared is not None and declared > size:
                raise onnx_run.RunError(f"cannot read {printable(path)}: its header declares {declared:,} bytes of "
                                        f"data, but the file is {size:,} bytes", hint="the file may be truncated")
            f.seek(0)
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.ndarray):
                data.close()
                raise onnx_run.RunError(f"{printable(path)} is not a .npy array", hint="save it with numpy.save")
            return data
    except onnx_run.RunError:
        raise
    except Exception as e:
        raise onnx_run.RunError(f"cannot read {printable(path)}: {printable(str(e), 200)}",
                                hint="give a .npy array") from None


def _declared_bytes(f):
    """How many data bytes a .npy header declares (None when the file is not a .npy; np.load then says why)."""
    import numpy as np
    from numpy.lib import format as npy
    if f.read(6) != npy.MAGIC_PREFIX:
        return None
    f.seek(0)
    version = npy.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(f)
    elif hasattr(npy, "_read_array_header"):      # version 3.0 (a UTF-8 header): no public reader
        shape, _, dtype = npy._read_array_header(f, version)
    else:
        return None
    return int(np.prod(shape, dtype=object)) * dtype.itemsize if dtype.kind != "O" else None


@main.command("run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--input-file", type=click.Path(exists=True, dir_okay=False), help="Input array (.npy); random if absent.")
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
              help="Batch size of a random input.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the output array here (.npy).")
@click.option("--top-k", "--top", "top_k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Classes to print.")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per image (with IMAGE files), else the "
              "top classes of each sample.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--bench", is_flag=True, help="Report latency and throughput.")
@click.option("--seconds", type=FiniteFloat(0.01, 3600), default=2.0, show_default=True, help="How long --bench runs.")
@click.option("--timeout", type=FiniteFloat(0.01, 86400), default=600.0, show_default=True,
              help="Stop a run of the model that takes longer (seconds).")
@_guard
def run_model(model, images, input_file, batch, output, top_k, as_json, provider, bench, seconds, timeout):
    """Run an ONNX MODEL with ONNX Runtime (CUDA when available, else CPU).

    With IMAGE files, a model exported from a cnndsl checkpoint classifies them: each image is prepared as its
    training was (the preprocessing in the model's metadata, or in its graph with --embed-preprocessing) and one
    line per image gives `IMAGE: class probability, ...`, as `cnndsl predict` does.

    The model is checked first: external data must lie beside it, and models that loop (Loop, Scan) or make
    sizes from computed values are refused (see cnndsl.backends.from_onnx.check_before_run).
    """
    if images and input_file:
        raise click.UsageError("give IMAGE files or --input-file, not both")
    import numpy as np

    from ..backends import onnx_run
    _regular(model, "model")
    try:
        from ..backends.from_onnx import check_before_run
        import onnx  # noqa: F401
    except ModuleNotFoundError:      # no onnx package: ONNX Runtime's own checks stand
        pass
    else:
        check_before_run(model)
    data = _read_array(input_file) if input_file else None
    session, used, why = onnx_run.load_session(model, provider)
    click.echo(f"provider: {used} ({why})", err=True)
    if images:
        from .train import print_predictions
        print_predictions(onnx_run.classify(session, images, top_k, timeout), as_json)
        return
    name, data = onnx_run.make_input(session, data, batch)
    result = onnx_run.run(session, name, data, timeout)
    if output:
        import io
        buf = io.BytesIO()
        np.save(buf, result, allow_pickle=False)
        _write_atomic(output, buf.getvalue())
        click.echo(f"wrote {printable(output)} ({onnx_run._shape_text(result.shape)})", err=True)
    else:
        for i, row in enumerate(onnx_run.top_k(result, top_k)):
            if as_json:
                import json
                click.echo(json.dumps({"sample": i, "top": [[cls, score] for cls, score in row]}))
            else:
                click.echo(f"[{i}] " + "  ".join(f"{cls}:{score:.4f}" for cls, score in row))
    if bench:
        b = onnx_run.benchmark(session, name, data, seconds, timeout=timeout)
        click.echo(f"{b['runs']} runs at batch {b['batch']}: mean {b['mean_ms']:.2f} ms, p50 {b['p50_ms']:.2f} ms, "
                   f"p90 {b['p90_ms']:.2f} ms, {b['images_per_s']:.1f} images/s ({used})")
