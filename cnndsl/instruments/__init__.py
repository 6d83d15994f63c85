"""Instruments that look inside a network: where a unit looks (`rf`) and how gradients flow (`diagnose`).

`receptive.field_picture` draws a unit's theoretical receptive field (exactly `Report.rf_box`) over an image,
with the layer's stride grid, the field's growth along the path to the layer and, with torch, the effective
receptive field (Luo et al. 2016). `gradients.diagnose` measures per-layer gradient norms at initialization
(and after a few training steps) and flags vanishing and exploding layers. torch and matplotlib are imported
only when needed.
"""
from __future__ import annotations

from .common import InstrumentError, find_layer

__all__ = ["InstrumentError", "find_layer"]
