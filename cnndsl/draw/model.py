"""What a picture shows: the IR grouped into boxes at one depth, the edges between them and the frames
around them. No geometry here (cnndsl.draw.layout places things).

Depths:
  layer   every IR node is a box; stages are frames, block instances framed inside them.
  block   a box per block instance: the first name part under the stage (`layer1.bottleneck2.conv1` belongs to
          `bottleneck2` of stage `layer1`; a stage that is one block holding several blocks is looked into);
          a loose layer is its own box, and the activations, batch norms, dropouts and flattens that follow it
          (or a block) alone join its box (`conv 3x3-64 · relu`). A run of boxes in one stage with the same
          structure (ops, attributes but a droppath's rate, shapes and wiring, names aside), each feeding
          only the next, is drawn as ONE box marked `x3`. Stages are frames.
  stage   a box per stage.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from ..errors import CnnDslError
from ..ir import Graph
from ..ir.ops import OPS

DEPTHS = ("stage", "block", "layer")
METRICS = ("macs", "params", "memory", "rf")
MAX_BOXES = 5000          # a bigger picture is refused (a coarser depth is suggested)
MAX_INSTANCES_SHOWN = 8   # instance names listed in a collapsed box's details

_RATE_ONLY = ("droppath",)    # ops whose attribute (a training-time rate, ramped per block) is not structure
_STRUCTURAL = ("res", "cat", "concat", "add", "sum", "mul", "split")
_TRAILING_NUMBER = re.compile(r"^(.*?[A-Za-z])_?\d+$")


class DrawError(CnnDslError):
    """A picture that cannot be drawn as asked (too many boxes)."""

    kind = "error"


class Item:
    """One box: a node, a group of nodes, a run of repeated groups, or a stage."""

    __slots__ = ("index", "id", "kind", "title", "nodes", "first", "last", "count", "instances", "stage",
                 "frames", "op", "category", "signature", "metrics", "subtitle")

    def __init__(self, kind: str, nodes: list, stage: str, title: str, op: str):
        self.kind, self.nodes, self.stage, self.title, self.op = kind, nodes, stage, title, op
        self.first, self.last = nodes[0], nodes[-1]
        self.id = nodes[0]
        self.count = 1
        self.instances: list = []
        self.frames: tuple = ()
        self.category = "block"
        self.signature: Any = None
        self.metrics: dict = {}
        self.subtitle = ""
        self.index = -1


class Frame:
    """A labelled rectangle around the items of one stage run (level 0) or one block instance (level 1)."""

    __slots__ = ("id", "label", "level", "items")

    def __init__(self, id: str, label: str, level: int):
        self.id, self.label, self.level = id, label, level
        self.items: list = []


class Diagram:
    """Items in topological order, edges (src, dst, rank) between item indices, frames, and the graph."""

    def __init__(self, graph: Graph, depth: str, items: list, edges: list, frames: list, report):
        self.graph, self.depth, self.items, self.edges, self.frames, self.report = \
            graph, depth, items, edges, frames, report


# ------------------------------------------------------------- grouping --

def _rel(name: str, scope: str) -> str:
    """A node's name under a scope (`layer1.bottleneck2.conv1` under `layer1`); names outside it stay whole."""
    return name[len(scope) + 1:] if name.startswith(scope + ".") else name


def _fusable(op: str) -> bool:
    o = OPS[op]
    return o.activation or o.fuses_after_weight or op in ("dropout", "droppath", "flatten")


def stage_runs(graph: Graph) -> list:
    """Runs of consecutive nodes (after the input) of one stage: [(stage, [names])]."""
    runs: list = []
    for n in graph.nodes[1:]:
        if runs and runs[-1][0] == n.stage:
            runs[-1][1].append(n.name)
        else:
            runs.append((n.stage, [n.name]))
    return runs


def _run_ids(runs: list) -> list:
    seen: dict = {}
    ids = []
    for stage, _ in runs:
        k = seen.get(stage, 0)
        seen[stage] = k + 1
        ids.append(stage if k == 0 else f"{stage}#{k + 1}")
    return ids


def _split(scope: str, names: list) -> dict:
    found: dict = {}
    for name in names:
        head, dot, _ = _rel(name, scope).partition(".")
        found.setdefault((head, bool(dot)), []).append(name)
    return found


def units(stage: str, names: list) -> tuple[str, list]:
    """The block instances and loose layers of one stage run: (scope, [(head, is_block, [names])]).

    A unit is the first name part under the scope, which is the stage; where the whole run is one block
    instance that holds several blocks itself (a stage written as one call, `stage2: mbstage(...)`), the scope
    descends into it."""
    scope = stage
    found = _split(scope, names)
    while len(found) == 1:
        (head, is_block), = found
        inner = f"{scope}.{head}"
        if not is_block or not all(name.startswith(inner + ".") for name in names):
            break
        deeper = _split(inner, names)
        if sum(1 for _, b in deeper if b) < 2:
            break
        scope, found = inner, deeper
    return scope, [(head, is_block, members) for (head, is_block), members in found.items()]


class _Group:
    """A box before repeats are collapsed: a block instance, a layer with the layers fused after it, a stage."""

    __slots__ = ("kind", "names", "frames", "head", "scope", "tail")

    def __init__(self, kind: str, names: list, frames: tuple, head: Optional[str] = None, scope: str = ""):
        self.kind, self.names, self.frames, self.head, self.scope = kind, names, frames, head, scope
        self.tail: list = []        # ops fused after the unit (`relu`, `bn`, `droppath`)


def _groups(graph: Graph, depth: str) -> list:
    runs = stage_runs(graph)
    run_ids = _run_ids(runs)
    out = [_Group("input", [graph.input.name], ())]
    if depth == "stage":
        for (stage, names), rid in zip(runs, run_ids):
            out.append(_Group("stage", names, (), rid, stage))
        return out
    consumers = graph.consumers()
    for (stage, names), rid in zip(runs, run_ids):
        scope, found = units(stage, names)
        if depth == "layer":
            for head, is_block, members in found:
                frames = (rid, f"{rid}/{head}") if is_block and len(members) > 1 else (rid,)
                for name in members:
                    out.append(_Group("layer", [name], frames, head if is_block else None, scope))
            continue
        tails: dict = {}       # the output node of a group that only one node reads -> the group
        for head, is_block, members in found:
            if is_block:
                group = _Group("block", members, (rid,), head, scope)
            else:
                name = members[0]
                node = graph[name]
                ins = set(node.inputs)
                group = tails.pop(next(iter(ins)), None) if _fusable(node.op) and len(ins) == 1 else None
                if group is not None:           # an activation (norm, dropout, flatten) after its lone reader
                    group.names.append(name)
                    group.tail.append(node.op)
                    if len(consumers[name]) == 1:
                        tails[name] = group
                    continue
                group = _Group("layer", [name], (rid,), None, scope)
            out.append(group)
            last = group.names[-1]
            if len(consumers[last]) == 1:
                tails[last] = group
    return out


def _order_and_split(graph: Graph, groups: list) -> list:
    """Groups in topological order of their first node; a group that a path leaves and re-enters (not
    convex: it would make a cycle of boxes) is split into single nodes, until none is left."""
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    for _ in range(len(groups) + 1):
        groups.sort(key=lambda g: index[g.names[0]])
        owner = {}
        for gi, g in enumerate(groups):
            for name in g.names:
                owner[name] = gi
        bad = set()
        for n in graph.nodes:
            d = owner[n.name]
            for i in n.inputs:
                s = owner[i]
                if s > d:
                    bad.add(s)
                    bad.add(d)
        if not bad:
            return groups
        split = []
        for gi, g in enumerate(groups):
            if gi in bad and len(g.names) > 1:
                split.extend(_Group("layer", [name], g.frames, None, g.scope) for name in g.names)
            else:
                split.append(g)
        if len(split) == len(groups):      # nothing left to split: cannot happen in a DAG
            return groups
        groups[:] = split
    return groups


def _signature(graph: Graph, g: _Group) -> tuple:
    """What two groups share when they are the same structure: ops, attributes (a droppath's rate aside),
    shapes, wiring inside and the shapes read from outside; the block's name but no node names."""
    local = {name: i for i, name in enumerate(g.names)}
    external: dict = {}
    parts = []
    for name in g.names:
        n = graph[name]
        refs = []
        for i in n.inputs:
            if i in local:
                refs.append(local[i])
            else:
                refs.append(("x", external.setdefault(i, len(external)), graph[i].shape))
        attrs = () if n.op in _RATE_ONLY else tuple(sorted(n.attrs.items(), key=lambda kv: kv[0]))
        parts.append((n.op, attrs, n.shape, tuple(refs)))
    return (g.kind, _base_name(g.head), tuple(parts))


def _base_name(head: Optional[str]) -> Optional[str]:
    if head is None:
        return None
    m = _TRAILING_NUMBER.match(head)
    return m.group(1) if m else head


def _block_title(g: _Group) -> str:
    """`bottleneck`; a residual or branch unit by what it wraps: `res(mbconv)`; trailing layers after `·`."""
    base = _base_name(g.head) or g.head or ""
    if base in _STRUCTURAL:
        rel = _rel(g.names[0], g.scope)
        inner, dot, _ = rel.partition(".")[2].partition(".")
        if dot and inner and _base_name(inner) == "b":     # branches: cat1.b1..., cat1.b2...
            count = len({_rel(n, g.scope).split(".")[1] for n in g.names if _rel(n, g.scope).count(".") >= 2
                         and _base_name(_rel(n, g.scope).split(".")[1]) == "b"})
            base = f"{base}({count} branches)"
        elif dot and inner:
            base = f"{base}({_base_name(inner)})"
    return " · ".join([base] + g.tail)


# ------------------------------------------------------------ the model --

def build(graph: Graph, depth: str = "block", report=None, max_boxes: int = MAX_BOXES) -> Diagram:
    """The boxes, edges and frames of `graph` drawn at `depth`; refuses more than `max_boxes` boxes."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth!r}")
    groups = _order_and_split(graph, _groups(graph, depth))
    owner = {}
    for gi, g in enumerate(groups):
        for name in g.names:
            owner[name] = gi
    # edges between groups, in a fixed order, each with a rank: where it enters its target
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    edges: dict = {}
    for n in graph.nodes:
        d = owner[n.name]
        for k, i in enumerate(n.inputs):
            s = owner[i]
            if s != d:
                rank = (position[n.name], k)
                old = edges.get((s, d))
                if old is None or rank < old:
                    edges[(s, d)] = rank
    # collapse runs of equal groups in one frame, each feeding only the next
    succ: dict = {}
    pred: dict = {}
    for s, d in edges:
        succ.setdefault(s, set()).add(d)
        pred.setdefault(d, set()).add(s)
    sigs = [_signature(graph, g) if depth == "block" else None for g in groups]
    merged: list = []          # [[group indices]]
    for gi, g in enumerate(groups):
        if merged and depth == "block":
            run = merged[-1]
            prev = run[-1]
            if (sigs[prev] == sigs[gi] and groups[prev].frames == g.frames and succ.get(prev) == {gi}
                    and pred.get(gi) == {prev}):
                run.append(gi)
                continue
        merged.append([gi])
    if len(merged) > max_boxes:
        coarser = {"layer": "block", "block": "stage"}.get(depth)
        hint = (f"draw it with --depth {coarser}" if coarser else "draw a part of the network") + \
            f" (at most {max_boxes:,} boxes)"
        raise DrawError(f"the picture would have {len(merged):,} boxes at --depth {depth}", hint=hint)
    items: list = []
    item_of: dict = {}
    for run in merged:
        item = _make_item(graph, [groups[gi] for gi in run])
        item.signature = sigs[run[0]]
        item.index = len(items)
        items.append(item)
        for gi in run:
            item_of[gi] = item.index
    item_edges: dict = {}
    for (s, d), rank in edges.items():
        a, b = item_of[s], item_of[d]
        if a != b:
            old = item_edges.get((a, b))
            if old is None or rank < old:
                item_edges[(a, b)] = rank
    edge_list = sorted(((a, b, r) for (a, b), r in item_edges.items()), key=lambda e: (e[1], e[2], e[0]))
    if report is None:
        from ..analysis.report import Report
        report = Report(graph)
    for item in items:
        _metrics(item, graph, report)
    frames = _frames(graph, items, depth)
    return Diagram(graph, depth, items, edge_list, frames, report)


def _make_item(graph: Graph, run: list) -> Item:
    g = run[0]
    nodes = [name for r in run for name in r.names]
    first = graph[nodes[0]]
    if g.kind == "input":
        item = Item("input", nodes, "input", "input", "input")
        item.category = "input"
    elif g.kind == "stage":
        item = Item("stage", nodes, first.stage, g.head, "stage")
        item.category = "block"
        summary = run_summary(graph, first.stage, nodes)
        if not summary and len(nodes) <= 3:          # a short stage: its layers (`flatten · fc`)
            summary = " · ".join(OPS[graph[n].op].describe(graph[n].attrs) if len(nodes) == 1 else graph[n].op
                                 for n in nodes)
        item.subtitle = summary or f"{len(nodes)} layers"
    elif g.kind == "block":
        item = Item("block", nodes, first.stage, _block_title(g), "block")
        item.category = "block"
    else:
        words = [OPS[first.op].describe(first.attrs)] + g.tail
        item = Item("layer", nodes, first.stage, " · ".join(words), first.op)
        item.category = _category(first.op)
    item.count = len(run)
    item.instances = [r.names for r in run]
    item.frames = g.frames
    item.last = nodes[-1]
    item.metrics["shape"] = graph[g.names[-1]].shape     # one instance's output (all have this shape)
    return item


def _category(op: str) -> str:
    o = OPS[op]
    if op == "input":
        return "input"
    if op == "conv":
        return "conv"
    if op == "fc":
        return "fc"
    if o.slides or op.startswith("adaptive"):
        return "pool"
    if o.merge or op in ("channels", "shuffle"):
        return "merge"
    return "other"


def _metrics(item: Item, graph: Graph, report) -> None:
    params = sum(report.params[n] for n in item.nodes)
    macs = sum(report.macs[n] for n in item.nodes) * report.batch
    memory = sum(report.activations[n] for n in item.nodes)
    rf = report.rf[item.last]
    item.metrics.update(params=params, macs=macs, memory=memory, rf=max(rf.size), rf_size=rf.size,
                        rf_jump=rf.stride)


def _frames(graph: Graph, items: list, depth: str) -> list:
    if depth == "stage":
        return []
    runs = stage_runs(graph)
    labels = {}
    for (stage, names), rid in zip(runs, _run_ids(runs)):
        summary = run_summary(graph, stage, names)
        labels[rid] = (stage, f"{stage} · {summary}" if summary else stage)
    position = {stage: i for i, stage in enumerate(graph.stages, 1)}
    frames: dict = {}
    for item in items:
        for level, fid in enumerate(item.frames):
            f = frames.get(fid)
            if f is None:
                label = labels[fid][1] if level == 0 else fid.rsplit("/", 1)[1]
                f = frames[fid] = Frame(fid, label, level)
            f.items.append(item.index)
    out = []
    for f in frames.values():
        if f.level == 0 and len(f.items) == 1:
            item = items[f.items[0]]
            stage = labels[f.id][0]
            if stage == f"stage{position.get(stage)}" or stage in (item.first, item.last):
                continue        # a one-box stage named automatically: the box says it all
        out.append(f)
    keep = {f.id for f in out}
    for item in items:
        item.frames = tuple(fid for fid in item.frames if fid in keep)
    return out


def run_summary(graph: Graph, stage: str, names: list) -> str:
    """`bottleneck x3` when a stage run holds two or more instances of one block and nothing else; else ''."""
    _, found = units(stage, names)
    if len(found) < 2 or not all(is_block for _, is_block, _ in found):
        return ""
    bases = {_base_name(head) for head, _, _ in found}
    return f"{bases.pop()} x{len(found)}" if len(bases) == 1 else ""
