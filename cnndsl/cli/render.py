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


def _pair(values) -> str:
    return f"{values[0]}" if values[0] == values[1] else f"{values[0]}x{values[1]}"


def rf_cell(size, jump, padding, shape, image) -> str:
    """The RF column: `size /jump`, or `all` for a vector or a 1x1 map (after global pooling or fc) whose field
    covers the whole `image` (H, W): the formula's field there (404 /224 after VGG's fc1 on 224) counts cells
    beyond the image's edges, and a jump means nothing for one unit. The JSON keeps the exact numbers."""
    if image and (len(shape) == 1 or tuple(shape[1:]) == (1, 1)) and \
            all(-padding[i] <= 0 and size[i] - padding[i] >= image[i] for i in (0, 1)):
        return "all"
    return f"{_pair(size)} /{_pair(jump)}"


def _image(graph) -> tuple | None:
    shape = graph.input_shape
    return tuple(shape[1:3]) if len(shape) == 3 else None


def _rf(rf, shape=(), image=None) -> str:
    return rf_cell(rf.size, rf.stride, rf.padding, shape, image)


def _rf_view(rf: dict, shape=(), image=None) -> str:
    return rf_cell(rf["size"], rf["stride"], rf["padding"], shape, image)


def _shape(shape) -> str:
    return "x".join(map(str, shape))


MAX_INPUTS_SHOWN = 4


def _connected(n, stage: str) -> str:
    """A node's inputs for the "connected to" column, each named relative to the row's block (the scope
    its own name sits in), else to its stage, else in full."""
    scope = n.name.rpartition(".")[0]
    cut = len(scope) + 1
    names = []
    for i in n.inputs[:MAX_INPUTS_SHOWN]:
        if scope and i.startswith(scope) and len(i) > cut and i[cut - 1] == ".":
            i = i[cut:]
        elif i.startswith(stage) and len(i) > len(stage) + 1 and i[len(stage)] == ".":
            i = i[len(stage) + 1:]
        names.append(printable(i, 40))
    if len(n.inputs) > MAX_INPUTS_SHOWN:
        names.append(f"+{len(n.inputs) - MAX_INPUTS_SHOWN} more")
    return ", ".join(names)


def branches(report: Report) -> bool:
    """Whether some layer reads anything but the layer before it (a skip, a branch or a merge)."""
    nodes = report.graph.nodes
    return any(n.inputs != (prev.name,) for prev, n in zip(nodes, nodes[1:]))


def rows(report: Report, connected: bool | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """The table's rows as (kind, cells): kind is 'stage' (one cell), 'layer' or 'total'. With `connected`
    (by default: when the network branches) each layer whose input is not the row above names its inputs."""
    g = report.graph
    if connected is None:
        connected = branches(report)
    out: list[tuple[str, tuple[str, ...]]] = []
    stage = None
    previous = g.nodes[0].name
    image = _image(g)
    for n in g.nodes[1:]:
        if n.stage != stage:
            stage = n.stage
            out.append(("stage", (printable(stage),)))
        params = report.params[n.name]
        macs = report.macs[n.name] * report.batch
        short = n.name[len(stage) + 1:] if n.name.startswith(stage + ".") else n.name
        cells = ("  " + printable(short, 80), OPS[n.op].describe(n.attrs) if OPS[n.op].weight else n.op,
                 "x".join(map(str, n.shape)), f"{params:,}" if params else "",
                 _human(macs) if macs else "", _rf(report.rf[n.name], n.shape, image))
        if connected:
            cells += ("" if n.inputs == (previous,) else _connected(n, stage),)
        out.append(("layer", cells))
        previous = n.name
    t = report.totals
    out.append(("total", ("total", "", "x".join(map(str, g.output.shape)), f"{t['params']:,}", _human(t["macs"]), "")
                + (("",) if connected else ())))
    return out


def _view_rows(report: Report, depth: str) -> tuple[tuple, list[tuple[str, tuple[str, ...]]]]:
    """The stage or block view's columns and rows (block: consecutive identical instances as one row)."""
    from ..analysis import views
    out: list[tuple[str, tuple[str, ...]]] = []
    t = report.totals
    image = _image(report.graph)

    def numbers(r) -> tuple[str, ...]:
        return (_shape(r["output_shape"]), f"{r['params']:,}" if r["params"] else "",
                _human(r["macs"]) if r["macs"] else "", _bytes(r["weight_bytes"]) if r["weight_bytes"] else "",
                _bytes(r["activation_bytes"]), _rf_view(r["rf"], r["output_shape"], image))

    total = (_shape(report.graph.output.shape), f"{t['params']:,}", _human(t["macs"]), _bytes(t["weight_bytes"]),
             _bytes(t["activation_bytes"]), "")
    if depth == "stage":
        for r in views.stage_rows(report):
            out.append(("layer", (printable(r["name"], 80), f"{r['layers']:,}") + numbers(r)))
        out.append(("total", ("total", f"{t['layers']:,}") + total))
        return STAGE_COLUMNS, out
    stage = None
    for r in views.collapsed_block_rows(report):
        if r["kind"] == "input":
            out.append(("layer", (printable(r["name"], 80), "", "") + numbers(r)))
            continue
        if r["stage"] != stage:
            stage = r["stage"]
            out.append(("stage", (printable(stage),)))
        name = printable(views.relative(r["name"], stage), 80)
        if r["count"] > 1:
            name += f" (x{r['count']})"
        op = r["description"] if r["kind"] == "layer" and OPS[r["op"]].weight else r.get("op", "")
        out.append(("layer", ("  " + name, op, f"{r['layers']:,}") + numbers(r)))
    out.append(("total", ("total", "", f"{t['layers']:,}") + total))
    return BLOCK_COLUMNS, out


STAGE_COLUMNS = (("stage", False), ("layers", True), ("output", True), ("params", True), ("MACs", True),
                 ("weights", True), ("activations", True), ("RF /jump", True))
BLOCK_COLUMNS = (("block", False), ("op", False), ("layers", True), ("output", True), ("params", True),
                 ("MACs", True), ("weights", True), ("activations", True), ("RF /jump", True))


def aligned(title: str, columns, body: list[tuple[str, tuple[str, ...]]]) -> Text:
    """Rows laid out as aligned text: a bold header and totals, a cyan line per stage, rules between."""
    widths = [len(h) for h, _ in columns]
    for kind, cells in body:
        if kind != "stage":
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]

    def line(cells) -> str:
        return GAP.join(c.rjust(w) if right else c.ljust(w)
                        for c, w, (_, right) in zip(cells, widths, columns)).rstrip()

    rule = "─" * (sum(widths) + len(GAP) * (len(widths) - 1))
    lines = [title, line([h for h, _ in columns]), rule]
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


def table_text(report: Report, depth: str = "layer") -> Text:
    """The table at a depth, aligned and styled: per layer (the default), per block instance or per stage."""
    g = report.graph
    title = f"{printable(g.filename)}: input {'x'.join(map(str, g.input_shape))} (CxHxW), batch {report.batch}"
    if depth == "layer":
        body = rows(report)
        columns = COLUMNS + ((("connected to", False),) if len(body[-1][1]) > len(COLUMNS) else ())
        return aligned(title, columns, body)
    columns, body = _view_rows(report, depth)
    return aligned(title + f", one row per {depth}", columns, body)


def print_report(report: Report, console: Console | None = None, depth: str = "layer",
                 budget: dict | None = None) -> None:
    """Print the table, totals, memory, the budget's verdict and warnings; lines are never re-wrapped
    (pipes and grep see them whole)."""
    console = console or Console()
    t = report.totals
    g = report.graph
    lines = [table_text(report, depth),
             f"params {t['params']:,} ({_human(t['params'])}) trainable, buffers {t['buffers']:,}; "
             f"MACs {t['macs']:,} ({_human(t['macs'])}), FLOPs = 2 x MACs = {_human(t['flops'])}",
             f"memory ({report.dtype}, batch {report.batch}): weights {_bytes(t['weight_bytes'])}, "
             f"activations {_bytes(t['activation_bytes'])} in all, "
             f"inference peak {_bytes(t['peak_activation_bytes'])}"]
    for w in report.notes:                      # facts about choices made on purpose: dimmed
        where = f"{printable(g.filename)}:{w['line']}:{w['column']}: " if w.get("line") else ""
        lines.append(Text(f"{where}note: {printable(w['message'], 2000)}", style="dim"))
    for w in report.warnings:                   # likely mistakes
        where = f"{printable(g.filename)}:{w['line']}:{w['column']}: " if w.get("line") else ""
        lines.append(Text.assemble((f"{where}warning:", "yellow"), f" {printable(w['message'], 2000)}"))
        if w.get("hint"):
            lines.append(Text(f"  hint: {printable(w['hint'], 2000)}"))
    if budget is not None:
        from ..analysis.views import budget_lines
        for check, text in zip(budget["limits"], budget_lines(budget)):
            lines.append(Text.assemble(("budget:", "green" if check["ok"] else "bold red"), f" {text}"))
    for item in lines:
        console.print(item, highlight=False, soft_wrap=True)


def _signed_human(n: int) -> str:
    return "" if not n else ("+" if n > 0 else "-") + _human(abs(n))


def _signed_bytes(n: int) -> str:
    return "" if not n else ("+" if n > 0 else "-") + _bytes(abs(n))


def _signed(n: int) -> str:
    return f"{n:+,}" if n else ""


DIFF_LAYER_COLUMNS = (("", False), ("layer", False), ("op", False), ("output", True), ("params", True),
                      ("MACs", True), ("activations", True), ("RF /jump", True))
DIFF_STAGE_COLUMNS = (("", False), ("stage", False), ("layers", True), ("output", True), ("params", True),
                      ("MACs", True), ("activations", True), ("RF /jump", True))


def diff_text(d, depth: str = "layer") -> Text:
    """The comparison as aligned text: per stage (every stage pair), or per layer (the layers that differ,
    under their stage, with how many are the same). Differences are B - A."""
    from ..analysis.diff import MARK, _both, stage_title
    from ..analysis.views import relative

    def shapes(v) -> str:
        return _both(*(None if s is None else _shape(s) for s in (v["a"], v["b"])))

    images = (_image(d.a.graph), _image(d.b.graph))

    def rfs(v, outputs) -> str:      # `all` where a side's one unit sees its whole input, as in analyze's table
        return _both(*(None if rf is None else rf_cell(rf["size"], rf["stride"], rf["padding"], shape or (), image)
                       for rf, shape, image in zip((v["a"], v["b"]), (outputs["a"], outputs["b"]), images)))

    def deltas(r) -> tuple[str, ...]:
        return (_signed(r["params"]["delta"]), _signed_human(r["macs"]["delta"]),
                _signed_bytes(r["activation_bytes"]["delta"]))

    body: list[tuple[str, tuple[str, ...]]] = []
    for s in d.sections:
        title = printable(stage_title(s), 200)
        counts = s["rows"]
        if depth == "stage":
            layers = _both(*(None if v is None else f"{v:,}" for v in (s["layers"]["a"], s["layers"]["b"])))
            body.append(("layer", (MARK[s["status"]], title, layers, shapes(s["output_shape"]), *deltas(s),
                                   rfs(s["rf"], s["output_shape"]))))
            continue
        if s is d.sections[0] and s["status"] == "same":       # the inputs, when they are the same
            continue
        notes = [f"{counts[k]} {k}" for k in ("changed", "added", "removed") if counts[k]]
        if counts["same"]:
            notes.append(f"{counts['same']} the same")
        side = {"added": "+ ", "removed": "- "}.get(s["status"], "")      # a stage only one side has
        body.append(("stage", (f"{side}{title}  ({', '.join(notes) or 'empty'})",)))
        for r in s["_layers"]:
            if r["status"] == "same":
                continue
            names = _both(*(None if n is None else printable(relative(n, st), 80)
                            for n, st in zip(r["name"].values(), r["stage"].values())))
            ops = _both(*(None if op is None else (desc if OPS[op].weight else op)
                          for op, desc in zip(r["op"].values(), r["description"].values())))
            body.append(("layer", (MARK[r["status"]], "  " + names, ops, shapes(r["output_shape"]), *deltas(r),
                                   rfs(r["rf"], r["output_shape"]))))
    t = d.totals
    total = ("", "total", _both(f"{t['layers']['a']:,}", f"{t['layers']['b']:,}") if depth == "stage" else "",
             _both(_shape(d.a.graph.output.shape), _shape(d.b.graph.output.shape)), _signed(t["params"]["delta"]),
             _signed_human(t["macs"]["delta"]), _signed_bytes(t["activation_bytes"]["delta"]), "")
    body.append(("total", total))
    ga, gb = d.a.graph, d.b.graph
    title = (f"{printable(ga.filename)} → {printable(gb.filename)}: input "
             f"{_both(_shape(ga.input_shape), _shape(gb.input_shape))} (CxHxW), batch {d.a.batch}; B - A")
    return aligned(title, DIFF_STAGE_COLUMNS if depth == "stage" else DIFF_LAYER_COLUMNS, body)


def print_diff(d, console: Console | None = None, depth: str = "layer") -> None:
    """Print the comparison and its totals (A → B, exact, with the difference)."""
    console = console or Console()
    t = d.totals

    def change(key: str, fmt=lambda n: f"{n:,}") -> str:
        v = t[key]
        return f"{fmt(v['a'])} → {fmt(v['b'])} ({'+' if v['delta'] >= 0 else '-'}{fmt(abs(v['delta']))})"

    lines = [diff_text(d, depth),
             f"params {change('params')}; buffers {change('buffers')}",
             f"MACs {change('macs')}, {change('macs', _human)}; FLOPs = 2 x MACs",
             f"layers {change('layers')}, weight layers {change('weight_layers')}",
             f"memory ({d.a.dtype}, batch {d.a.batch}): weights {change('weight_bytes', _bytes)}, "
             f"activations {change('activation_bytes', _bytes)} in all, "
             f"inference peak {change('peak_activation_bytes', _bytes)}"]
    for item in lines:
        console.print(item, highlight=False, soft_wrap=True)
