"""Code category on the real HumanEval and MBPP data: extraction, splits, references, CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl

from failtune.cli import main
from failtune.evaluation.records import reason_kind
from failtune.grading.code import build_program, extract_code
from failtune.tasks import CATEGORIES, MBPP, HumanEval, parse_categories, tasks_for
from failtune.tasks.code import CODE_STOP_AFTER


@pytest.fixture(scope="module")
def humaneval() -> HumanEval:
    return HumanEval(workers=2)


@pytest.fixture(scope="module")
def mbpp() -> MBPP:
    return MBPP(workers=2)


def test_code_category_is_available() -> None:
    assert parse_categories("code") == ["code"]
    assert CATEGORIES["code"] == ("humaneval", "mbpp")


def test_splits_map_to_the_authors_splits() -> None:
    he, mb = tasks_for("code")
    assert len(he.load("test")) == 164 and len(mb.load("test")) == 500
    assert he.load("train") == []  # HumanEval has no train part
    train = mb.load("train")
    assert len(train) == 10 + 90 + 374
    assert {p.split for p in train} == {"prompt", "validation", "train"}
    assert len(mb.load("validation")) == 90 and len(mb.load("prompt")) == 10
    he_all, mb_all = tasks_for(
        "code", {"humaneval": {"include_test": True}, "mbpp": {"include_test": True}}
    )
    assert len(he_all.load("train")) == 164 and len(mb_all.load("train")) == 974
    assert mb.load("test")[3].id == "mbpp/test/14" and he.load("test")[0].id == "humaneval/test/0"


def test_prompts_pose_the_problem_and_solutions_are_fenced(
    humaneval: HumanEval, mbpp: MBPP
) -> None:
    he0 = humaneval.load("test")[0]
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in he0.prompt
    assert "```python" in he0.prompt and he0.solution.startswith(
        "```python\nfrom typing import List"
    )
    mb14 = next(p for p in mbpp.load("test") if p.id == "mbpp/test/14")
    assert "Your code should pass these tests:" in mb14.prompt
    assert "assert find_Volume(10,8,6) == 240" in mb14.prompt
    assert "\r" not in mb14.solution and mb14.solution.endswith("\n```")


def test_extract_code_forms() -> None:
    assert (
        extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone.")
        == "def f():\n    return 1"
    )
    two = "```python\nimport os\n```\ntext\n```python\ndef g(x):\n    return x\n```"
    assert extract_code(two, "g") == "def g(x):\n    return x"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut off
    assert extract_code("def f():\n    return 2\n") == "def f():\n    return 2\n"
    assert extract_code("```bash\nls\n```") == "```bash\nls\n```"  # no python block: raw text
    assert extract_code("   \n") is None


def test_humaneval_bare_body_is_completed_with_the_prompt(humaneval: HumanEval) -> None:
    problem = humaneval.load("test")[2]  # truncate_number
    tests = humaneval.tests_for(problem)
    for body in (
        "    return number % 1.0\n",
        "return number % 1.0",
        "```python\n    return number % 1.0\n```",
    ):
        grade = humaneval.grade(problem, body, "stop")
        assert grade.correct, (body, grade)
    program = dict(build_program("return number % 1.0", tests))
    assert program["candidate"].endswith("    return number % 1.0\n")


def test_failures_carry_reasons(humaneval: HumanEval, mbpp: MBPP) -> None:
    he0 = humaneval.load("test")[0]
    mb14 = next(p for p in mbpp.load("test") if p.id == "mbpp/test/14")
    cases = [
        (he0, "", "no_code"),
        (
            he0,
            "```python\ndef has_close_elements(numbers, threshold)\n    return True\n```",
            "syntax_error",
        ),
        (
            he0,
            "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```",
            "assertion_failed:assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False",
        ),
        (
            mb14,
            "def find_Volume(l, b, h):\n    return l * b * h\n",
            "assertion_failed:assert find_Volume(10,8,6) == 240",
        ),
        (mb14, "def find_Volume(l, b, h):\n    return 1 / 0\n", "runtime_error:ZeroDivisionError"),
        (mb14, "import sys\nsys.exit(0)\n", "exited_early"),
    ]
    grades = [
        (humaneval if p.task == "humaneval" else mbpp).grade_many([(p, c, "stop")])[0]
        for p, c, _ in cases
    ]
    assert [g.reason for g in grades] == [r for _, _, r in cases]
    assert not any(g.correct for g in grades)
    # Summaries count assertion failures as one kind, exception types apart.
    kinds = [reason_kind(g.reason) for g in grades]
    assert kinds[2:5] == ["assertion_failed", "assertion_failed", "runtime_error:ZeroDivisionError"]


def test_all_reference_solutions_pass() -> None:
    """164/164 HumanEval canonical solutions, 974/974 MBPP references (solution before setup).

    A generous timeout: mbpp/test/123 needs ~2.5 CPU seconds, far more wall time on a busy host.
    """
    for task, n in ((HumanEval(workers=2, timeout=120), 164), (MBPP(workers=2, timeout=120), 974)):
        problems = [p for p, _ in task.rows().values()]
        grades = task.grade_many([(p, p.solution, "stop") for p in problems])
        failed = {p.id: g.reason for p, g in zip(problems, grades, strict=True) if not g.correct}
        assert len(problems) == n and failed == {}


def test_cli_extract_and_validate_code_from_completions(
    tmp_path: Path, humaneval: HumanEval, mbpp: MBPP
) -> None:
    he0 = humaneval.load("test")[0]
    mb14 = next(p for p in mbpp.load("test") if p.id == "mbpp/test/14")
    good = write_jsonl(
        tmp_path / "good.jsonl",
        [
            {"id": "humaneval/test/0", "completion": he0.solution},
            {"id": "mbpp/test/14", "completion": mb14.solution},
        ],
    )
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"id": "humaneval/test/0", "completion": he0.solution},
            {"id": "mbpp/test/14", "completion": "```python\nimport os\nos._exit(0)\n```"},
        ],
    )
    out = tmp_path / "extract"
    assert (
        main(
            [
                "extract",
                "--completions",
                str(bad),
                "--output_dir",
                str(out),
                "--categories",
                "code",
                "--workers",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    records = read_jsonl(out / "results.jsonl")
    assert [(r["id"], r["correct"], r["reason"]) for r in records] == [
        ("humaneval/test/0", True, "passed"),
        ("mbpp/test/14", False, "exited_early"),
    ]
    training = [
        json.loads(line) for line in (out / "code_training_ready.jsonl").read_text().splitlines()
    ]
    assert training == [{"instruction": mb14.prompt, "output": mb14.solution}]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["problem_splits"] == {"humaneval": ["test"], "mbpp": ["test"]}
    assert set(manifest["data_sha256"]) == {"humaneval/HumanEval.jsonl.gz", "mbpp/mbpp.jsonl"}
    sandbox = {"isolation": "namespaces", "as_root": os.geteuid() == 0}
    assert {k: manifest["sandbox"][k] for k in sandbox} == sandbox

    val = tmp_path / "validate"
    code = main(
        [
            "validate",
            "--base-completions",
            str(bad),
            "--candidate-completions",
            str(good),
            "--output_dir",
            str(val),
            "--gate",
            "code.wins>=0.5",
            "--no-progress",
        ]
    )
    table = json.loads((val / "validation.json").read_text())["categories"]["code"]
    assert code == 0 and (table["wins"], table["losses"], table["ties_correct"]) == (1, 0, 1)
    manifest = json.loads((val / "manifest.json").read_text())
    assert {k: manifest["sandbox"][k] for k in sandbox} == sandbox


def test_generation_stops_at_the_closing_fence_even_for_long_blocks() -> None:
    """Backends check only the text's tail, so the rule must not need the opening fence."""
    long_block = "```python\n" + "x = 1\n" * 200 + "```\n\nThis sets x."
    tail = long_block[-40:]
    assert re.search(CODE_STOP_AFTER, tail)
    assert not re.search(CODE_STOP_AFTER, "Here it is:\n```python\ndef f(")
    m = re.search(CODE_STOP_AFTER, long_block)
    assert m and extract_code(long_block[: m.end()]) == "x = 1\n" * 199 + "x = 1"
