"""Layer scale (`layerscale[init=1e-6]`): ConvNeXt's learnable per-channel factor gamma (Touvron et al., CaiT,
2021), one parameter per channel that multiplies a branch before its residual addition."""
from __future__ import annotations

from math import isfinite

from ... import limits
from .base import LayerArgs, Op, _no_sizes, _options, _real

# cnndsl notes the init value on the Mul it writes, so that its own files read back to the same layer (the
# weights themselves hold the trained factors; the init only says how a new model starts)
INIT_DOC = "cnndsl: layerscale init="


def gamma_shape(in_shape: tuple) -> tuple:
    """The factor's shape: C x 1 x 1 on a feature map (torchvision's CNBlock.layer_scale), C on a vector."""
    return (in_shape[0], 1, 1) if len(in_shape) == 3 else (in_shape[0],)


class LayerScale(Op):
    name = kind = "layerscale"
    ATTRS = {"init": "real"}
    fresh_output = True      # x * gamma is a new tensor; its backward keeps x and gamma
    INIT = 1e-6              # ConvNeXt's layer_scale

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, {"init": "init"})
        _no_sizes(args, "layerscale[init=1e-6]")
        a = {"init": self.INIT}
        for canon, (written, value) in opts.items():
            a["init"] = _real(value, f"option:{written}", "init", -1e6, 1e6)
        return a

    def params(self, a, ins):
        return ins[0][0]

    autocast = "float32_out"       # x * gamma: a half x times a float32 gamma is float32

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        return [(("in", 0), self.tensor_bytes(ins[0], batch, dtype))]       # and gamma, a parameter

    def describe(self, a):
        return f"layerscale {a['init']:g}"

    def torch_module(self, a, ins, inplace=False):
        # a parameter in a ParameterDict: plain torch, a state-dict key '<path>.gamma', and no class of our own
        return f"nn.ParameterDict({{'gamma': nn.Parameter(torch.full({gamma_shape(ins[0])!r}, {a['init']!r}))}})"

    def torch_forward(self, module, args, a):
        return f"{args[0]} * {module}['gamma']"

    def onnx(self, em, n, ins, shapes):
        import numpy as np
        shape = gamma_shape(shapes[0])
        gamma = em.tensor(n, "gamma", shape, lambda: np.full(shape, n.attrs["init"]))
        em.op("Mul", [ins[0], gamma], n.name, n.name, doc_string=f"{INIT_DOC}{n.attrs['init']!r}")

    def spell(self, a):
        return f"layerscale[init={a['init']!r}]"


LAYER_SCALE = LayerScale()


def _layerscale(args: LayerArgs, in_shape: tuple):
    return "layerscale", LAYER_SCALE.build(args, in_shape)


OPS = [LAYER_SCALE]
SPELLINGS = {"layerscale": _layerscale}


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"layerscale": ("layerscale", "conv3-4 none + layerscale[init=0.5]", "gap + fc3 + layerscale[init=-2]",
                           "res(conv3-6 none + layerscale[init=0.1])")}


# ------------------------------------------------------------- ONNX import --
# The importer (cnndsl.backends.from_onnx) finds the Mul of a value by a constant of one factor per channel and
# hands it here.

def read_layer_scale(imp, node, src: str) -> None:
    """A Mul of the IR node `src` by a constant of one factor per channel (checked by the importer): a layer
    scale, with the init value cnndsl noted on it (else ConvNeXt's)."""
    init = LayerScale.INIT
    note = imp.text(node.doc_string)
    if note.startswith(INIT_DOC):
        written = note[len(INIT_DOC):]
        try:
            value = float(written) if len(written) <= 40 else None
        except ValueError:
            value = None
        if value is None:
            raise imp.fail(f"{imp.label(node)} has a layer scale note whose init value is not a number")
        if not (isfinite(value) and -1e6 <= value <= 1e6) or limits.float32_trouble(value):
            raise imp.fail(f"{imp.label(node)}: its layer scale init value {value} is not a finite number in "
                           "[-1e6, 1e6]")
        init = value
    imp.add(node, "layerscale", [src], {"init": init})
