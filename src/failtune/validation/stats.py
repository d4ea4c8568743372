"""Paired statistics for base-vs-candidate comparisons on identical problems."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from failtune.errors import FailtuneError


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


def compare(
    base: Sequence[bool], candidate: Sequence[bool], *, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """The paired table for one group of problems (same order in both sequences)."""
    n = len(base)
    wins = sum(c and not b for b, c in zip(base, candidate, strict=True))
    losses = sum(b and not c for b, c in zip(base, candidate, strict=True))
    ties_correct = sum(b and c for b, c in zip(base, candidate, strict=True))
    ties = n - wins - losses
    base_acc, cand_acc = sum(base) / n, sum(candidate) / n
    low, high = bootstrap_delta_ci(wins, losses, n, n_boot=n_boot, seed=seed)
    return {
        "n": n,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "ties_correct": ties_correct,
        "ties_wrong": ties - ties_correct,
        "win_rate": wins / n,
        "loss_rate": losses / n,
        "tie_rate": ties / n,
        "base_accuracy": base_acc,
        "candidate_accuracy": cand_acc,
        "base_failure_rate": 1 - base_acc,
        "candidate_failure_rate": 1 - cand_acc,
        "delta": cand_acc - base_acc,
        "mcnemar_p": mcnemar_exact(wins, losses),
        "delta_ci95": [low, high],
        # The CI ends as numbers, so a gate can bound forgetting: "creativity.delta_ci_low>-0.05".
        "delta_ci_low": low,
        "delta_ci_high": high,
    }


def paired_tables(
    base: Mapping[str, dict[str, Any]],
    candidate: Mapping[str, dict[str, Any]],
    category_of: Callable[[str], str],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per category tables over the ids both sides graded, plus `overall` when several."""
    ids = [i for i in base if i in candidate]
    if not ids:
        raise FailtuneError("base and candidate share no problem ids; nothing to compare")
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(category_of(i), []).append(i)
    if len(groups) > 1:
        groups["overall"] = ids
    return {
        cat: compare(
            [base[i]["correct"] for i in g],
            [candidate[i]["correct"] for i in g],
            n_boot=n_boot,
            seed=seed,
        )
        for cat, g in groups.items()
    }


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """The unbiased estimate of pass@k from `samples` answers of which `correct` are right
    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): the chance that k
    answers drawn without replacement from them hold a right one, 1 - C(n-c, k) / C(n, k),
    computed as a product so that large n does not overflow."""
    if not 1 <= k <= samples:
        raise ValueError(f"pass@{k} needs 1 <= k <= samples ({samples})")
    if samples - correct < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(samples - correct + 1, samples + 1)))


def pass_at_k_table(
    samples: Sequence[int],
    correct: Sequence[int],
    *,
    ks: Sequence[int] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[int, dict[str, float]]:
    """pass@k over problems (problem i: `samples[i]` answers, `correct[i]` right), for every
    k up to the fewest answers a problem has (or `ks`), each with a bootstrap CI.

    The interval resamples problems, the unit a benchmark draws, so it holds the spread of
    the problems and of each problem's own samples. A problem's estimate depends only on its
    (samples, correct) pair, so a bootstrap replicate only changes how many problems of each
    pair it draws: a multinomial draw over the distinct pairs is that same bootstrap at a cost
    independent of the number of problems (as in bootstrap_delta_ci).
    """
    if not samples or len(samples) != len(correct):
        raise ValueError("pass@k needs one (samples, correct) count per problem")
    if any(not 0 <= c <= n for n, c in zip(samples, correct, strict=True)):
        raise ValueError("a problem has more correct answers than answers, or fewer than 0")
    ks = list(ks) if ks is not None else list(range(1, min(samples) + 1))
    tally = Counter(zip(samples, correct, strict=True))
    pairs = sorted(tally)
    share = np.array([tally[p] for p in pairs]) / len(samples)
    estimates = np.array([[pass_at_k(n, c, k) for n, c in pairs] for k in ks])  # (ks, pairs)
    draws = np.random.default_rng(seed).multinomial(len(samples), share, size=n_boot)
    replicates = draws @ estimates.T / len(samples)  # (n_boot, ks)
    alpha = (1 - level) / 2
    table = {}
    for j, k in enumerate(ks):
        low, high = np.quantile(replicates[:, j], [alpha, 1 - alpha])
        table[k] = {
            "estimate": float(estimates[j] @ share),
            "ci_low": float(low),
            "ci_high": float(high),
        }
    return table


def paired_rates(
    base: Sequence[float],
    candidate: Sequence[float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """The change in mean per-problem success rate (problem i: the share of its K samples
    right), paired by problem: a paired bootstrap CI of the mean difference and a two-sided
    sign-flip permutation p (under no change, each problem's difference is as likely negated).

    Rates are not pass/fail, so McNemar does not apply; pairing by problem removes the spread of
    problem difficulty, which dominates an unpaired comparison.
    """
    if not base or len(base) != len(candidate):
        raise ValueError("paired rates need one base and one candidate rate per problem")
    diff = np.asarray(candidate, dtype=float) - np.asarray(base, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    flipped = (rng.choice((-1.0, 1.0), size=(n_boot, len(diff))) * diff).mean(axis=1)
    observed = float(diff.mean())
    extreme = int(np.sum(np.abs(flipped) >= abs(observed) - 1e-12))
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {
        "n": len(diff),
        "base_rate": float(np.mean(base)),
        "candidate_rate": float(np.mean(candidate)),
        "delta": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "p": (extreme + 1) / (n_boot + 1),
    }
