"""The op registry: one module per op family, each owning everything about its ops (spellings and option
checks, shape, params, buffers, MACs, receptive-field window, description, PyTorch and ONNX emission, spec
spelling). Passes, lowering and backends ask the op found here; adding an op means adding it to a family
module (or a new module listed in FAMILIES)."""
from __future__ import annotations

from typing import Callable

from . import activation, channels, conv, linear, merge, norm, pool, regularize, resample, scale, structure
from .activation import ACTIVATIONS, NO_ACTIVATION  # noqa: F401  (the registry re-exports what lowering uses)
from .base import (GLOBAL, LayerArgs, OnnxImport, Op, OpError, adaptive_window, conv_out, fmt_shape, pool_out,  # noqa: F401
                   sliding_window, widest_adaptive_window)

FAMILIES = (structure, conv, linear, pool, norm, activation, merge, resample, regularize, channels, scale)

OPS: dict[str, Op] = {}
EXAMPLES: dict[str, tuple[str, ...]] = {}      # op name -> spec text the conformance harness builds
# Surface spellings (lower case, '-' and '_' removed) -> builder of (op name, attributes).
SPELLINGS: dict[str, Callable[[LayerArgs, tuple], tuple[str, dict]]] = {}
# ONNX node type -> how the family that owns it reads it back (cnndsl.backends.from_onnx dispatches to it)
IMPORTS: dict[str, OnnxImport] = {}
for _family in FAMILIES:
    for _type, _import in getattr(_family, "ONNX_IMPORTS", {}).items():
        assert _type not in IMPORTS, f"ONNX {_type} is read by two families"
        IMPORTS[_type] = _import
    for _op in _family.OPS:
        assert _op.name not in OPS, f"op {_op.name} is defined twice"
        OPS[_op.name] = _op
    EXAMPLES.update(getattr(_family, "EXAMPLES", {}))
    for _word, _build in _family.SPELLINGS.items():
        assert _word not in SPELLINGS, f"spelling {_word} is defined twice"
        SPELLINGS[_word] = _build


def normalize_word(word: str) -> str:
    return word.lower().replace("-", "").replace("_", "")
