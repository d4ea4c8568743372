"""Pairwise judging by an OpenAI-compatible model: which of two answers to a problem is better.

Each pair is asked twice with the answers swapped; only a verdict that survives the swap counts
as a win or a loss, so a judge that prefers whichever answer comes first produces ties, not a
fake gain. The verdict is constrained where the server can (a JSON schema or a choice list)
and otherwise read as a person reads it (failtune.grading.verdicts); a reply that cannot be read
is asked again once, then recorded as unreadable and counted apart, never as a tie. Pairs are
judged `max_concurrency` at a time; verdicts are appended to judge.jsonl and a rerun asks only
what is missing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.console import progress_bar
from failtune.errors import FailtuneError
from failtune.files import JsonlAppender, read_jsonl
from failtune.grading.verdicts import LETTERS, read_verdict
from failtune.validation.stats import mcnemar_exact

JUDGE_FILE = "judge.jsonl"
FORMATS = ("auto", "json", "choice", "text")
PROMPT = """You are judging two answers to the same problem.

Problem:
{problem}

Answer A:
{first}

Answer B:
{second}

Which answer is better: correct, and reasoned soundly? Reply with one letter only: A if answer A \
is better, B if answer B is better, T if they are equally good or equally bad."""
RETRY = "Reply with exactly one letter: A, B or T."
UNREADABLE = "?"
# A verdict is a letter or a short JSON object; a judge that explains itself needs more room.
_MAX_TOKENS = {"json": 32, "choice": 4, "text": 256}
_VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": list(LETTERS)}},
    "required": ["verdict"],
    "additionalProperties": False,
}
# OpenAI, vLLM, SGLang, llama-server take a json_schema; llama-cpp-python a json_object schema.
_RESPONSE_FORMATS = {
    "json": {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "strict": True, "schema": _VERDICT_SCHEMA},
    },
    "json_object": {"type": "json_object", "schema": _VERDICT_SCHEMA},
}
# What `auto` tries, in order, while the server refuses the constraint.
_AUTO_FORMATS = ("json", "json_object", "text")


@dataclass(frozen=True)
class Pair:
    id: str
    problem: str
    candidate: str
    other: str  # the base model's or the reference's answer


class Judge:
    """A small client: chat completions, greedy, a verdict back; safe to call from threads."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        verdict_format: str = "auto",
    ) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - a dependency of failtune
            raise FailtuneError("judging needs the openai package: pip install openai") from None
        from failtune.backends.openai import make_client

        if verdict_format not in FORMATS:
            raise FailtuneError(f"unknown judge format {verdict_format!r} ({', '.join(FORMATS)})")
        self.model, self.max_concurrency = model, max_concurrency
        self.format = verdict_format
        self._formats = list(_AUTO_FORMATS if verdict_format == "auto" else [verdict_format])
        self._lock = threading.Lock()
        self._errors = (openai.APIError,)
        self.client = make_client(
            url,
            "--judge-url",
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused",
            max_retries=3,
            timeout=120,
        )

    def ask(self, problem: str, first: str, second: str) -> tuple[str, list[str]]:
        """("A" | "B" | "T" | "?", the judge's replies): a reply that cannot be read is asked
        again once, with a reminder of the format."""
        messages = [
            {"role": "user", "content": PROMPT.format(problem=problem, first=first, second=second)}
        ]
        replies = [self._complete(messages)]
        letter = read_verdict(replies[0])
        if letter is None:
            messages.append({"role": "assistant", "content": replies[0]})
            messages.append({"role": "user", "content": RETRY})
            replies.append(self._complete(messages))
            letter = read_verdict(replies[1])
        return (letter or UNREADABLE), replies

    def _complete(self, messages: list[dict[str, str]]) -> str:
        while True:
            fmt = self._formats[0]
            try:
                return self._request(messages, fmt)
            except self._errors as e:
                if self.format != "auto" or len(self._formats) == 1 or not _refuses_format(e):
                    where = self.client.base_url
                    raise FailtuneError(f"the judge at {where} failed: {e}") from None
                with self._lock:  # the server takes no such constraint: try the next one
                    if self._formats[0] == fmt:
                        self._formats.pop(0)

    def _request(self, messages: list[dict[str, str]], fmt: str) -> str:
        extra: dict[str, Any] = {}
        if fmt in _RESPONSE_FORMATS:
            extra["response_format"] = _RESPONSE_FORMATS[fmt]
        elif fmt == "choice":  # vLLM's structured outputs (and its older guided_choice)
            choice = list(LETTERS)
            extra["extra_body"] = {"structured_outputs": {"choice": choice}}
            extra["extra_body"]["guided_choice"] = choice
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=_MAX_TOKENS.get(fmt, _MAX_TOKENS["json"]),
            **extra,
        )
        return (reply.choices[0].message.content or "").strip()

    def verdict(self, pair: Pair) -> dict[str, Any]:
        """Candidate first, then candidate second; a win needs both orders to agree."""
        one, raw_one = self.ask(pair.problem, pair.candidate, pair.other)
        two, raw_two = self.ask(pair.problem, pair.other, pair.candidate)
        if UNREADABLE in (one, two):
            outcome = "unreadable"
        elif (one, two) == ("A", "B"):
            outcome = "win"
        elif (one, two) == ("B", "A"):
            outcome = "loss"
        else:
            outcome = "tie"
        return {
            "id": pair.id,
            "outcome": outcome,
            "consistent": {"A": "B", "B": "A", "T": "T"}.get(one) == two,
            "verdicts": [one, two],
            "candidate_first": raw_one[-1],
            "candidate_second": raw_two[-1],
            "asked": len(raw_one) + len(raw_two),
        }


def _refuses_format(error: Exception) -> bool:
    """A server refusing the request's response_format: 400 or 422, or a 500 that names it (as
    llama-cpp-python answers a json_schema)."""
    status = getattr(error, "status_code", None)
    return status in (400, 422) or (status == 500 and "response_format" in str(error))


def judge_pairs(
    judge: Judge, pairs: Sequence[Pair], output_dir: Path, *, show_progress: bool = True
) -> dict[str, Any]:
    """Judge every pair (resuming judge.jsonl), `judge.max_concurrency` pairs at a time, and
    return the W/T/L table of the candidate."""
    path = output_dir / JUDGE_FILE
    done = (
        {r["id"]: r for r in read_jsonl(path, tolerate_partial_tail=True)} if path.exists() else {}
    )
    todo = [p for p in pairs if p.id not in done]
    with progress_bar(show_progress) as bar, JsonlAppender(path) as sink:
        job = bar.add_task("judge", total=len(pairs), completed=len(pairs) - len(todo), info="")
        pool = ThreadPoolExecutor(max_workers=judge.max_concurrency)
        pending: set[Future[dict[str, Any]]] = {pool.submit(judge.verdict, p) for p in todo}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    row = future.result()  # a failed request stops the judging, kept rows stay
                    sink.write_many([row])
                    done[row["id"]] = row
                    bar.advance(job)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return judge_table([done[p.id] for p in pairs], judge.model)


def judge_table(rows: Sequence[dict[str, Any]], model: str) -> dict[str, Any]:
    """Wins, ties and losses of the candidate; unreadable pairs are counted apart, and every
    rate is over all pairs."""
    n = len(rows)
    count = {o: sum(r["outcome"] == o for r in rows) for o in ("win", "loss", "tie", "unreadable")}
    readable = [r for r in rows if r["outcome"] != "unreadable"]
    return {
        "judge_model": model,
        "n": n,
        "wins": count["win"],
        "losses": count["loss"],
        "ties": count["tie"],
        "unreadable": count["unreadable"],
        "win_rate": count["win"] / n if n else 0.0,
        "loss_rate": count["loss"] / n if n else 0.0,
        "tie_rate": count["tie"] / n if n else 0.0,
        "unreadable_rate": count["unreadable"] / n if n else 0.0,
        "inconsistent": sum(not r["consistent"] for r in readable),
        "sign_test_p": mcnemar_exact(count["win"], count["loss"]),
    }
