"""How numbers are written for people: the one definition used by every table, report and live view.

>>> number(0.72727), number(None), number(1.86, 1)
('0.7273', '-', '1.9')
>>> percent(0.7481), percent(0.7481, 2)
('74.8 %', '74.81 %')
>>> points(-0.012)
'-1.2 points'
>>> value(0.30000000000000004), value(1e-05), value("adam")
('0.3', '1e-05', 'adam')
>>> duration(42.4), duration(192), duration(3725)
('42 s', '3 min 12 s', '1 h 02 min')
>>> age(417), age(3 * 86400)
('6 min', '3 days')
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

MISSING = "-"


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, digits: int = 4) -> str:
    """A score or metric with ``digits`` decimals; ``-`` when unknown (None, NaN)."""
    return f"{value:.{digits}f}" if _known(value) else MISSING


def percent(fraction: Any, digits: int = 1) -> str:
    """A fraction (0.748) as a percentage ('74.8 %')."""
    return f"{100 * fraction:.{digits}f} %" if _known(fraction) else MISSING


def points(difference: Any, digits: int = 1) -> str:
    """A difference of two fractions in percentage points, signed ('+1.2 points')."""
    return f"{100 * difference:+.{digits}f} points" if _known(difference) else MISSING


def mean_sd(fractions: Sequence[float], digits: int = 1) -> str:
    """Mean ± sample standard deviation of fractions, as percentages ('78.1 ± 0.4 %')."""
    if not fractions:
        return MISSING
    sd = statistics.stdev(fractions) if len(fractions) > 1 else 0.0
    return f"{100 * statistics.fmean(fractions):.{digits}f} ± {100 * sd:.{digits}f} %"


def value(v: Any) -> str:
    """A hyperparameter value: floats to 6 significant digits (no binary noise), the rest as text."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return MISSING if v is None else str(v)


def duration(seconds: Any) -> str:
    """A span of time at the precision a person reads it: '42 s', '3 min 12 s', '1 h 02 min'."""
    if not _known(seconds) or seconds < 0:
        return MISSING
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def age(seconds: Any) -> str:
    """How long ago, coarsely: '40 s', '7 min', '3 h', '2 days'."""
    if not _known(seconds) or seconds < 0:
        return MISSING
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"
