"""Normalisation: batch norm (`bn[eps=1e-5, momentum=0.1]`), local response normalisation (`lrn5`) and layer
norm over the channels at each position (`layernorm[eps=1e-6]`, ConvNeXt's LayerNorm2d; nn.LayerNorm on a
vector)."""
from __future__ import annotations

from ... import limits
from .base import LayerArgs, Op, OpError, _count, _no_sizes, _options, _real, _spatial, OnnxImport, fmt_shape


def _stats_dtype(dtype: str) -> str:
    """The type PyTorch keeps a normalisation's statistics in: float32, float64 for float64 inputs."""
    return "float64" if dtype == "float64" else "float32"


class BatchNorm(Op):
    name = kind = "bn"
    ATTRS = {"eps": "real", "momentum": "real"}
    fuses_after_weight = True
    fresh_output = True
    ALIASES = {"eps": "eps", "momentum": "momentum"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        _no_sizes(args, "bn[eps=1e-5]")
        a = {"eps": 1e-5, "momentum": 0.1}
        for canon, (written, value) in opts.items():
            low = limits.MIN_BN_EPS if canon == "eps" else 0.0
            try:
                a[canon] = _real(value, f"option:{written}", canon, low, 1.0)
            except OpError as e:
                if canon == "eps" and e.hint is None:
                    e.hint = (f"batch norm's eps must be at least {limits.MIN_BN_EPS:g}: it keeps "
                              "1/sqrt(var + eps) finite in float32")
                raise
        return a

    def params(self, a, ins):
        return 2 * ins[0][0]

    def buffers(self, a, ins):
        return 2 * ins[0][0] + 1     # running mean, running var, num_batches_tracked

    def int_buffers(self, a, ins):
        return 1                     # num_batches_tracked is an int64

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # its input and the batch's mean and inverse std per channel (weights and running stats: state)
        return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype)),
                (("stats",), self.tensor_bytes((2 * ins[0][0],), 1, _stats_dtype(dtype)))]

    def param_tensors(self, a, ins):
        return 2

    def describe(self, a):
        return "batchnorm"

    def torch_module(self, a, ins, inplace=False):
        cls = "BatchNorm2d" if len(ins[0]) == 3 else "BatchNorm1d"
        extra = "" if a["eps"] == 1e-5 else f", eps={a['eps']!r}"
        extra += "" if a["momentum"] == 0.1 else f", momentum={a['momentum']!r}"
        return f"nn.{cls}({ins[0][0]}{extra})"

    def onnx(self, em, n, ins, shapes):
        import numpy as np
        c = shapes[0][0]
        scale = em.tensor(n, "weight", (c,), lambda: np.ones(c))
        bias = em.tensor(n, "bias", (c,), lambda: np.zeros(c))
        mean = em.tensor(n, "running_mean", (c,), lambda: np.zeros(c))
        var = em.tensor(n, "running_var", (c,), lambda: np.ones(c))
        em.uses(n, "num_batches_tracked")      # a buffer ONNX does not need
        em.op("BatchNormalization", [ins[0], scale, bias, mean, var], n.name, n.name,
              epsilon=float(n.attrs["eps"]), momentum=1.0 - float(n.attrs["momentum"]))

    def spell(self, a):
        opts = [f"eps={a['eps']!r}"] if a["eps"] != 1e-5 else []
        opts += [f"momentum={a['momentum']!r}"] if a["momentum"] != 0.1 else []
        return "bn" + (f"[{', '.join(opts)}]" if opts else "")


class LRN(Op):
    name = kind = "lrn"
    ATTRS = {"size": "count", "alpha": "real", "beta": "real", "k": "real"}
    fresh_output = True
    ALIASES = {"size": "size", "n": "size", "alpha": "alpha", "beta": "beta", "k": "k"}

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("lrn takes one size: the number of neighbouring channels", "size", "write it as lrn5")
        a = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}   # Krizhevsky et al. 2012, section 3.3
        if args.lead is not None:
            a["size"] = _count(args.lead, "lead", "lrn size", high=4096)
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "size":
                if args.lead is not None:
                    raise OpError("lrn size given twice (after the name and as an option)", part,
                                  f"write it once: lrn{args.lead} or lrn[size=...]", kind="name")
                a["size"] = _count(value, part, "lrn size", high=4096)
            else:
                a[canon] = _real(value, part, canon, 0.0, 1e6)
        _spatial([in_shape], "lrn")
        return a

    def shape(self, a, ins):
        _spatial(ins, "lrn")
        return ins[0]

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # nn.LocalResponseNorm is composed: x*x keeps x, avg_pool3d its channel-padded square, pow(beta) its base
        # and the division its input and divisor (under CUDA autocast pow runs in float32: base and divisor too)
        c, h, w = ins[0]
        wide = "float32" if autocast and dtype != "float64" else dtype
        return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype)),
                (("square",), self.tensor_bytes((c + a["size"] - 1, h, w), batch, dtype)),
                (("base",), self.tensor_bytes(ins[0], batch, wide)),
                (("divisor",), self.tensor_bytes(ins[0], batch, wide))]

    autocast = "float32_out"

    def describe(self, a):
        return f"lrn {a['size']}"

    def torch_module(self, a, ins, inplace=False):
        return f"nn.LocalResponseNorm({a['size']}, alpha={a['alpha']!r}, beta={a['beta']!r}, k={a['k']!r})"

    def onnx(self, em, n, ins, shapes):
        a = n.attrs
        if a["size"] % 2 == 0:
            from ...errors import OnnxExportError
            raise OnnxExportError(f"lrn{a['size']}: ONNX's LRN centres an even window differently from PyTorch's "
                                  "(and ONNX Runtime runs odd sizes only)", n.span, "use an odd size, e.g. lrn5")
        em.op("LRN", [ins[0]], n.name, n.name, size=a["size"], alpha=float(a["alpha"]), beta=float(a["beta"]),
              bias=float(a["k"]))

    def spell(self, a):
        return f"lrn{a['size']}[alpha={a['alpha']!r}, beta={a['beta']!r}, k={a['k']!r}]"


class LayerNorm(Op):
    """Layer norm over the channels at each position: torchvision's LayerNorm2d (ConvNeXt) on a feature map,
    nn.LayerNorm over the features of a vector; C weights and C biases (affine), 0 MACs (cnndsl counts conv and
    fc only). PyTorch: nn.LayerNorm on the channels-last view, as LayerNorm2d does; ONNX:
    LayerNormalization over the last axis (opset 17 on) or its ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add
    form (before), between Transposes to channels-last and back for a feature map, as torch.onnx writes
    LayerNorm2d."""

    name = kind = "layernorm"
    ATTRS = {"eps": "real"}
    fresh_output = True      # its backward keeps the input and statistics, not the output
    ALIASES = {"eps": "eps"}
    EPS = 1e-6               # ConvNeXt's (torchvision's LayerNorm2d in convnext_*; nn.LayerNorm's own is 1e-5)

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        _no_sizes(args, "layernorm[eps=1e-6]")
        a = {"eps": self.EPS}
        for canon, (written, value) in opts.items():
            try:
                a["eps"] = _real(value, f"option:{written}", "eps", limits.MIN_BN_EPS, 1.0)
            except OpError as e:
                if e.hint is None:
                    e.hint = (f"layer norm's eps must be at least {limits.MIN_BN_EPS:g}: it keeps "
                              "1/sqrt(var + eps) finite in float32")
                raise
        return a

    def params(self, a, ins):
        return 2 * ins[0][0]

    autocast = "float32"

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # its input and the mean and inverse std of each position (one per pixel, or per vector)
        positions = ins[0][1] * ins[0][2] if len(ins[0]) == 3 else 1
        return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype)),
                (("stats",), self.tensor_bytes((2 * positions,), batch, _stats_dtype(dtype)))]

    def param_tensors(self, a, ins):
        return 2

    def describe(self, a):
        return "layernorm" if a["eps"] == self.EPS else f"layernorm eps={a['eps']:g}"

    def torch_module(self, a, ins, inplace=False):
        return f"nn.LayerNorm({ins[0][0]}, eps={a['eps']!r})"

    def torch_forward(self, module, args, a):
        # over the channels: on N x H x W x C, as torchvision's LayerNorm2d permutes (a vector: movedim is a no-op)
        return f"{module}({args[0]}.movedim(1, -1)).movedim(-1, 1)"

    def onnx(self, em, n, ins, shapes):
        import numpy as np
        c = shapes[0][0]
        spatial = len(shapes[0]) == 3
        scale = em.tensor(n, "weight", (c,), lambda: np.ones(c))
        bias = em.tensor(n, "bias", (c,), lambda: np.zeros(c))
        x, out, eps = ins[0], n.name, float(n.attrs["eps"])
        if spatial:      # channels last, normalised over the last axis, and back: as torch.onnx writes LayerNorm2d
            x = em.op("Transpose", [x], f"{n.name}.nhwc", f"{n.name}.nhwc", perm=[0, 2, 3, 1])
            out = f"{n.name}.normed"
        if em.opset >= 17:
            y = em.op("LayerNormalization", [x, scale, bias], out, n.name, axis=-1, epsilon=eps)
        else:
            mean = em.reduce("ReduceMean", x, -1, f"{n.name}.mean")
            centered = em.op("Sub", [x, mean], f"{n.name}.centered", f"{n.name}.sub")
            squared = em.op("Pow", [centered, em.const(f"{n.name}.two", 2.0)], f"{n.name}.squared", f"{n.name}.pow")
            var = em.reduce("ReduceMean", squared, -1, f"{n.name}.var")
            var = em.op("Add", [var, em.const(f"{n.name}.eps", eps)], f"{n.name}.var_eps", f"{n.name}.add_eps")
            std = em.op("Sqrt", [var], f"{n.name}.std", f"{n.name}.sqrt")
            normed = em.op("Div", [centered, std], f"{n.name}.normalized", f"{n.name}.div")
            scaled = em.op("Mul", [normed, scale], f"{n.name}.scaled", f"{n.name}.mul")
            y = em.op("Add", [scaled, bias], out, f"{n.name}.add")
        if spatial:
            em.op("Transpose", [y], n.name, f"{n.name}.nchw", perm=[0, 3, 1, 2])

    def spell(self, a):
        return "layernorm" + (f"[eps={a['eps']!r}]" if a["eps"] != self.EPS else "")


BATCH_NORM, LOCAL_RESPONSE_NORM, LAYER_NORM = BatchNorm(), LRN(), LayerNorm()


def _bn(args: LayerArgs, in_shape: tuple):
    return "bn", BATCH_NORM.build(args, in_shape)


def _lrn(args: LayerArgs, in_shape: tuple):
    return "lrn", LOCAL_RESPONSE_NORM.build(args, in_shape)


def _ln(args: LayerArgs, in_shape: tuple):
    return "layernorm", LAYER_NORM.build(args, in_shape)


OPS = [BATCH_NORM, LOCAL_RESPONSE_NORM, LAYER_NORM]
SPELLINGS = {"bn": _bn, "batchnorm": _bn, "lrn": _lrn, "layernorm": _ln}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"bn": ("bn", "bn[eps=0.001, momentum=0.01]", "gap + fc4 bn"),
            "lrn": ("lrn", "lrn3[alpha=0.001, beta=0.5, k=1.5]", "lrn1"),   # ONNX Runtime runs odd sizes only
            # on the input, after a conv, with eps; on a vector (nn.LayerNorm); ConvNeXt's block
            "layernorm": ("layernorm", "conv3-5 + layernorm[eps=1e-5]", "dwconv3 none + layernorm",
                          "gap + fc7 + layernorm", "flatten + layernorm[eps=0.001]",
                          "res(dwconv7[bias] none + layernorm + conv1-24 gelu + conv1-6 none + layerscale)")}


# ------------------------------------------------------------- ONNX import --
# `imp` is the importer (cnndsl.backends.from_onnx): its helpers check each input and attribute as ONNX Runtime
# does and raise an import error that names the node.

def _read_batch_norm(imp, node, a):
    src = imp.data(node)
    channels = imp.shape[src][0]
    for index, what in enumerate(("scale", "B", "mean", "var"), 1):
        dims = imp.dims(node, index, what)
        if dims is None or dims != (channels,):
            raise imp.fail(f"{imp.label(node)}: its {what} is {fmt_shape(dims) if dims else 'missing'}, "
                            f"expected {channels} (one per channel)")
    if imp.int_(node, a, "spatial", 1) != 1:
        raise imp.fail(f"{imp.label(node)} normalizes per activation (spatial=0); cnndsl's bn is per channel")
    # training mode normalizes with the batch's own statistics (ONNX Runtime does so before opset 14
    # whenever the running statistics are outputs too): not the inference bn cnndsl imports
    if imp.int_(node, a, "training_mode", 0, (0, 1)) or any(node.output[1:]):
        raise imp.fail(f"{imp.label(node)} runs in training mode (it uses the batch's statistics)",
                        "export the model in eval mode")
    if imp.int_(node, a, "is_test", 0 if imp.opset < 7 else 1) == 0:
        raise imp.fail(f"{imp.label(node)} runs in training mode (is_test=0)", "export the model in eval mode")
    imp.ints(node, a, "consumed_inputs", high=1 << 62)
    eps = imp.float_(node, a, "epsilon", 1e-5, 0.0, 1.0, open_low=True)
    momentum = imp.float_(node, a, "momentum", 0.9, 0.0, 1.0)
    imp.add(node, "bn", [src], {"eps": eps, "momentum": round(1.0 - momentum, 6)})


def _read_lrn(imp, node, a):
    src = imp.data(node)
    size = imp.int_(node, a, "size")
    if size is None:
        raise imp.fail(f"{imp.label(node)} has no size")
    imp.within(node, "size", (size,), 1, 4096)
    # alpha and beta > 0 as ONNX Runtime requires; an even size, which only its CPU kernel refuses, is kept
    attrs = {"size": size, "alpha": imp.float_(node, a, "alpha", 1e-4, 0.0, 1e6, open_low=True),
             "beta": imp.float_(node, a, "beta", 0.75, 0.0, 1e6, open_low=True),
             "k": imp.float_(node, a, "bias", 1.0, 0.0, 1e6)}
    imp.add(node, "lrn", [src], attrs)


def _read_layer_norm(imp, node, a):
    """LayerNormalization over the channels: the last axis of a channels-last value (after a Transpose 0, 2, 3, 1,
    as torch.onnx writes LayerNorm2d) or of a vector; with a scale and a bias of one value per channel."""
    src = imp.data(node)
    shape = imp.shape[src]
    last = imp.channels_last(node.input[0])
    rank = len(shape) + 1
    axis = imp.int_(node, a, "axis", -1)
    if not -rank <= axis < rank:
        raise imp.fail(f"{imp.label(node)}: axis {axis} is out of range for its rank-{rank} input")
    axis %= rank
    c = shape[0]
    if last or len(shape) == 1:
        over_channels, want = axis == rank - 1, (c,)
    else:   # N x C x H x W from axis 1 is over the channels only where H x W is 1 x 1
        over_channels, want = axis == 1 and shape[1:] == (1, 1), (c, 1, 1)
    if not over_channels:
        layout = "channels-last " if last else ""
        raise imp.fail(f"{imp.label(node)} normalizes axes {axis} to {rank - 1} of its {layout}N x "
                       f"{fmt_shape(shape)} input; cnndsl's layernorm normalizes the channels at each position",
                       "LayerNorm2d is written Transpose 0, 2, 3, 1, LayerNormalization over the last axis, "
                       "Transpose 0, 3, 1, 2")
    for index, what in ((1, "scale"), (2, "bias")):
        dims = imp.dims(node, index, what)
        if dims is None or dims != want:
            raise imp.fail(f"{imp.label(node)}: its {what} is {fmt_shape(dims) if dims else 'missing'}, expected "
                           f"{fmt_shape(want)} (one per channel)", "cnndsl's layernorm has a weight and a bias")
    if imp.int_(node, a, "stash_type", 1) != 1:
        raise imp.fail(f"{imp.label(node)} computes its statistics in another type (stash_type)")
    if any(node.output[1:]):
        raise imp.fail(f"{imp.label(node)} also returns its mean and inverse deviation")
    eps = imp.float_(node, a, "epsilon", 1e-5, 0.0, 1.0, open_low=True)
    imp.add(node, "layernorm", [src], {"eps": layer_norm_eps(imp, node, eps)})


def layer_norm_eps(imp, node, eps: float) -> float:
    """A layer norm's eps read from a file, in the range the op takes."""
    return imp.real(node, "the layer norm's epsilon", eps, limits.MIN_BN_EPS, 1.0)


ONNX_IMPORTS = {
    "LayerNormalization": OnnxImport((2, 3), 3, ("axis", "epsilon", "stash_type"), _read_layer_norm),
    "BatchNormalization": OnnxImport((5, 5), 5, ("epsilon", "momentum", "training_mode", "spatial", "is_test",
                                                 "consumed_inputs"), _read_batch_norm),
    "LRN": OnnxImport((1, 1), 1, ("alpha", "beta", "bias", "size"), _read_lrn),
}
