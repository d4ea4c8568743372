"""Tasks: shipped data intact, ids stable, solutions clean and graded correct by our own grader."""

from __future__ import annotations

import re

import pytest

from failtune.errors import FailtuneError
from failtune.files import sha256_file
from failtune.tasks import parse_categories, tasks_for
from failtune.tasks.arith import Arith
from failtune.tasks.gsm8k import DATA_DIR, GSM8K, gsm8k_solution

# As published in the dataset release notes (byte-for-byte copies of openai/grade-school-math).
GSM8K_SHA256 = {
    "train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
}


def test_gsm8k_ships_unmodified_with_licence() -> None:
    for name, digest in GSM8K_SHA256.items():
        assert sha256_file(DATA_DIR / name) == digest
    assert "MIT License" in (DATA_DIR / "LICENSE").read_text()


def test_gsm8k_splits_and_ids() -> None:
    task = GSM8K()
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (7473, 1319)
    assert test[17].id == "gsm8k/test/17"
    assert test[0].expected == "18"
    assert "Janet" in test[0].prompt and test[0].prompt.endswith('"The answer is <number>."')


def test_gsm8k_solution_cleaned_and_ends_in_answer_format() -> None:
    answer = "He pays 3*4 = <<3*4=12>>12 dollars.\nThen 1,000+12=<<1000+12=1012>>1,012\n#### 1,012"
    solution, gold = gsm8k_solution(answer)
    assert gold == "1,012"
    assert solution == "He pays 3*4 = 12 dollars.\nThen 1,000+12=1,012\nThe answer is 1012."
    for p in GSM8K().load("train"):
        assert "<<" not in p.solution and "####" not in p.solution
        assert re.search(r"\nThe answer is -?[\d.]+\.$", p.solution), p.solution


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_dataset_solution_grades_correct(split: str) -> None:
    """A grader that rejects the dataset's own solutions would poison every training set."""
    task = GSM8K()
    wrong = [p.id for p in task.load(split) if not task.grade(p, p.solution, "stop").correct]
    assert wrong == []


def test_arith_deterministic_disjoint_and_limit_invariant() -> None:
    a, b = Arith(seed=3, size=400), Arith(seed=3, size=50)
    train, test = a.load("train"), a.load("test")
    assert [p.prompt for p in train[:50]] == [p.prompt for p in b.load("train")]
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert {p.prompt for p in Arith(seed=4, size=50).load("train")} != {
        p.prompt for p in b.load("train")
    }
    assert train[7].id == "arith/train/7"
    for p in train + test:
        assert int(p.expected) >= 0
        assert p.solution.endswith(f"The answer is {p.expected}.")
        assert a.grade(p, p.solution, "stop").correct


def test_arith_kinds_all_appear() -> None:
    prompts = " ".join(p.prompt for p in Arith(size=200).load("test"))
    for phrase in ("more", "gave", "in each. How many", "then gives away"):
        assert phrase in prompts


def test_categories_checked_before_anything_loads() -> None:
    assert parse_categories("math, arith") == ["math", "arith"]
    with pytest.raises(FailtuneError, match="unknown category 'maths'"):
        parse_categories("maths")
    assert parse_categories("code,knowledge") == ["code", "knowledge"]
    with pytest.raises(FailtuneError, match="no split 'validation'"):
        tasks_for("math")[0].load("validation")
