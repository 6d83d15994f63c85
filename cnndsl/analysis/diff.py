"""The differences between two networks: their layers aligned, per stage and per layer, with exact totals.

Stages pair by name (in order); a run of stages that differ in name on both sides between two that pair is
compared as one section. Within a section, layers pair by name relative to their stage first (`conv1` of
`stage1.conv1` and of a plain `conv1` in stage1), then the rest by order within each gap between those: the
longest common subsequence of their ops, and what lies between its matches paired in order; what remains is
added or removed. Totals are
the difference of the two reports' totals, and every node (the inputs too, in a section of their own) is in
exactly one row, so the rows add up to them.
"""
from __future__ import annotations

from collections import deque
from difflib import SequenceMatcher
from typing import Any, Optional

from ..ir import Node
from ..ir.ops import OPS
from . import passes
from .report import Report
from .views import md_escape, md_table, relative, shape_text

FIELDS = ("params", "buffers", "macs", "flops", "activation_bytes")
LCS_CELLS = 250_000           # above this many cells, a linear greedy match stands in for the exact LCS


def _lcs(x: list, y: list) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of x and y, matching as early as possible."""
    n, m = len(x), len(y)
    pre = 0
    while pre < n and pre < m and x[pre] == y[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and suf < m - pre and x[n - 1 - suf] == y[m - 1 - suf]:
        suf += 1
    pairs = [(k, k) for k in range(pre)]
    xs, ys = x[pre:n - suf], y[pre:m - suf]
    if xs and ys:
        if len(xs) * len(ys) > LCS_CELLS:
            pairs += [(pre + i, pre + j) for i, j in _greedy(xs, ys)]
        else:
            a, b = len(xs), len(ys)
            table = [[0] * (b + 1) for _ in range(a + 1)]
            for i in range(a - 1, -1, -1):
                row, below, xi = table[i], table[i + 1], xs[i]
                for j in range(b - 1, -1, -1):
                    if xi == ys[j]:
                        row[j] = below[j + 1] + 1
                    else:
                        down, right = below[j], row[j + 1]
                        row[j] = down if down >= right else right
            i = j = 0
            while i < a and j < b:
                if xs[i] == ys[j]:
                    pairs.append((pre + i, pre + j))
                    i += 1
                    j += 1
                elif table[i + 1][j] >= table[i][j + 1]:
                    i += 1
                else:
                    j += 1
    pairs += [(n - suf + k, m - suf + k) for k in range(suf)]
    return pairs


def _greedy(x: list, y: list, window: int = 64) -> list[tuple[int, int]]:
    """A common subsequence found in linear time (for sections too long for the exact table): equal items
    match; otherwise the side whose item recurs soonest on the other (within `window`) skips ahead."""
    pairs = []
    i = j = 0
    while i < len(x) and j < len(y):
        if x[i] == y[j]:
            pairs.append((i, j))
            i += 1
            j += 1
            continue
        ahead_y = next((k for k in range(1, window) if j + k < len(y) and y[j + k] == x[i]), None)
        ahead_x = next((k for k in range(1, window) if i + k < len(x) and x[i + k] == y[j]), None)
        if ahead_y is not None and (ahead_x is None or ahead_y <= ahead_x):
            j += ahead_y
        elif ahead_x is not None:
            i += ahead_x
        else:
            i += 1
            j += 1
    return pairs


def _by_order(x: list, y: list) -> list[tuple[int, int]]:
    """Pairs of x and y indices in order: the LCS of the keys, and between its matches, position by position."""
    pairs = []
    last_i = last_j = -1
    for i, j in _lcs(x, y) + [(len(x), len(y))]:
        gap = min(i - last_i - 1, j - last_j - 1)
        pairs += [(last_i + 1 + k, last_j + 1 + k) for k in range(gap)]
        if i < len(x):
            pairs.append((i, j))
        last_i, last_j = i, j
    return pairs


def align(xs: list[Node], ys: list[Node]) -> list[tuple[Optional[Node], Optional[Node]]]:
    """The layers of one section paired: by name within their stage, then by order; in display order (the
    second network's order, each removed layer where it stood among the first's)."""
    names: dict[str, deque] = {}
    for j, n in enumerate(ys):
        names.setdefault(relative(n.name, n.stage), deque()).append(j)
    partner_of_x: list[Optional[int]] = [None] * len(xs)
    partner_of_y: list[Optional[int]] = [None] * len(ys)
    for i, n in enumerate(xs):
        free = names.get(relative(n.name, n.stage))
        if free:
            j = free.popleft()
            partner_of_x[i], partner_of_y[j] = j, i
    # the rest pairs by order within each gap between layers paired by name (when those keep their order;
    # otherwise across the whole section)
    anchors = [j for j in partner_of_x if j is not None]
    monotone = all(p < q for p, q in zip(anchors, anchors[1:]))
    gaps_x: dict[int, list[int]] = {}
    gaps_y: dict[int, list[int]] = {}
    seen = 0
    for i, p in enumerate(partner_of_x):
        if p is None:
            gaps_x.setdefault(seen if monotone else 0, []).append(i)
        else:
            seen += 1
    seen = 0
    for j, p in enumerate(partner_of_y):
        if p is None:
            gaps_y.setdefault(seen if monotone else 0, []).append(j)
        else:
            seen += 1
    for gap, rest_x in gaps_x.items():
        rest_y = gaps_y.get(gap)
        if not rest_y:
            continue
        for a, b in _by_order([xs[i].op for i in rest_x], [ys[j].op for j in rest_y]):
            i, j = rest_x[a], rest_y[b]
            partner_of_x[i], partner_of_y[j] = j, i
    out: list[tuple[Optional[Node], Optional[Node]]] = []
    i = 0
    for j, n in enumerate(ys):
        p = partner_of_y[j]
        if p is not None:
            while i <= p:
                if partner_of_x[i] is None:
                    out.append((xs[i], None))
                i += 1
            out.append((xs[p], n))
        else:
            out.append((None, n))
    out += [(xs[k], None) for k in range(i, len(xs)) if partner_of_x[k] is None]
    return out


def _sides(a: Any, b: Any) -> dict[str, Any]:
    return {"a": a, "b": b}


def _numbers(a: Optional[int], b: Optional[int]) -> dict[str, Any]:
    return {"a": a, "b": b, "delta": (b or 0) - (a or 0)}


class Diff:
    """Two reports compared: `sections` (stages paired, each with its layer rows) and `totals`."""

    def __init__(self, a: Report, b: Report):
        self.a, self.b = a, b
        ga, gb = a.graph, b.graph
        stages_a, stages_b = ga.stages, gb.stages
        nodes_a: dict[str, list] = {s: [] for s in stages_a}
        nodes_b: dict[str, list] = {s: [] for s in stages_b}
        for n in ga.nodes[1:]:
            nodes_a[n.stage].append(n)
        for n in gb.nodes[1:]:
            nodes_b[n.stage].append(n)
        pairs: list[tuple[list[str], list[str]]] = []
        for op, i1, i2, j1, j2 in SequenceMatcher(None, stages_a, stages_b, autojunk=False).get_opcodes():
            if op == "equal":
                pairs += [([s], [s]) for s in stages_a[i1:i2]]
            elif op == "replace":
                pairs.append((stages_a[i1:i2], stages_b[j1:j2]))
            elif op == "delete":
                pairs += [([s], []) for s in stages_a[i1:i2]]
            else:
                pairs += [([], [s]) for s in stages_b[j1:j2]]
        self.sections = []
        first_a, first_b = ga.nodes[0], gb.nodes[0]       # the inputs: a section of their own, so rows add up
        self.sections.append(self.section([first_a.stage], [first_b.stage], [first_a], [first_b],
                                          [self.row(first_a, first_b)]))
        for sa, sb in pairs:
            xs = [n for s in sa for n in nodes_a[s]]
            ys = [n for s in sb for n in nodes_b[s]]
            rows = [self.row(x, y) for x, y in align(xs, ys)]
            self.sections.append(self.section(sa, sb, xs, ys, rows))
        self.totals = {k: _numbers(a.totals[k], b.totals[k]) for k in a.totals}

    def _layer(self, report: Report, n: Optional[Node]) -> dict[str, Any]:
        if n is None:
            return {}
        macs = report.macs[n.name] * report.batch
        return {"name": n.name, "stage": n.stage, "op": n.op, "description": OPS[n.op].describe(n.attrs),
                "output_shape": list(n.shape), "params": report.params[n.name],
                "buffers": report.buffers[n.name], "macs": macs, "flops": 2 * macs,
                "activation_bytes": report.activations[n.name], "rf": report.rf[n.name].to_dict()}

    def row(self, x: Optional[Node], y: Optional[Node]) -> dict[str, Any]:
        """One aligned pair (either side may be None) as {status, name, stage, op, description, output_shape,
        rf: {a, b}, and params, buffers, macs, flops, activation_bytes: {a, b, delta}}."""
        la, lb = self._layer(self.a, x), self._layer(self.b, y)
        row: dict[str, Any] = {}
        for k in ("name", "stage", "op", "description", "output_shape", "rf"):
            row[k] = _sides(la.get(k), lb.get(k))
        for k in FIELDS:
            row[k] = _numbers(la.get(k), lb.get(k))
        if x is None:
            status = "added"
        elif y is None:
            status = "removed"
        else:
            same = all(la[k] == lb[k] for k in ("op", "description", "output_shape", "rf", *FIELDS))
            status = "same" if same else "changed"
        return {"status": status, **row}

    def section(self, sa: list[str], sb: list[str], xs: list, ys: list, rows: list) -> dict[str, Any]:
        """A stage pair's sums: layers and FIELDS {a, b, delta} (None for a side with no stage), the output
        shape and receptive field of each side's last layer, and how many rows are same/changed/added/removed."""
        out: dict[str, Any] = {"stages": _sides(sa, sb)}
        counts = {s: 0 for s in ("same", "changed", "added", "removed")}
        for r in rows:
            counts[r["status"]] += 1
        out["status"] = "added" if not sa else "removed" if not sb else \
            "same" if counts["same"] == len(rows) else "changed"
        out["layers"] = _numbers(sum(1 for n in xs if n.inputs) if sa else None,       # the input is no layer
                                 sum(1 for n in ys if n.inputs) if sb else None)
        for k in FIELDS:
            out[k] = _numbers(sum(r[k]["a"] or 0 for r in rows) if sa else None,
                              sum(r[k]["b"] or 0 for r in rows) if sb else None)
        size_a, size_b = passes.DTYPE_BYTES[self.a.dtype], passes.DTYPE_BYTES[self.b.dtype]
        out["weight_bytes"] = _numbers(
            (out["params"]["a"] + out["buffers"]["a"]) * size_a if sa else None,
            (out["params"]["b"] + out["buffers"]["b"]) * size_b if sb else None)
        out["output_shape"] = _sides(list(xs[-1].shape) if xs else None, list(ys[-1].shape) if ys else None)
        out["rf"] = _sides(self.a.rf[xs[-1].name].to_dict() if xs else None,
                           self.b.rf[ys[-1].name].to_dict() if ys else None)
        out["rows"] = counts
        out["_layers"] = rows
        return out

    def to_dict(self, depth: str = "layer") -> dict[str, Any]:
        """The JSON form: both networks, totals {a, b, delta} for every key of the reports' totals, stages
        and (at depth layer) every aligned layer, each with its stage pair."""
        def side(r: Report) -> dict[str, Any]:
            g = r.graph
            return {"spec": g.filename, "input_shape": list(g.input_shape), "output_shape": list(g.output.shape)}
        out = {"a": side(self.a), "b": side(self.b), "batch": self.a.batch, "dtype": self.a.dtype, "depth": depth,
               "totals": self.totals,
               "stages": [{k: v for k, v in s.items() if k != "_layers"} for s in self.sections]}
        if depth == "layer":
            out["layers"] = [r for s in self.sections for r in s["_layers"]]
        return out


def diff(a: Report, b: Report) -> Diff:
    """Compare two reports (of the same batch and dtype, for figures that mean the same)."""
    return Diff(a, b)


def stage_title(section: dict[str, Any]) -> str:
    """`stage3`, or `stage6, stage7 → graph` for a section whose stages differ in name."""
    sa, sb = section["stages"]["a"], section["stages"]["b"]
    if not sa:
        return ", ".join(sb)
    if not sb:
        return ", ".join(sa)
    return ", ".join(sa) if sa == sb else f"{', '.join(sa)} → {', '.join(sb)}"


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def _rf_text(rf: Optional[dict]) -> str:
    if rf is None:
        return ""
    size, stride = rf["size"], rf["stride"]
    pair = (lambda v: f"{v[0]}" if v[0] == v[1] else f"{v[0]}x{v[1]}")
    return f"{pair(size)} /{pair(stride)}"


def _both(a: Optional[str], b: Optional[str]) -> str:
    if a is None or b is None:
        return a if b is None else b
    return a if a == b else f"{a} → {b}"


MARK = {"same": "", "changed": "~", "added": "+", "removed": "-"}


def to_markdown(d: Diff, depth: str = "layer") -> str:
    """The comparison as Markdown: a title line, one table (stages, or changed layers with their stage),
    exact signed differences, and the totals."""
    ga, gb = d.a.graph, d.b.graph
    out = [f"**{md_escape(ga.filename)}** → **{md_escape(gb.filename)}**: input {shape_text(ga.input_shape)} → "
           f"{shape_text(gb.input_shape)}, batch {d.a.batch}, {d.a.dtype}", ""]
    header = [("", False), ("stage", False)]
    if depth == "stage":
        header += [("layers", True), ("output", True), ("params", True), ("MACs", True), ("activation bytes", True),
                   ("RF /jump", True)]
        body = []
        for s in d.sections:
            layers = (None if v is None else f"{v:,}" for v in (s["layers"]["a"], s["layers"]["b"]))
            body.append([MARK[s["status"]], md_escape(stage_title(s)), md_escape(_both(*layers)),
                         _both(*(None if v is None else shape_text(v) for v in s["output_shape"].values())),
                         _signed(s["params"]["delta"]), _signed(s["macs"]["delta"]),
                         _signed(s["activation_bytes"]["delta"]),
                         _both(*(None if v is None else _rf_text(v) for v in s["rf"].values()))])
    else:
        header += [("layer", False), ("op", False), ("output", True), ("params", True), ("MACs", True),
                   ("activation bytes", True), ("RF /jump", True)]
        body = []
        for s in d.sections:
            for r in s["_layers"]:
                if r["status"] == "same":
                    continue
                names = [None if v is None else relative(v, st)
                         for v, st in zip(r["name"].values(), r["stage"].values())]
                body.append([MARK[r["status"]], md_escape(stage_title(s)), md_escape(_both(*names)),
                             md_escape(_both(*r["description"].values())),
                             _both(*(None if v is None else shape_text(v) for v in r["output_shape"].values())),
                             _signed(r["params"]["delta"]), _signed(r["macs"]["delta"]),
                             _signed(r["activation_bytes"]["delta"]),
                             _both(*(None if v is None else _rf_text(v) for v in r["rf"].values()))])
    out.append(md_table(header, body) if body else "(no layer differs)")
    out += ["", md_table([("total", False), ("a", True), ("b", True), ("delta", True)],
                         [[k, f"{v['a']:,}", f"{v['b']:,}", _signed(v["delta"])] for k, v in d.totals.items()])]
    return "\n".join(out) + "\n"
