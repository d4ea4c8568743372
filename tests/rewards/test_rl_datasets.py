"""Prompt datasets for TRL and verl, read back as the engines read them, and their checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import gsm8k_answers, read_jsonl

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.rewards import RewardGrader
from failtune.rewards.datasets import (
    check_rows,
    failed_problems,
    read_prompt_dataset,
    write_prompt_dataset,
    write_verl_dataset,
)
from failtune.tasks import task_by_name


@pytest.fixture
def failures(tmp_path: Path) -> list:
    """The failures of an extract run on 6 GSM8K problems, 2 of them answered right."""
    answers = gsm8k_answers(tmp_path / "answers.jsonl", right={1, 4}, n=6)
    out = tmp_path / "extract"
    assert main(["extract", "--completions", str(answers), "--output_dir", str(out)]) == 0
    return failed_problems(out)


def test_failed_problems_are_the_extract_failures_in_order(failures: list) -> None:
    assert [p.id for _, p in failures] == [f"gsm8k/test/{i}" for i in (0, 2, 3, 5)]


def test_trl_prompt_dataset(failures: list, tmp_path: Path) -> None:
    from datasets import load_dataset

    path = write_prompt_dataset(failures, tmp_path / "prompts.jsonl")
    rows = read_jsonl(path)
    first = failures[0][1]
    assert rows[0] == {
        "prompt": [{"role": "user", "content": first.prompt}],
        "ground_truth": first.expected,
        "task": "gsm8k",
        "id": "gsm8k/test/0",
    }
    # TRL reads it as a conversational prompt dataset; every other column reaches the reward.
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert dataset.column_names == ["prompt", "ground_truth", "task", "id"]
    assert dataset[3]["id"] == "gsm8k/test/5"
    assert read_prompt_dataset(path) == rows
    check_rows(rows, RewardGrader())


def test_verl_parquet_layout(failures: list, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = write_verl_dataset(failures, tmp_path / "train.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    row = table.to_pylist()[2]
    problem = failures[2][1]
    assert row == {
        "data_source": "gsm8k",
        "prompt": [{"role": "user", "content": problem.prompt}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": problem.expected},
        "extra_info": {"id": "gsm8k/test/3", "split": "test", "index": 2},
    }
    assert not list(tmp_path.glob(".train.parquet.*"))  # written to a temp file, then renamed


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"ground_truth": "", "task": "gsm8k", "id": "gsm8k/test/0"}, "no ground truth"),
        ({"task": "gsm8k", "id": "gsm8k/test/0"}, "no ground truth"),
        ({"ground_truth": "18", "task": "gsm8k"}, "no id"),
        ({"ground_truth": "18", "id": "gsm8k/test/0"}, "no task"),
    ],
)
def test_rows_missing_what_a_reward_needs_are_refused(
    row: dict, message: str, tmp_path: Path
) -> None:
    from helpers import write_jsonl

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Solve it.", **row}])
    with pytest.raises(FailtuneError, match=message):
        read_prompt_dataset(path)


def test_rows_naming_another_task_are_refused() -> None:
    problem = task_by_name("gsm8k").load("test")[0]
    row = {"id": problem.id, "ground_truth": problem.expected, "task": "arith"}
    with pytest.raises(FailtuneError, match="belongs to task 'gsm8k'"):
        check_rows([row], RewardGrader())
