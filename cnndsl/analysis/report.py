"""The analysis report: runs the passes over a graph and assembles rows, totals and warnings."""
from __future__ import annotations

from typing import Any

from . import passes
from ..gcpause import gc_paused
from ..ir import Graph
from ..ir.ops import OPS


class Report:
    """Per-layer rows, totals, warnings and notes for one graph; `to_dict()` is the JSON schema."""

    @gc_paused
    def __init__(self, graph: Graph, batch: int = 1, dtype: str = "float32"):
        if dtype not in passes.DTYPE_BYTES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(passes.DTYPE_BYTES)}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive whole number, got {batch!r}")
        self.graph, self.batch, self.dtype = graph, batch, dtype
        self.params, self.buffers, self.macs = passes.counts(graph)
        self.activations = passes.activation_bytes(graph, batch, dtype)
        rf, misaligned = passes.receptive_fields(graph)
        self.rf, self._fields = passes.exact_fields(graph, rf, misaligned)
        # warnings: likely mistakes; notes: facts about deliberate choices (see passes.findings)
        self.warnings, self.notes = passes.findings(graph, self.params, self.rf, misaligned)
        size = passes.DTYPE_BYTES[dtype]
        total_params = sum(self.params.values())
        total_buffers = sum(self.buffers.values())
        total_macs = sum(self.macs.values())
        self.totals = {
            "params": total_params,
            "buffers": total_buffers,
            "macs": total_macs * batch,
            "flops": 2 * total_macs * batch,
            "macs_per_image": total_macs,
            "layers": len(graph.nodes) - 1,
            "weight_layers": sum(1 for n in graph.nodes if OPS[n.op].weight),
            "weight_bytes": (total_params + total_buffers) * size,
            "activation_bytes": sum(self.activations.values()),
            "peak_activation_bytes": passes.peak_activation_bytes(graph, sizes=self.activations),
        }

    def rf_box(self, name: str, y: int = 0, x: int = 0) -> tuple[tuple[int, int], tuple[int, int]]:
        """The input pixels unit (y, x) of node `name` depends on: ((top, bottom), (left, right)), inclusive,
        before clipping to the image (a field may reach into the image's padding). Exact for every unit,
        including uneven and enlarging adaptive pooling; for a vector node (y, x) is (0, 0). A unit whose
        window lies wholly in padding sees nothing: its bounds then have top > bottom (or left > right)."""
        if self._fields is None:
            self._fields = passes.unit_fields(self.graph)
        (lo_h, hi_h), (lo_w, hi_w) = self._fields[name]
        if not (0 <= y < len(lo_h) and 0 <= x < len(lo_w)):
            raise IndexError(f"node {name!r} has {len(lo_h)}x{len(lo_w)} units; ({y}, {x}) is outside")
        return (lo_h[y], hi_h[y]), (lo_w[x], hi_w[x])

    def layer(self, name: str) -> dict[str, Any]:
        n = self.graph[name]
        row = {
            "name": n.name, "op": n.op, "stage": n.stage, "inputs": list(n.inputs),
            "description": OPS[n.op].describe(n.attrs), "output_shape": list(n.shape),
            "params": self.params[name], "buffers": self.buffers[name],
            "macs": self.macs[name] * self.batch, "flops": 2 * self.macs[name] * self.batch,
            "activation_bytes": self.activations[name], "rf": self.rf[name].to_dict(),
        }
        if n.label:
            row["label"] = n.label
        if n.span is not None:
            row["line"], row["column"] = n.span.line, n.span.column
        return row

    def stages(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for n in self.graph.nodes[1:]:
            r = rows.setdefault(n.stage, {"name": n.stage, "layers": 0, "params": 0, "macs": 0})
            r["layers"] += 1
            r["params"] += self.params[n.name]
            r["macs"] += self.macs[n.name] * self.batch
            r["output_shape"] = list(n.shape)
        return list(rows.values())

    @gc_paused
    def to_dict(self) -> dict[str, Any]:
        g = self.graph
        return {
            "spec": g.filename,
            "input_shape": list(g.input_shape),
            "output_shape": list(g.output.shape),
            "batch": self.batch,
            "dtype": self.dtype,
            "macs_note": "macs are multiply-accumulates of conv and fc layers; flops = 2 x macs",
            "totals": dict(self.totals),
            "stages": self.stages(),
            "layers": [self.layer(n.name) for n in g.nodes],
            "warnings": [dict(w) for w in self.warnings],
            "notes": [dict(w) for w in self.notes],
        }
