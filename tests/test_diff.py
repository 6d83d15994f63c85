"""`cnndsl diff A B`: layers aligned by name within a stage, then by order; per stage and per layer differences;
totals that equal the difference of the two `analyze --json` totals, on every pair of a sample of the zoo."""
from __future__ import annotations

import itertools
import json
import re

import pytest

import cnndsl
from cnndsl.analysis.diff import FIELDS, Diff, _by_order, _lcs, align, to_markdown
from conftest import spec_path

SAMPLE = ("googlenet", "densenet121", "resnet50", "mobilenet_v2", "lenet5", "alexnet", "vgg11", "efficientnet_b0",
          "convnext_tiny", "shufflenet_v2_x1_0")


@pytest.fixture(scope="module")
def analyzed():
    """Each spec's Report (computed once) and its `cnndsl analyze --json` totals."""
    from click.testing import CliRunner

    from cnndsl.cli import main
    out = {}
    for name in SAMPLE:
        result = CliRunner().invoke(main, ["analyze", "--json", str(spec_path(name))], catch_exceptions=False)
        assert result.exit_code == 0
        out[name] = (cnndsl.analyze(cnndsl.compile(spec_path(name))), json.loads(result.output)["totals"])
    return out


def check_adds_up(d: Diff, ta: dict, tb: dict) -> None:
    """Totals are B - A exactly; the rows (every layer of each side once) and the stages add up to them."""
    assert set(d.totals) == set(ta) == set(tb)
    for key in ta:
        assert d.totals[key] == {"a": ta[key], "b": tb[key], "delta": tb[key] - ta[key]}, key
    rows = [r for s in d.sections for r in s["_layers"]]
    names_a = [r["name"]["a"] for r in rows if r["name"]["a"] is not None]
    names_b = [r["name"]["b"] for r in rows if r["name"]["b"] is not None]
    assert sorted(names_a) == sorted(n.name for n in d.a.graph.nodes)
    assert sorted(names_b) == sorted(n.name for n in d.b.graph.nodes)
    assert d.sections[0]["_layers"][0]["name"] == {"a": d.a.graph.nodes[0].name, "b": d.b.graph.nodes[0].name}
    for key in FIELDS:
        assert sum(r[key]["delta"] for r in rows) == d.totals[key]["delta"], key
        assert sum(s[key]["delta"] for s in d.sections) == d.totals[key]["delta"], key
    assert sum(s["layers"]["delta"] for s in d.sections) == d.totals["layers"]["delta"]
    for r in rows:
        if r["status"] == "same":
            assert r["params"]["delta"] == r["macs"]["delta"] == r["activation_bytes"]["delta"] == 0
        assert (r["status"] == "added") == (r["name"]["a"] is None)
        assert (r["status"] == "removed") == (r["name"]["b"] is None)


def test_totals_equal_the_difference_of_two_analyze_runs_on_every_pair(analyzed):
    pairs = list(itertools.permutations(SAMPLE, 2))[::2]    # 45 ordered pairs: every pair once, both directions
    assert len(pairs) == 45 and {frozenset(p) for p in pairs} == {frozenset(p) for p in
                                                                   itertools.combinations(SAMPLE, 2)}
    for a, b in pairs:
        (ra, ta), (rb, tb) = analyzed[a], analyzed[b]
        d = Diff(ra, rb)
        check_adds_up(d, ta, tb)
        data = json.loads(json.dumps(d.to_dict("layer")))
        assert data["totals"] == d.totals and len(data["layers"]) == sum(len(s["_layers"]) for s in d.sections)


def test_a_network_against_itself_is_the_same(analyzed):
    for name in SAMPLE:
        report, totals = analyzed[name]
        d = Diff(report, report)
        assert all(s["status"] == "same" for s in d.sections)
        assert all(r["status"] == "same" and r["name"]["a"] == r["name"]["b"] for s in d.sections
                   for r in s["_layers"])
        assert all(v["delta"] == 0 for v in d.totals.values())


def test_inputs_that_differ(cli, tmp_path):
    ra = cnndsl.analyze(cnndsl.compile_text("input 32x32x3\nconv3-8 | fc10"))
    rb = cnndsl.analyze(cnndsl.compile_text("input 64x64x1\nconv3-8 | fc10"))
    d = Diff(ra, rb)
    check_adds_up(d, ra.totals, rb.totals)
    first = d.sections[0]
    assert first["status"] == "changed" and first["layers"] == {"a": 0, "b": 0, "delta": 0}
    assert first["output_shape"] == {"a": [3, 32, 32], "b": [1, 64, 64]}
    from rich.console import Console

    from cnndsl.cli.render import diff_text
    text = Console(width=200).export_text if False else diff_text(d).plain
    assert re.search(r"^~\s+input\s+input\s+3x32x32 → 1x64x64\s+\+4\.0 KiB", text, re.M)
    assert "input 3x32x32 → 1x64x64 (CxHxW)" in text


# --------------------------------------------------------------------------------------------- VGG ----

def test_vgg16_to_vgg19(cli):
    result = cli("diff", "--json", str(spec_path("vgg16")), str(spec_path("vgg19")))
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["totals"]["params"] == {"a": 138_357_544, "b": 143_667_240, "delta": 5_309_696}
    a = json.loads(cli("analyze", "--json", str(spec_path("vgg16"))).output)["totals"]
    b = json.loads(cli("analyze", "--json", str(spec_path("vgg19"))).output)["totals"]
    assert {k: v["delta"] for k, v in data["totals"].items()} == {k: b[k] - a[k] for k in a}
    added = [r["name"]["b"] for r in data["layers"] if r["status"] == "added"]
    assert added == ["conv8", "relu8", "conv12", "relu12", "conv16", "relu16"]
    assert not [r for r in data["layers"] if r["status"] == "removed"]
    assert sum(r["params"]["delta"] for r in data["layers"]) == 5_309_696
    # stages 1 and 2 are the same network under other names (VGG-19 numbers its layers across stages)
    stage2 = [r for r in data["layers"] if r["stage"]["a"] == "stage2"]
    assert [(r["name"]["a"], r["name"]["b"], r["status"]) for r in stage2][:2] == \
        [("stage2.conv1", "conv3", "same"), ("stage2.relu1", "relu3", "same")]
    by_stage = {s["stages"]["b"][0]: s for s in data["stages"]}
    assert by_stage["stage3"]["params"]["delta"] == 590_080
    assert by_stage["stage4"]["params"]["delta"] == by_stage["stage5"]["params"]["delta"] == 2_359_808
    assert by_stage["stage3"]["layers"] == {"a": 7, "b": 9, "delta": 2}
    assert by_stage["stage1"]["status"] == "same" and by_stage["classifier"]["status"] == "changed"


def test_vgg16_to_vgg19_table_and_reverse(cli):
    table = cli("diff", str(spec_path("vgg16")), str(spec_path("vgg19")))
    assert table.exit_code == 0
    out = table.output
    assert re.search(r"^\+\s+conv8\s+conv 3x3-256\s+256x56x56\s+\+590,080\s+\+1\.85G", out, re.M)
    assert re.search(r"^~\s+maxpool1 → maxpool3\s+maxpool\s+256x28x28\s+44 /8 → 52 /8$", out, re.M)
    assert re.search(r"^\s+total\s+1000\s+\+5,309,696\s+\+4\.16G", out, re.M)
    assert "params 138,357,544 → 143,667,240 (+5,309,696)" in out
    assert "stage1  (5 the same)" in out and "stage3  (1 changed, 2 added, 6 the same)" in out
    back = json.loads(cli("diff", "--json", str(spec_path("vgg19")), str(spec_path("vgg16"))).output)
    assert back["totals"]["params"]["delta"] == -5_309_696
    assert [r["name"]["a"] for r in back["layers"] if r["status"] == "removed"] == \
        ["conv8", "relu8", "conv12", "relu12", "conv16", "relu16"]
    stage = cli("diff", "--depth", "stage", str(spec_path("vgg16")), str(spec_path("vgg19"))).output
    assert re.search(r"^~\s+stage3\s+7 → 9\s+256x28x28\s+\+590,080\s+\+1\.85G\s+\+6\.1 MiB\s+44 /8 → 52 /8$", stage,
                     re.M)
    data = json.loads(cli("diff", "--json", "--depth", "stage", str(spec_path("vgg16")),
                          str(spec_path("vgg19"))).output)
    assert "layers" not in data and len(data["stages"]) == 9 and data["stages"][0]["stages"]["a"] == ["input"]


# ---------------------------------------------------------------------------------- alignment ----

def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_added_and_removed_layers_and_stages(cli, tmp_path):
    a = write(tmp_path, "a.cnn", "param w = 8\ninput 32x32x3\nconv3-w + relu | conv3-w + relu | fc10\n")
    b = write(tmp_path, "b.cnn", "param w = 8\ninput 32x32x3\nconv3-w + relu + conv3-w + relu | fc10\n")
    data = json.loads(cli("diff", "--json", a, b).output)
    status = [(r["status"], r["name"]["a"], r["name"]["b"]) for r in data["layers"]]
    assert ("added", None, "conv2") in status and ("added", None, "relu2") in status
    assert ("same", "conv1", "conv1") in status
    assert [s["status"] for s in data["stages"]] == ["same", "changed", "changed", "removed"]
    assert data["stages"][3]["stages"] == {"a": ["stage3"], "b": []}
    assert data["stages"][3]["params"]["b"] is None
    # the removed stage's layers are removed rows; B's flatten/fc in stage2 align with A's stage2 conv by order
    removed = [r["name"]["a"] for r in data["layers"] if r["status"] == "removed"]
    assert set(removed) >= {"flatten1", "fc1"} or set(removed) >= {"conv2", "relu2"}
    table = cli("diff", a, b).output
    assert re.search(r"^\+\s+conv2\s+conv 3x3-8\s+8x32x32\s+\+584\s", table, re.M)
    # --set applies to both sides
    wide = json.loads(cli("diff", "--json", "--set", "w=16", a, b).output)
    assert wide["totals"]["params"]["a"] == cnndsl.analyze(cnndsl.compile(a, overrides={"w": 16})).totals["params"]
    small = json.loads(cli("diff", "--json", "--input", "16x16x3", a, b).output)
    assert small["a"]["input_shape"] == small["b"]["input_shape"] == [3, 16, 16]


def test_layers_pair_by_name_within_a_stage_before_order():
    ra = cnndsl.analyze(cnndsl.compile_text("input 8x8x3\nx: (conv3-4 + relu) | y: (conv3-8 + relu) | fc4"))
    rb = cnndsl.analyze(cnndsl.compile_text("input 8x8x3\ny: (conv3-8 + relu) | x: (conv3-4 + relu) | fc4"))
    d = Diff(ra, rb)
    # the stages swapped places: one pairs by name, the other is removed and added
    pairs = [(s["stages"]["a"], s["stages"]["b"]) for s in d.sections]
    assert (["x"], ["x"]) in pairs or (["y"], ["y"]) in pairs
    check_adds_up(d, ra.totals, rb.totals)


def test_lcs_prefers_early_matches_and_pairs_the_gaps():
    assert _lcs(list("abab"), list("ab")) == [(0, 0), (1, 1)]
    assert _lcs(list("crcrm"), list("crcrcrm")) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 6)]
    # between matches, what differs pairs by position: relu -> gelu is a change, not a removal and an addition
    assert _by_order(["conv", "relu", "fc"], ["conv", "gelu", "fc"]) == [(0, 0), (1, 1), (2, 2)]
    assert _by_order(["conv", "bn", "relu"], ["conv", "relu"]) == [(0, 0), (2, 1)]
    assert _by_order([], ["a"]) == [] and _by_order(["a"], []) == []
    # past LCS_CELLS a linear greedy match stands in: still a common subsequence, in order
    for x, y, least in ((["conv", "relu"] * 1000, ["conv", "bn", "relu"] * 1000, 2000),
                        (list("abc") * 400, list("cba") * 500, 700)):
        pairs = _lcs(x, y)
        assert len(pairs) >= least and all(x[i] == y[j] for i, j in pairs)
        assert all(p[0] < q[0] and p[1] < q[1] for p, q in zip(pairs, pairs[1:]))


def test_align_keeps_b_order_and_places_removed_layers():
    ga = cnndsl.compile_text("input 8x8x3\nconv3-4 + bn + relu + conv3-4 + relu")
    gb = cnndsl.compile_text("input 8x8x3\nconv3-4 + relu + conv3-4 + gelu")
    rows = align(list(ga.nodes[1:]), list(gb.nodes[1:]))
    shown = [(x.name if x else None, y.name if y else None) for x, y in rows]
    assert shown == [("conv1", "conv1"), ("bn1", None), ("relu1", "relu1"), ("conv2", "conv2"), ("relu2", "gelu1")]
    assert [y for _, y in shown if y] == [n.name for n in gb.nodes[1:]]
    assert sorted(x for x, _ in shown if x) == sorted(n.name for n in ga.nodes[1:])


# --------------------------------------------------------------------------------- formats, ONNX ----

def test_markdown_diff_parses_back(cli):
    from test_views import md_int, md_tables
    a, b = str(spec_path("resnet50")), str(spec_path("resnet101"))
    data = json.loads(cli("diff", "--json", a, b).output)
    text = cli("diff", "--format", "markdown", a, b).output
    table, totals = md_tables(text)[:2]
    col = table[0].index("params")
    changed = [r for r in data["layers"] if r["status"] != "same"]
    assert len(table) - 1 == len(changed)
    assert sum(md_int(cells[col]) for cells in table[1:]) == data["totals"]["params"]["delta"] == 18_992_128
    assert {r[0]: [md_int(v) for v in r[1:]] for r in totals[1:]} == \
        {k: [v["a"], v["b"], v["delta"]] for k, v in data["totals"].items()}
    stage = cli("diff", "--format", "markdown", "--depth", "stage", a, b).output
    rows = md_tables(stage)[0]
    assert len(rows) - 1 == len(data["stages"])
    col = rows[0].index("MACs")
    assert sum(md_int(c[col]) for c in rows[1:]) == data["totals"]["macs"]["delta"]


def test_markdown_diff_escapes_names():
    from test_views import hostile_report, md_tables
    ra = hostile_report()
    rb = cnndsl.analyze(cnndsl.compile_text("input 8x8x3\nconv3-4 + relu | fc2"))
    text = to_markdown(Diff(ra, rb), "layer")
    table = md_tables(text)[0]
    assert all(len(cells) == len(table[0]) for cells in table)
    assert "\x1b" not in text and "<b>" not in text


def test_usage_errors(cli):
    spec = str(spec_path("lenet5"))
    assert cli("diff", "-", "-", input="conv3-4\n").exit_code == 2
    assert cli("diff", "--json", "--format", "markdown", spec, spec).exit_code == 2
    assert cli("diff", "--depth", "block", spec, spec).exit_code == 2
    missing = cli("diff", spec, "/no/such/spec.cnn")
    assert missing.exit_code in (1, 2) and "no/such/spec.cnn" in missing.output
    stdin = cli("diff", spec, "-", input=spec_path("lenet5").read_text())
    assert stdin.exit_code == 0


def test_diff_with_onnx_files(cli, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("numpy")
    model = str(tmp_path / "r18.onnx")
    built = cli("build", "--target", "onnx", "-o", model, str(spec_path("resnet18")))
    assert built.exit_code == 0, built.output
    data = json.loads(cli("diff", "--json", str(spec_path("resnet18")), model).output)
    assert all(v["delta"] == 0 for v in data["totals"].values())
    assert {r["status"] for r in data["layers"]} == {"same"}
    assert [s["stages"]["b"] for s in data["stages"]][-1] == ["graph"]      # the head's stages, named otherwise
    other = json.loads(cli("diff", "--json", model, str(spec_path("resnet34"))).output)
    a = json.loads(cli("analyze", "--json", model).output)["totals"]
    b = json.loads(cli("analyze", "--json", str(spec_path("resnet34"))).output)["totals"]
    assert {k: v["delta"] for k, v in other["totals"].items()} == {k: b[k] - a[k] for k in a}


@pytest.mark.slow
def test_totals_add_up_on_all_pairs_of_bundled_specs():
    """Every pair of the bundled specs (specs/*.cnn, both directions once): the diff's totals are B - A of two
    independent analyze --json runs, and its rows and stages add up. Slow: about 2,700 diffs."""
    from click.testing import CliRunner

    from cnndsl.cli import main
    root = spec_path("vgg16").parent
    names = sorted(p.stem for p in root.glob("*.cnn"))
    analyzed = {}
    for name in names:
        result = CliRunner().invoke(main, ["analyze", "--json", str(root / f"{name}.cnn")], catch_exceptions=False)
        assert result.exit_code == 0, name
        analyzed[name] = (cnndsl.analyze(cnndsl.compile(root / f"{name}.cnn")), json.loads(result.output)["totals"])
    for a, b in itertools.combinations(names, 2):
        check_adds_up(Diff(analyzed[a][0], analyzed[b][0]), analyzed[a][1], analyzed[b][1])
