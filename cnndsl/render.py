"""Rich rendering of an analysis report: one table grouped by stage, totals and warnings."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .ops import OPS
from .report import Report


def _human(n: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
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


def print_report(report: Report, console: Console | None = None) -> None:
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=max(console.width, 120))
    g = report.graph
    t = report.totals
    table = Table(title=f"{g.filename}: input {'x'.join(map(str, g.input_shape))} (CxHxW), batch {report.batch}",
                  title_justify="left", header_style="bold")
    table.add_column("layer", no_wrap=True)
    table.add_column("op")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("RF /jump", justify="right")
    stage = None
    for n in g.nodes[1:]:
        if n.stage != stage:
            if stage is not None:
                table.add_section()
            stage = n.stage
            table.add_row(f"[bold cyan]{stage}[/]", "", "", "", "", "")
        params = report.params[n.name]
        macs = report.macs[n.name] * report.batch
        short = n.name[len(stage) + 1:] if n.name.startswith(stage + ".") else n.name
        table.add_row("  " + short, OPS[n.op].describe(n.attrs) if n.op in ("conv", "fc") else n.op,
                      "x".join(map(str, n.shape)), f"{params:,}" if params else "",
                      _human(macs) if macs else "", _rf(report.rf[n.name]))
    table.add_section()
    table.add_row("[bold]total[/]", "", "x".join(map(str, g.output.shape)), f"[bold]{t['params']:,}[/]",
                  f"[bold]{_human(t['macs'])}[/]", "")
    console.print(table)
    console.print(
        f"params {t['params']:,} ({_human(t['params'])}) trainable, buffers {t['buffers']:,}; "
        f"MACs {t['macs']:,} ({_human(t['macs'])}), FLOPs = 2 x MACs = {_human(t['flops'])}")
    console.print(
        f"memory ({report.dtype}, batch {report.batch}): weights {_bytes(t['weight_bytes'])}, "
        f"activations {_bytes(t['activation_bytes'])} in all, inference peak {_bytes(t['peak_activation_bytes'])}")
    for w in report.warnings:
        where = f"{g.filename}:{w['line']}:{w['column']}: " if w.get("line") else ""
        console.print(f"[yellow]{where}warning:[/] {w['message']}", highlight=False)
