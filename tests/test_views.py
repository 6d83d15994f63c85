"""`cnndsl analyze` views: --depth stage|block|layer, --format table|json|csv|markdown (CSV and Markdown hold the
JSON's rows and exact numbers), the "connected to" column, and --budget (exit 0 within, 3 over, 2 malformed)."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

import cnndsl
from cnndsl.analysis import views
from cnndsl.analysis.report import Report
from cnndsl.ir.graph import Graph
from conftest import spec_path

SAMPLE = ("resnet152", "googlenet", "vgg19", "mobilenet_v2", "densenet121", "efficientnet_b0", "lenet5",
          "convnext_tiny", "shufflenet_v2_x1_0")
SUMMED = ("params", "buffers", "macs", "flops", "weight_bytes", "activation_bytes", "layers")


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    return {name: cnndsl.analyze(cnndsl.compile(spec_path(name))) for name in SAMPLE}


def expected_counts(graph: Graph) -> tuple[int, int]:
    """Stages and block instances, counted from the IR's names here (not with the module under test): a node
    `stage.block.rest` (or `block.rest` in stage `stage`) belongs to block `block`; a node with no component
    after its stage's is a row of its own."""
    stages, blocks = set(), set()
    for n in graph.nodes[1:]:
        stages.add(n.stage)
        parts = n.name.split(".")
        if len(parts) > 1 and parts[0] == n.stage:
            parts = parts[1:]
        blocks.add((n.stage, parts[0]) if len(parts) > 1 else (n.stage, n.name, "layer"))
    return len(stages) + 1, len(blocks) + 1          # and the input's row


# ------------------------------------------------------------------------------------------------ depths ----

@pytest.mark.parametrize("name", SAMPLE)
def test_row_counts_and_sums_per_depth(reports, name):
    report = reports[name]
    t = report.totals
    n_stages, n_blocks = expected_counts(report.graph)
    stage_rows, block_rows = views.stage_rows(report), views.block_rows(report)
    assert len(stage_rows) == n_stages and len(block_rows) == n_blocks
    assert [r["name"] for r in stage_rows] == ["input"] + report.graph.stages
    assert stage_rows[0]["output_shape"] == list(report.graph.input_shape) and stage_rows[0]["layers"] == 0
    assert t["weight_bytes"] == (t["params"] + t["buffers"]) * 4    # float32
    for rows in (stage_rows, block_rows, views.collapsed_block_rows(report)):
        for key in SUMMED:
            assert sum(r[key] for r in rows) == t[key], (name, key)
    # the stage's output is its last layer's; the same figures as Report.stages() where both have them
    for mine, theirs in zip(stage_rows[1:], report.stages(), strict=True):
        assert {k: mine[k] for k in theirs} == theirs


def test_block_rows_of_resnet152_and_collapsed_runs(reports):
    report = reports["resnet152"]
    rows = views.block_rows(report)
    names = [r["name"] for r in rows if r["kind"] == "block"]
    assert names[:3] == ["layer1.bottleneck1", "layer1.bottleneck2", "layer1.bottleneck3"] and len(names) == 50
    collapsed = views.collapsed_block_rows(report)
    by_name = {r["name"]: r for r in collapsed}
    run = by_name["layer3.bottleneck2..36"]
    assert run["count"] == 35 and run["layers"] == 350
    assert run["params"] == sum(r["params"] for r in rows if r["name"].startswith("layer3.")
                                and r["name"] != "layer3.bottleneck1")
    assert "layer1.bottleneck1" in by_name        # the projection block differs from the ones after it
    assert len(collapsed) == 17 and collapsed[0]["kind"] == "input"


def test_stage_view_of_resnet152_fits_one_screen(cli):
    result = cli("analyze", "--depth", "stage", str(spec_path("resnet152")))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 120
    assert re.search(r"^layer3\s+362\s+1024x14x14\s+40,613,888\s+8\.02G", result.output, re.M)
    assert re.search(r"^total\s+516\s+1000\s+60,192,808\s+11\.51G", result.output, re.M)


def test_block_table_collapses_identical_blocks(cli):
    out = cli("analyze", "--depth", "block", str(spec_path("resnet152"))).output
    assert "bottleneck2..36 (x35)" in out and "bottleneck2..8 (x7)" in out
    assert "bottleneck17" not in out


@pytest.mark.parametrize("depth", ["stage", "block"])
def test_json_at_a_depth_adds_its_rows(cli, depth):
    data = json.loads(cli("analyze", "--format", "json", "--depth", depth, str(spec_path("googlenet"))).output)
    report = cnndsl.analyze(cnndsl.compile(spec_path("googlenet")))
    assert data["depth"] == depth and data["rows"] == views.rows(report, depth)
    assert data["totals"] == report.totals and len(data["layers"]) == len(report.graph.nodes)


def test_json_alias_and_default_json_unchanged(cli):
    spec = str(spec_path("resnet18"))
    plain = cli("analyze", "--json", spec).output
    assert plain == cli("analyze", "--format", "json", spec).output
    data = json.loads(plain)
    assert "rows" not in data and "depth" not in data and "budget" not in data
    assert data == json.loads(json.dumps(cnndsl.analyze(cnndsl.compile(spec_path("resnet18"))).to_dict()))
    bad = cli("analyze", "--json", "--format", "csv", spec)
    assert bad.exit_code == 2 and "--json" in bad.output


# ----------------------------------------------------------------------------- CSV and Markdown round trips ----

def json_rows(cli, name: str, depth: str) -> list[dict]:
    data = json.loads(cli("analyze", "--json", "--depth", depth, str(spec_path(name))).output)
    return data["layers"] if depth == "layer" else data["rows"]


def parse_shape(text: str) -> list[int]:
    return [int(v) for v in text.split("x")]


def parse_pair(text: str) -> list[int]:
    values = [int(v) for v in text.split("x")]
    return values * 2 if len(values) == 1 else values


@pytest.mark.parametrize("name", ["googlenet", "resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("depth", ["stage", "block", "layer"])
def test_csv_round_trips_to_the_json(cli, name, depth):
    rows = json_rows(cli, name, depth)
    result = cli("analyze", "--format", "csv", "--depth", depth, str(spec_path(name)))
    assert result.exit_code == 0
    parsed = list(csv.DictReader(io.StringIO(result.output)))
    assert len(parsed) == len(rows)
    numbers = [k for k in ("params", "buffers", "macs", "flops", "weight_bytes", "activation_bytes", "layers")
               if k in rows[0]]
    for mine, row in zip(parsed, rows):
        assert mine["name"] == row["name"]
        assert parse_shape(mine["output_shape"]) == row["output_shape"]
        for k in numbers:
            assert re.fullmatch(r"\d+", mine[k]), (k, mine[k])        # exact: no 1.2M, no separators
            assert int(mine[k]) == row[k], (row["name"], k)
        for part in ("size", "stride", "padding"):
            assert [int(mine[f"rf_{part}_h"]), int(mine[f"rf_{part}_w"])] == row["rf"][part]
        assert mine["rf_uniform"] == ("true" if row["rf"]["uniform"] else "false")
        if depth == "layer":
            assert mine["inputs"].split() == row["inputs"] and mine["op"] == row["op"]
            assert mine["line"] == str(row.get("line", ""))


MD_CELL = re.compile(r"(?<!\\)\|")


def md_tables(text: str) -> list[list[list[str]]]:
    """Every table of a Markdown text, as rows of cells (the header row first, the alignment row dropped)."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in MD_CELL.split(line)[1:-1]]
            if current is None:
                current = []
                tables.append(current)
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


def md_int(text: str) -> int:
    assert re.fullmatch(r"[-+]?\d{1,3}(,\d{3})*", text), text
    return int(text.replace(",", ""))


@pytest.mark.parametrize("name", ["googlenet", "resnet18"])
@pytest.mark.parametrize("depth", ["stage", "block", "layer"])
def test_markdown_round_trips_to_the_json(cli, name, depth):
    data = json.loads(cli("analyze", "--json", "--depth", depth, str(spec_path(name))).output)
    rows = data["layers"] if depth == "layer" else data["rows"]
    text = cli("analyze", "--format", "markdown", "--depth", depth, str(spec_path(name))).output
    table, totals = md_tables(text)[:2]
    header, body = table[0], table[1:]
    assert len(body) == len(rows)
    col = {h: i for i, h in enumerate(header)}
    for cells, row in zip(body, rows):
        get = (lambda h: cells[col[h]])
        assert parse_shape(get("output")) == row["output_shape"]
        for title, key in (("params", "params"), ("buffers", "buffers"), ("MACs", "macs"),
                           ("activation bytes", "activation_bytes")):
            assert md_int(get(title)) == row[key], (row["name"], key)
        if depth != "layer":
            assert md_int(get("weight bytes")) == row["weight_bytes"] and md_int(get("layers")) == row["layers"]
        assert parse_pair(get("RF")) == row["rf"]["size"] and parse_pair(get("jump")) == row["rf"]["stride"]
    assert len(totals) == 10 and {r[0]: md_int(r[1]) for r in totals[1:]} == \
        {r[0]: data["totals"][r[0]] for r in totals[1:]}


# --------------------------------------------------------------------------------------- hostile labels ----

HOSTILE = ["a|b", "line\nbreak", "=HYPERLINK(\"http://x\")", "*bold* _it_ `code` [l](u) <b>&amp;", "back\\slash",
           "tab\there", "+1", "@SUM(A1)", "-2", "\x1b[31mred", "pipe|and,comma\"quote"]


def hostile_report() -> Report:
    """A small network whose every stage and node name is hostile text (ONNX names can be anything)."""
    g = cnndsl.compile_text("input 8x8x3\nconv3-4 + relu + conv3-4 + relu | fc5 + relu + fc2")
    names = {n.name: (f"{HOSTILE[i % len(HOSTILE)]}.{i}" if i else n.name) for i, n in enumerate(g.nodes)}
    stages = {s: HOSTILE[-1 - i] for i, s in enumerate(g.stages)}
    nodes = [n._replace(name=names[n.name], inputs=tuple(names[i] for i in n.inputs),
                        stage=stages.get(n.stage, n.stage), label=HOSTILE[0] if n.inputs else None)
             for n in g.nodes]
    return Report(Graph(tuple(nodes), filename="evil|name\n.cnn"))


@pytest.mark.parametrize("depth", ["stage", "block", "layer"])
def test_hostile_names_in_csv(depth):
    report = hostile_report()
    text = views.to_csv(report, depth)
    assert "\x1b" not in text
    parsed = list(csv.DictReader(io.StringIO(text)))
    rows = views.rows(report, depth)
    assert len(parsed) == len(rows)
    for mine, row in zip(parsed, rows):
        for key in ("name", "stage", "label"):
            if row.get(key):
                shown = mine[key]
                assert shown[:1] not in ("=", "+", "-", "@"), shown           # no formula for a spreadsheet
                assert shown.lstrip("'") == cnndsl.errors.printable(row[key], 1 << 20)
        assert int(mine["params"]) == row["params"] and int(mine["macs"]) == row["macs"]


@pytest.mark.parametrize("depth", ["stage", "block", "layer"])
def test_hostile_names_in_markdown(depth):
    report = hostile_report()
    text = views.to_markdown(report, depth)
    assert "\x1b" not in text and "<b>" not in text and "\t" not in text
    table = md_tables(text)[0]
    width = len(table[0])
    assert all(len(cells) == width for cells in table), [c for c in table if len(c) != width]
    assert len(table) - 1 == len(views.rows(report, depth))
    for line in text.splitlines():
        if line.startswith("| "):
            assert line.endswith(" |")
    for cells, row in zip(table[1:], views.rows(report, depth)):
        assert md_int(cells[table[0].index("params")]) == row["params"]
    assert "**evil\\|name\\\\n.cnn**" in text       # printable's \\n, then Markdown's escapes


def test_hostile_names_in_the_tables():
    from rich.console import Console

    from cnndsl.cli.render import print_report
    report = hostile_report()
    for depth in ("stage", "block", "layer"):
        buf = io.StringIO()
        print_report(report, Console(file=buf, width=300, force_terminal=False, color_system=None), depth=depth)
        out = buf.getvalue()
        assert "\x1b" not in out and "pipe|and,comma\"quote" in out
        assert "\\x1b[31mred" in out and (depth == "stage" or "line\\nbreak" in out)


# ------------------------------------------------------------------------------------ connected to ----

def test_connected_to_column_on_googlenet(cli):
    out = cli("analyze", str(spec_path("googlenet"))).output
    lines = out.splitlines()
    assert lines[1].rstrip().endswith("connected to")
    row = next(l for l in lines if l.strip().startswith("inception1.b2.cbr1.conv1"))
    assert row.rstrip().endswith("stem.maxpool2")
    concat = next(l for l in lines if l.strip().startswith("inception1.concat"))
    assert concat.rstrip().endswith("b1.cbr1.relu1, b2.cbr2.relu1, b3.cbr2.relu1, b4.cbr1.relu1")
    chained = next(l for l in lines if l.strip().startswith("inception1.b2.cbr1.bn1"))
    assert chained.rstrip().endswith("27 /8")          # reads the row above: no inputs shown
    # every layer that does not read the row above says what it reads
    g = cnndsl.compile(spec_path("googlenet"))
    jumps = sum(1 for prev, n in zip(g.nodes, g.nodes[1:]) if n.inputs != (prev.name,))
    width = lines[1].index("connected to")
    table = lines[3:next(i for i, l in enumerate(lines) if l.startswith("total"))]
    assert sum(1 for l in table if l[width:].strip() and not l.startswith("\u2500")) == jumps


def test_no_connected_to_column_on_a_chain(cli):
    out = cli("analyze", str(spec_path("vgg16"))).output
    assert "connected to" not in out


# ------------------------------------------------------------------------------------------- budget ----

def test_budget_within_and_over(cli):
    spec = str(spec_path("resnet50"))
    ok = cli("analyze", "--budget", "params<=26M,macs<=4.1G,memory<=500MB", spec)
    assert ok.exit_code == 0
    assert "budget: params 25,557,032 within params<=26M (26,000,000)" in ok.output
    assert "memory 112,074,612 bytes (weights + peak activations) within memory<=500MB" in ok.output
    over = cli("analyze", "--budget", "params<=25M,macs<=4.1G,memory<=500MB", spec)
    assert over.exit_code == 3
    assert "budget: params 25,557,032 is over params<=25M (25,000,000)" in over.output
    assert "budget: macs 4,089,184,256 within macs<=4.1G (4,100,000,000)" in over.output


def test_budget_bounds_are_exact():
    report = cnndsl.analyze(cnndsl.compile(spec_path("resnet18")))
    t = report.totals
    peak = t["peak_activation_bytes"]
    cases = [(f"params<={t['params']}", True), (f"params<{t['params']}", False),
             ("macs<=1.814073344G", True), ("macs<1.814073344G", False), ("flops<=3.628146688g", True),
             (f"peak<={peak / 1024}KiB", True), (f"peak<{peak / 1024}KiB", False),
             (f"weights<={t['weight_bytes'] / 1e3}kB", True), (f"activations<={t['activation_bytes'] - 1}B", False),
             (f"memory<={t['weight_bytes'] + peak}", True), (f"memory<={t['weight_bytes'] + peak - 1}", False),
             ("params<=0.1T, macs <= 2G", True), ("params \u2264 11.689512M", True)]
    for text, ok in cases:
        assert views.check_budget(report, views.parse_budget(text))["ok"] is ok, text


def test_budget_in_json_csv_and_markdown(cli):
    spec = str(spec_path("resnet18"))
    result = cli("analyze", "--format", "json", "--budget", "params<=10M", "--budget", "peak<=8MiB", spec)
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["budget"] == {"ok": False, "limits": [
        {"key": "params", "op": "<=", "limit": 10_000_000, "text": "params<=10M", "actual": 11_689_512, "ok": False},
        {"key": "peak", "op": "<=", "limit": 8 << 20, "text": "peak<=8MiB", "actual": data["totals"]
         ["peak_activation_bytes"], "ok": True}]}
    assert "budget exceeded: params 11,689,512 is over params<=10M" in result.stderr
    for fmt in ("csv", "markdown"):
        result = cli("analyze", "--format", fmt, "--depth", "stage", "--budget", "params<=10M", spec)
        assert result.exit_code == 3 and "budget exceeded: params" in result.stderr
        assert "budget" not in result.stdout.splitlines()[0]
    md = cli("analyze", "--format", "markdown", "--budget", "params<=12M", spec)
    assert md.exit_code == 0 and "| params\\<=12M | 11,689,512 | 12,000,000 | yes |" in md.stdout


@pytest.mark.parametrize("text, words", [
    ("parms<=25M", "unknown budget key 'parms'"),
    ("params>=25M", "use <= or <"),
    ("params=25M", "use <= or <"),
    ("memory<=500M", "'memory' is in bytes"),
    ("params<=25MB", "'params' is a count"),
    ("params<=25M,", "empty limit"),
    ("params", "expected KEY<=LIMIT"),
    ("params<=", "expected KEY<=LIMIT"),
    ("params<=abc", "expected KEY<=LIMIT"),
    ("params<=1M,params<=2M", "limited twice"),
    ("params<=" + "9" * 40, "too long"),
    ("memory<=1.2.3MB", "expected KEY<=LIMIT"),
])
def test_malformed_budget_is_a_usage_error(cli, text, words):
    result = cli("analyze", "--budget", text, str(spec_path("lenet5")))
    assert result.exit_code == 2, result.output
    assert "--budget" in result.output and words in result.output


def test_malformed_budget_is_reported_before_the_spec_is_read(cli):
    result = cli("analyze", "--budget", "nope", "/no/such/file.cnn")
    assert result.exit_code == 2 and "expected KEY<=LIMIT" in result.output


def test_views_keep_analyze_free_of_torch_and_onnx():
    import subprocess
    import sys

    from conftest import ROOT
    code = ("import sys; from cnndsl.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code in (0, 3, None), e.code\n"
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'torchvision', 'numpy') if m in sys.modules]\n"
            "assert not bad, bad")
    for args in (["analyze", "--depth", "block", "--format", "markdown"], ["analyze", "--format", "csv"],
                 ["analyze", "--depth", "stage", "--budget", "params<=1M"]):
        res = subprocess.run([sys.executable, "-c", code, *args, str(spec_path("resnet50"))], capture_output=True,
                             text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-c", code, "diff", str(spec_path("vgg16")), str(spec_path("vgg19"))],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
