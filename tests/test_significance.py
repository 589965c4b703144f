"""Baseline vs tuned: the paired test, its interval, its verdict and the plain sentence."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from tuner_service import significance


def _pairs(both: int, base_only: int, tuned_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    base = [1] * both + [1] * base_only + [0] * tuned_only + [0] * neither
    tuned = [1] * both + [0] * base_only + [1] * tuned_only + [0] * neither
    return np.array(base), np.array(tuned)


def test_exact_mcnemar_is_the_two_sided_binomial_on_the_discordant_samples() -> None:
    base, tuned = _pairs(both=50, base_only=10, tuned_only=2, neither=8)
    cmp = significance.paired_classification(base, tuned)
    exact = 2 * sum(comb(12, k) for k in range(3)) / 2**12  # P(X <= 2) twice, X ~ Bin(12, 1/2)
    assert cmp["mcnemar_p"] == pytest.approx(exact)
    assert cmp["difference"] == pytest.approx(-8 / 70)
    assert cmp["ci95"][0] < cmp["difference"] < cmp["ci95"][1] < 0
    assert cmp["verdict"] == "baseline better" and cmp["test_size"] == 70


def test_the_demos_case_is_within_noise() -> None:
    # 401 test images, tuned 77.6 % vs baseline 78.8 % (issue 15): 311 vs 316 right.
    base, tuned = _pairs(both=290, base_only=26, tuned_only=21, neither=64)
    cmp = significance.paired_classification(base, tuned)
    assert cmp["verdict"] == "within noise" and cmp["ci95"][0] < 0 < cmp["ci95"][1]
    line = significance.sentence(cmp, "test images")
    assert line.startswith("tuned 77.6 % vs baseline 78.8 %: difference -1.2 points (95 % CI ")
    assert line.endswith(f"within noise on 401 test images (McNemar p = {cmp['mcnemar_p']:.2g})")


def test_a_clear_gain_is_tuned_better() -> None:
    base, tuned = _pairs(both=300, base_only=5, tuned_only=40, neither=55)
    cmp = significance.paired_classification(base, tuned)
    assert cmp["verdict"] == "tuned better" and cmp["mcnemar_p"] < 1e-6
    assert "tuned better, beyond noise" in significance.sentence(cmp)


def test_regression_compares_per_sample_errors_lower_is_better() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(200) + 0.5
    cmp = significance.paired_regression(base, base - 0.3 + rng.normal(0, 0.01, 200), "mae")
    assert cmp["verdict"] == "tuned better" and cmp["difference"] == pytest.approx(-0.3, abs=0.01)
    noisy = significance.paired_regression(base, base + rng.normal(0, 0.5, 200) * 0.01, "mae")
    assert noisy["verdict"] == "within noise"


def test_per_sample_results_round_trip_as_a_compact_string() -> None:
    flags = np.array([True, False, False, True])
    assert significance.encode(flags) == "1001"
    assert (significance.decode("1001") == flags).all()
