"""Combined training (mix, replay, what the adapter records) and validate's forgetting check
and 13-gram overlap refusal."""

import json
from pathlib import Path

import pytest
from helpers import write_completions, write_jsonl

from failtune.errors import FailtuneError
from failtune.tasks.arith import Arith
from failtune.tasks.mmlu import MMLU
from failtune.training.mixing import mix_examples
from failtune.training.sft import train
from failtune.validation.overlap import overlap_report
from failtune.validation.paired import validate


def _examples(tag: str, n: int) -> list[dict[str, str]]:
    return [{"instruction": f"{tag} question {i}", "output": f"{tag} answer {i}"} for i in range(n)]


def test_mix_proportional_equal_and_replay() -> None:
    files = {
        Path("a/arith_training_ready.jsonl"): _examples("a", 10),
        Path("creativity.jsonl"): _examples("c", 3),
    }
    rows, record = mix_examples(files, "proportional")
    assert len(rows) == 13 and record["categories"] == ["arith", "creativity"]
    rows, record = mix_examples(files, "equal", seed=1)
    assert len(rows) == 20 and sum(r["instruction"].startswith("c") for r in rows) == 10
    assert {r["instruction"] for r in rows if r["instruction"].startswith("c")} == {
        f"c question {i}" for i in range(3)
    }  # whole passes first: every small-file example is used
    rows, record = mix_examples(files, "proportional", _examples("r", 50), replay_ratio=0.2)
    replayed = sum(r["instruction"].startswith("r") for r in rows)
    assert replayed == record["replay_examples"] == round(0.25 * 13)
    assert abs(replayed / len(rows) - 0.2) < 0.03
    with pytest.raises(FailtuneError, match="--mix"):
        mix_examples(files, "weighted")


def test_train_records_categories_files_and_replay(tiny_model_dir: Path, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "arith_training_ready.jsonl", _examples("a", 6))
    write_jsonl(tmp_path / "creativity_training_ready.jsonl", _examples("c", 2))
    replay = write_jsonl(tmp_path / "arith_replay.jsonl", _examples("r", 4))
    out = tmp_path / "adapter"
    result = train(
        str(tiny_model_dir),
        tmp_path / "*_training_ready.jsonl",
        out,
        num_train_epochs=1,
        batch_size=4,
        mix="equal",
        replay=replay,
        replay_ratio=0.2,
        show_progress=False,
    )
    assert result.examples == 12 + 3
    meta = json.loads((out / "failtune_train.json").read_text())
    assert meta["base_model"] == str(tiny_model_dir)
    assert meta["categories"] == ["arith", "creativity"] and meta["mix"] == "equal"
    assert meta["replay_file"] == str(replay) and meta["replay_examples"] == 3
    assert str(replay) in json.loads((out / "manifest.json").read_text())["data_sha256"]


def test_forgetting_is_flagged_on_untrained_categories(tmp_path: Path, capsys) -> None:
    arith = Arith(size=60).load("test")
    mmlu = MMLU().load("test")[:80]
    base = {p.id: "The answer is 0." for p in arith} | {
        p.id: f"The answer is ({p.expected})." for p in mmlu
    }
    cand = {p.id: f"The answer is {p.expected}." for p in arith} | {
        p.id: f"The answer is ({p.expected})." if i % 2 else "I don't know."
        for i, p in enumerate(mmlu)
    }
    result = validate(
        base_completions=write_completions(tmp_path / "b.jsonl", base),
        candidate_completions=write_completions(tmp_path / "c.jsonl", cand),
        output_dir=tmp_path / "val",
        trained_categories="arith",
        gates=["arith.delta>0.5", "knowledge.delta_ci_low>-0.05", "overall.delta>0"],
        n_boot=2000,
    )
    arith_t, mmlu_t = result.categories["arith"], result.categories["creativity"]
    assert arith_t["trained"] and not arith_t["forgetting"] and arith_t["delta"] == 1.0
    assert mmlu_t["trained"] is False and mmlu_t["forgetting"] and mmlu_t["delta"] == -0.5
    assert [g["passed"] for g in result.gates] == [True, False, True]
    saved = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert saved["trained_categories"] == ["arith"]
    from failtune.reporting.terminal import print_validation

    print_validation(result)
    out = capsys.readouterr().out
    assert "FORGETTING" in out and "trained" in out


def test_overlapping_prompts_are_refused_unless_allowed(tmp_path: Path) -> None:
    mmlu = MMLU().load("test")[:20]
    answers = write_completions(tmp_path / "a.jsonl", {p.id: "The answer is (A)." for p in mmlu})
    train_file = write_jsonl(
        tmp_path / "creativity_training_ready.jsonl",
        [
            {"instruction": mmlu[0].prompt, "output": mmlu[0].solution},
            {"instruction": MMLU().load("test")[900].prompt, "output": "x"},
        ],
    )
    common = {
        "base_completions": answers,
        "candidate_completions": answers,
        "trained_categories": "creativity",
        "train_data": str(train_file),
        "n_boot": 100,
    }
    with pytest.raises(FailtuneError, match=r"mmlu/test/0.*--allow-overlap"):
        validate(output_dir=tmp_path / "v1", **common)
    result = validate(output_dir=tmp_path / "v2", allow_overlap=True, **common)
    row = result.overlap["categories"]["creativity"]
    assert (row["n"], row["exact"]) == (20, 1) and row["ngram_overlap"] >= 1
    assert result.overlap["exact_ids"] == ["mmlu/test/0"]


def test_ngram_overlap_ignores_the_shared_template() -> None:
    template = " Think step by step and then end your reply with the answer is N, a number."
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    prompts = [
        (f"t/test/{i}", "cat", f"Question {i}: {w} {i}?{template}")
        for i, w in enumerate(["red", "green", words, "blue", "black"])
    ]
    train = [
        f"Something else entirely. {words} and more.{template}",
        f"Question 9: red 9?{template}",
    ]
    report, exact = overlap_report(train, prompts)
    assert report["cat"] == {"n": 5, "ngram_overlap": 1, "exact": 0, "ngram_overlap_rate": 0.2}
    assert exact == []
    assert overlap_report([prompts[1][2]], prompts)[1] == ["t/test/1"]
