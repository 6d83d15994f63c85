"""Hypothesis strategies that write random cnndsl specs.

`spec()` writes specs that are valid by construction, except that a deep stack of strided or unpadded layers may
shrink a small input below 1 pixel (a few percent of them): tests `assume()` those away with `compiles()`, which
lets any other refusal fail the test. Branches that are joined (`res`, `cat`) only use layers that keep the
spatial size ("same" padding, odd kernels), so they always join. `sequential_spec()` writes plain chains of
layers on small inputs, where collapsing sizes are common (for the tests of that refusal).
"""
from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

ACTS = ["relu", "tanh", "sigmoid", "relu6", "elu", "leakyrelu", "silu"]


@st.composite
def conv(draw, max_channels=12, keep_size=False, stride=True):
    """A conv layer. With `keep_size`, odd kernels and the default "same" padding only, so the output has the
    input's spatial size divided by the stride (rounded up), and no stride unless `stride`."""
    k = draw(st.sampled_from([1, 3, 5] if keep_size else [1, 2, 3, 5]))
    kernel = f"{k}" if draw(st.booleans()) else f"{k}x{draw(st.sampled_from([1, 3]))}"
    text = f"conv{kernel}-{draw(st.integers(1, max_channels))}"
    if stride and draw(st.integers(0, 3)) == 0:
        text += f"/{draw(st.integers(1, 3))}"
    opts = []
    if not keep_size and draw(st.integers(0, 3)) == 0:
        opts.append(draw(st.sampled_from(["valid", "pad=0", "pad=2", "pad=1x0"])))
    if draw(st.integers(0, 5)) == 0:
        opts.append(f"dilation={draw(st.integers(1, 2))}")
    if draw(st.integers(0, 5)) == 0:
        opts.append("nobias")
    if opts:
        text += "[" + ", ".join(opts) + "]"
    if draw(st.booleans()):
        text += " bn"
    if draw(st.integers(0, 4)) == 0:
        text += " " + draw(st.sampled_from(ACTS + ["none"]))
    return text


@st.composite
def pool(draw):
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    k = draw(st.integers(1, 3))
    text = f"{kind}{k}"
    if draw(st.booleans()):
        text += f"/{draw(st.integers(1, 2))}"
    opts = []
    if k >= 2 and draw(st.integers(0, 3)) == 0:
        opts.append("pad=1")
    if draw(st.integers(0, 3)) == 0:
        opts.append("ceil")
    return text + (f"[{', '.join(opts)}]" if opts else "")


@st.composite
def simple_layer(draw):
    # "conv3-8[groups=dw]" needs an input channel count that divides 8: the 1x1 conv before it gives 4
    return draw(st.one_of(
        conv(), conv(), conv(), pool(),
        st.sampled_from(["bn", "lrn", "dropout0.25", "relu", "tanh", "dwconv3", "conv1-4 + conv3-8[groups=dw]"])))


@st.composite
def unit(draw, depth=0):
    choices = [simple_layer()]
    if depth < 2:
        # the first conv may stride: the residual's 1x1 projection takes the same stride
        choices.append(st.builds(lambda a, b: f"res({a} + {b})", conv(keep_size=True),
                                 conv(keep_size=True, stride=False)))
        choices.append(st.builds(lambda items: "cat(" + ", ".join(items) + ")",
                                 st.lists(st.one_of(conv(keep_size=True, stride=False), st.just("maxpool3/1[pad=1]")),
                                          min_size=2, max_size=3)))
        choices.append(st.builds(lambda u, n: f"({u}) x{n}", unit(depth=depth + 1), st.integers(1, 2)))
        # ShuffleNetV2's split and shuffle; the 1x1 convolutions fix the channel counts they need
        choices.append(st.builds(lambda items, g: f"conv1-{2 * len(items)} + split({', '.join(items)}) + conv1-6 + "
                                                  f"shuffle{g}",
                                 st.lists(st.one_of(conv(keep_size=True, stride=False), st.just("none"),
                                                    st.just("maxpool3/1[pad=1]")), min_size=2, max_size=3),
                                 st.sampled_from([1, 2, 3, 6])))
    return draw(st.one_of(*choices))


@st.composite
def spec(draw, max_units=6):
    """A random spec: an input, some units in stages, then maybe a head."""
    h = draw(st.integers(8, 32))
    w = draw(st.integers(8, 32))
    c = draw(st.integers(1, 4))
    lines = [f"input {h}x{w}x{c}"]
    if draw(st.integers(0, 4)) == 0:
        lines.append(f"activation {draw(st.sampled_from(ACTS))}")
    units = draw(st.lists(unit(), min_size=1, max_size=max_units))
    stages, current = [], []
    for u in units:
        current.append(u)
        if draw(st.booleans()):
            stages.append(" + ".join(current))
            current = []
    if current:
        stages.append(" + ".join(current))
    head = draw(st.sampled_from(["", "gap | fc7", "fc9 + dropout | fc5 | softmax", "adaptiveavgpool2 | fc4", "flatten"]))
    if head:
        stages.append(head)
    lines.append("\n| ".join(stages))
    return "\n".join(lines) + "\n"


@st.composite
def sequential_spec(draw):
    """A chain of layers without joins or a size-dependent head, on an input of 1 to 6 pixels a side: about
    half of them shrink the input below 1 pixel somewhere."""
    h, w, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    layers = draw(st.lists(st.one_of(simple_layer(), simple_layer().map(lambda u: f"({u}) x2")),
                           min_size=1, max_size=5))
    return f"input {h}x{w}x{c}\n" + " + ".join(layers) + "\n"


def compiles(text: str, **kw):
    """The graph of a generated spec; `assume()`s away (without failing) only a spatial size collapsing below
    1 pixel, the one refusal `spec()` does not rule out. Any other error propagates and fails the test."""
    import cnndsl
    try:
        return cnndsl.compile_text(text, **kw)
    except cnndsl.ShapeError as e:
        assume("collapses below 1" not in e.message)
        raise
