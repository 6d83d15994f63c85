"""Text measures, safe text, number formats and colours shared by the writers."""
from __future__ import annotations

import math
from typing import Optional

from ..errors import printable

FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"
TITLE_SIZE = 12.0       # px: a box's first line (bold)
TEXT_SIZE = 11.0        # px: the other lines
MAX_TEXT = 120          # characters of one user text shown in a box or frame label (the tooltip has more)

# Advance widths of DejaVu Sans (matplotlib's font, and as wide as any a browser picks from FONT), in em.
_WIDTH = {" ": .318, "!": .401, '"': .460, "#": .838, "$": .636, "%": .950, "&": .780, "'": .275, "(": .390,
          ")": .390, "*": .500, "+": .838, ",": .318, "-": .361, ".": .318, "/": .337, ":": .337, ";": .337,
          "<": .838, "=": .838, ">": .838, "?": .531, "@": 1.0, "[": .390, "\\": .337, "]": .390, "^": .838,
          "_": .500, "`": .500, "{": .636, "|": .337, "}": .636, "~": .838, "\u00b7": .318, "\u00d7": .838,
          "\u2026": 1.0, "\u2013": .500, "\u2014": 1.0}
_WIDTH.update(dict.fromkeys("0123456789", .636))
_WIDTH.update(zip("abcdefghijklmnopqrstuvwxyz",
                  (.613, .635, .550, .635, .615, .352, .635, .634, .278, .278, .579, .278, .974, .634, .612, .635,
                   .635, .411, .521, .392, .634, .592, .818, .592, .592, .525)))
_WIDTH.update(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                  (.684, .686, .698, .770, .632, .575, .775, .752, .295, .295, .656, .557, .863, .748, .787, .603,
                   .787, .695, .635, .611, .732, .684, .989, .685, .611, .685)))


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous estimate of the width of `text` in px (DejaVu Sans; bold about 12% wider)."""
    w = sum(_WIDTH.get(ch, 1.0 if ord(ch) > 0x2e80 else .75) for ch in text) * size
    return w * 1.12 if bold else w


def fit(text: str, width: float, size: float, bold: bool = False) -> str:
    """`text` cut with an ellipsis to fit `width` px."""
    if text_width(text, size, bold) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:                       # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if text_width(text[:mid] + "\u2026", size, bold) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "\u2026"


def clean(text, limit: int = MAX_TEXT) -> str:
    """User text fit to show: control, format and line-break characters (and lone surrogates) escaped as
    `\\x..`, at most `limit` characters. XML-escaping comes after (xml_text, xml_attr)."""
    return printable(str(text), limit)


def xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_attr(text: str) -> str:
    return xml_text(text).replace('"', "&quot;").replace("'", "&#39;")


def num(x: float) -> str:
    """A coordinate: at most one decimal, no trailing zeros (the same bytes every run)."""
    r = round(x, 1)
    if r == int(r):
        return str(int(r))
    return f"{r:.1f}"


def si(n: float) -> str:
    """1234 -> 1.23K, 25_557_032 -> 25.6M."""
    n = float(n)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:,.0f}{unit}"
    return f"{n:.0f}" if n == int(n) else f"{n:.3g}"


def size_bytes(n: float) -> str:
    n = float(n)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


# ------------------------------------------------------------- colours --

CATEGORY = {        # fill, stroke
    "input": ("#ffffff", "#444444"),
    "conv": ("#dce9f7", "#3f6fa8"),
    "fc": ("#fde6cc", "#b8742a"),
    "pool": ("#dff0dc", "#4c8f46"),
    "merge": ("#efe1f0", "#8c5a8a"),
    "other": ("#eeeeee", "#808080"),
    "block": ("#ebe6f5", "#5b4b8a"),
}
CATEGORY_NAME = {"conv": "conv", "fc": "fully connected", "pool": "pooling", "merge": "merge / split",
                 "other": "norm, activation, other", "block": "block", "input": "input"}

# ColorBrewer YlOrRd (9 classes): a sequential scale, light (small) to dark (large)
_SCALE = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026")
ZERO_FILL = "#f4f4f4"
HEAT_STROKE = "#7a4a2a"


def _rgb(hex_colour: str) -> tuple:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def scale_colour(t: float) -> str:
    """The colour at t in [0, 1] of the sequential scale."""
    t = min(1.0, max(0.0, t)) * (len(_SCALE) - 1)
    i = min(int(t), len(_SCALE) - 2)
    f = t - i
    a, b = _rgb(_SCALE[i]), _rgb(_SCALE[i + 1])
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * f) for x, y in zip(a, b))


def scale_stops() -> tuple:
    return _SCALE


def ink(fill: str) -> str:
    """Text colour readable on `fill`."""
    r, g, b = (c / 255 for c in _rgb(fill))
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#ffffff" if lum < 0.45 else "#1a1a1a"


class Heat:
    """A metric mapped to [0, 1]: logarithmic when the positive values span more than two decades."""

    def __init__(self, metric: str, values: list):
        self.metric = metric
        positive = [v for v in values if v > 0]
        self.low = min(positive) if positive else 0.0
        self.high = max(positive) if positive else 0.0
        self.log = bool(positive) and self.high / self.low > 100

    def t(self, value: float) -> Optional[float]:
        """Position on the scale, or None for 0 (no such cost)."""
        if value <= 0 or self.high <= 0:
            return None
        if self.high == self.low:
            return 1.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low) if self.low != self.high else 1.0

    def fill(self, value: float) -> str:
        t = self.t(value)
        return ZERO_FILL if t is None else scale_colour(t)

    def value_at(self, t: float) -> float:
        if self.log:
            return math.exp(math.log(self.low) + t * (math.log(self.high) - math.log(self.low)))
        return self.low + t * (self.high - self.low)


METRIC_TITLE = {"macs": "MACs", "params": "parameters", "memory": "activation memory (float32, batch 1)",
                "rf": "receptive field (px)"}


def metric_text(metric: str, value: float) -> str:
    if metric == "memory":
        return size_bytes(value)
    if metric == "rf":
        return f"{value:,.0f}"
    return si(value)
