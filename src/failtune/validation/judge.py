"""Pairwise judging by an OpenAI-compatible model: which of two answers to a problem is better.

Each pair is asked twice with the answers swapped; only a verdict that survives the swap counts
as a win or a loss, so a judge that prefers whichever answer comes first produces ties, not a
fake gain. Verdicts are appended to judge.jsonl and a rerun asks only what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.console import progress_bar
from failtune.errors import FailtuneError
from failtune.files import JsonlAppender, read_jsonl
from failtune.validation.stats import mcnemar_exact

JUDGE_FILE = "judge.jsonl"
PROMPT = """You are judging two answers to the same problem.

Problem:
{problem}

Answer A:
{first}

Answer B:
{second}

Which answer is better: correct, and reasoned soundly? Reply with one letter only: A if answer A \
is better, B if answer B is better, T if they are equally good or equally bad."""


@dataclass(frozen=True)
class Pair:
    id: str
    problem: str
    candidate: str
    other: str  # the base model's or the reference's answer


class Judge:
    """A small client: one chat completion per question, greedy, one letter back."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - a dependency of failtune
            raise FailtuneError("judging needs the openai package: pip install openai") from None
        from failtune.backends.openai import make_client

        self.model = model
        self._errors = (openai.APIError,)
        self.client = make_client(
            url,
            "--judge-url",
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused",
            max_retries=3,
            timeout=120,
        )

    def ask(self, problem: str, first: str, second: str) -> tuple[str, str]:
        """Returns ("A" | "B" | "T" | "?", the judge's raw reply)."""
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {
                        "role": "user",
                        "content": PROMPT.format(problem=problem, first=first, second=second),
                    }
                ],
                temperature=0,
                max_tokens=8,
            )
        except self._errors as e:
            raise FailtuneError(f"the judge at {self.client.base_url} failed: {e}") from None
        text = (reply.choices[0].message.content or "").strip()
        letter = text[:1].upper()
        return (letter if letter in ("A", "B", "T") else "?", text)

    def verdict(self, pair: Pair) -> dict[str, Any]:
        """Candidate first, then candidate second; a win needs both orders to agree."""
        one, raw_one = self.ask(pair.problem, pair.candidate, pair.other)
        two, raw_two = self.ask(pair.problem, pair.other, pair.candidate)
        if (one, two) == ("A", "B"):
            outcome = "win"
        elif (one, two) == ("B", "A"):
            outcome = "loss"
        else:
            outcome = "tie"
        consistent = {"A": "B", "B": "A", "T": "T"}.get(one) == two
        return {
            "id": pair.id,
            "outcome": outcome,
            "consistent": consistent,
            "candidate_first": raw_one,
            "candidate_second": raw_two,
        }


def judge_pairs(
    judge: Judge, pairs: Sequence[Pair], output_dir: Path, *, show_progress: bool = True
) -> dict[str, Any]:
    """Judge every pair (resuming judge.jsonl) and return the W/T/L table of the candidate."""
    path = output_dir / JUDGE_FILE
    done = (
        {r["id"]: r for r in read_jsonl(path, tolerate_partial_tail=True)} if path.exists() else {}
    )
    todo = [p for p in pairs if p.id not in done]
    with progress_bar(show_progress) as bar, JsonlAppender(path) as sink:
        job = bar.add_task("judge", total=len(pairs), completed=len(pairs) - len(todo), info="")
        for pair in todo:
            row = judge.verdict(pair)
            sink.write_many([row])
            done[pair.id] = row
            bar.advance(job)
    rows = [done[p.id] for p in pairs]
    return judge_table(rows, judge.model)


def judge_table(rows: Sequence[dict[str, Any]], model: str) -> dict[str, Any]:
    n = len(rows)
    wins = sum(r["outcome"] == "win" for r in rows)
    losses = sum(r["outcome"] == "loss" for r in rows)
    ties = n - wins - losses
    return {
        "judge_model": model,
        "n": n,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": wins / n if n else 0.0,
        "loss_rate": losses / n if n else 0.0,
        "tie_rate": ties / n if n else 0.0,
        "inconsistent": sum(not r["consistent"] for r in rows),
        "sign_test_p": mcnemar_exact(wins, losses),
    }
