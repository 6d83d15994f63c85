"""How much memory this machine has free: the bound that data and weights files are checked against."""
from __future__ import annotations

import os
from typing import Optional


def available_memory() -> Optional[int]:
    """Bytes of memory available now (Linux's MemAvailable, else free physical pages), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(cap: int, share: float = 0.5) -> int:
    """`cap`, or `share` of the memory available now if that is less (never below 64 MiB)."""
    free = available_memory()
    if free is None:
        return cap
    return min(cap, max(64 << 20, int(free * share)))


def gib(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.1f} GiB" if nbytes >= 1 << 30 else f"{nbytes / (1 << 20):.1f} MiB"
