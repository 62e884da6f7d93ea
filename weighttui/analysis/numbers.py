"""How a number is written for people: the one rule the CLI and the TUI share."""

from __future__ import annotations

import math


def three_digits(value: float | None) -> str:
    """Three significant digits ("0.0123", "1.23e+03", "inf"); "-" for a missing value (None or NaN)."""
    if value is None:
        return "-"
    v = float(value)
    return "-" if math.isnan(v) else f"{v:.3g}"
