"""`failtune train --method grpo`: on an extract folder it trains on the failures within reach,
with GRPO's own defaults unless a shared flag is given; mistakes are one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ScriptedBackend
from helpers import read_jsonl

from failtune.cli import main
from failtune.evaluation.extraction import extract
from failtune.files import read_json
from failtune.tasks.arith import Arith

PROBLEMS = Arith().load("train")[:4]
GOLD = {p.prompt: p.expected for p in PROBLEMS}
INDEX = {p.id: i for i, p in enumerate(PROBLEMS)}


def extracted(tmp_path: Path, reach: bool = True) -> Path:
    """Greedy always wrong; problem i's samples 0 … i-1 right (none right without `reach`)."""

    def sampled(prompt: str, key: str, s: int) -> str:
        right = reach and s < INDEX[key]
        answer = GOLD[prompt] if right else str(int(GOLD[prompt]) + 100)
        return f"The answer is {answer}."

    folder = tmp_path / "extract"
    extract(
        None,
        folder,
        model=ScriptedBackend(lambda p: "The answer is -1.", sample=sampled),
        categories="arith",
        limit=4,
        samples=2,
        temperature=1.0,
        show_progress=False,
    )
    return folder


def grpo(model: Path, data: Path, out: Path, *flags: str) -> int:
    return main(
        [
            "train",
            "--method",
            "grpo",
            "--model_name",
            str(model),
            "--dataset_path",
            str(data),
            "--output_dir",
            str(out),
            "--no-progress",
            *flags,
        ]
    )


def test_grpo_trains_on_the_failures_within_reach(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    flags = ("--max-steps", "1", "--num-generations", "2", "--max-completion-length", "8")
    assert grpo(tiny_model_dir, extracted(tmp_path), out, *flags, "--batch-size", "1") == 0
    ids = [r["id"] for r in read_jsonl(out / "grpo_prompts.jsonl")]
    assert ids == [p.id for p in PROBLEMS[1:]]  # problem 0: no sample right, out of reach
    args = read_json(out / "manifest.json")["args"]
    assert args["method"] == "grpo" and args["learning_rate"] == 1e-5  # GRPO's default
    assert (args["batch_size"], args["max_steps"], args["num_generations"]) == (1, 1, 2)
    assert (out / "adapter_model.safetensors").is_file()
    assert len(read_jsonl(out / "grpo_metrics.jsonl")) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--num-generations", "1"), "--num-generations must be at least 2"),
        (("--learning-rate", "-1"), "--learning-rate must be above 0"),  # shared flag reaches GRPO
        (
            ("--num-processes", "2", "--num-generations", "3"),
            "num_generations 3 (a group's answers, shared by the processes) must divide evenly",
        ),
    ],
)
def test_grpo_mistakes_are_one_sentence_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text("")
    assert grpo(tmp_path / "no-model", data, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_grpo_refuses_an_extract_with_no_failure_within_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    assert grpo(tiny_model_dir, extracted(tmp_path, reach=False), tmp_path / "out") == 2
    assert "no failure of" in capsys.readouterr().err
