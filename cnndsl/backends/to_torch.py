"""PyTorch backend: one builder per op, emitted as readable Python source for an nn.Module."""
from __future__ import annotations

import keyword
from typing import Callable, Optional

from ..errors import printable
from ..ir import Graph, Node
from ..ir.names import module_paths

# ------------------------------------------------------ module builders ----
# Each returns the constructor expression of the node's nn.Module, or None for ops done in forward().


def _pair(v) -> str:
    return str(v[0]) if v[0] == v[1] else f"({v[0]}, {v[1]})"


def _conv(n: Node, ins) -> str:
    a = n.attrs
    args = [str(ins[0][0]), str(a["out"]), f"kernel_size={_pair(a['kernel'])}"]
    if a["stride"] != (1, 1):
        args.append(f"stride={_pair(a['stride'])}")
    if a["padding"] != (0, 0):
        args.append(f"padding={_pair(a['padding'])}")
    if a["dilation"] != (1, 1):
        args.append(f"dilation={_pair(a['dilation'])}")
    if a["groups"] != 1:
        args.append(f"groups={a['groups']}")
    if not a["bias"]:
        args.append("bias=False")
    return f"nn.Conv2d({', '.join(args)})"


def _fc(n: Node, ins) -> str:
    return f"nn.Linear({ins[0][0]}, {n.attrs['out']}{'' if n.attrs['bias'] else ', bias=False'})"


def _pool(cls: str) -> Callable:
    def build(n: Node, ins) -> str:
        a = n.attrs
        args = [f"kernel_size={_pair(a['kernel'])}", f"stride={_pair(a['stride'])}"]
        if a["padding"] != (0, 0):
            args.append(f"padding={_pair(a['padding'])}")
        if a.get("dilation", (1, 1)) != (1, 1):
            args.append(f"dilation={_pair(a['dilation'])}")
        if a["ceil"]:
            args.append("ceil_mode=True")
        return f"nn.{cls}({', '.join(args)})"
    return build


def _bn(n: Node, ins) -> str:
    cls = "BatchNorm2d" if len(ins[0]) == 3 else "BatchNorm1d"
    extra = "" if n.attrs["eps"] == 1e-5 else f", eps={n.attrs['eps']!r}"
    extra += "" if n.attrs["momentum"] == 0.1 else f", momentum={n.attrs['momentum']!r}"
    return f"nn.{cls}({ins[0][0]}{extra})"


def _simple(expr: str) -> Callable:
    return lambda n, ins: expr


BUILDERS: dict[str, Optional[Callable]] = {
    "conv": _conv, "fc": _fc, "maxpool": _pool("MaxPool2d"), "avgpool": _pool("AvgPool2d"),
    "adaptive_avgpool": lambda n, ins: f"nn.AdaptiveAvgPool2d({_pair(n.attrs['output'])})",
    "adaptive_maxpool": lambda n, ins: f"nn.AdaptiveMaxPool2d({_pair(n.attrs['output'])})",
    "bn": _bn,
    "lrn": lambda n, ins: (f"nn.LocalResponseNorm({n.attrs['size']}, alpha={n.attrs['alpha']!r}, "
                           f"beta={n.attrs['beta']!r}, k={n.attrs['k']!r})"),
    "dropout": lambda n, ins: f"nn.Dropout(p={n.attrs['p']!r})",
    "flatten": _simple("nn.Flatten()"), "softmax": _simple("nn.Softmax(dim=1)"),
    "relu": _simple("nn.ReLU({inplace})"), "relu6": _simple("nn.ReLU6({inplace})"),
    "tanh": _simple("nn.Tanh()"), "sigmoid": _simple("nn.Sigmoid()"),
    "elu": lambda n, ins: f"nn.ELU(alpha={n.attrs['alpha']!r}{{sep_inplace}})",
    "leakyrelu": lambda n, ins: f"nn.LeakyReLU({n.attrs['slope']!r}{{sep_inplace}})",
    "gelu": _simple("nn.GELU()"), "silu": _simple("nn.SiLU({inplace})"),
    "hardswish": _simple("nn.Hardswish({inplace})"),
    "add": None, "concat": None, "input": None,
}
INPLACE_OPS = {"relu", "relu6", "elu", "leakyrelu", "silu", "hardswish"}
# Ops whose output is a new tensor that nothing else aliases and that their backward does not need: an
# activation may overwrite it in place. Left out on purpose: flatten (a view of its input), dropout (the
# identity in eval mode), softmax and the activations (their backward reads their output).
FRESH_OUTPUT_OPS = {"conv", "fc", "bn", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "lrn", "add",
                    "concat"}
RESERVED_CLASS_NAMES = {"torch", "nn"}


def check_class_name(name: str) -> str:
    """A class name for generated source: an ASCII identifier that shadows nothing the source uses."""
    if not (isinstance(name, str) and name.isascii() and name.isidentifier()) or keyword.iskeyword(name) \
            or name in RESERVED_CLASS_NAMES:
        raise ValueError(f"{name!r} is not usable as a class name (an ASCII Python identifier other than "
                         f"{', '.join(sorted(RESERVED_CLASS_NAMES))} and the keywords)")
    return name


def _comment(text: str) -> str:
    """Text for a '#' comment: nothing in it can end the line (new lines and other controls are escaped)."""
    return printable(text, 120)

# ------------------------------------------------------------- codegen ----

def generate_source(graph: Graph, class_name: str = "Net", logits: bool = False,
                    return_nodes: Optional[list[str]] = None) -> str:
    """A self-contained Python module defining `class_name(nn.Module)`; imports only torch.

    `logits=True` leaves out a final softmax (what a cross-entropy loss wants). `return_nodes` makes
    forward() return a dict of those nodes' outputs instead (a feature extractor).
    """
    check_class_name(class_name)
    keep = set(return_nodes or ())
    unknown = keep - {n.name for n in graph.nodes}
    if unknown:
        raise KeyError(f"no such nodes: {sorted(unknown)[:5]}")
    nodes = list(graph.nodes)
    if logits and nodes[-1].op == "softmax" and len(nodes) > 2:
        nodes = nodes[:-1]
    shapes = {n.name: n.shape for n in nodes}
    ops = {n.name: n.op for n in nodes}
    users: dict[str, int] = {n.name: 0 for n in nodes}
    last_use: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for src in n.inputs:
            users[src] += 1
            last_use[src] = i
    paths = module_paths(graph)

    tree: dict = {}
    for n in nodes[1:]:
        build = BUILDERS[n.op]
        if build is None:
            continue
        expr = build(n, [shapes[i] for i in n.inputs])
        src = n.inputs[0]
        inplace = n.op in INPLACE_OPS and users[src] == 1 and ops[src] in FRESH_OUTPUT_OPS and src not in keep
        expr = expr.replace("{inplace}", "inplace=True" if inplace else "")
        expr = expr.replace("{sep_inplace}", ", inplace=True" if inplace else "")
        node = tree
        for part in paths[n.name][:-1]:
            node = node.setdefault(part, {})
        node[paths[n.name][-1]] = expr

    def emit_tree(d: dict, indent: int) -> list[str]:
        pad = " " * indent
        out = []
        for key, value in d.items():
            if isinstance(value, dict):
                out.append(f"{pad}{key!r}: nn.ModuleDict({{")
                out.extend(emit_tree(value, indent + 4))
                out.append(f"{pad}}}),")
            else:
                out.append(f"{pad}{key!r}: {value},")
        return out

    init = []
    for key, value in tree.items():
        if isinstance(value, dict):
            init.append(f"        self.{key} = nn.ModuleDict({{")
            init.extend(emit_tree(value, 12))
            init.append("        })")
        else:
            init.append(f"        self.{key} = {value}")

    var = {nodes[0].name: "x"}
    body = []
    for i, n in enumerate(nodes[1:], start=1):
        v = f"x{i}"
        args = [var[s] for s in n.inputs]
        if n.op == "add":
            call = " + ".join(args)
        elif n.op == "concat":
            call = f"torch.cat([{', '.join(args)}], 1)"
        else:
            call = "self." + ".".join(paths[n.name]) + f"({args[0]})"
        body.append(f"        {v} = {call}  # {_comment(n.name)}: {'x'.join(map(str, n.shape))}")
        var[n.name] = v
        dead = [var[s] for s in dict.fromkeys(n.inputs)
                if last_use.get(s) == i and s != nodes[-1].name and s not in keep and s != nodes[0].name]
        if dead:
            body.append(f"        del {', '.join(dead)}")
    if return_nodes:
        body.append("        return {" + ", ".join(f"{k!r}: {var[k]}" for k in return_nodes) + "}")
    else:
        body.append(f"        return {var[nodes[-1].name]}")

    c, h, w = graph.input_shape if len(graph.input_shape) == 3 else (graph.input_shape[0], 1, 1)
    about = f"{class_name}: generated by cnndsl from {graph.filename}. Input N x {c} x {h} x {w}."
    source = f'''{about!r}
import torch
from torch import nn


class {class_name}(nn.Module):
    """Output shape per image: {'x'.join(map(str, nodes[-1].shape))}."""

    def __init__(self):
        super().__init__()
{chr(10).join(init) if init else "        pass"}
        self.reset_parameters()

    def reset_parameters(self):
        """torchvision's scheme: Kaiming-normal (fan_out) convolutions, N(0, 0.01) linear, BN 1 and 0, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
{chr(10).join(body)}
'''
    return source


def to_torch(graph: Graph, *, logits: bool = False, class_name: str = "Net",
             return_nodes: Optional[list[str]] = None):
    """Build the nn.Module for a graph by running the same source `cnndsl build --target torch` writes."""
    from ..analysis.passes import require_buildable
    require_buildable(graph)
    source = generate_source(graph, class_name=class_name, logits=logits, return_nodes=return_nodes)
    namespace: dict = {"__name__": f"cnndsl_generated_{class_name}"}
    exec(compile(source, f"<cnndsl:{printable(graph.filename, 80)}>", "exec"), namespace)
    model = namespace[class_name]()
    model.cnndsl_graph = graph
    model.cnndsl_paths = module_paths(graph)
    return model
