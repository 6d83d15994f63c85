"""Mermaid (`flowchart TB`) and Graphviz dot text of a diagram, for docs: boxes, one edge line per edge,
frames as subgraphs. Node ids are n0, n1, ...; every text from the spec is escaped."""
from __future__ import annotations

from . import style
from .model import Diagram
from .scene import _lines


def _mermaid_text(text: str) -> str:
    out = []
    for ch in style.clean(text):
        if ch in '"<>&#`':
            out.append(f"#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def _dot_text(text: str) -> str:
    return style.clean(text).replace("\\", "\\\\").replace('"', '\\"')


def _tree(diagram: Diagram):
    """frame id -> (frame, [child frame ids], [item indices directly inside]); and the top level's items."""
    frames = {f.id: (f, [], []) for f in diagram.frames}
    top_frames, top_items = [], []
    for f in diagram.frames:
        parent = diagram.items[f.items[0]].frames[f.level - 1] if f.level else None
        (frames[parent][1] if parent in frames else top_frames).append(f.id)
    for it in diagram.items:
        inner = it.frames[-1] if it.frames else None
        (frames[inner][2] if inner in frames else top_items).append(it.index)
    return frames, top_frames, top_items


def mermaid(diagram: Diagram, heat=None) -> str:
    out = ["flowchart TB"]
    frames, top_frames, top_items = _tree(diagram)
    count = [0]

    def node(i: int, indent: str) -> None:
        label = "<br/>".join(_mermaid_text(t) for t in _lines(diagram.items[i], heat))
        out.append(f'{indent}n{i}["{label}"]')

    def frame(fid: str, indent: str) -> None:
        f, kids, members = frames[fid]
        k = count[0]
        count[0] += 1
        out.append(f'{indent}subgraph f{k}["{_mermaid_text(f.label)}"]')
        for i in members:
            node(i, indent + "  ")
        for kid in kids:
            frame(kid, indent + "  ")
        out.append(f"{indent}end")

    for i in top_items:
        node(i, "  ")
    for fid in sorted(top_frames, key=lambda f: min(frames[f][0].items)):
        frame(fid, "  ")
    for a, b, _ in diagram.edges:
        out.append(f"  n{a} --> n{b}")
    return "\n".join(out) + "\n"


def dot(diagram: Diagram, heat=None) -> str:
    name = _dot_text(diagram.graph.filename)
    out = [f'digraph "{name}" {{',
           "  rankdir=TB;",
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           '  edge [color="#5b6472"];']
    frames, top_frames, top_items = _tree(diagram)
    count = [0]

    def node(i: int, indent: str) -> None:
        it = diagram.items[i]
        label = "\\n".join(_dot_text(t) for t in _lines(it, heat))
        fill, stroke = style.CATEGORY[it.category]
        out.append(f'{indent}n{i} [label="{label}", fillcolor="{fill}", color="{stroke}"];')

    def frame(fid: str, indent: str) -> None:
        f, kids, members = frames[fid]
        k = count[0]
        count[0] += 1
        out.append(f"{indent}subgraph cluster_{k} {{")
        out.append(f'{indent}  label="{_dot_text(f.label)}"; style="rounded"; color="#9aa9bd";')
        for i in members:
            node(i, indent + "  ")
        for kid in kids:
            frame(kid, indent + "  ")
        out.append(f"{indent}}}")

    for i in top_items:
        node(i, "  ")
    for fid in sorted(top_frames, key=lambda f: min(frames[f][0].items)):
        frame(fid, "  ")
    for a, b, _ in diagram.edges:
        out.append(f"  n{a} -> n{b};")
    out.append("}")
    return "\n".join(out) + "\n"
