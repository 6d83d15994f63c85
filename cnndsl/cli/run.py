"""`cnndsl run`: an ONNX model through ONNX Runtime."""
from __future__ import annotations

import json
import sys

import click

from ..errors import printable
from .common import FiniteFloat, _guard, _guard_output, _input_shape, _load, _read_text, _write_atomic, main  # noqa: F401


@main.command("run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--input-file", type=click.Path(exists=True, dir_okay=False), help="Input array (.npy); random if absent.")
@click.option("--batch", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
              help="Batch size of a random input.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the output array here (.npy).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=5, show_default=True, help="Classes to print.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--bench", is_flag=True, help="Report latency and throughput.")
@click.option("--seconds", type=FiniteFloat(0.01, 3600), default=2.0, show_default=True, help="How long --bench runs.")
@_guard
def run_model(model, input_file, batch, output, top_k, provider, bench, seconds):
    """Run an ONNX MODEL with ONNX Runtime (CUDA when available, else CPU)."""
    import numpy as np

    from ..backends import onnx_run
    try:
        from ..backends.from_onnx import check_external_data
    except ModuleNotFoundError:      # no onnx package: ONNX Runtime's own check of external data paths stands
        pass
    else:
        check_external_data(model)
    session, used, why = onnx_run.load_session(model, provider)
    click.echo(f"provider: {used} ({why})", err=True)
    data = None
    if input_file:
        import os
        if os.path.getsize(input_file) > onnx_run.MAX_INPUT_BYTES + 4096:
            raise onnx_run.RunError(f"{printable(input_file)} is larger than the input limit of "
                                    f"{onnx_run.MAX_INPUT_BYTES:,} bytes")
        try:
            data = np.load(input_file, allow_pickle=False)
        except Exception as e:
            raise onnx_run.RunError(f"cannot read {printable(input_file)}: {printable(str(e), 200)}",
                                    hint="give a .npy array") from None
        if not isinstance(data, np.ndarray):
            data.close()
            raise onnx_run.RunError(f"{printable(input_file)} is not a .npy array", hint="save it with numpy.save")
    name, data = onnx_run.make_input(session, data, batch)
    result = onnx_run.run(session, name, data)
    if output:
        import io
        buf = io.BytesIO()
        np.save(buf, result)
        _write_atomic(output, buf.getvalue())
        click.echo(f"wrote {printable(output)} ({'x'.join(map(str, result.shape))})", err=True)
    else:
        for i, row in enumerate(onnx_run.top_k(result, top_k)):
            click.echo(f"[{i}] " + "  ".join(f"{cls}:{score:.4f}" for cls, score in row))
    if bench:
        b = onnx_run.benchmark(session, name, data, seconds)
        click.echo(f"{b['runs']} runs at batch {b['batch']}: mean {b['mean_ms']:.2f} ms, p50 {b['p50_ms']:.2f} ms, "
                   f"p90 {b['p90_ms']:.2f} ms, {b['images_per_s']:.1f} images/s ({used})")
