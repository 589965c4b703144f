"""The one number format: its examples (docstrings) hold, and every table uses it."""

from __future__ import annotations

import doctest

import pytest

from tuner_service import fmt
from tuner_service.report import stats


@pytest.mark.parametrize("module", [fmt, stats])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_unknown_values_are_a_dash_not_a_crash():
    assert [fmt.number(None), fmt.number(float("nan")), fmt.percent(None), fmt.duration(None)] == ["-"] * 4
    assert fmt.mean_sd([0.78, 0.80]) == "79.0 ± 1.4 %"
