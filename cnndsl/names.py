"""Stable weight names shared by the backends: where each node's module and tensors live."""
from __future__ import annotations

import keyword

from .ir import Graph

# Public attribute names of torch.nn.ModuleDict (tests/test_torch_backend.py checks this list against the
# installed torch). A label equal to one of these, a keyword, or one starting with "_" gets a trailing "_".
MODULE_ATTRIBUTES = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children clear compile cpu cuda double
dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu
items keys load_state_dict modules mtia named_buffers named_children named_modules named_parameters
parameters pop register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to
to_empty train training type update values xpu zero_grad
""".split())


def safe_part(part: str) -> str:
    if part in MODULE_ATTRIBUTES or keyword.iskeyword(part) or part.startswith("_"):
        return part + "_"
    return part


def module_paths(graph: Graph) -> dict[str, tuple[str, ...]]:
    """Where each node's module lives in the tree: (stage, scope..., name), safe as attribute names.

    The same path, joined with dots, prefixes the node's tensors in a state dict ("stem.conv1.weight").
    """
    paths = {}
    for n in graph.nodes[1:]:
        parts = n.name.split(".")
        if len(parts) == 1 or parts[0] != n.stage:   # a stage that is one labelled layer: head.head
            parts = [n.stage] + parts
        paths[n.name] = tuple(safe_part(p) for p in parts)
    return paths
