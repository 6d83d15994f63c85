"""The `augment` statement's vocabulary: augmentations, presets and their strength ranges (no torch here;
training applies them in cnndsl.train.augment)."""
from __future__ import annotations

import math
from typing import Optional

from ..limits import float32_trouble

AUGMENTATIONS = {"flip": 0.5, "crop": 4, "scale": 0.1, "exposure": 0.2, "saturation": 0.2}
PRESETS = {"none": {}, "standard": {"flip": 0.5, "crop": 4}, "all": dict(AUGMENTATIONS)}
# the strengths each augmentation accepts: (low, high, whether high itself is allowed, what it means)
RANGES = {"flip": (0.0, 1.0, True, "a probability"), "crop": (0.0, 1024.0, True, "a shift in pixels"),
          "scale": (0.0, 1.0, False, "a fraction"), "exposure": (0.0, 1.0, False, "a fraction"),
          "saturation": (0.0, 1.0, False, "a fraction")}


def _known(name: str) -> None:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation '{name[:40]}'; choose from {', '.join(AUGMENTATIONS)} "
                         f"or a preset ({', '.join(PRESETS)})")


def check_strength(name: str, value) -> float:
    """`value` as a float if it is a finite number in `name`'s range (RANGES), else a ValueError saying why."""
    _known(name)
    low, high, closed, meaning = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"augmentation '{name}' needs a finite number ({meaning}), got {str(value)[:40]!r}")
    if not (low <= value <= high if closed else low <= value < high):
        raise ValueError(f"augmentation '{name}={value:g}' is out of range: {meaning} from {low:g} to {high:g}"
                         f"{'' if closed else ' (exclusive)'}")
    trouble = float32_trouble(value)      # training computes in float32: write 0 for none
    if trouble:
        raise ValueError(f"augmentation '{name}': {trouble}; write 0 for none")
    return float(value)


def check_augment(augment: Optional[dict]) -> dict:
    """{name: strength} with every name known and every strength in range (see check_strength)."""
    if not augment:
        return {}
    if not isinstance(augment, dict):
        raise ValueError(f"augmentation must be a dict of name -> strength, not a {type(augment).__name__}")
    return {name: check_strength(name, value) for name, value in augment.items()}


def parse_augment(text: Optional[str]) -> dict:
    """`flip,crop=4,scale=0.1` or a preset (none, standard, all) -> {name: strength}; a ValueError names a bad
    part (unknown, repeated, not a number, NaN/infinite or out of range)."""
    if not text:
        return {}
    if text in PRESETS:
        return dict(PRESETS[text])
    out = {}
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        name = name.strip()
        _known(name)
        if name in out:
            raise ValueError(f"augmentation '{name}' is given twice")
        if not eq:
            out[name] = float(AUGMENTATIONS[name])
            continue
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"augmentation '{name}' needs a number, got {value.strip()[:40]!r}") from None
        out[name] = check_strength(name, number)
    return out
