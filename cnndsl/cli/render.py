"""Rich rendering of an analysis report: one table grouped by stage, totals and warnings."""
from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..errors import printable
from ..ir.ops import OPS
from ..analysis.report import Report

# (header, right-aligned?) per column. The table is laid out here as aligned, styled text and printed
# through rich: rich.Table measures every cell and costs ~0.5 ms a row (15 s for a 20,000-row network,
# 70 ms for VGG-16); aligned text costs ~10 us a row and looks the same in a terminal.
COLUMNS = (("layer", False), ("op", False), ("output", True), ("params", True), ("MACs", True),
           ("RF /jump", True))
GAP = "  "


def _human(n: float) -> str:
    for factor, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}"
    return f"{n:g}"


def _bytes(n: int) -> str:
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n} B"


def _rf(rf) -> str:
    size = f"{rf.size[0]}" if rf.size[0] == rf.size[1] else f"{rf.size[0]}x{rf.size[1]}"
    jump = f"{rf.stride[0]}" if rf.stride[0] == rf.stride[1] else f"{rf.stride[0]}x{rf.stride[1]}"
    return f"{size} /{jump}"


def rows(report: Report) -> list[tuple[str, tuple[str, ...]]]:
    """The table's rows as (kind, cells): kind is 'stage' (one cell), 'layer' or 'total'."""
    g = report.graph
    out: list[tuple[str, tuple[str, ...]]] = []
    stage = None
    for n in g.nodes[1:]:
        if n.stage != stage:
            stage = n.stage
            out.append(("stage", (printable(stage),)))
        params = report.params[n.name]
        macs = report.macs[n.name] * report.batch
        short = n.name[len(stage) + 1:] if n.name.startswith(stage + ".") else n.name
        out.append(("layer", ("  " + printable(short, 80), OPS[n.op].describe(n.attrs) if OPS[n.op].weight else n.op,
                              "x".join(map(str, n.shape)), f"{params:,}" if params else "",
                              _human(macs) if macs else "", _rf(report.rf[n.name]))))
    t = report.totals
    out.append(("total", ("total", "", "x".join(map(str, g.output.shape)), f"{t['params']:,}", _human(t["macs"]), "")))
    return out


def table_text(report: Report) -> Text:
    """The per-layer table, aligned and styled: bold header and totals, a cyan line per stage."""
    body = rows(report)
    widths = [len(h) for h, _ in COLUMNS]
    for kind, cells in body:
        if kind != "stage":
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]

    def line(cells) -> str:
        return GAP.join(c.rjust(w) if right else c.ljust(w)
                        for c, w, (_, right) in zip(cells, widths, COLUMNS)).rstrip()

    rule = "─" * (sum(widths) + len(GAP) * (len(widths) - 1))
    g = report.graph
    title = f"{printable(g.filename)}: input {'x'.join(map(str, g.input_shape))} (CxHxW), batch {report.batch}"
    lines = [title, line([h for h, _ in COLUMNS]), rule]
    styled = [(1, "bold")]
    for i, (kind, cells) in enumerate(body):
        if kind == "stage":
            if i:
                lines.append(rule)
            styled.append((len(lines), "bold cyan"))
            lines.append(cells[0])
        elif kind == "total":
            lines.append(rule)
            styled.append((len(lines), "bold"))
            lines.append(line(cells))
        else:
            lines.append(line(cells))
    text = Text("\n".join(lines))
    starts = [0]
    for s in lines:
        starts.append(starts[-1] + len(s) + 1)
    for index, style in styled:
        text.stylize(style, starts[index], starts[index + 1] - 1)
    return text


def print_report(report: Report, console: Console | None = None) -> None:
    """Print the table, totals, memory and warnings; lines are never re-wrapped (pipes and grep see them whole)."""
    console = console or Console()
    t = report.totals
    g = report.graph
    lines = [table_text(report),
             f"params {t['params']:,} ({_human(t['params'])}) trainable, buffers {t['buffers']:,}; "
             f"MACs {t['macs']:,} ({_human(t['macs'])}), FLOPs = 2 x MACs = {_human(t['flops'])}",
             f"memory ({report.dtype}, batch {report.batch}): weights {_bytes(t['weight_bytes'])}, "
             f"activations {_bytes(t['activation_bytes'])} in all, "
             f"inference peak {_bytes(t['peak_activation_bytes'])}"]
    for w in report.warnings:
        where = f"{printable(g.filename)}:{w['line']}:{w['column']}: " if w.get("line") else ""
        lines.append(Text.assemble((f"{where}warning:", "yellow"), f" {printable(w['message'], 2000)}"))
    for item in lines:
        console.print(item, highlight=False, soft_wrap=True)
