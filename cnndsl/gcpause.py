"""Pause Python's cyclic garbage collector while a pass builds large, acyclic tables."""
from __future__ import annotations

import functools
import gc


def gc_paused(fn):
    """Run `fn` with the cyclic collector off (restored after, even on error).

    Parsing, lowering and reporting allocate tens of thousands of small tuples and dicts that
    reference counting frees on its own; the collector's repeated full scans of them cost a
    third of the time on a 10,000-layer spec and find nothing to collect.
    """
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()
    return run
