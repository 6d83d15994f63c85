"""IR -> spec text: write the cnndsl spec of a graph (e.g. an imported ONNX model) where one exists."""
from __future__ import annotations

from collections import Counter

from ..errors import CnnDslError
from ..ir import Graph, Node
from ..errors import printable
from ..ir.ops import OPS
from ..ir.ops.channels import split_parts


class NoSpec(CnnDslError):
    """The graph has a shape the language cannot state (for example a skip that crosses other merges)."""

    kind = "no equivalent spec"


def _layer(n: Node) -> str:
    """The spec text of one node, as its op spells it."""
    try:
        return OPS[n.op].spell(n.attrs)
    except NotImplementedError:
        raise NoSpec(f"no spelling for op {n.op}") from None


def write_spec(graph: Graph) -> str:
    """A spec whose compiled graph has the same layers, shapes, parameters and MACs (checked here).

    Linear in the graph's size: each merge's branches start at its immediate dominator (the fork), and
    every node is written exactly once; a node that two branches share has no spelling and is refused.
    """
    from ..api import compile_text
    users = graph.consumers()
    c, h, w = graph.input_shape
    fork = _immediate_dominators(graph)
    claimed: set[str] = set()
    heads: dict[str, Node] = {}      # a branch's last node -> its first node

    def chain(start: str, stop: str, depth: int) -> list[str]:
        """Layers from the node after `start` up to and including `stop` (a path of single links or merges)."""
        if depth > _MAX_MERGE_DEPTH:
            raise NoSpec(f"merges nest more than {_MAX_MERGE_DEPTH} deep", hint="a spec cannot nest brackets that deep")
        node, path = stop, []
        while node != start:
            if node in claimed or node == graph.nodes[0].name:
                raise NoSpec("a branch joins another branch")
            claimed.add(node)
            n = graph[node]
            path.append(n)
            node = fork[node] if OPS[n.op].merge else n.inputs[0]
        path.reverse()
        heads[stop] = path[0] if path else None
        items = []
        i = 0
        while i < len(path):
            n = path[i]
            op = OPS[n.op]
            if op.merge:
                bodies = [chain(fork[n.name], src, depth + 1) if src != fork[n.name] else [] for src in n.inputs]
                word, firsts = op.merge, [heads.get(src) if src != fork[n.name] else None for src in n.inputs]
                if op.name == "concat" and all(f is not None and f.op == "channels" for f in firsts) and \
                        [(f.attrs["start"], f.attrs["stop"]) for f in firsts] == \
                        split_parts(graph[fork[n.name]].shape[0], len(firsts)):
                    word, bodies = "split", [body[1:] for body in bodies]     # the parts are split(...)'s own
                branches = [" + ".join(body) if body else "none" for body in bodies]
                items.append(f"{word}({', '.join(branches)})")
            elif op.weight:
                # a weight layer with its batch norm and activation, stated explicitly: "conv3-64[nobias] bn relu"
                text = _layer(n)
                if i + 1 < len(path) and OPS[path[i + 1].op].fuses_after_weight and len(users[n.name]) == 1:
                    i += 1
                    text += " " + _layer(path[i])
                if i + 1 < len(path) and OPS[path[i + 1].op].activation and len(users[path[i].name]) == 1:
                    i += 1
                    text += " " + _layer(path[i])
                else:
                    text += " none"
                items.append(text)
            else:
                items.append(_layer(n))
            i += 1
        return items

    body = chain(graph.nodes[0].name, graph.output.name, 0)
    if len(claimed) != len(graph.nodes) - 1:
        raise NoSpec("some layers do not lead to the output")
    source = printable(graph.filename, 120)
    text = f"# written by cnndsl from {source}\ninput {h}x{w}x{c}\n" + "\n+ ".join(body) + "\n"
    rebuilt = compile_text(text)
    if _layers(graph) != _layers(rebuilt):
        raise NoSpec("the written spec does not reproduce the graph", hint="please report this model")
    return text


_MAX_MERGE_DEPTH = 48     # each merge opens a bracket; specs nest at most limits.MAX_NESTING deep


def _layers(graph: Graph) -> Counter:
    """What a written spec must reproduce: each layer's op, attributes and output shape, with multiplicity."""
    return Counter((n.op, tuple(sorted(n.attrs.items())), n.shape) for n in graph.nodes)


def _immediate_dominators(graph: Graph) -> dict[str, str]:
    """Each node's immediate dominator (for a merge: the node its branches fork from), in O(n log n).

    Nodes come in topological order, so a node's dominator is the lowest common ancestor of its inputs in
    the dominator tree built so far (binary lifting for the ancestor queries).
    """
    first = graph.nodes[0].name
    depth = {first: 0}
    up: dict[str, list[str]] = {first: [first]}     # up[v][k]: the 2**k-th dominator above v

    def lca(a: str, b: str) -> str:
        if depth[a] < depth[b]:
            a, b = b, a
        diff, k = depth[a] - depth[b], 0
        while diff:
            if diff & 1:
                a = up[a][k]
            diff >>= 1
            k += 1
        if a == b:
            return a
        for k in range(len(up[a]) - 1, -1, -1):
            if k < len(up[a]) and k < len(up[b]) and up[a][k] != up[b][k]:
                a, b = up[a][k], up[b][k]
        return up[a][0]

    idom: dict[str, str] = {}
    for n in graph.nodes[1:]:
        d = n.inputs[0]
        for other in n.inputs[1:]:
            d = lca(d, other)
        idom[n.name] = d
        depth[n.name] = depth[d] + 1
        jumps = [d]
        while len(up[jumps[-1]]) >= len(jumps):
            jumps.append(up[jumps[-1]][len(jumps) - 1])
        up[n.name] = jumps
    return idom
