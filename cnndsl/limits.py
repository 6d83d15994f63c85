"""Sanity limits that keep hostile input within bounded time and memory, and the float32 range that
every real-valued layer option must survive."""
from __future__ import annotations

from typing import Optional

MAX_SOURCE_CHARS = 1_000_000     # a spec larger than this is refused before parsing
MAX_NESTING = 64                 # brackets nested deeper than this
MAX_CALL_DEPTH = 32              # block calls nested deeper than this (recursion)
MAX_DEPTH = 200                  # items nested inside each other while lowering, block calls included
MAX_STEPS = 1_000_000            # lowering steps (items entered, expression terms evaluated, arguments bound)
MAX_REPEAT = 100_000             # one repeat count
MAX_NODES = 100_000              # IR nodes in one graph
MAX_DIM = 1 << 20                # any channel count or spatial size
MAX_KERNEL = 1 << 12             # any kernel, stride, padding (written or derived) or dilation
MAX_INT_DIGITS = 12              # digits in one integer literal
MAX_FLOAT_CHARS = 32             # characters in one decimal (float) literal
MAX_MAGNITUDE = 10 ** 15         # the largest absolute value arithmetic may produce
MAX_EXPR_DEPTH = 200             # operators nested inside each other in one expression (1+1+...+1 counts each +)
MAX_DIMS = 8                     # parts of one dimensions literal such as 32x32x3
MAX_NAME_CHARS = 128             # characters in one name or label
MAX_OPTIONS = 32                 # options in one [...] list or augment statement
MAX_PARAMS = 64                  # parameters of one block, arguments of one call
MAX_BUILD_PARAMS = 1 << 31       # parameters + buffers a backend will allocate (8 GiB of float32)
MAX_ONNX_BANDS = 256             # uneven adaptive pooling is written as one Slice + Reduce per output row and column
MIN_BN_EPS = 1e-12               # the smallest batch norm eps (it guards 1/sqrt(var + eps) in float32)

# PyTorch and ONNX keep real-valued layer options (bn eps and momentum, lrn alpha/beta/k, activation slopes,
# dropout rates) as float32: a value beyond FLOAT32_MAX becomes inf, a non-zero one below FLOAT32_TINY
# becomes subnormal (flushed to 0 by many devices) or 0.
FLOAT32_MAX = 3.4028234663852886e38      # the largest finite float32
FLOAT32_TINY = 1.1754943508222875e-38    # the smallest normal float32


def float32(value: float) -> float:
    """`value` rounded to the nearest float32 (for a finite value of at most FLOAT32_MAX in size)."""
    import struct
    return struct.unpack("<f", struct.pack("<f", value))[0]


def float32_trouble(value: float) -> Optional[str]:
    """Why the finite number `value` does not survive as a float32 (None if it does)."""
    if abs(value) > FLOAT32_MAX:
        return f"{value:g} is beyond float32's largest value (about 3.4e38): it would become infinite"
    if value != 0 and abs(value) < FLOAT32_TINY:
        return (f"{value:g} is too small for float32 (normal values start at about 1.2e-38): it would become "
                f"subnormal or 0")
    return None
