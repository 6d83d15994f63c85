"""Upsampling by whole-number scales (`upsample2`, `upsample2x3`, `upsample[scale=2, mode=bilinear]`): nearest
(unit i reads cell floor(i/s)) or bilinear with PyTorch's align_corners=False; every facet of the op."""
from __future__ import annotations

import struct
from fractions import Fraction

from ... import limits
from .base import LayerArgs, OnnxImport, Op, OpError, _options, _pair, _spatial, spec_pair

MODES = ("nearest", "bilinear")


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def torch_nearest_exact(scale: int) -> bool:
    """Whether PyTorch's mode='nearest' reads cell floor(i/scale) for every unit i: it computes floor(i * r) in
    float32 with r = float32(1/scale), which is exact when r does not round below 1/scale (then i * r >= k at
    i = k * scale, and stays below k + 1); where r rounds down (scale 41, 47, 55, ...) unit k * scale may read
    cell k - 1. PyTorch's 'nearest-exact' (floor((i + 0.5) * r)) reads floor(i/scale) at every whole scale."""
    return scale <= 2 or Fraction(_float32(1.0 / scale)) >= Fraction(1, scale)


def bilinear_span(i: int, n: int, s: int) -> tuple[int, int]:
    """The cells output unit i of a bilinear upsampling by s (align_corners=False) of n cells reads with a non-zero
    weight, in exact arithmetic: src = (i + 0.5)/s - 0.5 clamped at 0 (at most n - 1), floor(src), and the next
    cell where src is not a whole number."""
    num, den = 2 * i + 1 - s, 2 * s          # src = num / den
    if num <= 0:
        return 0, 0
    lo, rest = divmod(num, den)
    if lo >= n - 1:
        return n - 1, n - 1
    return lo, lo if rest == 0 else lo + 1


class Upsample(Op):
    name = kind = "upsample"
    ATTRS = {"scale": "pair", "bilinear": "bool"}
    ALIASES = {"scale": "scale", "scale_factor": "scale", "factor": "scale", "s": "scale", "mode": "mode",
               "nearest": "mode", "bilinear": "mode"}
    windowed = True
    fresh_output = True

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("upsample takes one scale (N or HxW)", "size",
                          "write it as upsample2, upsample2x1 or upsample[scale=2, mode=bilinear]")
        scale = (2, 2) if args.lead is None else _pair(args.lead, "lead", "upsampling scale")
        bilinear = False
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "scale":
                if args.lead is not None:
                    raise OpError("upsampling scale given twice (after the name and as an option)", part,
                                  f"write it once: upsample{spec_pair(scale)} or upsample[scale=...]", kind="name")
                scale = _pair(value, part, "upsampling scale")
            elif written in MODES:
                if value is not True:
                    raise OpError(f"'{written}' is a flag and takes no value", part, f"write upsample2[{written}]")
                bilinear = written == "bilinear"
            else:
                if value not in MODES:
                    raise OpError(f"upsampling mode must be nearest or bilinear, got {value!r}", part,
                                  "bilinear is PyTorch's with align_corners=False")
                bilinear = value == "bilinear"
        _spatial([in_shape], "upsample")
        return {"scale": scale, "bilinear": bilinear}

    def shape(self, a, ins):
        c, h, w = _spatial(ins, "upsample")
        return (c, h * a["scale"][0], w * a["scale"][1])

    def window(self, a, ins):
        # One window per axis cannot state it (output units step 1/s input cells); as adaptive pooling's enlarging
        # windows, the widest unit's cells with stride 1, and irregular() has the report use the exact units.
        return tuple((2 if a["bilinear"] and s > 1 else 1, 1, 0) for s in a["scale"])

    def irregular(self, a, in_shape):
        return a["scale"] != (1, 1)

    def unit_spans(self, a, in_shape, out_shape):
        axes = []
        for n, s in zip(in_shape[1:], a["scale"]):
            if a["bilinear"]:
                axes.append([(lo, hi, 1) for lo, hi in (bilinear_span(i, n, s) for i in range(n * s))])
            else:
                axes.append([(i // s, i // s, 1) for i in range(n * s)])
        return tuple(axes)

    def describe(self, a):
        return f"upsample {spec_pair(a['scale'])} {'bilinear' if a['bilinear'] else 'nearest'}"

    def torch_module(self, a, ins, inplace=False):
        sh, sw = a["scale"]
        factor = f"{float(sh)!r}" if sh == sw else f"({float(sh)!r}, {float(sw)!r})"
        if a["bilinear"]:
            return f"nn.Upsample(scale_factor={factor}, mode='bilinear', align_corners=False)"
        # 'nearest-exact' reads the same cells at whole scales, without nearest's float32 rounding
        mode = "nearest" if all(torch_nearest_exact(s) for s in a["scale"]) else "nearest-exact"
        return f"nn.Upsample(scale_factor={factor}, mode='{mode}')"

    def onnx(self, em, n, ins, shapes):
        import numpy as np
        scales = em.const(f"{n.name}.scales", [1.0, 1.0, *map(float, n.attrs["scale"])], dtype=np.float32)
        em.declare(n.name, n.shape)     # shape inference loses the symbolic batch through Resize
        if n.attrs["bilinear"]:
            em.op("Resize", [ins[0], "", scales], n.name, n.name, mode="linear",
                  coordinate_transformation_mode="half_pixel")
        else:
            em.op("Resize", [ins[0], "", scales], n.name, n.name, mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def spell(self, a):
        return f"upsample{spec_pair(a['scale'])}" + ("[bilinear]" if a["bilinear"] else "")


UPSAMPLE = Upsample()


def _upsample(args: LayerArgs, in_shape: tuple):
    return "upsample", UPSAMPLE.build(args, in_shape)


OPS = [UPSAMPLE]
SPELLINGS = {"upsample": _upsample}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"upsample": ("upsample", "upsample3", "upsample2x3", "upsample1x2[mode=nearest]", "upsample1",
                         "upsample[s=3x2, nearest]",
                         "upsample[scale=2, mode=bilinear]", "upsample3[bilinear]", "upsample[scale=2x1, bilinear]",
                         "conv3-4/2 + upsample2[bilinear] + conv3-2", "maxpool2/2 + upsample2 + conv3-2 | gap | fc3")}


# ------------------------------------------------------------- ONNX import --
# Resize with whole-number scales on the spatial axes, in the forms that compute cnndsl's nearest (cell
# floor(i/s): asymmetric coordinates with floor, as cnndsl and torch.onnx write it, or half-pixel coordinates
# rounded, ONNX's defaults) or bilinear (linear with half_pixel, or pytorch_half_pixel, the same at whole scales).

_COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _read_resize(imp, node, a):
    src = imp.data(node)
    c, h, w = imp.spatial(node, src)
    if imp.opset < 11:
        raise imp.fail(f"{imp.label(node)}: cnndsl reads Resize from opset 11 (its coordinate modes)")
    mode = imp.string(node, a, "mode", "nearest", ("nearest", "linear", "cubic"))
    coordinates = imp.string(node, a, "coordinate_transformation_mode", "half_pixel", _COORDINATES)
    rounding = imp.string(node, a, "nearest_mode", "round_prefer_floor", _NEAREST)
    imp.float_(node, a, "cubic_coeff_a", -0.75)              # cubic only
    imp.int_(node, a, "exclude_outside", 0, (0, 1))          # cubic only
    imp.float_(node, a, "extrapolation_value", 0.0)          # tf_crop_and_resize only
    imp.int_(node, a, "antialias", 0, (0, 1))                # downsampling only
    policy = imp.string(node, a, "keep_aspect_ratio_policy", "stretch", ("stretch", "not_larger", "not_smaller"))
    if mode == "cubic":
        raise imp.fail(f"{imp.label(node)} resizes by cubic interpolation; cnndsl upsamples nearest or bilinear")
    if mode == "linear" and coordinates not in ("half_pixel", "pytorch_half_pixel"):
        raise imp.fail(f"{imp.label(node)}: linear resizing with {coordinates} coordinates is not cnndsl's bilinear",
                       "cnndsl's bilinear is PyTorch's align_corners=False (ONNX half_pixel)")
    if mode == "nearest" and (coordinates, rounding) not in (
            ("asymmetric", "floor"), *((c_, r) for c_ in ("half_pixel", "pytorch_half_pixel")
                                       for r in ("round_prefer_floor", "round_prefer_ceil"))):
        raise imp.fail(f"{imp.label(node)}: nearest resizing with {coordinates} coordinates and {rounding} "
                       "does not read cell floor(i/s)",
                       "cnndsl reads asymmetric coordinates with floor (what PyTorch's nearest exports) or half_pixel "
                       "rounded")
    imp.const(node, 1, "roi")                                # read by tf_crop_and_resize only; constant or left out
    axes = imp.ints(node, a, "axes", None, low=-4, high=3)
    if axes is None:
        axes = (0, 1, 2, 3)
    axes = tuple(x % 4 for x in axes)
    if len(set(axes)) != len(axes):
        raise imp.fail(f"{imp.label(node)} lists an axis twice")
    scales = imp.values(node, 2, "scales") if len(node.input) > 2 else None
    sizes = imp.values(node, 3, "sizes", integers=True) if len(node.input) > 3 else None
    scales = None if scales is not None and scales.size == 0 else scales
    sizes = None if sizes is not None and sizes.size == 0 else sizes
    if (scales is None) == (sizes is None):
        raise imp.fail(f"{imp.label(node)} must give exactly one of scales and sizes")
    given = scales if scales is not None else sizes
    if given.size != len(axes):
        raise imp.fail(f"{imp.label(node)} gives {given.size} {'scales' if sizes is None else 'sizes'} for "
                       f"{len(axes)} axes")
    full = (imp.batch, c, h, w)
    factor = {}
    for axis, value in zip(axes, given.tolist()):
        if sizes is not None:
            if axis == 0 and (imp.batch is None or value != imp.batch):
                raise imp.fail(f"{imp.label(node)} resizes to a fixed batch of {value}",
                               "cnndsl reads sizes of the channel and spatial axes (or a model with that batch)")
            if value < 1 or value % full[axis]:
                raise imp.fail(f"{imp.label(node)} resizes an axis of {full[axis]} to {value}, not a whole multiple",
                               "cnndsl upsamples by whole-number scales")
            value = value // full[axis]
        elif not (value >= 1 and float(value).is_integer()):
            raise imp.fail(f"{imp.label(node)} scales by {value:g}; cnndsl upsamples by whole-number scales",
                           "resizing down or by a fraction is not an upsample")
        factor[axis] = int(value)
    if sizes is not None and policy != "stretch" and len({factor[x] for x in axes}) > 1:
        raise imp.fail(f"{imp.label(node)} keeps the aspect ratio ({policy}) of unequal sizes")
    if factor.get(0, 1) != 1 or factor.get(1, 1) != 1:
        raise imp.fail(f"{imp.label(node)} resizes the batch or channel axis; cnndsl upsamples height and width")
    scale = (factor.get(2, 1), factor.get(3, 1))
    imp.within(node, "its scale", scale, 1, limits.MAX_KERNEL)
    imp.add(node, UPSAMPLE.name, [src], {"scale": scale, "bilinear": mode == "linear"})


ONNX_IMPORTS = {
    "Resize": OnnxImport((1, 4), 1, ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                                     "exclude_outside", "extrapolation_value", "antialias", "axes",
                                     "keep_aspect_ratio_policy"), _read_resize),
}
