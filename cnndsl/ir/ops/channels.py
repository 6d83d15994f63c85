"""Ops that move channels: a channel range (`channels[start=0, stop=58]`, what `split(...)` cuts its input into,
one per branch) and ShuffleNet's channel shuffle (`shuffle2`, `shuffle[groups=3]`); every facet of the ops, and
how they are read back from ONNX (Slice on axis 1, Split, and the Reshape / Transpose / Reshape of a shuffle)."""
from __future__ import annotations

from .base import LayerArgs, OnnxImport, Op, OpError, _count, _options, fmt_shape

SHUFFLE_PERM = [0, 2, 1, 3, 4]      # N x g x C/g x H x W -> N x C/g x g x H x W
MAX_PARTS = 4096                    # outputs of one ONNX Split the importer reads


class Channels(Op):
    """Channels start .. stop-1 of the input (PyTorch's x[:, start:stop]); a vector's features likewise."""

    name = kind = "channels"
    ATTRS = {"start": "index", "stop": "count"}
    ALIASES = {"start": "start", "stop": "stop"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        for part in ("lead", "size", "stride"):
            if getattr(args, part) is not None:
                raise OpError("channels takes its range as options", part,
                              "write it as channels[start=0, stop=16] (stop left out: to the last channel)")
        a = {"start": 0, "stop": in_shape[0]}
        for canon, (written, value) in opts.items():
            a[canon] = _count(value, f"option:{written}", canon, low=0 if canon == "start" else 1)
        if not a["start"] < a["stop"] <= in_shape[0]:
            part = f"option:{opts['stop'][0]}" if "stop" in opts else f"option:{opts['start'][0]}" if opts else "word"
            raise OpError(f"channels {a['start']}:{a['stop']} is not a range inside the input's {in_shape[0]:,} "
                          "channels", part, f"start must be below stop, and stop at most {in_shape[0]:,}",
                          kind="shape")
        return a

    def shape(self, a, ins):
        c = ins[0][0]
        if not a["start"] < a["stop"] <= c:
            raise OpError(f"channels {a['start']}:{a['stop']} is not a range inside the input's {c:,} channels",
                          kind="shape")
        return (a["stop"] - a["start"],) + tuple(ins[0][1:])

    def describe(self, a):
        return f"channels {a['start']}:{a['stop']}"

    def alias(self, a, inplace=False):
        return True                 # x[:, start:stop] is a view of its input

    def torch_module(self, a, ins, inplace=False):
        return None

    def torch_forward(self, module, args, a):
        return f"{args[0]}[:, {a['start']}:{a['stop']}]"

    def onnx(self, em, n, ins, shapes):
        a = n.attrs
        em.op("Slice", [ins[0], em.ints(f"{n.name}.starts", [a["start"]]), em.ints(f"{n.name}.ends", [a["stop"]]),
                        em.ints(f"{n.name}.axes", [1])], n.name, n.name)

    def spell(self, a):
        return f"channels[start={a['start']}, stop={a['stop']}]"


class Shuffle(Op):
    """ShuffleNet's channel shuffle: C = g x C/g channels read as a g x C/g matrix and written transposed
    (torchvision's channel_shuffle, nn.ChannelShuffle); channel i of the output is channel
    (i mod g) * C/g + i div g of the input."""

    name = kind = "shuffle"
    ATTRS = {"groups": "count"}
    ALIASES = {"groups": "groups", "g": "groups"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("shuffle takes one number: its groups", "size" if args.size is not None else "stride",
                          "write it as shuffle2 or shuffle[groups=2]")
        groups = 2 if args.lead is None else _count(args.lead, "lead", "shuffle groups")
        for canon, (written, value) in opts.items():
            if args.lead is not None:
                raise OpError("shuffle groups given twice (after the name and as an option)", f"option:{written}",
                              f"write it once: shuffle{args.lead} or shuffle[groups=...]", kind="name")
            groups = _count(value, f"option:{written}", "shuffle groups")
        self._check(groups, in_shape, "lead" if args.lead is not None else
                    f"option:{opts['groups'][0]}" if opts else "word")
        return {"groups": groups}

    @staticmethod
    def _check(groups: int, shape: tuple, part: str = "word") -> None:
        if len(shape) != 3:
            raise OpError(f"shuffle needs a CxHxW feature map, but its input is a vector of {shape[0]:,} features",
                          part, "shuffle channels before the first fc layer", kind="shape")
        if shape[0] % groups:
            raise OpError(f"shuffle in {groups} groups needs channels divisible by {groups}, but the input has "
                          f"{shape[0]:,}", part, f"use groups that divide {shape[0]:,}, or give the layer before it "
                          f"a multiple of {groups} channels", kind="shape")

    def shape(self, a, ins):
        self._check(a["groups"], ins[0])
        return ins[0]

    def describe(self, a):
        return f"shuffle {a['groups']}"

    def torch_module(self, a, ins, inplace=False):
        return f"nn.ChannelShuffle({a['groups']})"

    def onnx(self, em, n, ins, shapes):
        c, h, w = shapes[0]
        g = n.attrs["groups"]
        # what torchvision's channel_shuffle exports to, with the batch copied (0) rather than fixed
        grouped = em.op("Reshape", [ins[0], em.ints(f"{n.name}.grouped", [0, g, c // g, h, w])],
                        f"{n.name}.grouped", f"{n.name}.grouped")
        moved = em.op("Transpose", [grouped], f"{n.name}.transposed", f"{n.name}.transposed", perm=SHUFFLE_PERM)
        em.op("Reshape", [moved, em.ints(f"{n.name}.shape", [0, c, h, w])], n.name, n.name)

    def spell(self, a):
        return f"shuffle[groups={a['groups']}]"


CHANNELS, SHUFFLE = Channels(), Shuffle()


def _channels(args: LayerArgs, in_shape: tuple):
    return "channels", CHANNELS.build(args, in_shape)


def _shuffle(args: LayerArgs, in_shape: tuple):
    return "shuffle", SHUFFLE.build(args, in_shape)


def split_parts(channels: int, count: int) -> list[tuple[int, int]]:
    """The channel ranges split(...) gives its `count` branches (torch.chunk's, for channels count divides)."""
    size = channels // count
    return [(i * size, (i + 1) * size) for i in range(count)]


OPS = [CHANNELS, SHUFFLE]
SPELLINGS = {"channels": _channels, "shuffle": _shuffle, "channelshuffle": _shuffle}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line (9x8x6).
EXAMPLES = {
    "channels": ("split(none, conv3-3)", "split(conv1-2, none, maxpool3/1[pad=1])",
                 "channels[start=1, stop=5] + conv3-4", "channels[stop=2]", "channels[start=4]",
                 "gap + flatten + channels[start=2, stop=5] + fc3",
                 "conv1-4 + split(identity, conv1-2 bn + dwconv3 bn none + conv1-2 bn) + shuffle2"),
    "shuffle": ("shuffle", "shuffle3", "shuffle[groups=6]", "shuffle[g=1]", "conv3-8/2 + shuffle4 + conv1-4"),
}


# ------------------------------------------------------------- ONNX import --
# `imp` is the importer (cnndsl.backends.from_onnx). Slice on axis 1 (read_channel_slice) and the Reshapes of
# a channel shuffle (read_shuffle_reshape) come from the importer's Slice and Reshape, which read other forms.

def read_channel_slice(imp, node, src: str, start: int, end: int) -> None:
    """Slice on axis 1 with step 1: the channel range ONNX's clamping gives (negative indices count from the end)."""
    c = imp.shape[src][0]
    first, last = (max(0, min(c, v + c if v < 0 else v)) for v in (start, end))
    if first >= last:
        raise imp.fail(f"{imp.label(node)} selects no channels ({start} to {end} of {c:,})")
    imp.add(node, "channels", [src], {"start": first, "stop": last})


def _read_split(imp, node, a):
    src = imp.data(node)
    shape = imp.shape[src]
    rank = len(shape) + 1
    axis = imp.int_(node, a, "axis", 0)
    if not -rank <= axis < rank:
        raise imp.fail(f"{imp.label(node)}: axis {axis} is out of range for its rank-{rank} input")
    if axis % rank != 1:
        raise imp.fail(f"{imp.label(node)} splits axis {axis}; cnndsl splits channels (axis 1)")
    c, outputs = shape[0], list(node.output)
    if not all(outputs):
        raise imp.fail(f"{imp.label(node)} leaves out an output")
    given = imp.values(node, 1, "split", integers=True, limit=MAX_PARTS)
    attr = imp.ints(node, a, "split", low=None, high=1 << 62)
    count = imp.int_(node, a, "num_outputs")
    if sum(v is not None for v in (given, attr, count)) > 1:
        raise imp.fail(f"{imp.label(node)} gives its split sizes more than once")
    if given is not None or attr is not None:
        sizes = [int(v) for v in (given.ravel() if given is not None else attr)]
        if len(sizes) != len(outputs):
            raise imp.fail(f"{imp.label(node)} gives {len(sizes)} split sizes for {len(outputs)} outputs")
    elif count is not None:     # opset 18: the last part is smaller when the parts do not come out even
        if count != len(outputs):
            raise imp.fail(f"{imp.label(node)} has num_outputs={count} but {len(outputs)} outputs")
        size = -(-c // count)
        sizes = [size] * (count - 1) + [c - size * (count - 1)]
    else:
        if c % len(outputs):
            raise imp.fail(f"{imp.label(node)} splits {c:,} channels into {len(outputs)} equal parts")
        sizes = [c // len(outputs)] * len(outputs)
    if any(s < 1 for s in sizes) or sum(sizes) != c:
        raise imp.fail(f"{imp.label(node)} splits its {c:,} channels into parts of "
                       f"{', '.join(map(str, sizes[:8]))}{', ...' if len(sizes) > 8 else ''}",
                       "cnndsl imports a Split into non-empty parts that cover the channels")
    start = 0
    for out, size in zip(outputs, sizes):
        imp.add(node, "channels", [src], {"start": start, "stop": start + size}, output=out, name=out)
        start += size


def read_shuffle_reshape(imp, node, src_value: str, dims: list) -> bool:
    """A Reshape that starts or ends a channel shuffle; `dims` is its target after the batch (resolved). False
    when the Reshape is no part of one (the importer then says what it is not)."""
    pending = imp.shuffles.get(src_value)
    if pending is not None:                  # the last Reshape: N x C/g x g x H x W back to N x C x H x W
        stage, src, groups, _ = pending
        if stage != "transposed" or tuple(dims) != imp.shape[src]:
            raise imp.fail(f"{imp.label(node)} reshapes a part of a channel shuffle to N x {fmt_shape(tuple(dims))}",
                           f"a channel shuffle reshapes back to N x {fmt_shape(imp.shape[src])}")
        imp.add(node, "shuffle", [src], {"groups": groups})
        return True
    if len(dims) != 4:
        return False
    src = imp.data(node)
    shape = imp.shape[src]
    if len(shape) != 3 or dims[1] * dims[0] != shape[0] or tuple(dims[2:]) != shape[1:]:
        raise imp.fail(f"{imp.label(node)} reshapes its N x {fmt_shape(shape)} input to N x {fmt_shape(tuple(dims))}",
                       "cnndsl imports a 5-D Reshape only as the first step of a channel shuffle: "
                       "N x C x H x W to N x g x C/g x H x W")
    imp.shuffles[node.output[0]] = ("grouped", src, dims[0], tuple(dims))
    return True


def _read_transpose(imp, node, a):
    pending = imp.shuffles.get(node.input[0])
    perm = imp.ints(node, a, "perm", low=None, high=1 << 62)
    if pending is None or pending[0] != "grouped":
        imp.src(node.input[0])      # names a value that is no feature map
        raise imp.fail(f"{imp.label(node)} transposes a feature map",
                       "cnndsl imports Transpose only inside a channel shuffle (Reshape to N x g x C/g x H x W, "
                       "Transpose 0, 2, 1, 3, 4, Reshape back)")
    if perm is None or list(perm) != SHUFFLE_PERM:
        raise imp.fail(f"{imp.label(node)} has perm {list(perm) if perm is not None else 'reversed'}; a channel "
                       f"shuffle swaps the group axes ({', '.join(map(str, SHUFFLE_PERM))})")
    stage, src, groups, dims = pending
    imp.shuffles[node.output[0]] = ("transposed", src, groups, (dims[1], dims[0]) + tuple(dims[2:]))


ONNX_IMPORTS = {
    "Split": OnnxImport((1, 2), MAX_PARTS, ("axis", "split", "num_outputs"), _read_split),
    "Transpose": OnnxImport((1, 1), 1, ("perm",), _read_transpose),
}
