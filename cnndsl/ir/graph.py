"""The IR: an immutable DAG of named nodes in topological order, and its verifier."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, Optional

from ..errors import InternalError, Span
from .ops import OPS, OpError


class Node(NamedTuple):
    """One operation: its unique name, op, input node names, attributes and output shape."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    shape: tuple[int, ...]          # channels-first, batch left out: (C, H, W) or (F,)
    stage: str
    span: Optional[Span]
    label: Optional[str] = None     # the label the user wrote, if any

    def key(self) -> tuple:
        """Everything but the span: what makes two IRs the same network."""
        return (self.name, self.op, self.inputs, tuple(sorted(self.attrs.items())), self.shape, self.stage)


class Graph:
    """A network: nodes in topological order; the first is the input, the last the output."""

    __slots__ = ("nodes", "source", "filename", "settings", "_index")

    def __init__(self, nodes: tuple[Node, ...], source: str = "", filename: str = "<spec>",
                 settings: Optional[Mapping[str, Any]] = None):
        self.nodes = tuple(nodes)
        self.source = source
        self.filename = filename
        self.settings = MappingProxyType(dict(settings or {}))   # spec-level settings, e.g. augment
        self._index = {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def stages(self) -> list[str]:
        seen: dict[str, None] = {}
        for n in self.nodes[1:]:
            seen.setdefault(n.stage, None)
        return list(seen)

    def consumers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n.name)
        return users

    def same_as(self, other: "Graph") -> bool:
        return [n.key() for n in self.nodes] == [n.key() for n in other.nodes]

    def __repr__(self) -> str:
        return f"<Graph {self.filename}: {len(self.nodes)} nodes, {self.input_shape} -> {self.output.shape}>"

    def dump(self) -> str:
        """A stable, readable text form of the IR (used by golden tests)."""
        lines = []
        for n in self.nodes:
            attrs = ", ".join(f"{k}={v}" for k, v in sorted(n.attrs.items()))
            lines.append(f"{n.name} = {n.op}({', '.join(n.inputs)}){' {' + attrs + '}' if attrs else ''}"
                         f" : {'x'.join(map(str, n.shape))}  @{n.stage}")
        return "\n".join(lines)


def make_node(name: str, op: str, inputs: tuple[str, ...], attrs: dict, shape: tuple, stage: str,
              span: Optional[Span], label: Optional[str] = None) -> Node:
    return Node(name, op, inputs, MappingProxyType(attrs), shape, stage, span, label)


_INT = {int}


def verify(graph: Graph) -> Graph:
    """Check the IR's invariants; a failure is a bug in cnndsl (InternalError), not a user error."""
    nodes = graph.nodes
    if not nodes or nodes[0].op != "input" or nodes[0].inputs:
        raise InternalError("the first node must be the graph's input")
    shapes: dict[str, tuple] = {}
    used: set[str] = set()
    for n in nodes:
        if n.name in shapes:
            raise InternalError(f"duplicate node name {n.name!r}")
        if not isinstance(n.name, str) or not n.name:
            raise InternalError(f"a node has an empty name ({n.op})")
        op = OPS.get(n.op)
        if op is None:
            raise InternalError(f"node {n.name!r} has unknown op {n.op!r}")
        if n.op == "input" and n is not nodes[0]:
            raise InternalError(f"second input node {n.name!r}")
        for i in n.inputs:
            if i not in shapes:
                raise InternalError(f"node {n.name!r} reads {i!r}, which is not defined before it")
            used.add(i)
        try:
            op.check_attrs(n.attrs)
        except OpError as e:
            raise InternalError(f"node {n.name!r}: {e.message}") from None
        if n.op != "input":
            if not n.inputs:
                raise InternalError(f"node {n.name!r} has no inputs")
            try:
                expect = op.shape(n.attrs, [shapes[i] for i in n.inputs])
            except OpError as e:
                raise InternalError(f"node {n.name!r}: {e.message}") from None
            if tuple(expect) != n.shape:
                raise InternalError(f"node {n.name!r} records shape {n.shape}, its rule gives {expect}")
        if not n.shape or set(map(type, n.shape)) != _INT or min(n.shape) < 1:
            raise InternalError(f"node {n.name!r} has a bad shape {n.shape}")
        shapes[n.name] = n.shape
    dead = [n.name for n in nodes[:-1] if n.name not in used]
    if dead:
        raise InternalError(f"nodes whose output is never used: {dead[:5]}")
    return graph
