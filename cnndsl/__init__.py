"""cnndsl: a compiler and analyzer for a compact language that describes convolutional networks.

This module only re-exports the public API; nothing inside the package imports it. The pipeline, in order:
frontend/ (text -> syntax tree -> IR), ir/ (graph, names, one module per op family), analysis/ (passes and
the report), backends/ (PyTorch, ONNX both ways, spec text, ONNX Runtime), train/ and cli/.
"""
from __future__ import annotations

from .analysis.report import Report
from .api import SpecFileError, analyze, compile, compile_text, format_spec, load_torchvision, parse, to_torch
from .errors import CnnDslError, InternalError, LimitError, ParseError, ShapeError, Span
from .frontend.source import decode_spec, read_spec
from .ir import Graph, Node, verify
from .version import __version__

__all__ = ["parse", "compile", "compile_text", "analyze", "format_spec", "read_spec", "decode_spec", "to_torch",
           "load_torchvision", "Graph", "Node", "Report", "CnnDslError", "ParseError", "ShapeError", "LimitError",
           "InternalError", "SpecFileError", "Span", "verify", "__version__"]
