"""The IR: an immutable graph of named nodes (graph.py), safe names for backends (names.py), and the ops."""
from .graph import Graph, Node, make_node, verify

__all__ = ["Graph", "Node", "make_node", "verify"]
