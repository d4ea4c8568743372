"""MMLU shipped data, subjects, ids, prompts, and the stable-hash holdout."""

import gzip
import hashlib
from collections import Counter

import pytest

from failtune.errors import FailtuneError
from failtune.evaluation.extraction import extract
from failtune.evaluation.records import load_problems
from failtune.tasks import parse_categories, tasks_for
from failtune.tasks.holdout import split_problems
from failtune.tasks.mmlu import DATA_DIR, MMLU, all_subjects

# sha256 of the uncompressed files, as listed in the shared datasets README.
SHA256 = {
    "test": "fdcfe0b7c447753ab85f1f7686f87d201d4521814501d5252502282ef0237ff2",
    "dev": "071a8344f0bfe8e13a2a056fd45825c8ab8ff40ff793c8396f51cbde9ea911c5",
    "validation": "e77cbbfac66fd7a3f738a36ef460c588639326ec0027eea903e42f6101a9db64",
}


@pytest.mark.parametrize(("split", "n"), [("test", 14042), ("dev", 285), ("validation", 1531)])
def test_shipped_data_is_the_release(split: str, n: int) -> None:
    data = gzip.decompress((DATA_DIR / f"{split}.jsonl.gz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == SHA256[split]
    problems = MMLU().load(split)
    assert len(problems) == n
    assert problems[7].id == f"mmlu/{split}/7"
    assert (DATA_DIR / "LICENSE").read_text().count("MIT License") == 1


def test_prompt_and_training_output() -> None:
    p = MMLU().load("test")[0]
    assert "\nA. 0\nB. 4\nC. 2\nD. 6\n" in p.prompt
    assert p.prompt.endswith('"The answer is (X)." where X is the letter of the correct choice.')
    assert (p.expected, p.solution) == ("B", "The answer is (B) 4.")
    assert MMLU().grade(p, p.solution, "stop").correct


def test_categories_and_subjects() -> None:
    assert parse_categories("creativity,knowledge") == ["creativity", "knowledge"]
    assert [t.name for t in tasks_for("knowledge")] == ["mmlu"]
    assert len(all_subjects()) == 57
    # creativity and knowledge name the same task: its problems are loaded once.
    both = load_problems(
        "creativity,knowledge", "dev", task_options={"mmlu": {"subjects": "virology"}}
    )
    assert len(both) == 5
    with pytest.raises(FailtuneError, match="unknown MMLU subject"):
        MMLU(subjects="virologyy")


def test_holdout_is_stable_stratified_and_keeps_duplicates_together() -> None:
    task = MMLU()
    train, held = split_problems(task, "train", 0.2), split_problems(task, "test", 0.2)
    assert len(train) + len(held) == 14042
    assert {p.id for p in train}.isdisjoint(p.id for p in held)
    assert {p.prompt for p in train}.isdisjoint(p.prompt for p in held)  # 27 duplicates
    per_subject = Counter(task.stratum(p) for p in held)
    totals = Counter(task.stratum(p) for p in task.load("test"))
    for subject, n in totals.items():  # a question filed under two subjects may add a few
        assert abs(per_subject[subject] - 0.2 * n) <= 5, subject
    assert abs(len(held) - 0.2 * 14042) <= 30
    # Deterministic: the same ids on every call, and a subset filter keeps the same cut.
    assert [p.id for p in split_problems(task, "test", 0.2)] == [p.id for p in held]
    virology = split_problems(MMLU(subjects="virology"), "test", 0.2)
    assert [p.id for p in virology] == [p.id for p in held if task.stratum(p) == "virology"]
    assert split_problems(task, "dev", 0.2) == task.load("dev")  # named splits as shipped
    with pytest.raises(FailtuneError, match="between 0 and 1"):
        split_problems(task, "test", 1.5)


def test_extract_records_the_holdout_in_the_manifest(tmp_path, scripted) -> None:
    import json

    result = extract(
        None,
        tmp_path,
        categories="creativity",
        model=scripted(lambda p: "The answer is (B)."),
        task_options={"mmlu": {"subjects": "astronomy"}},
        show_progress=False,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["holdout"]["mmlu"]["fraction"] == 0.2
    assert manifest["args"]["holdout_fraction"] == 0.2
    assert result.summary["creativity"]["n"] == 152 - round(0.2 * 152)
    replay = (tmp_path / "creativity_replay.jsonl").read_text().splitlines()
    assert len(replay) == result.summary["creativity"]["correct"]
    assert all('"The answer is (B) ' in line for line in replay)
