"""Reach map and training targets: which failures are near, and what each one trains on."""

from failtune.evaluation.targets import (
    NEAR,
    OUT_OF_REACH,
    SOLVED,
    distinct_correct,
    failure_targets,
    hint_problem,
    leans_on_hint,
    reach_map,
    reach_summary,
    reasoning_signature,
)
from failtune.tasks.base import Problem

PROBLEM = Problem(
    id="gsm8k/train/3",
    task="gsm8k",
    split="train",
    prompt="Tom has 3 apples and buys 4 more. How many?",
    expected="7",
    solution="3 + 4 = 7\nThe answer is 7.",
)


def rec(pid, correct, sample=None, completion="x", task="gsm8k"):
    r = {"id": pid, "task": task, "correct": correct, "completion": completion}
    if sample is not None:
        r["sample"] = sample
    return r


def test_reach_map_kinds_and_summary():
    greedy = [rec("a", True), rec("b", False), rec("c", False), rec("d", False, task="arith")]
    samples = [
        rec("a", False, 0),
        rec("a", True, 1),
        rec("b", False, 0),
        rec("b", True, 1),
        rec("b", True, 2),
        rec("c", False, 0),
        rec("c", False, 1),
        rec("d", False, 0),
    ]
    reach = reach_map(greedy, samples, {"gsm8k": "math", "arith": "arith"})
    assert [reach[k].kind for k in "abcd"] == [SOLVED, NEAR, OUT_OF_REACH, OUT_OF_REACH]
    assert (reach["b"].samples, reach["b"].correct_samples) == (3, 2)
    summary = reach_summary(reach, examples=1)
    assert summary["math"] == {
        "n": 3,
        SOLVED: 1,
        NEAR: 1,
        OUT_OF_REACH: 1,
        "examples": {SOLVED: ["a"], NEAR: ["b"], OUT_OF_REACH: ["c"]},
        "near_share_of_failures": 0.5,
    }
    assert summary["arith"]["near_share_of_failures"] == 0.0


def test_distinct_by_reasoning_not_by_whitespace_or_wording():
    same_calc_a = "3 + 4 = 7\nThe answer is 7."
    same_calc_b = "We add:   3 +  4 = 7.\n\nSo the answer is 7."
    other = "4 + 3 = 7\nThe answer is 7."
    assert reasoning_signature(same_calc_a) == reasoning_signature(same_calc_b)
    assert reasoning_signature(same_calc_a) != reasoning_signature(other)
    records = [
        rec("p", True, 2, same_calc_b),
        rec("p", True, 0, same_calc_a),
        rec("p", False, 1, "3 + 4 = 8\nThe answer is 8."),
        rec("p", True, 3, other),
        rec("p", True, 4, "1,000 - 993 = 7\nThe answer is 7."),
    ]
    kept = distinct_correct(records, limit=2)
    assert [r["sample"] for r in kept] == [0, 3]
    assert [r["sample"] for r in distinct_correct(records, limit=9)] == [0, 3, 4]


def test_hint_and_leaning_on_it():
    asked = hint_problem(PROBLEM)
    assert asked.prompt.startswith(PROBLEM.prompt) and "correct final answer is 7" in asked.prompt
    assert asked.id == PROBLEM.id and asked.expected == "7"
    assert leans_on_hint("As given, the answer is 7.")
    assert leans_on_hint("Using the hint, 7.")
    assert leans_on_hint("We are told the answer is 7, so 3 + 4 = 7.")
    assert not leans_on_hint("Tom starts with 3 apples and buys 4, so 3 + 4 = 7.\nThe answer is 7.")
    assert not leans_on_hint("Given 3 apples and 4 more, the answer is 7.")


def test_failure_targets_per_kind():
    good = rec(PROBLEM.id, True, 1, " 3 + 4 = 7\nThe answer is 7. ")
    twin = rec(PROBLEM.id, True, 5, "3+4=7 The answer is 7.")
    wrong = rec(PROBLEM.id, False, 0, "3 + 4 = 8\nThe answer is 8.")
    leaning = rec(PROBLEM.id, True, 0, "As given, the answer is 7.")
    rationale = rec(PROBLEM.id, True, 1, "Tom had 3, got 4: 3 + 4 = 7.\nThe answer is 7.")

    ref = failure_targets(PROBLEM, "reference", [good])
    assert [(t.source, t.output) for t in ref] == [("reference", PROBLEM.solution)]

    own = failure_targets(PROBLEM, "self", [wrong, good, twin])
    assert [(t.source, t.sample, t.output) for t in own] == [
        ("self", 1, "3 + 4 = 7\nThe answer is 7.")
    ]
    assert own[0].row() == {"instruction": PROBLEM.prompt, "output": "3 + 4 = 7\nThe answer is 7."}
    assert own[0].provenance() == {"id": PROBLEM.id, "source": "self", "sample": 1}
    assert failure_targets(PROBLEM, "self", [wrong]) == []

    kept = failure_targets(PROBLEM, "rationalized", rationales=[leaning, rationale])
    assert [(t.source, t.sample) for t in kept] == [("rationalized", 1)]
    assert kept[0].instruction == PROBLEM.prompt  # trained without the hint
    assert failure_targets(PROBLEM, "rationalized", rationales=[leaning]) == []

    assert [t.source for t in failure_targets(PROBLEM, "auto", [good], [rationale])] == ["self"]
    assert [t.source for t in failure_targets(PROBLEM, "auto", [wrong], [rationale])] == [
        "rationalized"
    ]
    assert [t.source for t in failure_targets(PROBLEM, "auto", [wrong], [leaning])] == ["reference"]
