"""Paired statistics for base-vs-candidate comparisons on identical problems."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def mcnemar_exact(wins: int, losses: int) -> float:
    """Exact (binomial) McNemar p-value on the discordant pairs; 1.0 when there are none."""
    discordant = wins + losses
    if discordant == 0:
        return 1.0
    return float(binomtest(min(wins, losses), discordant, 0.5, alternative="two-sided").pvalue)


def bootstrap_delta_ci(
    wins: int, losses: int, n: int, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Paired bootstrap CI of (candidate accuracy - base accuracy).

    Resampling n pairs with replacement only changes how many wins, losses and ties are drawn, so
    a multinomial draw per replicate is the exact same bootstrap at O(n_boot) cost.
    """
    if n == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    ties = n - wins - losses
    draws = rng.multinomial(n, [wins / n, losses / n, ties / n], size=n_boot)
    deltas = (draws[:, 0] - draws[:, 1]) / n
    alpha = (1 - level) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return (float(low), float(high))
