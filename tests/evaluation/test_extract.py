"""Extract from completions files and from a scripted backend: outputs, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import GSM8K_TEST, read_jsonl, write_jsonl

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.evaluation.extraction import extract

TEST = GSM8K_TEST


def completions_file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "completions.jsonl",
        [
            {
                "id": "gsm8k/test/0",
                "completion": "16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is $18.",
                "model": "other keys are ignored",
            },
            {"id": "gsm8k/test/1", "completion": "2 + 1 = 3 bolts.\n**Final Answer:** \\boxed{3}"},
            {"id": "gsm8k/test/2", "completion": "The profit is $70,000.00.\nThe answer is 75000."},
            {"id": "gsm8k/test/3", "completion": "I cannot solve this problem."},
        ],
    )


def test_completions_graded_and_failures_become_training_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "extract",
                "--completions",
                str(completions_file(tmp_path)),
                "--output_dir",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert [results[f"gsm8k/test/{i}"]["correct"] for i in range(4)] == [True, True, False, False]
    assert results["gsm8k/test/2"]["reason"] == "wrong_answer"
    assert results["gsm8k/test/2"]["extracted"] == "75000"
    assert results["gsm8k/test/3"]["reason"] == "no_answer"
    for key in (
        "id",
        "task",
        "split",
        "prompt",
        "completion",
        "extracted",
        "expected",
        "correct",
        "reason",
        "finish_reason",
        "completion_tokens",
    ):
        assert key in results["gsm8k/test/0"]
    training = read_jsonl(out / "math_training_ready.jsonl")
    assert training == [
        {"instruction": TEST[2].prompt, "output": TEST[2].solution},
        {"instruction": TEST[3].prompt, "output": TEST[3].solution},
    ]
    assert training[0]["output"].endswith("The answer is 70000.")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["counts"]["math"]["n"] == 4
    assert manifest["data_sha256"]["gsm8k/test.jsonl"].startswith("3730d312")
    assert manifest["versions"]["transformers"]


def test_scripted_model_run(tmp_path: Path, scripted) -> None:
    answers = {p.prompt: p.solution for p in TEST[:10]}
    backend = scripted(lambda prompt: answers[prompt] if len(prompt) % 2 else "no idea")
    result = extract(
        output_dir=tmp_path,
        categories="math",
        split="test",
        limit=10,
        model=backend,
        show_progress=False,
    )
    expected_correct = sum(len(p.prompt) % 2 for p in TEST[:10])
    assert result.summary["math"]["correct"] == expected_correct
    assert len(read_jsonl(tmp_path / "math_training_ready.jsonl")) == 10 - expected_correct


def test_interrupted_run_resumes_without_regenerating(tmp_path: Path, scripted) -> None:
    answers = {p.prompt: p.solution for p in TEST[:20]}
    dying = scripted(answers.__getitem__, batch_size=4, die_after_batches=2)
    with pytest.raises(KeyboardInterrupt):
        extract(
            output_dir=tmp_path,
            categories="math",
            split="test",
            limit=20,
            model=dying,
            show_progress=False,
        )
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 8  # two whole batches kept
    # a writer killed mid-line leaves half a record: it must not break the resume
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"id": "gsm8k/test/9", "comp')
    again = scripted(answers.__getitem__, batch_size=4)
    result = extract(
        output_dir=tmp_path,
        categories="math",
        split="test",
        limit=20,
        model=again,
        show_progress=False,
    )
    assert len(again.prompts_seen) == 12
    assert [r["id"] for r in result.records] == [f"gsm8k/test/{i}" for i in range(20)]
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 20
    assert result.summary["math"]["correct"] == 20


def test_resume_refuses_results_of_another_model(tmp_path: Path, scripted) -> None:
    first = scripted(lambda p: "The answer is 1.", model="model-a")
    extract(
        output_dir=tmp_path,
        categories="math",
        split="test",
        limit=4,
        model=first,
        show_progress=False,
    )
    with pytest.raises(FailtuneError, match="holds results of model model-a"):
        extract(
            output_dir=tmp_path,
            categories="math",
            split="test",
            limit=8,
            model=scripted(lambda p: "x", model="model-b"),
            show_progress=False,
        )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "gsm8k/test/0", "completion": "x"}', "{not json"], "line 2: not valid JSON"),
        (
            ['{"id": "gsm8k/test/99999", "completion": "x"}'],
            "no problem with id 'gsm8k/test/99999'",
        ),
        (['{"id": "nosuch/test/1", "completion": "x"}'], "unknown task 'nosuch'"),
        (['{"id": "gsm8k/test/1"}'], 'needs a string "id" and a string "completion"'),
        (
            [
                '{"id": "gsm8k/test/1", "completion": "a"}',
                '{"id": "gsm8k/test/1", "completion": "b"}',
            ],
            "appears twice",
        ),
    ],
)
def test_bad_completions_one_clear_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code = main(["extract", "--completions", str(path), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["extract", "--completions", "missing.jsonl", "--output_dir", "o"],
            "--completions names missing.jsonl, which does not exist",
        ),
        (
            [
                "extract",
                "--model_path",
                "./no/such/model",
                "--output_dir",
                "o",
                "--categories",
                "arith",
            ],
            "model not found",
        ),
        (
            ["extract", "--model_path", "x", "--output_dir", "o", "--categories", "poetry"],
            "unknown category 'poetry'",
        ),
        (
            ["validate", "--base", "a", "--candidate", "b", "--split", "train"],
            "refusing to validate on the train split",
        ),
        (
            [
                "validate",
                "--base-completions",
                "a",
                "--candidate-completions",
                "b",
                "--gate",
                "math.wins>>3",
            ],
            "cannot read gate",
        ),
        (
            [
                "train",
                "--model_name",
                "x",
                "--dataset_path",
                "nothing/*.jsonl",
                "--output_dir",
                "o",
            ],
            "no training file matches",
        ),
    ],
)
def test_user_mistakes_exit_nonzero_without_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_results_survive_a_bad_rerun(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(
        [
            "extract",
            "--completions",
            str(completions_file(tmp_path)),
            "--output_dir",
            str(out),
            "--no-progress",
        ]
    )
    before = (out / "results.jsonl").read_bytes()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "gsm8k/test/0"}])
    assert main(["extract", "--completions", str(bad), "--output_dir", str(out)]) == 2
    assert (out / "results.jsonl").read_bytes() == before
