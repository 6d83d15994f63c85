"""`cnndsl draw`: the SVG parses, shows every stage and collapsed repeat, has as many boxes and edges as the IR
says at each depth (counted here independently), no two boxes overlap, every edge starts and ends on the
boxes it joins and crosses none, the bytes are the same every run, spec text is escaped, mermaid and dot are
well formed, the CLI fails cleanly, big inputs are bounded, and a real browser draws something."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import spec_path
from cnndsl.api import compile_source
from cnndsl.cli.common import _load
from cnndsl.draw import DrawError, diagram, draw
from cnndsl.ir.graph import Graph, make_node, verify
from cnndsl.ir.ops import OPS

SVG = "{http://www.w3.org/2000/svg}"
GEOMETRY_SPECS = ["lenet5", "vgg16", "resnet50", "googlenet", "mobilenet_v2", "densenet121", "inception_v3",
                  "shufflenet_v2_x1_0", "squeezenet1_0", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf"]


_GRAPHS: dict = {}


def graph_of(name: str):
    if name not in _GRAPHS:
        _GRAPHS[name] = _load(str(spec_path(name)))
    return _GRAPHS[name]


# ---------------------------------------------------------- SVG reading --

def parse(data: bytes):
    """(root, boxes {data-node: (x, y, w, h)}, box elements, edges [(from, to, [(x, y)...])], frames)."""
    root = ET.fromstring(data)
    boxes, elements, edges, frames = {}, {}, [], []
    for g in root.iter(SVG + "g"):
        cls = g.get("class")
        if cls == "box":
            rect = g.find(SVG + "rect")
            assert rect.get("class") == "body"
            node = g.get("data-node")
            assert node not in boxes, f"two boxes for {node}"
            boxes[node] = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
            elements[node] = g
        elif cls == "frame":
            rect = g.find(SVG + "rect")
            label = g.find(SVG + "text").text
            frames.append((g.get("data-frame"), label,
                           tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))))
    for p in root.iter(SVG + "path"):
        if (p.get("class") or "").split(" ")[0] == "edge":
            d = p.get("d")
            assert re.fullmatch(r"M-?[\d.]+ -?[\d.]+( L-?[\d.]+ -?[\d.]+)+", d), d
            nums = [float(t) for t in re.findall(r"-?\d+(?:\.\d+)?", d)]
            edges.append((p.get("data-from"), p.get("data-to"), list(zip(nums[::2], nums[1::2]))))
    return root, boxes, elements, edges, frames


def _on_boundary(pt, box, tol=0.06) -> bool:
    x, y = pt
    bx, by, bw, bh = box
    inside = bx - tol <= x <= bx + bw + tol and by - tol <= y <= by + bh + tol
    return inside and min(abs(x - bx), abs(x - bx - bw), abs(y - by), abs(y - by - bh)) <= tol


def _crosses(p, q, box) -> bool:
    """Whether segment pq passes through the inside of box (its border excluded): Liang-Barsky clipping."""
    bx, by, bw, bh = box
    x0, y0, x1, y1 = bx + 0.5, by + 0.5, bx + bw - 0.5, by + bh - 0.5
    dx, dy = q[0] - p[0], q[1] - p[1]
    t0, t1 = 0.0, 1.0
    for a, b in ((-dx, p[0] - x0), (dx, x1 - p[0]), (-dy, p[1] - y0), (dy, y1 - p[1])):
        if a == 0:
            if b < 0:
                return False
        else:
            t = b / a
            if a < 0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
    return t0 < t1


def check_geometry(data: bytes):
    """No two boxes overlap; each edge starts on its source's border and ends on its target's; no edge
    segment passes through any box; frames hold their boxes and do not cut through other frames."""
    _, boxes, _, edges, frames = parse(data)
    ordered = sorted(boxes.items(), key=lambda kv: kv[1][1])
    for i, (a, ba) in enumerate(ordered):
        for b, bb in ordered[i + 1:]:
            if bb[1] >= ba[1] + ba[3]:
                break
            assert not (ba[0] < bb[0] + bb[2] and bb[0] < ba[0] + ba[2]), f"boxes {a} and {b} overlap"
    for src, dst, pts in edges:
        assert len(pts) >= 2
        assert _on_boundary(pts[0], boxes[src]), f"edge {src} -> {dst} starts at {pts[0]}, off {boxes[src]}"
        assert _on_boundary(pts[-1], boxes[dst]), f"edge {src} -> {dst} ends at {pts[-1]}, off {boxes[dst]}"
        for p, q in zip(pts, pts[1:]):
            for name, box in boxes.items():
                assert not _crosses(p, q, box), f"edge {src} -> {dst} passes through box {name}"
    for i, (fa, _, ra) in enumerate(frames):
        for fb, _, rb in frames[i + 1:]:
            overlap = (ra[0] < rb[0] + rb[2] and rb[0] < ra[0] + ra[2] and ra[1] < rb[1] + rb[3]
                       and rb[1] < ra[1] + ra[3])
            nested = all(a <= b for a, b in ((ra[0], rb[0]), (ra[1], rb[1]), (rb[0] + rb[2], ra[0] + ra[2]),
                                             (rb[1] + rb[3], ra[1] + ra[3])))
            nested = nested or all(a <= b for a, b in ((rb[0], ra[0]), (rb[1], ra[1]), (ra[0] + ra[2], rb[0] + rb[2]),
                                                       (ra[1] + ra[3], rb[1] + rb[3])))
            assert not overlap or nested, f"frames {fa} and {fb} cut through each other"
    return boxes, edges, frames


# --------------------------------------- expected counts, from the IR --

def stage_runs(graph):
    runs = []
    for n in graph.nodes[1:]:
        if runs and runs[-1][0] == n.stage:
            runs[-1][1].append(n)
        else:
            runs.append((n.stage, [n]))
    return runs


def expected_layer(graph):
    boxes = {n.name for n in graph.nodes}
    edges = {(i, n.name) for n in graph.nodes for i in n.inputs}
    return boxes, edges


def expected_stage(graph):
    owner = {graph.input.name: 0}
    for k, (_, nodes) in enumerate(stage_runs(graph), 1):
        for n in nodes:
            owner[n.name] = k
    edges = {(owner[i], owner[n.name]) for n in graph.nodes for i in n.inputs if owner[i] != owner[n.name]}
    return len(stage_runs(graph)) + 1, len(edges)


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) + 1:] if name.startswith(prefix + ".") else name


def expected_block(graph):
    """Boxes and edges at --depth block, and the repeat count of each box, by the rules the README states,
    written here another way: units by name prefix, activations folded into the lone layer they follow,
    repeats found by comparing the IR's text lines with instance names taken out."""
    fold = {name for name, op in OPS.items() if op.activation or op.fuses_after_weight} | {"dropout", "droppath",
                                                                                           "flatten"}
    readers = graph.consumers()
    units = [[graph.input]]
    unit_run = [-1]
    unit_head = [""]
    for r, (stage, nodes) in enumerate(stage_runs(graph)):
        scope = stage
        while True:          # a run that is one block holding several blocks: look inside it
            heads = {_strip(n.name, scope).split(".")[0] for n in nodes}
            dotted = {_strip(n.name, scope).split(".")[0] for n in nodes if "." in _strip(n.name, scope)}
            if len(heads) != 1 or len(dotted) != 1 or \
                    not all(n.name.startswith(f"{scope}.{next(iter(dotted))}.") for n in nodes):
                break
            inner = f"{scope}.{next(iter(dotted))}"
            if len({_strip(n.name, inner).split(".")[0] for n in nodes if "." in _strip(n.name, inner)}) < 2:
                break
            scope = inner
        by_head: dict = {}
        for n in nodes:
            rel = _strip(n.name, scope)
            key = rel.split(".")[0] if "." in rel else "/" + rel
            by_head.setdefault(key, []).append(n)
        mine, heads = [], []
        for key, members in by_head.items():
            n = members[0]
            if key.startswith("/") and n.op in fold and len(set(n.inputs)) == 1 and mine:
                src = n.inputs[0]
                host = next((u for u in mine if u[-1].name == src), None)
                if host is not None and len(readers[src]) == 1:
                    host.append(n)
                    continue
            mine.append(list(members))
            heads.append("" if key.startswith("/") else re.sub(r"_?\d+$", "", key))
        units.extend(mine)
        unit_run.extend([r] * len(mine))
        unit_head.extend(heads)
    owner = {n.name: k for k, u in enumerate(units) for n in u}
    edges = {(owner[i], owner[n.name]) for n in graph.nodes for i in n.inputs if owner[i] != owner[n.name]}

    def text(k):
        inside = {n.name: j for j, n in enumerate(units[k])}
        lines = [unit_head[k]]
        outside: dict = {}
        for n in units[k]:
            attrs = "" if n.op == "droppath" else str(sorted(n.attrs.items()))
            ins = [f"#{inside[i]}" if i in inside else f"{outside.setdefault(i, len(outside))}:{graph[i].shape}"
                   for i in n.inputs]
            lines.append(f"{n.op} {attrs} {n.shape} {ins}")
        return "\n".join(lines)

    succ = {k: {b for a, b in edges if a == k} for k in range(len(units))}
    pred = {k: {a for a, b in edges if b == k} for k in range(len(units))}
    counts, box_of = [], {}
    for k, u in enumerate(units):
        prev = k - 1
        if (counts and unit_run[prev] == unit_run[k] and text(prev) == text(k)
                and succ[prev] == {k} and pred[k] == {prev}):
            counts[-1] += 1
        else:
            counts.append(1)
        box_of[k] = len(counts) - 1
    box_edges = {(box_of[a], box_of[b]) for a, b in edges if box_of[a] != box_of[b]}
    return len(counts), len(box_edges), sorted(c for c in counts if c > 1)


# ------------------------------------------------------------------ tests --

def test_resnet50_stages_and_repeats_are_drawn():
    data = draw(graph_of("resnet50"), "svg")
    root, boxes, elements, edges, frames = parse(data)
    labels = [label for _, label, _ in frames]
    for stage, total in (("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)):
        assert f"{stage} · bottleneck x{total}" in labels      # the stage holds `total` bottlenecks
    assert "stem" in labels
    titles = {node: [t.text for t in g.iter(SVG + "text")][0] for node, g in elements.items()}
    counts = sorted(int(g.get("data-count")) for g in elements.values() if g.get("data-count") != "1")
    assert counts == [2, 2, 3, 5]         # the first block of each stage differs (projection, stride)
    assert sorted(t for t in titles.values() if " x" in t) == ["bottleneck x2", "bottleneck x2", "bottleneck x3",
                                                             "bottleneck x5"]
    assert len(boxes) == 15 and len(edges) == 14
    tip = elements["layer3.bottleneck2.conv1"].find(SVG + "title").text
    assert "5 instances" in tip and "layer3.bottleneck2" in tip and "receptive field" in tip and "MACs" in tip


@pytest.mark.parametrize("name", GEOMETRY_SPECS)
def test_counts_match_the_ir_at_each_depth(name):
    g = graph_of(name)
    _, boxes, _, edges, _ = parse(draw(g, "svg", depth="layer"))
    want_boxes, want_edges = expected_layer(g)
    assert set(boxes) == want_boxes
    assert {(a, b) for a, b, _ in edges} == want_edges and len(edges) == len(want_edges)
    _, boxes, _, edges, _ = parse(draw(g, "svg", depth="stage"))
    assert (len(boxes), len(edges)) == expected_stage(g)
    _, boxes, elements, edges, _ = parse(draw(g, "svg", depth="block"))
    n_boxes, n_edges, repeats = expected_block(g)
    assert (len(boxes), len(edges)) == (n_boxes, n_edges)
    assert sorted(int(e.get("data-count")) for e in elements.values() if e.get("data-count") != "1") == repeats
    assert sum(int(e.get("data-layers")) for e in elements.values()) == len(g.nodes)


@pytest.mark.parametrize("name", GEOMETRY_SPECS)
@pytest.mark.parametrize("depth", ["stage", "block", "layer"])
def test_geometry(name, depth):
    check_geometry(draw(graph_of(name), "svg", depth=depth))


def test_skip_edges_go_beside_the_column():
    """ResNet's identity skips leave the block's input from the side and run in a lane right of the boxes."""
    data = draw(graph_of("resnet50"), "svg", depth="layer")
    _, boxes, _, edges, _ = parse(data)
    skip = [(a, b, pts) for a, b, pts in edges if a == "layer1.bottleneck1.relu3" and b == "layer1.bottleneck2.add1"]
    assert len(skip) == 1
    _, _, pts = skip[0]
    right = max(bx + bw for bx, by, bw, bh in boxes.values() if bx < pts[0][0])
    lane = max(x for x, _ in pts)
    assert lane > boxes["layer1.bottleneck2.conv1"][0] + boxes["layer1.bottleneck2.conv1"][2]
    assert lane >= right or lane > boxes["layer1.bottleneck2.add1"][0] + boxes["layer1.bottleneck2.add1"][2]
    assert b'class="edge skip"' in data


def bridge_graph(name="s.mid", label=None, filename="<spec>"):
    """Not series-parallel (the Wheatstone bridge): drawn by the layered fallback."""
    nodes = [make_node("input", "input", (), {}, (3, 8, 8), "input", None),
             make_node("s.p", "relu", ("input",), {}, (3, 8, 8), "s", None),
             make_node("s.q", "add", ("input", "s.p"), {}, (3, 8, 8), "s", None),
             make_node(name, "add", ("s.p", "s.q"), {}, (3, 8, 8), "s", None, label=label),
             make_node("t.r", "relu", (name,), {}, (3, 8, 8), "t", None),
             make_node("t.z", "add", ("t.r", "s.q"), {}, (3, 8, 8), "t", None)]
    return verify(Graph(tuple(nodes), filename=filename))


def test_a_graph_that_is_not_series_parallel_gets_the_layered_layout():
    g = bridge_graph()
    for depth in ("layer", "block", "stage"):
        data = draw(g, "svg", depth=depth)
        boxes, edges, _ = check_geometry(data)
        if depth != "stage":
            assert b'data-layout="layered"' in data and len(boxes) == 6 and len(edges) == 8


def test_deep_nesting():
    """Residuals and branches nested 40 deep: long hierarchical names stay distinct ids, geometry holds."""
    for word in ("res(conv3-8 + ", "cat(conv3-8, "):
        g = compile_source("input 8x8x3\n" + word * 40 + "conv3-8" + ")" * 40 + "\n", "deep.cnn")
        for depth in ("layer", "block"):
            data = draw(g, "svg", depth=depth)
            assert b'data-layout="series-parallel"' in data
            boxes, edges, _ = check_geometry(data)
            if depth == "layer":
                assert len(boxes) == len(g.nodes)


def test_same_bytes_every_run():
    g = graph_of("googlenet")
    for fmt in ("svg", "html", "mermaid", "dot"):
        for depth in ("block", "layer"):
            assert draw(g, fmt, depth=depth, heat="macs") == draw(_load(str(spec_path("googlenet"))), fmt, depth=depth,
                                                                   heat="macs")


def test_hostile_text_is_escaped():
    evil = "s.<script>alert('x')</script>&\"\x07\u202e"
    g = bridge_graph(evil, label="<img src=x onerror=alert(1)>", filename="a<b>&\"'\x1b[31m.cnn")
    for depth in ("layer", "block", "stage"):
        data = draw(g, "svg", depth=depth)
        root = ET.fromstring(data)          # well-formed XML
        assert b"<script" not in data and b"<img" not in data and b"\x07" not in data and b"\x1b" not in data
        assert "\u202e".encode() not in data
        assert root.find(SVG + "title").text == "a<b>&\"'\\x1b[31m.cnn"
        if depth == "layer":
            nodes = {g_.get("data-node") for g_ in root.iter(SVG + "g") if g_.get("class") == "box"}
            assert "s.<script>alert('x')</script>&\"\\x07\\u202e" in nodes
    html = draw(g, "html").decode()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "<img" not in html
    for fmt in ("mermaid", "dot"):
        text = draw(g, fmt, depth="layer").decode()
        assert "<script" not in text and "\x07" not in text and "\u202e" not in text


def test_a_label_from_the_spec_shows_in_the_details(tmp_path):
    g = compile_source("input 32x32x3\nfeatures: (conv5_3: conv3-8 + conv3-8) | fc10\n", "labels.cnn")
    root, _, elements, _, frames = parse(draw(g, "svg", depth="layer"))
    assert "label conv5_3" in elements["features.conv5_3"].find(SVG + "title").text
    assert [label for _, label, _ in frames] == ["features", "stage2"]     # stage2: flatten, fc


def test_mermaid_and_dot_are_well_formed():
    for name in ("resnet50", "googlenet", "densenet121"):
        g = graph_of(name)
        for depth in ("stage", "block", "layer"):
            d = diagram(g, depth)
            mer = draw(g, "mermaid", depth=depth).decode()
            lines = mer.splitlines()
            assert lines[0] == "flowchart TB"
            assert sum(1 for line in lines if " --> " in line) == len(d.edges)
            assert sum(1 for line in lines if line.strip().startswith("subgraph ")) == len(d.frames)
            assert sum(1 for line in lines if line.strip().startswith("subgraph ")) == \
                sum(1 for line in lines if line.strip() == "end")
            dot = draw(g, "dot", depth=depth).decode()
            bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', dot)      # braces inside quoted text do not count
            assert bare.count("{") == bare.count("}") and bare.startswith("digraph")
            assert sum(1 for line in dot.splitlines() if " -> " in line) == len(d.edges)
            assert dot.count("subgraph cluster_") == len(d.frames)


def test_heat_colours_and_legend():
    g = graph_of("resnet50")
    data = draw(g, "svg", depth="layer", heat="params")
    root, _, elements, _, _ = parse(data)
    assert b"parameters (log scale)" in data and b'id="heat-scale"' in data      # 128 (bn) to 2.4M (conv)
    assert b"MACs (log scale)" not in draw(g, "svg", depth="layer", heat="macs")    # 2.05M to 116M: linear
    fills = {e.find(SVG + "rect").get("fill") for e in elements.values()}
    assert len(fills) > 20                    # a scale, not a few category colours
    assert elements["layer1.bottleneck1.relu1"].find(SVG + "rect").get("fill") == "#f4f4f4"   # no params
    for metric in ("params", "memory", "rf"):
        assert ET.fromstring(draw(g, "svg", heat=metric)) is not None


def test_timing_resnet152():
    g = graph_of("resnet152")
    start = time.perf_counter()
    data = draw(g, "svg", depth="layer")
    layer = time.perf_counter() - start
    start = time.perf_counter()
    draw(g, "svg", depth="block")
    block = time.perf_counter() - start
    assert layer < 5 and block < 2, (layer, block)       # measured: about 0.1 s and 0.02 s
    assert len(data) < 2_000_000


def test_cli_writes_each_format(cli, tmp_path):
    spec = str(spec_path("lenet5"))
    for suffix, magic in ((".svg", b"<?xml"), (".html", b"<!DOCTYPE html>"), (".mmd", b"flowchart TB"),
                          (".dot", b"digraph"), (".gv", b"digraph")):
        out = tmp_path / f"net{suffix}"
        result = cli("draw", spec, "-o", str(out))
        assert result.exit_code == 0, result.output
        assert out.read_bytes().startswith(magic)
    result = cli("draw", spec, "--format", "mermaid")
    assert result.exit_code == 0 and result.output.startswith("flowchart TB")
    result = cli("draw", spec, "--expand", "--format", "dot")
    assert result.exit_code == 0 and result.output.count(" -> ") == 13


def test_cli_errors_are_clean(cli, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv3-64 + maxpol\n")
    result = cli("draw", str(bad), "-o", str(tmp_path / "x.svg"))
    assert result.exit_code == 1 and "unknown layer 'maxpol'" in result.output and "Traceback" not in result.output
    spec = str(spec_path("lenet5"))
    result = cli("draw", spec, "-o", str(tmp_path / "no" / "such" / "dir" / "x.svg"))
    assert result.exit_code == 1 and "cannot write" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "no").exists()
    result = cli("draw", spec, "-o", str(tmp_path / "x.jpeg"))
    assert result.exit_code == 2 and "--format" in result.output
    result = cli("draw", spec, "-o", str(tmp_path / "x.svg"), "--format", "png")
    assert result.exit_code == 2
    result = cli("draw", spec, "--expand", "--depth", "stage")
    assert result.exit_code == 2


def test_big_specs_are_bounded(cli, tmp_path):
    spec = tmp_path / "big.cnn"
    spec.write_text("input 32x32x3\n(conv3-8 relu + conv3-16 relu) x5000\n")      # 20,000 layers
    start = time.perf_counter()
    result = cli("draw", str(spec), "--expand", "-o", str(tmp_path / "big.svg"))
    assert result.exit_code == 1 and "boxes" in result.output and "--depth" in result.output
    result = cli("draw", str(spec), "-o", str(tmp_path / "big.svg"))          # 10,000 different blocks
    assert result.exit_code == 1 and "--depth stage" in result.output
    result = cli("draw", str(spec), "--depth", "stage", "-o", str(tmp_path / "big.svg"))
    assert result.exit_code == 0 and (tmp_path / "big.svg").stat().st_size < 100_000
    spec.write_text("input 32x32x3\n(conv3-8 relu) x10000\n")                   # repeats collapse
    result = cli("draw", str(spec), "-o", str(tmp_path / "big.svg"))
    assert result.exit_code == 0 and (tmp_path / "big.svg").stat().st_size < 100_000
    assert b"x9999" in (tmp_path / "big.svg").read_bytes()
    assert time.perf_counter() - start < 30
    with pytest.raises(DrawError):
        diagram(graph_of("resnet50"), "layer", max_boxes=100)


def test_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    g = graph_of("lenet5")
    data = draw(g, "png", heat="params")
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data == draw(g, "png", heat="params")


def _pixels(png: str) -> tuple[float, int]:
    """The share of pixels that are not white, and how many are strongly red (heat-coloured boxes)."""
    image = pytest.importorskip("PIL.Image")
    with image.open(png) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(rgb.width * rgb.height)
    total = sum(c for c, _ in colours)
    inked = sum(c for c, (r, g, b) in colours if r + g + b < 720)
    red = sum(c for c, (r, g, b) in colours if r > 150 and g < 110 and b < 110)
    return inked / total, red


def test_chromium_renders_the_svg(tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if not chromium:
        pytest.skip("no chromium")
    svg = tmp_path / "resnet50.svg"
    svg.write_bytes(draw(graph_of("resnet50"), "svg", heat="macs"))
    shot = tmp_path / "shot.png"
    try:
        subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,2000",
                        svg.as_uri()],
                       capture_output=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish in 90 s")
    assert shot.exists(), "chromium wrote no screenshot"
    share, red = _pixels(str(shot))
    assert 0.01 < share < 0.9 and red > 20_000, (share, red)    # drawn, with its heat colours (measured: 0.047)
