"""Judge mode: --against a reference's completions, and an OpenAI-compatible judge asked twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import GSM8K_TEST, gsm8k_answers, read_jsonl
from servers import StubHandler, stub_server

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.validation.judge import Judge, Pair, judge_pairs


def answers(path: Path, right: set[int], n: int, tag: str) -> Path:
    def say(i: int, answer: str, good: bool) -> str:
        return f"{tag} {'GOOD' if good else 'BAD'}.\nThe answer is {answer}."

    return gsm8k_answers(path, right, n, say)


class StubJudge(StubHandler):
    """Prefers the answer marked GOOD; on problems about eggs it always says "A" (biased)."""

    asked: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        StubJudge.asked.append(prompt)
        first = prompt.split("Answer A:")[1].split("Answer B:")[0]
        second = prompt.split("Answer B:")[1]
        if "eggs" in prompt.split("Answer A:")[0]:
            letter = "A"
        elif ("GOOD" in first) == ("GOOD" in second):
            letter = "T"
        else:
            letter = "A" if "GOOD" in first else "B"
        reply = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{letter}."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self.reply(200, reply)


@pytest.fixture
def stub_url() -> Iterator[str]:
    StubJudge.asked = []
    with stub_server(StubJudge) as url:
        yield url


def test_against_reference_with_judge_cancels_position_bias(tmp_path: Path, stub_url: str) -> None:
    n = 12
    # reference right on 0..5, candidate right on 0 and 4..11: wins 6..11, losses 1..3
    ref = answers(tmp_path / "ref.jsonl", set(range(6)), n, "ref")
    cand = answers(tmp_path / "cand.jsonl", {0, *range(4, 12)}, n, "cand")
    out = tmp_path / "val"
    args = [
        "validate",
        "--against",
        str(ref),
        "--candidate-completions",
        str(cand),
        "--output_dir",
        str(out),
        "--judge-url",
        stub_url,
        "--judge-model",
        "stub",
        "--gate",
        "judge.wins>=40%",
        "--no-progress",
    ]
    assert main(args) == 0
    data = json.loads((out / "validation.json").read_text())
    graded = data["categories"]["math"]
    assert (graded["wins"], graded["losses"], graded["ties"]) == (6, 3, 3)
    assert data["baseline"] == f"reference:{ref}"
    judged = data["judge"]
    # Problem 0 (the eggs) gets "A" in both orders: inconsistent, so a tie, not a win.
    assert (judged["wins"], judged["losses"], judged["ties"]) == (6, 3, 3)
    assert judged["inconsistent"] == 1 and judged["n"] == n
    assert data["gates"] == [{"expr": "judge.wins>=40%", "value": 0.5, "passed": True}]
    assert len(StubJudge.asked) == 2 * n
    first, second = StubJudge.asked[0], StubJudge.asked[1]
    assert first.index("cand GOOD") < first.index("ref GOOD")  # candidate shown first …
    assert second.index("ref GOOD") < second.index("cand GOOD")  # … then second
    rows = read_jsonl(out / "judge.jsonl")
    assert [r["outcome"] for r in rows][:4] == ["tie", "loss", "loss", "loss"]

    assert main(args) == 0  # a rerun judges nothing again
    assert len(StubJudge.asked) == 2 * n


def test_judge_mistakes(tmp_path: Path) -> None:
    ref = answers(tmp_path / "ref.jsonl", {0}, 2, "ref")
    with pytest.raises(FailtuneError, match="go together"):
        from failtune.validation.paired import validate

        validate(None, None, candidate_completions=ref, against=ref, judge_url="http://x/v1")
    with pytest.raises(FailtuneError, match="either --against"):
        validate("m", None, against=ref)


def test_judge_against_a_real_llama_cpp_server(tmp_path: Path, llama_server) -> None:
    judge = Judge(llama_server.base_url, "smollm2")
    pairs = [
        Pair(p.id, p.prompt, f"The answer is {p.expected}.", "The answer is 0.")
        for p in GSM8K_TEST[:2]
    ]
    table = judge_pairs(judge, pairs, tmp_path, show_progress=False)
    assert table["n"] == 2 and table["wins"] + table["ties"] + table["losses"] == 2
    rows = read_jsonl(tmp_path / "judge.jsonl")
    assert all(r["candidate_first"] and r["candidate_second"] for r in rows)  # real replies
