"""failtune's reward files loaded and called by verl's and OpenRLHF's own code, on the reward
cases, against extract's verdicts.

The engines are never installed into the project's environment (verl pins transformers<5.11,
OpenRLHF needs flash-attn, which does not build without CUDA): `bash scripts/setup_rl_engines.sh
DIR` makes a Python with both (verl 0.9.1, OpenRLHF 0.11.2 without its dependencies), and
FAILTUNE_RL_PYTHON=DIR/bin/python runs engine_paths.py in it with this failtune on its path.
Without it the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import require_smollm2
from reward_cases import CUT, EOS_TEXT, grade_with_extract

import failtune
from failtune.rewards import RewardGrader
from failtune.rewards.datasets import write_openrlhf_reward, write_verl_reward

RL_PYTHON = os.environ.get("FAILTUNE_RL_PYTHON")
pytestmark = pytest.mark.skipif(
    not RL_PYTHON, reason="FAILTUNE_RL_PYTHON (a Python with verl or OpenRLHF) is not set"
)


def test_engines_load_and_call_the_reward_files(tmp_path: Path, smollm2_tokenizer) -> None:
    require_smollm2()
    graded = grade_with_extract(tmp_path / "cases")
    tokenizer_dir = tmp_path / "tokenizer"
    smollm2_tokenizer.save_pretrained(tokenizer_dir)
    grader = RewardGrader(graded.task_options)
    cases = []
    for case in graded.cases:
        problem = grader.problem(case.id)[1]
        chat = [{"role": "user", "content": problem.prompt}]
        prompt = smollm2_tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True
        )
        cases.append(
            {
                "id": case.id,
                "completion": case.completion,
                "cut": case.finish_reason == CUT,
                "data_source": problem.task,
                "ground_truth": problem.expected,
                "prompt": prompt,
            }
        )
    request = {
        "tokenizer": str(tokenizer_dir),
        "verl_file": str(write_verl_reward(tmp_path / "verl_reward.py", graded.task_options)),
        "openrlhf_file": str(
            write_openrlhf_reward(tmp_path / "orl_reward.py", [EOS_TEXT], graded.task_options)
        ),
        "cases": cases,
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    source = str(Path(failtune.__file__).resolve().parents[1])
    done = subprocess.run(
        [str(RL_PYTHON), str(Path(__file__).with_name("engine_paths.py")), "request.json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": source},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    installed = {name: values for name, values in found.items() if values is not None}
    assert installed, "FAILTUNE_RL_PYTHON has neither verl nor OpenRLHF"
    expected = [graded.expected_reward(c) for c in graded.cases]
    for name, values in installed.items():
        assert values == expected, name
    assert not graded.escape_target.exists()
