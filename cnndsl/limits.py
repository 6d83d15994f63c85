"""Sanity limits that keep hostile input within bounded time and memory."""

MAX_SOURCE_CHARS = 1_000_000     # a spec larger than this is refused before parsing
MAX_NESTING = 64                 # brackets nested deeper than this
MAX_CALL_DEPTH = 32              # block calls nested deeper than this (recursion)
MAX_REPEAT = 100_000             # one repeat count
MAX_NODES = 100_000              # IR nodes in one graph
MAX_DIM = 1 << 20                # any channel count or spatial size
MAX_KERNEL = 1 << 12             # any kernel, stride, padding or dilation
MAX_INT_DIGITS = 12              # digits in one integer literal
