"""IR -> spec text: write the cnndsl spec of a graph (e.g. an imported ONNX model) where one exists."""
from __future__ import annotations

from .errors import CnnDslError
from .ir import Graph, Node
from .ops import ACTIVATIONS


class NoSpec(CnnDslError):
    """The graph has a shape the language cannot state (for example a skip that crosses other merges)."""

    kind = "no equivalent spec"


def _pair(v) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def _layer(n: Node) -> str:
    a = n.attrs
    if n.op == "conv":
        text = f"conv{_pair(a['kernel'])}-{a['out']}"
        if a["stride"] != (1, 1):
            text += f"/{_pair(a['stride'])}"
        opts = []
        same = tuple(a["dilation"][i] * (a["kernel"][i] - 1) // 2 for i in (0, 1))
        if a["padding"] != same:
            opts.append(f"pad={_pair(a['padding'])}")
        if a["dilation"] != (1, 1):
            opts.append(f"dilation={_pair(a['dilation'])}")
        if a["groups"] != 1:
            opts.append(f"groups={a['groups']}")
        opts.append("bias" if a["bias"] else "nobias")
        return text + f"[{', '.join(opts)}]"
    if n.op == "fc":
        return f"fc{a['out']}[{'bias' if a['bias'] else 'nobias'}]"
    if n.op in ("maxpool", "avgpool"):
        opts = [f"pad={_pair(a['padding'])}"] if a["padding"] != (0, 0) else []
        if a["ceil"]:
            opts.append("ceil")
        if a.get("dilation", (1, 1)) != (1, 1):
            opts.append(f"dilation={_pair(a['dilation'])}")
        return f"{n.op}{_pair(a['kernel'])}/{_pair(a['stride'])}" + (f"[{', '.join(opts)}]" if opts else "")
    if n.op in ("adaptive_avgpool", "adaptive_maxpool"):
        if a["output"] == (1, 1):
            return "gap" if n.op == "adaptive_avgpool" else "gmp"
        return f"{n.op.replace('_', '')}{_pair(a['output'])}"
    if n.op == "bn":
        opts = [f"eps={a['eps']!r}"] if a["eps"] != 1e-5 else []
        opts += [f"momentum={a['momentum']!r}"] if a["momentum"] != 0.1 else []
        return "bn" + (f"[{', '.join(opts)}]" if opts else "")
    if n.op == "lrn":
        return f"lrn{a['size']}[alpha={a['alpha']!r}, beta={a['beta']!r}, k={a['k']!r}]"
    if n.op == "dropout":
        return f"dropout[p={a['p']!r}]"
    if n.op in ACTIVATIONS:
        return n.op + "".join(f"[{k}={v!r}]" for k, v in a.items())
    if n.op in ("flatten", "softmax"):
        return n.op
    raise NoSpec(f"no spelling for op {n.op}")


def write_spec(graph: Graph) -> str:
    """A spec whose compiled graph has the same layers, shapes, parameters and MACs (checked here)."""
    import cnndsl
    users = graph.consumers()
    c, h, w = graph.input_shape

    def chain(start: str, stop: str) -> list[str]:
        """Layers from the node after `start` up to and including `stop` (a path of single links or merges)."""
        items, node = [], stop
        path = []
        while node != start:
            n = graph[node]
            path.append(n)
            if n.op in ("add", "concat"):
                fork = _fork(graph, n)
                node = fork
            else:
                node = n.inputs[0]
        path.reverse()
        i = 0
        while i < len(path):
            n = path[i]
            if n.op in ("add", "concat"):
                fork = _fork(graph, n)
                branches = []
                for src in n.inputs:
                    body = chain(fork, src) if src != fork else []
                    branches.append(" + ".join(body) if body else "none")
                items.append(f"{'cat' if n.op == 'concat' else 'add'}({', '.join(branches)})")
            elif n.op in ("conv", "fc"):
                # a weight layer with its batch norm and activation, stated explicitly: "conv3-64[nobias] bn relu"
                text = _layer(n)
                if i + 1 < len(path) and path[i + 1].op == "bn" and len(users[n.name]) == 1:
                    i += 1
                    text += " " + _layer(path[i])
                if i + 1 < len(path) and path[i + 1].op in ACTIVATIONS and len(users[path[i].name]) == 1:
                    i += 1
                    text += " " + _layer(path[i])
                else:
                    text += " none"
                items.append(text)
            else:
                items.append(_layer(n))
            i += 1
        return items

    body = chain(graph.nodes[0].name, graph.output.name)
    text = f"# written by cnndsl from {graph.filename}\ninput {h}x{w}x{c}\n" + "\n+ ".join(body) + "\n"
    rebuilt = cnndsl.compile(text)
    a, b = cnndsl.analyze(graph), cnndsl.analyze(rebuilt)
    same = (a.totals["params"], a.totals["buffers"], a.totals["macs"], graph.output.shape) == \
        (b.totals["params"], b.totals["buffers"], b.totals["macs"], rebuilt.output.shape)
    if not same:
        raise NoSpec("the written spec does not reproduce the graph", hint="please report this model")
    return text


def _fork(graph: Graph, merge: Node) -> str:
    """The nearest node that every input of a merge descends from (the start of its branches)."""
    def ancestors(name: str) -> list[str]:
        order, stack, seen = [], [name], set()
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            order.append(cur)
            stack.extend(graph[cur].inputs)
        return order
    common = set(ancestors(merge.inputs[0]))
    for other in merge.inputs[1:]:
        common &= set(ancestors(other))
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    fork = max(common, key=index.__getitem__)
    # every node strictly between the fork and the merge must lie on one branch only
    for src in merge.inputs:
        node = src
        while node != fork:
            n = graph[node]
            if n.op in ("add", "concat"):
                node = _fork(graph, n)
                continue
            if len(n.inputs) != 1:
                raise NoSpec("a branch joins another branch")
            node = n.inputs[0]
    return fork
