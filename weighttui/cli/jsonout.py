"""JSON that is JSON: what `info --json` and the json export print.

JSON has no NaN or Infinity (Python's json module writes them anyway, and
strict parsers such as `jq` or JavaScript's JSON.parse then reject the whole
document). A NaN becomes null and an infinity the string "inf" / "-inf", so
nothing is silently lost; values a log may hold that JSON cannot (bytes keys
in a run's meta, say) become strings.
"""

from __future__ import annotations

import math

import numpy as np


def json_number(x: float):
    """A float as JSON has it: NaN -> None, +-Inf -> "inf" / "-inf"."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def json_safe(obj):
    """`obj` with every float JSON-safe, every key a string, numpy values as Python ones."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (float, np.floating)):
        return json_number(float(obj))
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, dict):
        return {_key(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "backslashreplace")
    return str(obj)


def _key(k) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).decode("utf-8", "backslashreplace")
    return str(k)
