"""The report's figures as PNG bytes (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

WIN, TIE, LOSS = "#2e7d32", "#9e9e9e", "#c62828"
BASE, CANDIDATE = "#78909c", "#1565c0"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of one accuracy (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def wtl_bars(tables: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Stacked win/tie/loss shares per category."""
    cats = list(tables)
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.5 * len(cats)))
    left = [0.0] * len(cats)
    for key, color, label in (("wins", WIN, "win"), ("ties", TIE, "tie"), ("losses", LOSS, "loss")):
        shares = [tables[c][key] / tables[c]["n"] for c in cats]
        ax.barh(cats, shares, left=left, color=color, label=label)
        for i, (x0, w) in enumerate(zip(left, shares, strict=True)):
            if w >= 0.06:
                ax.text(
                    x0 + w / 2,
                    i,
                    f"{tables[cats[i]][key]}",
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=9,
                )
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of problems")
    ax.invert_yaxis()
    ax.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _png(fig)


def accuracy_bars(tables: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Base and candidate accuracy per category with 95% Wilson intervals."""
    cats = list(tables)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(cats) + 2), 3.4))
    width = 0.38
    for offset, side, color in ((-width / 2, "base", BASE), (width / 2, "candidate", CANDIDATE)):
        accs, lows, highs = [], [], []
        for c in cats:
            n = tables[c]["n"]
            acc = tables[c][f"{side}_accuracy"]
            low, high = wilson(round(acc * n), n)
            accs.append(acc)
            # At 0 % or 100 % an end of the interval is the accuracy give or take rounding,
            # and matplotlib refuses an error bar of -1e-16.
            lows.append(max(0.0, acc - low))
            highs.append(max(0.0, high - acc))
        xs = [i + offset for i in range(len(cats))]
        ax.bar(xs, accs, width, color=color, label=side, yerr=[lows, highs], capsize=4)
        for x, a in zip(xs, accs, strict=True):
            ax.text(x, a / 2, f"{a:.0%}", ha="center", va="center", color="white", fontsize=9)
    ax.set_xticks(range(len(cats)), cats)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend(frameon=False)
    return _png(fig)


def reason_bars(counts: Mapping[str, Mapping[str, int]]) -> bytes:
    """Failure reasons, one group of bars per reason and one bar per side."""
    reasons = sorted({r for side in counts.values() for r in side})
    sides = list(counts)
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(reasons) + 2), 3.4))
    width = 0.8 / max(1, len(sides))
    colors = [BASE, CANDIDATE, "#8e24aa", "#ef6c00"]
    for k, side in enumerate(sides):
        xs = [i + (k - (len(sides) - 1) / 2) * width for i in range(len(reasons))]
        values = [counts[side].get(r, 0) for r in reasons]
        ax.bar(xs, values, width, label=side, color=colors[k % len(colors)])
    ax.set_xticks(range(len(reasons)), reasons)
    ax.set_ylabel("failed problems")
    ax.legend(frameon=False, ncol=len(sides), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _png(fig)


def step_curve(points: Sequence[tuple[int, float]], label: str = "training loss") -> bytes:
    """A value logged per optimizer step (the training loss, GRPO's mean reward)."""
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.plot([s for s, _ in points], [v for _, v in points], marker="o", color=CANDIDATE)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(label)
    return _png(fig)
