"""Views of an analysis report: one row per stage or per block instance, CSV and Markdown text, budgets.

Everything here reads a `Report`'s public data and costs nothing unless asked for: the default per-layer
table does not come through this module. No printing, no rich: the command line renders what this returns.
"""
from __future__ import annotations

import csv
import io
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Optional

from ..errors import printable
from ..ir.ops import OPS
from . import passes
from .report import Report

DEPTHS = ("stage", "block", "layer")

# ---------------------------------------------------------------------------------------------------------
# Names: a node `layer1.bottleneck2.conv1` of stage `layer1` is layer `conv1` of block instance `bottleneck2`.
# A node whose name does not start with its stage (VGG-19's `conv5` in stage3, mobilenet's `expand1.conv1`)
# is named relative to its stage as it is.


def relative(name: str, stage: str) -> str:
    """`name` without its stage's prefix: what the table's layer column shows."""
    return name[len(stage) + 1:] if _in_stage(name, stage) else name


def _in_stage(name: str, stage: str) -> bool:
    return len(name) > len(stage) + 1 and name.startswith(stage) and name[len(stage)] == "."


def block_of(name: str, stage: str) -> Optional[str]:
    """The full name of the block instance that node `name` belongs to (the name's component after the
    stage), or None for a layer that sits in its stage directly."""
    prefixed = _in_stage(name, stage)
    head, dot, _ = (name[len(stage) + 1:] if prefixed else name).partition(".")
    if not dot:
        return None
    return f"{stage}.{head}" if prefixed else head


# ---------------------------------------------------------------------------------------------------------
# Rows per stage and per block instance


def _summed(report: Report, nodes: list, name: str, **extra) -> dict[str, Any]:
    params = sum(report.params[n.name] for n in nodes)
    buffers = sum(report.buffers[n.name] for n in nodes)
    macs = sum(report.macs[n.name] for n in nodes) * report.batch
    last = nodes[-1]
    layers = sum(1 for n in nodes if n.inputs)      # the input is no layer (as in totals.layers)
    row = {"name": name, **extra, "layers": layers, "output_shape": list(last.shape), "params": params,
           "buffers": buffers, "macs": macs, "flops": 2 * macs,
           "weight_bytes": (params + buffers) * passes.DTYPE_BYTES[report.dtype],
           "activation_bytes": sum(report.activations[n.name] for n in nodes),
           "rf": report.rf[last.name].to_dict()}
    return row


def _groups(report: Report, key) -> list[tuple[Any, list]]:
    """The graph's nodes (input left out) grouped by key(node), groups in order of first appearance."""
    groups: dict[Any, list] = {}
    for n in report.graph.nodes[1:]:
        groups.setdefault(key(n), []).append(n)
    return list(groups.items())


def _input_row(report: Report, **extra) -> dict[str, Any]:
    """The first row of every view: the input image (0 layers; its activation memory counts in the totals)."""
    n = report.graph.nodes[0]
    return _summed(report, [n], n.name, **extra)


def stage_rows(report: Report) -> list[dict[str, Any]]:
    """The input, then one row per stage: layers, summed params/buffers/MACs/FLOPs/weight and activation
    bytes, and the output shape and receptive field of the stage's last node (its output). The rows add up
    to the report's totals."""
    return [_input_row(report)] + [_summed(report, nodes, stage)
                                   for stage, nodes in _groups(report, lambda n: n.stage)]


def _block_groups(report: Report) -> list[tuple[tuple, list]]:
    return _groups(report, lambda n: (n.stage, block_of(n.name, n.stage) or n.name))


def block_rows(report: Report) -> list[dict[str, Any]]:
    """One row per block instance (`kind` "block"), and one per layer that sits in its stage directly
    (`kind` "layer", with its `op`), in graph order, after the input's row (`kind` "input")."""
    out = [_input_row(report, stage=report.graph.nodes[0].stage, kind="input")]
    for (stage, name), nodes in _block_groups(report):
        if len(nodes) == 1 and nodes[0].name == name:
            n = nodes[0]
            out.append(_summed(report, nodes, name, stage=stage, kind="layer", op=n.op,
                               description=OPS[n.op].describe(n.attrs)))
        else:
            out.append(_summed(report, nodes, name, stage=stage, kind="block"))
    return out


def _signature(nodes: list, prefix: str) -> tuple:
    """What makes two block instances the same block: each node's name inside the block, op, attributes,
    shape, and inputs (inside the block by name, outside as one mark)."""
    inside = {n.name for n in nodes}
    cut = len(prefix) + 1
    return tuple((n.name[cut:], n.op, tuple(sorted(n.attrs.items())), n.shape,
                  tuple(i[cut:] if i in inside else None for i in n.inputs)) for n in nodes)


_NUMBERED = re.compile(r"(.*?)(\d+)\Z")


def _run_label(first: str, last: str, count: int) -> str:
    """`bottleneck2..36` for a run of numbered instances, `a..b` otherwise."""
    a, b = _NUMBERED.match(first), _NUMBERED.match(last)
    if a and b and a.group(1) == b.group(1) and int(b.group(2)) - int(a.group(2)) == count - 1:
        return f"{first}..{b.group(2)}"
    return f"{first}..{last}"


def collapsed_block_rows(report: Report) -> list[dict[str, Any]]:
    """block_rows with each run of consecutive identical block instances of a stage summed into one row:
    its `name` then reads `stage.bottleneck2..36` and `count` says how many instances the row holds."""
    runs: list[tuple[Optional[tuple], list[tuple[str, list]]]] = []
    for (stage, name), nodes in _block_groups(report):
        sig = None if len(nodes) == 1 and nodes[0].name == name else (stage, _signature(nodes, name))
        if sig is not None and runs and runs[-1][0] == sig:
            runs[-1][1].append((name, nodes))
        else:
            runs.append((sig, [(name, nodes)]))
    out = [_input_row(report, stage=report.graph.nodes[0].stage, kind="input", count=1)]
    for sig, members in runs:
        nodes = [n for _, ns in members for n in ns]
        first, stage = members[0][0], nodes[0].stage
        if sig is None:
            n = nodes[0]
            out.append(_summed(report, nodes, first, stage=stage, kind="layer", op=n.op, count=1,
                               description=OPS[n.op].describe(n.attrs)))
            continue
        label = first
        if len(members) > 1:
            last = members[-1][0]
            label = _run_label(relative(first, stage), relative(last, stage), len(members))
            if _in_stage(first, stage):
                label = f"{stage}.{label}"
        out.append(_summed(report, nodes, label, stage=stage, kind="block", count=len(members)))
    return out


def rows(report: Report, depth: str) -> list[dict[str, Any]]:
    """The rows of a view: every node (the JSON's `layers`, the input first), block instances or stages."""
    if depth == "layer":
        return [report.layer(n.name) for n in report.graph.nodes]
    if depth == "block":
        return block_rows(report)
    if depth == "stage":
        return stage_rows(report)
    raise ValueError(f"unknown depth {depth!r}; choose one of {', '.join(DEPTHS)}")


def view_dict(report: Report, depth: str = "layer") -> dict[str, Any]:
    """The JSON report (Report.to_dict) and, for the stage and block views, `depth` and their `rows`."""
    out = report.to_dict()
    if depth != "layer":
        out["depth"] = depth
        out["rows"] = rows(report, depth)
    return out


# ---------------------------------------------------------------------------------------------------------
# CSV and Markdown: the same rows and exact numbers as the JSON

_RF = [(f"rf_{part}_{axis}", part, i) for part in ("size", "stride", "padding") for i, axis in enumerate("hw")]
LAYER_COLUMNS = ("name", "stage", "op", "description", "label", "inputs", "output_shape", "params", "buffers",
                 "macs", "flops", "activation_bytes", *(c for c, _, _ in _RF), "rf_uniform", "line", "column")
BLOCK_COLUMNS = ("name", "stage", "kind", "op", "layers", "output_shape", "params", "buffers", "macs", "flops",
                 "weight_bytes", "activation_bytes", *(c for c, _, _ in _RF), "rf_uniform")
STAGE_COLUMNS = ("name", "layers", "output_shape", "params", "buffers", "macs", "flops", "weight_bytes",
                 "activation_bytes", *(c for c, _, _ in _RF), "rf_uniform")
COLUMNS = {"layer": LAYER_COLUMNS, "block": BLOCK_COLUMNS, "stage": STAGE_COLUMNS}
TEXT_COLUMNS = frozenset({"name", "stage", "op", "description", "label", "inputs", "kind"})


def shape_text(shape: Iterable[int]) -> str:
    return "x".join(map(str, shape))


def _safe_text(value: Any) -> str:
    """Spec text for a CSV cell: control characters escaped (as the table shows them), and a cell that a
    spreadsheet would run as a formula (= + - @ first) led by an apostrophe."""
    text = printable(value, 1 << 20)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def flat(row: dict[str, Any], columns: Iterable[str]) -> list[str]:
    """A JSON row as CSV cells: shapes as CxHxW, inputs separated by spaces, rf split by part and axis,
    numbers exact, absent values empty."""
    rf = row.get("rf")
    out = []
    for c in columns:
        if c.startswith("rf_"):
            if c == "rf_uniform":
                value = "true" if rf["uniform"] else "false"
            else:
                _, part, axis = c.split("_")
                value = str(rf[part]["hw".index(axis)])
        elif c == "output_shape":
            value = shape_text(row[c])
        elif c == "inputs":
            value = _safe_text(" ".join(row[c]))
        else:
            v = row.get(c)
            value = "" if v is None else _safe_text(v) if c in TEXT_COLUMNS else str(v)
        out.append(value)
    return out


def to_csv(report: Report, depth: str = "layer") -> str:
    """The view's rows as CSV (RFC 4180 quoting, a header line first)."""
    columns = COLUMNS[depth]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows(report, depth):
        writer.writerow(flat(row, columns))
    return buf.getvalue()


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&~])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(value: Any, limit: int = 1 << 20) -> str:
    """Text for one Markdown table cell: control characters and line breaks escaped (as the table shows
    them), then every character Markdown or a table would read (`|`, `\\`, `*`, `` ` ``, `[`, `<`, `&`, `~`,
    an `_` that is not inside a word) escaped with a backslash."""
    text = printable(value, limit)
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def md_table(header: list[tuple[str, bool]], body: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; header is [(title, right-aligned?)], cells are already escaped."""
    lines = ["| " + " | ".join(h for h, _ in header) + " |",
             "|" + "|".join("---:" if right else ":---" for _, right in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _pair(values) -> str:
    return f"{values[0]}" if values[0] == values[1] else f"{values[0]}x{values[1]}"


def _md_rf(row) -> list[str]:
    return [_pair(row["rf"]["size"]), _pair(row["rf"]["stride"])]


def to_markdown(report: Report, depth: str = "layer", budget: Optional[dict] = None) -> str:
    """The view as Markdown: a title line, the rows (exact numbers with thousands separators), the totals,
    the budget if given, the warnings and the notes."""
    g = report.graph
    num = "{:,}".format
    out = [f"**{md_escape(g.filename)}**: input {shape_text(g.input_shape)} (CxHxW), output "
           f"{shape_text(g.output.shape)}, batch {report.batch}, {report.dtype}", ""]
    if depth == "layer":
        header = [("layer", False), ("stage", False), ("op", False), ("inputs", False), ("output", True),
                  ("params", True), ("buffers", True), ("MACs", True), ("activation bytes", True), ("RF", True),
                  ("jump", True)]
        body = [[md_escape(r["name"]), md_escape(r["stage"]), md_escape(r["description"]),
                 md_escape(", ".join(r["inputs"])), shape_text(r["output_shape"]), num(r["params"]),
                 num(r["buffers"]), num(r["macs"]), num(r["activation_bytes"]), *_md_rf(r)]
                for r in rows(report, depth)]
    else:
        first = [("stage", False)] if depth == "stage" else [("block", False), ("stage", False)]
        header = first + [("layers", True), ("output", True), ("params", True), ("buffers", True), ("MACs", True),
                          ("weight bytes", True), ("activation bytes", True), ("RF", True), ("jump", True)]
        body = [[md_escape(r["name"]), *([] if depth == "stage" else [md_escape(r["stage"])]), num(r["layers"]),
                 shape_text(r["output_shape"]), num(r["params"]), num(r["buffers"]), num(r["macs"]),
                 num(r["weight_bytes"]), num(r["activation_bytes"]), *_md_rf(r)]
                for r in rows(report, depth)]
    out.append(md_table(header, body))
    t = report.totals
    out += ["", md_table([("total", False), ("value", True)],
                         [[k, num(t[k])] for k in ("params", "buffers", "macs", "flops", "layers", "weight_layers",
                                                   "weight_bytes", "activation_bytes", "peak_activation_bytes")])]
    if budget is not None:
        out += ["", md_budget(budget)]
    if report.warnings or report.notes:
        out.append("")
        for kind, items in (("warning", report.warnings), ("note", report.notes)):
            for w in items:
                where = f"line {w['line']}, column {w['column']}: " if w.get("line") else ""
                hint = f" (hint: {md_escape(w['hint'], 2000)})" if w.get("hint") else ""
                out.append(f"- {kind}: {where}{md_escape(w['message'], 2000)}{hint}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Budgets: `params<=25M,macs<=4.1G,memory<=500MB`

BUDGET_KEYS = {
    # key: (unit, what it limits, the report's figure)
    "params": ("count", "trainable parameters", lambda t: t["params"]),
    "macs": ("count", "multiply-accumulates for the batch", lambda t: t["macs"]),
    "flops": ("count", "2 x MACs", lambda t: t["flops"]),
    "memory": ("bytes", "weights + peak activations", lambda t: t["weight_bytes"] + t["peak_activation_bytes"]),
    "weights": ("bytes", "(params + buffers) x dtype size", lambda t: t["weight_bytes"]),
    "activations": ("bytes", "every layer's output, summed", lambda t: t["activation_bytes"]),
    "peak": ("bytes", "inference peak of live activations", lambda t: t["peak_activation_bytes"]),
}
COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
BYTE_SUFFIXES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                 "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
BUDGET_EXAMPLE = "params<=25M,macs<=4.1G,memory<=500MB"
_LIMIT = re.compile(r"\s*([A-Za-z_]\w*)\s*(<=|<|=<|>=|>|==|=|\u2264)?\s*([0-9]*\.?[0-9]*)\s*([A-Za-z]*)\s*")


class BudgetError(ValueError):
    """A budget that cannot be read (the command line reports it as a usage error)."""


def parse_budget(text: str) -> list[dict[str, Any]]:
    """`KEY<=LIMIT[,KEY<LIMIT...]` as [{key, op, limit, text}]: counts take K/M/G/T (powers of 1000), bytes
    B, KB/MB/GB/TB (1000) or KiB/MiB/GiB/TiB (1024). Raises BudgetError naming what is wrong."""
    out: list[dict[str, Any]] = []
    if len(text) > 2000:
        raise BudgetError("the budget is too long (at most 2,000 characters)")
    items = text.split(",")
    for item in items:
        shown = printable(item.strip(), 60)
        if not item.strip():
            raise BudgetError(f"empty limit in {printable(text, 80)!r}; expected KEY<=LIMIT[,...] such as "
                              f"{BUDGET_EXAMPLE}")
        m = _LIMIT.fullmatch(item)
        if not m or not m.group(2) or not m.group(3) or m.group(3) == ".":
            raise BudgetError(f"cannot read {shown!r}; expected KEY<=LIMIT[,...] such as {BUDGET_EXAMPLE}")
        key, op, number, suffix = m.group(1).lower(), m.group(2), m.group(3), m.group(4)
        if key not in BUDGET_KEYS:
            raise BudgetError(f"unknown budget key {printable(m.group(1), 40)!r} in {shown!r}; choose from "
                              f"{', '.join(BUDGET_KEYS)}")
        if op == "\u2264":
            op = "<="
        if op not in ("<=", "<"):
            raise BudgetError(f"{shown!r}: a budget is an upper limit; use <= or <, not {op}")
        unit = BUDGET_KEYS[key][0]
        table = COUNT_SUFFIXES if unit == "count" else BYTE_SUFFIXES
        factor = table.get(suffix.lower())
        if factor is None:
            allowed = "K/M/G/T (powers of 1000)" if unit == "count" else \
                "B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024)"
            raise BudgetError(f"{shown!r}: '{key}' is {'a count' if unit == 'count' else 'in bytes'}; its suffix is "
                              f"one of {allowed}, not {printable(suffix, 20)!r}")
        if len(number) > 30:
            raise BudgetError(f"{shown!r}: the number is too long")
        try:
            value = Decimal(number) * factor
        except InvalidOperation:     # pragma: no cover (the pattern admits only decimals)
            raise BudgetError(f"cannot read the number in {shown!r}") from None
        if any(limit["key"] == key for limit in out):
            raise BudgetError(f"'{key}' is limited twice")
        limit = int(value) if value == value.to_integral_value() else float(value)
        out.append({"key": key, "op": op, "limit": limit, "text": f"{key}{op}{number}{suffix}", "_exact": value})
    return out


def check_budget(report: Report, limits: list[dict[str, Any]]) -> dict[str, Any]:
    """Each limit with the report's figure (`actual`) and whether it holds (`ok`); `ok` overall. For the
    report's batch and dtype."""
    checked = []
    for limit in limits:
        actual = BUDGET_KEYS[limit["key"]][2](report.totals)
        exact = limit.get("_exact", limit["limit"])
        ok = actual <= exact if limit["op"] == "<=" else actual < exact
        checked.append({"key": limit["key"], "op": limit["op"], "limit": limit["limit"], "text": limit["text"],
                        "actual": actual, "ok": ok})
    return {"ok": all(c["ok"] for c in checked), "limits": checked}


def budget_lines(budget: dict[str, Any], failed_only: bool = False) -> list[str]:
    """One line per limit: `params 60,192,808 is over params<=25M (25,000,000)`, or `... within ...`."""
    out = []
    for c in budget["limits"]:
        if failed_only and c["ok"]:
            continue
        what = " bytes (weights + peak activations)" if c["key"] == "memory" else \
            " bytes" if BUDGET_KEYS[c["key"]][0] == "bytes" else ""
        limit = f"{c['limit']:,}" if isinstance(c["limit"], int) else f"{c['limit']:,.3f}".rstrip("0").rstrip(".")
        verdict = "within" if c["ok"] else "is over"
        out.append(f"{c['key']} {c['actual']:,}{what} {verdict} {c['text']} ({limit})")
    return out


def md_budget(budget: dict[str, Any]) -> str:
    return md_table([("limit", False), ("actual", True), ("limit value", True), ("ok", False)],
                    [[md_escape(c["text"]), f"{c['actual']:,}", f"{c['limit']:,}", "yes" if c["ok"] else "**no**"]
                     for c in budget["limits"]])
