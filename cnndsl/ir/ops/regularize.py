"""Stochastic depth (`droppath0.2`, `droppath[p=0.2, ramp]`): in training each sample's residual branch is dropped
with probability p and the survivors scaled by 1/(1-p) (torchvision.ops.StochasticDepth, mode "row"); the identity
in eval. Every facet of the op, the rate ramps that lowering resolves, and its ONNX note."""
from __future__ import annotations

import math
import re

from .base import LayerArgs, OnnxImport, Op, OpError, _options, _real

# A ramp scales each ramped droppath's rate by its place among all ramped droppath nodes of the network, in graph
# order (i = 0 .. N-1 of N): "linear" as torchvision's EfficientNet (p * i / N), "inclusive" as its ConvNeXt
# (p * i / (N - 1), so the last block has p itself; a lone block has 0). Lowering resolves it (resolve_ramps).
RAMPS = {"linear": lambda p, i, n: p * i / n,
         "inclusive": lambda p, i, n: p * i / (n - 1) if n > 1 else 0.0}
RAMP = "ramp"          # the attribute a droppath carries from build() until lowering resolves the ramp


class DropPath(Op):
    name = kind = "droppath"
    ATTRS = {"p": "real"}
    ALIASES = {"p": "p", "rate": "p", "ramp": "ramp"}
    keeps_activation = True      # sits before a weight layer's pending activation (after a residual's addition)

    def build(self, args: LayerArgs, in_shape: tuple) -> dict:
        opts = _options(args, self.ALIASES)
        if args.size is not None or args.stride is not None:
            raise OpError("droppath takes one rate", "size", "write it as droppath0.2 or droppath[p=0.2]")
        p = None if args.lead is None else _real(args.lead, "lead", "droppath rate", 0.0, 1.0, open_high=True)
        a: dict = {}
        for canon, (written, value) in opts.items():
            part = f"option:{written}"
            if canon == "p":
                if args.lead is not None:
                    raise OpError("droppath rate given twice (after the name and as an option)", part,
                                  f"write it once: droppath{args.lead} or droppath[p=...]", kind="name")
                p = _real(value, part, "droppath rate", 0.0, 1.0, open_high=True)
            else:
                kind = "linear" if value is True else value
                if kind not in RAMPS:
                    raise OpError(f"ramp must be linear or inclusive, got {value!r}", part,
                                  "ramp (= ramp=linear) gives block i of N the rate p*i/N (EfficientNet); "
                                  "ramp=inclusive gives p*i/(N-1) (ConvNeXt)")
                a[RAMP] = kind
        if p is None:
            raise OpError("droppath needs a rate", "word", "write it as droppath0.2 or droppath[p=0.2]")
        return {"p": p, **a}

    def saved(self, a, ins, out, batch, dtype, inplace=False, autocast=False, device="cuda"):
        # x * mask keeps the mask (one value per sample, in x's type); x is kept by nothing here
        return [] if a["p"] == 0 else [(("mask",), self.tensor_bytes((1,), batch, dtype))]

    def alias(self, a, inplace=False):
        return a["p"] == 0          # the forward returns its input

    def describe(self, a):
        return f"droppath {a['p']:g}"

    def torch_module(self, a, ins, inplace=False):
        return None

    def torch_forward(self, module, args, a):
        # torchvision.ops.stochastic_depth(x, p, "row", self.training), drawing from the same RNG stream
        x, p = args[0], a["p"]
        if p == 0.0:
            return x
        keep = 1.0 - p
        return (f"({x} * torch.empty([{x}.shape[0]] + [1] * ({x}.dim() - 1), dtype={x}.dtype, device={x}.device)"
                f".bernoulli_({keep!r}).div_({keep!r}) if self.training else {x})")

    def onnx(self, em, n, ins, shapes):
        # an inference graph: the identity, with a note that cnndsl's importer reads back as this droppath
        em.op("Identity", [ins[0]], n.name, n.name, doc_string=f"{DROPPATH_DOC}{n.attrs['p']!r}")

    def spell(self, a):
        return f"droppath[p={a['p']!r}]"


DROPPATH_DOC = "cnndsl: droppath p="
DROP_PATH = DropPath()


def _droppath(args: LayerArgs, in_shape: tuple):
    return "droppath", DROP_PATH.build(args, in_shape)


OPS = [DROP_PATH]
SPELLINGS = {"droppath": _droppath, "stochasticdepth": _droppath}


def resolve_ramps(rows, fail) -> None:
    """Give every droppath row with a ramp its rate (rows: lowering's rows, in graph order, with `op`, `attrs` and
    `span`); `fail(message, span, hint)` makes the error for a network that mixes the two ramps."""
    ramped = [r for r in rows if r.op == DROP_PATH.name and RAMP in r.attrs]
    if not ramped:
        return
    kinds = {r.attrs[RAMP] for r in ramped}
    if len(kinds) > 1:
        second = next(r for r in ramped if r.attrs[RAMP] != ramped[0].attrs[RAMP])
        raise fail(f"droppath ramps of both kinds in one network ({ramped[0].attrs[RAMP]} first, then "
                   f"{second.attrs[RAMP]})", second.span,
                   "a ramp counts every ramped droppath of the network: use one kind")
    n = len(ramped)
    for i, r in enumerate(ramped):
        rule = RAMPS[r.attrs[RAMP]]
        r.attrs = {k: v for k, v in r.attrs.items() if k != RAMP}
        r.attrs["p"] = float(rule(r.attrs["p"], float(i), n))


# What the conformance harness (tests/test_conformance.py) builds: spec text after an `input` line.
EXAMPLES = {"droppath": ("droppath0.2", "droppath[p=0.3]", "droppath0", "stochasticdepth[rate=0.5]",
                         "res(conv3-6 bn + conv3-6 bn none + droppath0.1)",
                         "res(conv3-6 bn + conv3-6 bn + droppath[p=0.2, ramp]) x2",
                         "res(conv1-6 + droppath[p=0.3, ramp=inclusive]) x3",
                         "gap + fc4 + droppath0.25 | fc3")}


# ------------------------------------------------------------- ONNX import --
# cnndsl writes a droppath as an Identity noted with its rate; the importer's Identity reader (plumbing otherwise,
# cnndsl.backends.from_onnx) hands a noted one here.

_RATE = re.compile(r"[0-9][0-9.eE+-]{0,31}")


def read_droppath(imp, node, note: str) -> None:
    written = note[len(DROPPATH_DOC):]
    p = _float(written) if _RATE.fullmatch(written) else None
    if p is None or not math.isfinite(p):
        raise imp.fail(f"{imp.label(node)} is noted as a droppath, but its rate {written[:40]!r} is not a number")
    try:
        p = _real(p, "p", "its droppath rate", 0.0, 1.0, open_high=True)
    except OpError as e:
        raise imp.fail(f"{imp.label(node)}: {e.message}") from None
    imp.add(node, DROP_PATH.name, [imp.data(node)], {"p": p})


def _float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


ONNX_IMPORTS: dict[str, OnnxImport] = {}     # Identity is read by the importer, which hands noted ones to read_droppath
