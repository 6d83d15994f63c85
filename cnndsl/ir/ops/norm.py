"""Normalisation: batch norm (`bn[eps=1e-5, momentum=0.1]`) and local response normalisation (`lrn5`)."""
from __future__ import annotations

from ... import limits
from .base import LayerArgs, Op, OpError, _count, _no_sizes, _options, _real, _spatial, OnnxImport, fmt_shape


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


BATCH_NORM, LOCAL_RESPONSE_NORM = BatchNorm(), LRN()


def _bn(args: LayerArgs, in_shape: tuple):
    return "bn", BATCH_NORM.build(args, in_shape)


def _lrn(args: LayerArgs, in_shape: tuple):
    return "lrn", LOCAL_RESPONSE_NORM.build(args, in_shape)


OPS = [BATCH_NORM, LOCAL_RESPONSE_NORM]
SPELLINGS = {"bn": _bn, "batchnorm": _bn, "lrn": _lrn}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"bn": ("bn", "bn[eps=0.001, momentum=0.01]", "gap + fc4 bn"),
            "lrn": ("lrn", "lrn3[alpha=0.001, beta=0.5, k=1.5]", "lrn1")}   # ONNX Runtime runs odd sizes only


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


ONNX_IMPORTS = {
    "BatchNormalization": OnnxImport((5, 5), 5, ("epsilon", "momentum", "training_mode", "spatial", "is_test",
                                                 "consumed_inputs"), _read_batch_norm),
    "LRN": OnnxImport((1, 1), 1, ("alpha", "beta", "bias", "size"), _read_lrn),
}
