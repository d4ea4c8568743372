"""pass@k (unbiased estimator) and its bootstrap interval against hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from failtune.validation.stats import pass_at_k, pass_at_k_table


def by_enumeration(n: int, c: int, k: int) -> float:
    """The definition: the share of k-answer subsets of the n answers that hold a right one."""
    answers = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(answers, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_by_hand() -> None:
    # 5 answers, 2 right: 1 - C(3, k) / C(5, k)
    assert [pass_at_k(5, 2, k) for k in range(1, 6)] == pytest.approx([0.4, 0.7, 0.9, 1, 1])
    # 4 answers, 1 right: 1 - C(3, k) / C(4, k) = k / 4
    assert [pass_at_k(4, 1, k) for k in range(1, 5)] == pytest.approx([0.25, 0.5, 0.75, 1])
    assert pass_at_k(8, 0, 3) == 0.0 and pass_at_k(8, 8, 1) == 1.0
    for n, c, k in itertools.product(range(1, 8), range(8), range(1, 8)):
        if c <= n and k <= n:
            assert pass_at_k(n, c, k) == pytest.approx(by_enumeration(n, c, k)), (n, c, k)
    # no overflow where the binomials are astronomically large
    exact = 1 - math.comb(997, 500) / math.comb(1000, 500)
    assert pass_at_k(1000, 3, 500) == pytest.approx(exact, rel=1e-12)
    with pytest.raises(ValueError, match="1 <= k <= samples"):
        pass_at_k(4, 1, 5)


def test_table_averages_problems_for_every_k() -> None:
    table = pass_at_k_table([5, 5, 5, 4], [2, 0, 5, 1], n_boot=2000)
    assert sorted(table) == [1, 2, 3, 4]  # up to the fewest answers a problem has
    estimates = [table[k]["estimate"] for k in (1, 2, 3, 4)]
    # (0.4 + 0 + 1 + 0.25) / 4, (0.7 + 0 + 1 + 0.5) / 4, (0.9 + 0 + 1 + 0.75) / 4, 3 / 4
    assert estimates == pytest.approx([0.4125, 0.55, 0.6625, 0.75])
    assert pass_at_k_table([5] * 3, [1, 2, 3], ks=[2])[2]["estimate"] == pytest.approx(
        (0.4 + 0.7 + 0.9) / 3
    )
    with pytest.raises(ValueError, match="more correct answers than answers"):
        pass_at_k_table([2], [3])


def test_interval_is_the_bootstrap_over_problems() -> None:
    """200 problems of 8 samples: the interval matches a plain bootstrap that resamples problem
    indices, brackets the estimate, is reproducible, and has the normal approximation's width."""
    rng = np.random.default_rng(4)
    correct = rng.binomial(8, rng.beta(0.5, 2.0, size=200)).tolist()
    samples = [8] * 200
    table = pass_at_k_table(samples, correct, n_boot=20_000, seed=1)
    assert table == pass_at_k_table(samples, correct, n_boot=20_000, seed=1)
    per_problem = np.array([[pass_at_k(8, c, k) for c in correct] for k in (1, 8)])
    plain = rng.integers(0, 200, size=(20_000, 200))
    for row, k in zip(per_problem, (1, 8), strict=True):
        low, high = table[k]["ci_low"], table[k]["ci_high"]
        assert low < table[k]["estimate"] < high
        assert table[k]["estimate"] == pytest.approx(row.mean())
        means = row[plain].mean(axis=1)
        assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=0.006)
        se = row.std() / math.sqrt(200)
        assert high - low == pytest.approx(2 * 1.96 * se, rel=0.08)
    same = pass_at_k_table([4] * 10, [2] * 10)
    assert same[1] == {"estimate": 0.5, "ci_low": 0.5, "ci_high": 0.5}
