"""Sanity limits that keep hostile input within bounded time and memory."""

MAX_SOURCE_CHARS = 1_000_000     # a spec larger than this is refused before parsing
MAX_NESTING = 64                 # brackets nested deeper than this
MAX_CALL_DEPTH = 32              # block calls nested deeper than this (recursion)
MAX_DEPTH = 200                  # items nested inside each other while lowering, block calls included
MAX_STEPS = 1_000_000            # lowering steps (items entered, expression terms evaluated, arguments bound)
MAX_REPEAT = 100_000             # one repeat count
MAX_NODES = 100_000              # IR nodes in one graph
MAX_DIM = 1 << 20                # any channel count or spatial size
MAX_KERNEL = 1 << 12             # any kernel, stride, padding or dilation
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
