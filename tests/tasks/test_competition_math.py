"""MATH and MATH-500 as built-in tasks: shipped data intact with its licence, ids and splits
stable, golds as the solutions state them, every reference solution graded correct, subject and
level on every record, in the summary and in the report."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest
from helpers import read_jsonl, write_completions

from failtune.backends import GenParams, apply_stop_rules
from failtune.cli import main
from failtune.evaluation.extraction import extract
from failtune.grading.latex import boxes
from failtune.tasks import parse_categories, tasks_for
from failtune.tasks.competition_math import DATA_DIR, MATH500_IDS, HendrycksMath, Math500

# sha256 of the uncompressed files, as listed in the shared datasets README.
SHA256 = {
    "train": "00aa30008a611172529ab775ed6f3af9efd32974625b19181c3ebfc724134e52",
    "test": "1b833f0f8869d7cb975debfe04f0697bd23455c388045ba9159e5046d37df5fa",
}
MATH500_SHA256 = "0b065b680cdac4cafb593371002a2748e69d37a4b6e308ebc7d37918ad8e7ca1"


@pytest.mark.parametrize("split", ["train", "test"])
def test_math_ships_unmodified_with_licence(split: str) -> None:
    data = gzip.decompress((DATA_DIR / f"{split}.jsonl.gz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == SHA256[split]
    assert hashlib.sha256(MATH500_IDS.read_bytes()).hexdigest() == MATH500_SHA256
    licence = (DATA_DIR / "LICENSE").read_text()
    assert licence.count("MIT License") == 2  # MATH, and PRM800K's MATH-500 list
    assert "Copyright (c) 2021 Dan Hendrycks" in licence


def test_splits_ids_and_categories() -> None:
    task = HendrycksMath()
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (7500, 5000)
    assert test[0].id == "hendrycks_math/test/0" and test[0].expected == "2"
    assert dict(test[0].tags) == {
        "subject": "Algebra",
        "level": "Level 3",
        "unique_id": "test/algebra/1.json",
    }
    assert test[0].prompt.endswith("give your final answer as \\boxed{<answer>}.")
    assert parse_categories("math,competition_math,math500") == [
        "math",
        "competition_math",
        "math500",
    ]
    assert [t.name for t in tasks_for("math")] == ["gsm8k"]  # `math` stays GSM8K
    assert [t.name for t in tasks_for("competition_math")] == ["hendrycks_math"]


def test_math500_is_prm800k_held_out_split() -> None:
    task = Math500()
    test, train = task.load("test"), task.load("train")
    ids = MATH500_IDS.read_text().split()
    assert [dict(p.tags)["unique_id"] for p in test] == ids
    assert test[0].id == "math500/test/0"
    assert test[0].expected == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert len(train) == 12_000
    assert not {dict(p.tags)["unique_id"] for p in train} & set(ids)


def test_math500_golds_are_the_last_box_of_each_solution() -> None:
    """As PRM800K's answer column: the gold of every MATH-500 problem is its last box."""
    for problem in Math500().load("test"):
        assert problem.expected == boxes(problem.solution)[-1].body.strip(), problem.id


def test_golds_of_several_boxed_values_list_them() -> None:
    """ "the answers are $\\boxed{-2}$ and $\\boxed{1}$" asks for both values, not the last."""
    by_uid = {dict(p.tags)["unique_id"]: p for p in HendrycksMath().load("test")}
    assert by_uid["test/algebra/1878.json"].expected == "-2, 1"
    assert by_uid["test/precalculus/679.json"].expected == "\\frac{\\pi}{4}, \\frac{5\\pi}{4}"
    # Two spellings of one value are one answer: "15\frac{39}{40}, or \frac{639}{40}".
    assert by_uid["test/number_theory/459.json"].expected == "\\frac{639}{40}"


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_reference_solution_grades_correct(split: str) -> None:
    """A grader that rejects the dataset's own solutions would poison every training set."""
    task = HendrycksMath()
    problems = task.load(split)
    wrong = [p.id for p in problems if not task.grade(p, p.solution, "stop").correct]
    assert wrong == []
    assert all(re.search(r"\\boxed\s*\{?", p.solution) for p in problems)


def test_the_stop_rule_ends_after_the_boxed_line_but_not_inside_thinking() -> None:
    params = GenParams(stop_after=HendrycksMath.stop_after)
    text = "So $x = 3$.\n\nThe answer is $\\boxed{\\frac{1}{2}}$.\nLet me also check"
    assert apply_stop_rules(text, params) == "So $x = 3$.\n\nThe answer is $\\boxed{\\frac{1}{2}}$."
    thinking = "<think>\nmaybe \\boxed{2}\nno wait\n"
    assert apply_stop_rules(thinking, params) == thinking.strip()


def _completions(tmp_path: Path) -> Path:
    """Right answers for two MATH-500 problems, a wrong and a hedged one for two others."""
    test = Math500().load("test")
    return write_completions(
        tmp_path / "math500.jsonl",
        {
            test[0].id: "The point is $(0, 3)$, so the answer is $\\boxed{\\left(3,\\, "
            "\\tfrac{\\pi}{2}\\right)}$.",
            test[1].id: f"Working it out carefully.\n\n# Answer\n\n{test[1].expected}",
            test[2].id: "The answer is $\\boxed{0}$.",
            test[3].id: f"The answer is $\\boxed{{{test[3].expected}}}$ or $\\boxed{{0}}$.",
        },
    )


def test_extract_completions_keeps_subject_and_level(tmp_path: Path) -> None:
    result = extract(completions=_completions(tmp_path), output_dir=tmp_path / "x", categories=None)
    assert [r["correct"] for r in result.records] == [True, True, False, False]
    assert [r["reason"] for r in result.records][2:] == ["wrong_answer", "ambiguous"]
    first = result.records[0]
    assert (first["subject"], first["level"]) == ("Precalculus", "Level 2")
    assert first["unique_id"] == "test/precalculus/807.json"
    summary = result.summary["math500"]
    assert sum(v["n"] for v in summary["breakdown"]["level"].values()) == 4
    assert summary["breakdown"]["subject"]["Precalculus"]["correct"] >= 1
    rows = read_jsonl(tmp_path / "x" / "math500_training_ready.jsonl")
    test = Math500().load("test")
    assert rows == [{"instruction": p.prompt, "output": p.solution} for p in test[2:4]]


def test_validate_and_report_break_down_by_subject_and_level(tmp_path: Path) -> None:
    base = _completions(tmp_path)
    test = Math500().load("test")
    candidate = write_completions(
        tmp_path / "cand.jsonl",
        {p.id: f"So the answer is $\\boxed{{{p.expected}}}$." for p in test[:4]},
    )
    out = tmp_path / "val"
    args = ["validate", "--base-completions", str(base), "--candidate-completions", str(candidate)]
    assert main([*args, "--output_dir", str(out), "--no-progress"]) == 0
    table = json.loads((out / "validation.json").read_text())["categories"]["math500"]
    assert (table["wins"], table["ties"], table["losses"]) == (2, 2, 0)
    assert main(["report", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "## By subject" in report and "## By level" in report
    level_rows = [line for line in report.splitlines() if line.startswith("| math500 | Level")]
    assert sum(int(line.split("|")[3]) for line in level_rows) == 4
