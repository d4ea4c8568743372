"""Paired statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from failtune.validation.stats import bootstrap_delta_ci, compare, mcnemar_exact


def test_mcnemar_exact_matches_binomial_by_hand() -> None:
    # 10 wins, 2 losses: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(20, 0) == pytest.approx(2 * 0.5**20)


def test_bootstrap_ci_brackets_delta_and_is_reproducible() -> None:
    low, high = bootstrap_delta_ci(40, 10, 200, seed=1)
    assert low < 0.15 < high
    assert (low, high) == bootstrap_delta_ci(40, 10, 200, seed=1)
    # normal approximation of the paired difference's standard error
    se = math.sqrt((0.2 + 0.05 - 0.15**2) / 200)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap_delta_ci(0, 0, 50) == (0.0, 0.0)


def test_compare_counts() -> None:
    base = [True, True, False, False, False, True]
    cand = [True, False, True, True, False, True]
    t = compare(base, cand, n_boot=500)
    assert (t["n"], t["wins"], t["losses"], t["ties"]) == (6, 2, 1, 3)
    assert (t["ties_correct"], t["ties_wrong"]) == (2, 1)
    assert t["win_rate"] == pytest.approx(2 / 6)
    assert t["base_accuracy"] == pytest.approx(0.5)
    assert t["candidate_accuracy"] == pytest.approx(4 / 6)
    assert t["mcnemar_p"] == pytest.approx(1.0)
