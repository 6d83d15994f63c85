"""Stable weight names shared by the backends: where each node's module and tensors live.

IR names come from specs (labels, block names) and from imported ONNX files, where a node may be named
anything: quotes, new lines, `\"\"\"`, Python code, unicode confusables. `module_paths` maps every IR name to
a path of keys that are plain ASCII Python identifiers, unique by construction, and the same for the same
graph every time; the generated PyTorch source and the state-dict keys use only these keys.
"""
from __future__ import annotations

import hashlib
import keyword
import re
import unicodedata

from .graph import Graph

# Public attribute names of torch.nn.ModuleDict (tests/test_torch_backend.py checks this list against the
# installed torch), and the generated class's own members. A key equal to one of these, a keyword, or one
# starting with "_" gets a trailing "_".
MODULE_ATTRIBUTES = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children clear compile cpu cuda double
dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu
items keys load_state_dict modules mtia named_buffers named_children named_modules named_parameters
parameters pop register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to
to_empty train training type update values xpu zero_grad
reset_parameters cnndsl_graph cnndsl_paths
""".split())

MAX_KEY = 64                 # longer keys are cut and end in a digest of the whole name
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def safe_part(part: str) -> str:
    """One name segment as an ASCII identifier that is not a keyword or a module attribute.

    Plain ASCII identifiers keep their spelling (so state-dict keys stay as they were); anything else is
    NFKC-normalised, stripped of accents and has every other character run replaced by "_".
    """
    if _PLAIN.match(part) and len(part) <= MAX_KEY:
        key = part
    else:
        text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", part))
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
        key = _UNSAFE.sub("_", text).strip("_") or "node"
        if key[0].isdigit():
            key = "n" + key
        if len(key) > MAX_KEY:
            key = key[:MAX_KEY - 9] + "_" + hashlib.sha1(part.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    if key in MODULE_ATTRIBUTES or keyword.iskeyword(key) or key.startswith("_"):
        key += "_"
    return key


def module_paths(graph: Graph) -> dict[str, tuple[str, ...]]:
    """Where each node's module lives in the tree: (stage, scope..., name), safe as attribute names.

    The same path, joined with dots, prefixes the node's tensors in a state dict ("stem.conv1.weight").
    Distinct nodes get distinct paths, and no node's path is a prefix of another's (a key is a module or a
    container, never both): segments that would collide get a suffix "_2", "_3"... in graph order.
    """
    # (parent path, written segment, is a container) -> key; parent path -> keys taken there
    chosen: dict[tuple, str] = {}
    taken: dict[tuple, set] = {}
    paths = {}
    for n in graph.nodes[1:]:
        parts = n.name.split(".")
        if len(parts) == 1 or parts[0] != n.stage:   # a stage that is one labelled layer: head.head
            parts = [n.stage] + parts
        path: tuple[str, ...] = ()
        last = len(parts) - 1
        for i, part in enumerate(parts):
            slot = (path, part, i < last)
            key = chosen.get(slot) if i < last else None
            if key is None:
                used = taken.setdefault(path, set())
                base = key = safe_part(part)
                k = 1
                while key in used:
                    k += 1
                    key = f"{base}_{k}"
                used.add(key)
                chosen[slot] = key
            path += (key,)
        paths[n.name] = path
    return paths
