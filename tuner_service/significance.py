"""Baseline vs tuned on the same test set: the difference and whether it is more than noise.

Both models are tested on the very same samples, so the comparison is paired:

* classification: the exact McNemar test (a two-sided binomial test on the samples exactly one
  of the two models gets right, ``scipy.stats.binomtest``) and a 95 % confidence interval of
  the accuracy difference (Wald interval for paired proportions);
* regression: a paired t-test on the per-sample absolute errors and a 95 % interval of the mean
  difference.

The verdict is "tuned better" or "baseline better" when the test rejects "no difference" at
the 5 % level, "within noise" otherwise. A baseline recorded without per-sample results (an
older ``baseline.json``) gets an unpaired interval and no p-value.

>>> cmp = paired_classification([1, 1, 0, 1], [1, 0, 1, 1])
>>> cmp["verdict"], cmp["mcnemar_p"]
('within noise', 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
Z95 = 1.959963984540054


def _verdict(p: float | None, difference: float, higher_is_better: bool, ci: Sequence[float]) -> str:
    significant = p < ALPHA if p is not None else not (ci[0] <= 0.0 <= ci[1])
    if not significant or difference == 0:
        return "within noise"
    return "tuned better" if (difference > 0) == higher_is_better else "baseline better"


def paired_classification(baseline_correct: Sequence[Any], tuned_correct: Sequence[Any]) -> dict[str, Any]:
    """Accuracy of both models on the same samples, exact McNemar p and 95 % interval."""
    from scipy.stats import binomtest

    base = np.asarray(baseline_correct, dtype=bool)
    tuned = np.asarray(tuned_correct, dtype=bool)
    if base.shape != tuned.shape or base.size == 0:
        raise ValueError(f"paired results need the same test samples ({base.size} vs {tuned.size})")
    n = int(base.size)
    only_base = int(np.sum(base & ~tuned))  # baseline right, tuned wrong
    only_tuned = int(np.sum(~base & tuned))
    difference = (only_tuned - only_base) / n
    p = float(binomtest(only_tuned, only_base + only_tuned, 0.5).pvalue) if only_base + only_tuned else 1.0
    half = Z95 * math.sqrt(max(0.0, ((only_base + only_tuned) / n - difference**2) / n))
    ci = [difference - half, difference + half]
    return {
        "metric": "accuracy",
        "tuned": float(tuned.mean()),
        "baseline": float(base.mean()),
        "difference": difference,
        "test_size": n,
        "ci95": ci,
        "mcnemar_p": p,
        "p_value": p,
        "test": "exact McNemar",
        "discordant": {"baseline_only": only_base, "tuned_only": only_tuned},
        "verdict": _verdict(p, difference, True, ci),
    }


def paired_regression(
    baseline_errors: Sequence[float], tuned_errors: Sequence[float], metric: str = "mae"
) -> dict[str, Any]:
    """Mean absolute error of both models on the same samples, paired t-test and 95 % interval."""
    from scipy import stats

    base = np.asarray(baseline_errors, dtype=float)
    tuned = np.asarray(tuned_errors, dtype=float)
    if base.shape != tuned.shape or base.size < 2:
        raise ValueError(f"paired results need the same test samples ({base.size} vs {tuned.size})")
    diff = tuned - base
    n = int(diff.size)
    difference = float(diff.mean())
    sd = float(diff.std(ddof=1))
    if sd == 0:
        p, ci = (1.0 if difference == 0 else 0.0), [difference, difference]
    else:
        p = float(stats.ttest_rel(tuned, base).pvalue)
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci = [difference - half, difference + half]
    return {
        "metric": metric,
        "tuned": float(tuned.mean()),
        "baseline": float(base.mean()),
        "difference": difference,
        "test_size": n,
        "ci95": ci,
        "mcnemar_p": None,
        "p_value": p,
        "test": "paired t-test on absolute errors",
        "verdict": _verdict(p, difference, False, ci),
    }


def unpaired_accuracy(baseline: float, tuned: float, n: int) -> dict[str, Any]:
    """Without per-sample results: a 95 % interval for two independent accuracies on ``n`` each."""
    difference = tuned - baseline
    half = Z95 * math.sqrt(max(0.0, (tuned * (1 - tuned) + baseline * (1 - baseline)) / n))
    ci = [difference - half, difference + half]
    return {
        "metric": "accuracy",
        "tuned": tuned,
        "baseline": baseline,
        "difference": difference,
        "test_size": n,
        "ci95": ci,
        "mcnemar_p": None,
        "p_value": None,
        "test": "unpaired interval (the baseline has no per-sample results)",
        "verdict": _verdict(None, difference, True, ci),
    }


def encode(flags: Sequence[Any]) -> str:
    """Per-sample correctness as a compact ``"0110..."`` string (for baseline.json)."""
    return "".join("1" if f else "0" for f in flags)


def decode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def sentence(cmp: dict[str, Any], unit: str = "test samples") -> str:
    """One plain line, e.g. ``tuned 77.6 % vs baseline 78.8 %: difference -1.2 points, within
    noise on 401 test images (McNemar p = 0.4)``."""
    p = cmp.get("mcnemar_p") if cmp.get("mcnemar_p") is not None else cmp.get("p_value")
    test = "McNemar" if cmp.get("mcnemar_p") is not None else "paired t-test"
    stat = f" ({test} p = {_p(p)})" if p is not None else ""
    lo, hi = cmp["ci95"]
    if cmp["metric"] == "accuracy":
        values = f"tuned {100 * cmp['tuned']:.1f} % vs baseline {100 * cmp['baseline']:.1f} %"
        diff = (
            f"difference {100 * cmp['difference']:+.1f} points (95 % CI {100 * lo:+.1f} to {100 * hi:+.1f})"
        )
    else:
        values = f"tuned {cmp['metric']} {cmp['tuned']:.4g} vs baseline {cmp['baseline']:.4g}"
        diff = f"difference {cmp['difference']:+.4g} (95 % CI {lo:+.4g} to {hi:+.4g})"
    verdict = cmp["verdict"]
    how = "within noise" if verdict == "within noise" else f"{verdict}, beyond noise"
    return f"{values}: {diff}, {how} on {cmp['test_size']} {unit}{stat}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"
