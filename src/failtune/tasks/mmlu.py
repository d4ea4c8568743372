"""MMLU (Hendrycks et al.): 57 subjects of four-choice questions, shipped inside the package.

There is no train split: extraction and validation share the `test` split through a
deterministic holdout (see failtune.tasks.holdout). Two ways to ask the model:

- generative (default): lettered choices, the model ends with "The answer is (X).", and
  failtune.grading.choice reads the letter;
- log-likelihood (HF backend only): the lm-evaluation-harness default prompt ending
  "Answer:", and the choice is the letter among " A".." D" with the highest log-probability.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from failtune.errors import FailtuneError
from failtune.grading import Grade
from failtune.grading.choice import grade_choice, letters_for
from failtune.tasks.base import Problem, Task

DATA_DIR = Path(__file__).parent / "data" / "mmlu"
CHOICE_FORMAT = (
    'Think briefly if you need to, then end your reply with "The answer is (X)." where X is '
    "the letter of the correct choice."
)
# Stop once the letter has been stated and the sentence or line ends.
CHOICE_STOP_AFTER = r"(?i)the (?:final |correct )?answer is[^\n]*?\(?[A-J]\b[^\n]*?(?:\.\s|\n)"
MODES = ("generate", "loglikelihood")


def lettered(choices: Sequence[str]) -> str:
    """ "A. first\nB. second..." as MMLU prompts list the choices."""
    letters = letters_for(len(choices))
    return "\n".join(f"{letter}. {text}" for letter, text in zip(letters, choices, strict=True))


def choice_prompt(question: str, choices: Sequence[str]) -> str:
    return f"{question.strip()}\n\n{lettered(choices)}\n\n{CHOICE_FORMAT}"


def choice_solution(choices: Sequence[str], answer: int) -> str:
    """The training output: "The answer is (X) <choice text>."."""
    text = str(choices[answer]).strip().rstrip(".")
    return f"The answer is ({letters_for(len(choices))[answer]}) {text}."


def loglikelihood_prompt(subject: str, question: str, choices: Sequence[str]) -> str:
    """lm-evaluation-harness's default MMLU prompt (zero-shot); the model continues " X"."""
    topic = subject.replace("_", " ")
    return (
        f"The following are multiple choice questions (with answers) about {topic}.\n\n"
        f"{question.strip()}\n{lettered(choices)}\nAnswer:"
    )


class MMLU(Task):
    name = "mmlu"
    category = "creativity"
    splits = ("test", "dev", "validation")
    default_max_new_tokens = 160
    stop_after = CHOICE_STOP_AFTER

    def __init__(self, subjects: Sequence[str] | str | None = None, mode: str = "generate") -> None:
        if mode not in MODES:
            raise FailtuneError(f"unknown MMLU mode {mode!r} (choose from: {', '.join(MODES)})")
        if isinstance(subjects, str):
            subjects = [s.strip() for s in subjects.split(",") if s.strip()]
        self.subjects = tuple(subjects) if subjects else None
        self.mode = mode
        if self.subjects:
            unknown = sorted(set(self.subjects) - set(all_subjects()))
            if unknown:
                raise FailtuneError(
                    f"unknown MMLU subject(s) {', '.join(unknown)}; subjects are written like "
                    f"{', '.join(all_subjects()[:3])} (all 57 are listed in the README)"
                )

    def data_files(self, split: str) -> list[Path]:
        return [DATA_DIR / f"{split}.jsonl.gz"]

    def load(self, split: str) -> list[Problem]:
        self.check_split(split)
        rows = _load(split)
        return [p for p, subject in rows if not self.subjects or subject in self.subjects]

    def stratum(self, problem: Problem) -> str:
        return _subject_of(problem.id)

    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade:
        choices, answer = _choices_of(problem.id)
        return grade_choice(completion, choices, answer, finish_reason)

    def choice_requests(self, problem: Problem) -> tuple[str, list[str]] | None:
        """For log-likelihood mode: (context, continuations " A".." D"); None when generating."""
        if self.mode != "loglikelihood":
            return None
        split, index = problem.split, int(problem.id.rsplit("/", 1)[1])
        row = _rows(split)[index]
        context = loglikelihood_prompt(row["subject"], row["question"], row["choices"])
        return context, [f" {letter}" for letter in letters_for(len(row["choices"]))]


@cache
def _rows(split: str) -> tuple[dict, ...]:
    with gzip.open(DATA_DIR / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@cache
def all_subjects() -> list[str]:
    return sorted({row["subject"] for row in _rows("dev")})


@cache
def _load(split: str) -> tuple[tuple[Problem, str], ...]:
    return tuple(
        (
            Problem(
                id=f"mmlu/{split}/{index}",
                task="mmlu",
                split=split,
                prompt=choice_prompt(row["question"], row["choices"]),
                expected=letters_for(len(row["choices"]))[row["answer"]],
                solution=choice_solution(row["choices"], row["answer"]),
            ),
            row["subject"],
        )
        for index, row in enumerate(_rows(split))
    )


def _choices_of(problem_id: str) -> tuple[list[str], int]:
    _, split, index = problem_id.split("/")
    row = _rows(split)[int(index)]
    return row["choices"], row["answer"]


def _subject_of(problem_id: str) -> str:
    _, split, index = problem_id.split("/")
    return _rows(split)[int(index)]["subject"]
