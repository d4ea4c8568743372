"""The problems to train on, as the prompt datasets RL engines read, and their reward files.

- TRL: JSONL, one row per problem: `prompt` (a chat message list), `ground_truth`, `task`, `id`.
  TRL passes every column but `prompt` to the reward (failtune.rewards.TRLReward). OpenRLHF reads
  the same file (`--input_key prompt --label_key id --apply_chat_template`).
- verl: parquet in the layout of its examples/data_preprocess: `data_source` (the task),
  `prompt` (chat list), `ability` (the category), `reward_model` {style: rule, ground_truth},
  `extra_info` {id, split, index}.
- Reward entry files, which a user points verl (`custom_reward_function.path`, name
  `compute_score`) or OpenRLHF (`--remote_rm_url`) at: they import failtune and grade through the
  same path as extract.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.evaluation.records import RECORD_FIELDS, greedy_records, sampled_records
from failtune.files import atomic_write_jsonl, atomic_write_text, read_jsonl
from failtune.rewards.grader import Item, RewardGrader
from failtune.tasks import Problem, Task, TaskOptions

# Columns of a prompt dataset besides `prompt`.
COLUMNS = ("ground_truth", "task", "id")


def prompt_rows(problems: Iterable[tuple[Task, Problem]]) -> list[dict[str, Any]]:
    """One TRL prompt row per problem, the prompt as the single user message of a chat."""
    return [
        {
            "prompt": [{"role": "user", "content": p.prompt}],
            "ground_truth": p.expected,
            "task": p.task,
            "id": p.id,
        }
        for _, p in problems
    ]


def write_prompt_dataset(problems: Iterable[tuple[Task, Problem]], path: str | Path) -> Path:
    """The TRL (and OpenRLHF) prompt dataset, written atomically."""
    path = Path(path)
    atomic_write_jsonl(path, prompt_rows(problems))
    return path


def verl_rows(problems: Iterable[tuple[Task, Problem]]) -> list[dict[str, Any]]:
    return [
        {
            "data_source": p.task,
            "prompt": [{"role": "user", "content": p.prompt}],
            "ability": task.category,
            "reward_model": {"style": "rule", "ground_truth": p.expected},
            "extra_info": {"id": p.id, "split": p.split, "index": index},
        }
        for index, (task, p) in enumerate(problems)
    ]


def write_verl_dataset(problems: Iterable[tuple[Task, Problem]], path: str | Path) -> Path:
    """verl's parquet layout, written to a temp file and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    rows = verl_rows(problems)
    if not rows:
        raise FailtuneError("no problems to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def failed_problems(
    results: str | Path, task_options: TaskOptions | None = None, *, within_reach: bool = True
) -> list[tuple[Task, Problem]]:
    """The problems an extract run failed on (its results.jsonl, or its folder), in order.

    With samples in the file and `within_reach`, only the failures one of the model's samples
    solved (near): a group of answers that are all wrong gives GRPO no gradient. Without
    samples there is no reach map, and every failure is kept.
    """
    path = Path(results)
    if path.is_dir():
        path = path / "results.jsonl"
    grader = RewardGrader(task_options)
    rows = list(read_jsonl(path, require=RECORD_FIELDS))
    reached = {r["id"] for r in sampled_records(rows) if r["correct"]}
    sampled = within_reach and any(r.get("sample") is not None for r in rows)
    failed = [r["id"] for r in greedy_records(rows) if not r["correct"]]
    return [grader.problem(i) for i in failed if not sampled or i in reached]


def read_prompt_dataset(path: str | Path) -> list[dict[str, Any]]:
    """A prompt dataset's rows, each checked: a prompt, a problem id, its task and a non-empty
    ground truth (a reward needs one to grade against)."""
    rows = list(read_jsonl(Path(path)))
    if not rows:
        raise FailtuneError(f"{path} holds no prompts")
    for lineno, row in enumerate(rows, start=1):
        prompt = row.get("prompt")
        if not (isinstance(prompt, str) and prompt.strip()) and not _is_chat(prompt):
            raise FailtuneError(f"{path}: row {lineno} needs a prompt (text or chat messages)")
        for key in COLUMNS:
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                what = "no ground truth to reward against" if key == "ground_truth" else f"no {key}"
                raise FailtuneError(f"{path}: row {lineno} has {what}")
    return rows


def _is_chat(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)
    )


def check_rows(rows: Sequence[dict[str, Any]], grader: RewardGrader) -> None:
    """Every row's id names a problem whose task and ground truth the row repeats."""
    grader.check([Item(r["id"], "", None, r["ground_truth"], r["task"]) for r in rows])


def _entry_file(path: str | Path, doc: str, setup: str, function: str) -> Path:
    path = Path(path)
    atomic_write_text(
        path,
        f'"""{doc} Written by failtune; needs failtune installed where the engine runs."""\n\n'
        f"import json\n\nfrom failtune.rewards import {setup}\n\n{function}",
    )
    return path


def _options_literal(task_options: TaskOptions | None) -> str:
    """Task options as a JSON literal, with files made absolute (the engine runs elsewhere)."""
    options = {name: dict(values) for name, values in (task_options or {}).items()}
    for values in options.values():
        if isinstance(values.get("path"), str | Path):
            values["path"] = str(Path(values["path"]).resolve())
    return repr(json.dumps(options))


def write_verl_reward(path: str | Path, task_options: TaskOptions | None = None) -> Path:
    """verl's entry file: `custom_reward_function.path=<path>`, `.name=compute_score`; and,
    inside verl, FailtuneRewardManager (failtune.rewards.verl_manager), which tells
    compute_score the responses the length cap cut."""
    function = (
        "try:  # inside verl: its naive reward manager, marking responses cut by the length cap\n"
        "    from failtune.rewards.verl_manager import FailtuneRewardManager  # noqa: F401\n"
        "except ImportError:\n"
        "    pass\n\n"
        f"_reward = VerlReward(json.loads({_options_literal(task_options)}))\n\n\n"
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):\n"
        "    return _reward(data_source, solution_str, ground_truth, extra_info, **kwargs)\n"
    )
    return _entry_file(path, "verl reward: failtune's graders.", "VerlReward", function)


def write_openrlhf_reward(
    path: str | Path, eos_tokens: Sequence[str], task_options: TaskOptions | None = None
) -> Path:
    """OpenRLHF's entry: `--remote_rm_url <path> --label_key id`; `eos_tokens` as for
    failtune.rewards.OpenRLHFReward (the model tokenizer's eos_token)."""
    function = (
        f"_reward = OpenRLHFReward(json.loads({_options_literal(task_options)}), "
        f"{list(eos_tokens)!r})\n\n\n"
        "def reward_func(queries, prompts, labels, **kwargs):\n"
        "    return _reward(queries, prompts, labels, **kwargs)\n"
    )
    return _entry_file(path, "OpenRLHF reward: failtune's graders.", "OpenRLHFReward", function)
