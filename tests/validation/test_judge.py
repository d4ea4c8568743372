"""Judge mode: --against a reference's completions, and an OpenAI-compatible judge asked twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import GSM8K_TEST, gsm8k_answers, read_jsonl
from servers import StubHandler, chat_answer, stub_server

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.validation.judge import RETRY, Judge, Pair, judge_pairs


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
        "--judge-max-concurrency",
        "3",
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
    # Each pair is asked with the candidate shown first, then second (problem 7: only it GOOD).
    seventh = [p for p in StubJudge.asked if GSM8K_TEST[7].prompt.split("\n")[0] in p]
    assert sorted(p.index("cand GOOD") < p.index("ref BAD") for p in seventh) == [False, True]
    rows = {r["id"]: r for r in read_jsonl(out / "judge.jsonl")}
    assert [rows[p.id]["outcome"] for p in GSM8K_TEST[:4]] == ["tie", "loss", "loss", "loss"]

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


# ---- a judge that answers as judge models do -----------------------------------------------

GOLD = {p.prompt: p.expected for p in GSM8K_TEST}
# Each verdict in the forms judge models reply in; the stub cycles through them.
FORMS = {
    "A": ["**A**", "Answer: A", "The better answer is A.", "A. It is correct and well argued."],
    "B": ["B", "Verdict: B", "The better answer is B.", "Answer B is better: it adds correctly."],
    "T": ["Verdict: T", "T", "Both answers are equally good.", "It's a tie."],
}


class FormsJudge(StubHandler):
    """Prefers the truly correct answer (T when both or neither are), in the forms of FORMS.

    `biased`: always prefers the first answer shown. `unreadable`: problems it never gives a
    readable verdict on; `late`: problems it answers readably only when reminded. With
    `refuse_schema` it answers 400 to a request with a response_format; with a response_format
    it answers JSON. Every request body and the peak of requests in flight are recorded.
    """

    bodies: ClassVar[list[dict]] = []
    biased: ClassVar[bool] = False
    refuse_schema: ClassVar[bool] = False
    unreadable: ClassVar[set[str]] = set()
    late: ClassVar[set[str]] = set()
    latency: ClassVar[float] = 0.0
    in_flight: ClassVar[list[int]] = [0, 0]  # now, peak
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FormsJudge.lock:
            FormsJudge.bodies.append(body)
            FormsJudge.in_flight[0] += 1
            FormsJudge.in_flight[1] = max(FormsJudge.in_flight)
        time.sleep(FormsJudge.latency)
        if FormsJudge.refuse_schema and "response_format" in body:
            status, answer = 400, {"error": {"message": "response_format is not supported"}}
        else:
            status, answer = 200, chat_answer(self._verdict(body), "stop", 3)
        with FormsJudge.lock:  # before the reply: its client may send the next request at once
            FormsJudge.in_flight[0] -= 1
        self.reply(status, answer)

    def _verdict(self, body: dict) -> str:
        prompt = body["messages"][0]["content"]
        problem = prompt.split("Problem:\n")[1].split("\n\nAnswer A:")[0]
        reminded = len(body["messages"]) > 1
        if problem in FormsJudge.unreadable or (problem in FormsJudge.late and not reminded):
            return "Hmm, both have merits; it is hard to say."
        first = prompt.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
        second = prompt.split("Answer B:\n")[1].split("\n\nWhich answer")[0]
        right = [f"The answer is {GOLD[problem]}." in a for a in (first, second)]
        letter = "A" if FormsJudge.biased or right == [True, False] else "B" if right[1] else "T"
        if right == [True, True] and not FormsJudge.biased:
            letter = "T"
        if "response_format" in body:
            return json.dumps({"verdict": letter})
        forms = FORMS[letter]
        return forms[(len(problem) + len(first)) % len(forms)]


@pytest.fixture
def forms_url() -> Iterator[str]:
    FormsJudge.bodies, FormsJudge.in_flight = [], [0, 0]
    FormsJudge.biased = FormsJudge.refuse_schema = False
    FormsJudge.unreadable, FormsJudge.late, FormsJudge.latency = set(), set(), 0.0
    with stub_server(FormsJudge) as url:
        yield url


def _pairs(n: int) -> tuple[list[Pair], dict[str, int]]:
    """Candidate right on even problems and on 1, 3; reference right on multiples of 3 and on 1.
    Returns the pairs and the true wins / ties / losses of the candidate."""
    pairs, truth = [], {"wins": 0, "ties": 0, "losses": 0}
    for i, p in enumerate(GSM8K_TEST[:n]):
        cand, ref = i % 2 == 0 or i in (1, 3), i % 3 == 0 or i == 1
        wrong = str(int(p.expected.replace(",", "")) + 1)
        say = "Working it through.\nThe answer is {}."
        pairs.append(
            Pair(
                p.id,
                p.prompt,
                say.format(p.expected if cand else wrong),
                say.format(p.expected if ref else wrong),
            )
        )
        truth["wins" if cand and not ref else "losses" if ref and not cand else "ties"] += 1
    return pairs, truth


def _judged(judge: Judge, pairs: list[Pair], folder: Path) -> dict:
    return judge_pairs(judge, pairs, folder, show_progress=False)


@pytest.mark.parametrize("verdict_format", ["text", "auto", "choice"])
def test_judge_reading_replies_as_judges_write_them_gets_the_truth(
    tmp_path: Path, forms_url: str, verdict_format: str
) -> None:
    pairs, truth = _pairs(30)
    judge = Judge(forms_url, "stub", max_concurrency=4, verdict_format=verdict_format)
    table = _judged(judge, pairs, tmp_path)
    assert {k: table[k] for k in truth} == truth
    assert table["unreadable"] == 0 and table["inconsistent"] == 0
    replies = {r["candidate_first"] for r in read_jsonl(tmp_path / "judge.jsonl")}
    if verdict_format == "auto":  # constrained by a JSON schema the server honours
        schema = FormsJudge.bodies[0]["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["verdict"]["enum"] == ["A", "B", "T"]
        assert all(reply.startswith('{"verdict"') for reply in replies)
    else:
        assert {"The better answer is A.", "It's a tie."} <= replies | {
            r["candidate_second"] for r in read_jsonl(tmp_path / "judge.jsonl")
        }
    if verdict_format == "choice":
        extra = FormsJudge.bodies[0]
        assert extra["structured_outputs"] == {"choice": ["A", "B", "T"]}
        assert extra["guided_choice"] == ["A", "B", "T"]


def test_a_server_refusing_the_schema_is_read_in_plain_text(tmp_path: Path, forms_url: str) -> None:
    FormsJudge.refuse_schema = True
    pairs, truth = _pairs(12)
    table = _judged(Judge(forms_url, "stub", max_concurrency=1), pairs, tmp_path)
    assert {k: table[k] for k in truth} == truth
    refused = [b["response_format"]["type"] for b in FormsJudge.bodies if "response_format" in b]
    assert refused == ["json_schema", "json_object"]  # each refused once, then plain text only


def test_a_position_biased_judge_gives_ties(tmp_path: Path, forms_url: str) -> None:
    FormsJudge.biased = True
    pairs, _ = _pairs(20)
    table = _judged(Judge(forms_url, "stub", verdict_format="text"), pairs, tmp_path)
    assert (table["wins"], table["ties"], table["losses"]) == (0, 20, 0)
    assert table["inconsistent"] == 20


def test_an_unreadable_reply_is_asked_again_once_then_counted_apart(
    tmp_path: Path, forms_url: str
) -> None:
    pairs, truth = _pairs(12)
    FormsJudge.unreadable = {pairs[0].problem, pairs[5].problem}  # both ties in truth
    FormsJudge.late = {pairs[4].problem}  # a win, readable once reminded
    table = _judged(Judge(forms_url, "stub", verdict_format="text"), pairs, tmp_path)
    assert table["unreadable"] == 2 and table["ties"] == truth["ties"] - 2
    assert (table["wins"], table["losses"]) == (truth["wins"], truth["losses"])
    assert table["tie_rate"] == (truth["ties"] - 2) / 12
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "judge.jsonl")}
    assert rows[pairs[0].id]["outcome"] == "unreadable" and rows[pairs[0].id]["asked"] == 4
    assert rows[pairs[4].id]["asked"] == 4 and rows[pairs[4].id]["outcome"] != "unreadable"
    assert rows[pairs[6].id]["asked"] == 2
    reminders = [b for b in FormsJudge.bodies if len(b["messages"]) == 3]
    assert reminders and reminders[0]["messages"][2]["content"] == RETRY


@pytest.mark.parametrize("concurrency", [1, 4])
def test_requests_run_max_concurrency_at_a_time(
    tmp_path: Path, forms_url: str, concurrency: int
) -> None:
    FormsJudge.latency = 0.05
    pairs, truth = _pairs(16)
    judge = Judge(forms_url, "stub", max_concurrency=concurrency, verdict_format="text")
    table = _judged(judge, pairs, tmp_path)
    assert {k: table[k] for k in truth} == truth
    assert FormsJudge.in_flight[1] == concurrency


def test_validate_help_and_judge_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "95% CI" in text and "95%%" not in text
    assert "--no-resume grades every problem again" in text
    assert "--judge-max-concurrency" in text and "--judge-format" in text
