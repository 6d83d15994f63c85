"""Hypothesis strategies that write random (mostly valid) cnndsl specs."""
from __future__ import annotations

from hypothesis import strategies as st

ACTS = ["relu", "tanh", "sigmoid", "relu6", "elu", "leakyrelu", "silu"]


@st.composite
def conv(draw, max_channels=12):
    k = draw(st.sampled_from([1, 2, 3, 5]))
    kernel = f"{k}" if draw(st.booleans()) else f"{k}x{draw(st.sampled_from([1, 3]))}"
    text = f"conv{kernel}-{draw(st.integers(1, max_channels))}"
    if draw(st.integers(0, 3)) == 0:
        text += f"/{draw(st.integers(1, 3))}"
    opts = []
    if draw(st.integers(0, 3)) == 0:
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
    return draw(st.one_of(
        conv(), conv(), conv(), pool(),
        st.sampled_from(["bn", "lrn", "dropout0.25", "relu", "tanh", "dwconv3", "conv3-8[groups=dw]"])))


@st.composite
def unit(draw, depth=0):
    choices = [simple_layer()]
    if depth < 2:
        choices.append(st.builds(lambda a, b: f"res({a} + {b})", conv(), conv()))
        choices.append(st.builds(lambda items: "cat(" + ", ".join(items) + ")",
                                 st.lists(st.one_of(conv(), st.just("maxpool3/1[pad=1]")), min_size=2, max_size=3)))
        choices.append(st.builds(lambda u, n: f"({u}) x{n}", unit(depth=depth + 1), st.integers(1, 2)))
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
