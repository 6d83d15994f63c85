"""The command line (click + rich): the only place that prints."""
from .main import main

__all__ = ["main"]
