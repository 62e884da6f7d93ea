"""Numbers, sizes and ages as the screens write them: every TUI formatter in one place."""

from __future__ import annotations

import math

from rich.text import Text

from weighttui.analysis.numbers import three_digits

MISSING = "–"  # a value the log does not have (compact cells)


def nonfinite_text(value: float) -> str:
    """NaN and Inf as themselves (a diverged value is shown, never as 0 or a blank): nan, inf, -inf."""
    return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"


def fmt(value: float | None, width: int = 8) -> str:
    """A number in at most `width` characters: 0.0123, 1.23e-05, 12345, nan, inf; – when the log has none."""
    if value is None:
        return MISSING.rjust(width)
    v = float(value)
    if not math.isfinite(v):
        return nonfinite_text(v).rjust(width)
    a = abs(v)
    if a == 0:
        text = "0"
    else:
        text = ""
        if 1e-3 <= a < 1e5:
            for digits in (4, 3, 2):
                text = f"{v:.{digits}g}".replace("e+0", "e").replace("e+", "e")
                if len(text) <= width:
                    break
        if not text or len(text) > width:
            for digits in (2, 1, 0):
                text = f"{v:.{digits}e}".replace("e-0", "e-").replace("e+0", "e")
                if len(text) <= width:
                    break
    return text.rjust(width)


def number_cell(value: float | None, width: int = 9) -> Text:
    """A table cell holding one number, right-aligned (`fmt` without its padding)."""
    return Text(fmt(value, width).strip(), justify="right")


def fmt_value(value: float | None, width: int = 9) -> str:
    """Three significant digits (a shorter exponent form if that is wider than `width`); nan / inf as such,
    "-" when there is no value."""
    if value is None:
        return "-".rjust(width)
    if not math.isfinite(value):
        return nonfinite_text(value).rjust(width)
    text = three_digits(value)
    if width and len(text) > width:
        text = f"{value:.1e}"
    return text.rjust(width)


def fmt_stat(stat: str, value: float, *, weights_nonfinite: bool) -> str:
    """One statistic of a tensor at a snapshot, in a line of text: NaN is "–" (the log has no value: a
    first update, no gradient yet) unless the tensor's weights hold NaN/Inf there, where it is what they
    made of the rest ("nan", as the layer table shows it); counts as whole numbers."""
    if math.isnan(value) and not weights_nonfinite:
        return MISSING
    if stat in ("nan", "inf", "nonfinite") and math.isfinite(value):
        return str(int(value))
    return fmt_value(value, 0).strip()


def fmt_change(key: str, value: float | None, *, from_zero: bool = False, nonfinite: bool = False) -> str:
    """A change-table column: fractions as percentages, the rest as `fmt_value`; inf as such; NaN as
    "–" (no value: a first snapshot has no update) unless the tensor's weights hold NaN/Inf there
    (`nonfinite`), where it is "nan", as fmt_stat and the layer table show it.

    `from_zero`: the tensor's norm started at 0 (a zero-initialised bias), so it has no relative
    norm change: "from 0" rather than inf.
    """
    if value is None:
        return MISSING
    if key == "norm_change" and from_zero and not math.isfinite(value) and not nonfinite:
        return "from 0"
    if math.isnan(value):
        return "nan" if nonfinite else MISSING
    if key == "change_ab" and value == math.inf:
        # over the elements finite at both marks, the change is infinite only when the values at
        # mark a are all 0 (a zero-initialised bias marked at step 0): no relative change
        return "from 0"
    if key in ("changed_frac", "norm_change", "change_ab"):
        if not math.isfinite(value):
            return nonfinite_text(value)
        return f"{value:.1%}" if key == "changed_frac" else f"{value:+.2%}" if key == "norm_change" \
            else f"{value:.2%}"
    return fmt_value(value, 0).strip()


def fmt_int(n: int) -> str:
    """Parameter counts: 1234 -> 1.2K, 25_000_000 -> 25M."""
    n = int(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(n)


def fmt_bytes(n: float) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def fmt_age(seconds: float | None) -> str:
    """How long ago: 0.4s, 12s, 3m05s, 2h10m."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400 * 2:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d"


def fmt_rate(per_second: float) -> str:
    """How often snapshots come: 0.5 snap/s, or for fewer than one in ten seconds (a snapshot per
    epoch, an imported folder of checkpoints an hour apart) the interval: 1 snap per 1h00m."""
    if per_second >= 0.1 or not per_second > 0:
        return f"{per_second:.3g} snap/s"
    return f"1 snap per {fmt_age(1.0 / per_second)}"


def fmt_band(value: float) -> str:
    """A power of ten as the help writes it: 0.0001 -> 1e-4."""
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
