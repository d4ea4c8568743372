"""Run failtune's reward files through verl's and OpenRLHF's own reward-loading code.

Run by test_rl_engines.py with an interpreter that has verl and/or OpenRLHF installed
(FAILTUNE_RL_PYTHON), never the project's own: `python engine_paths.py REQUEST.json` prints
{"verl": [...], "openrlhf": [...]}, one reward per case, or null for an engine not installed.

- verl: its Hydra trainer config with `reward.custom_reward_function` and the importlib reward
  manager pointing at the file, verl's RewardLoopWorker (load_reward_manager, load_extern_object,
  the naive manager's run_single, compute_score in its executor threads), one DataProto per
  response whose length budget a cut response fills without an end-of-sequence token.
- OpenRLHF: its SingleTurnAgentExecutor loading `reward_func` from the file, with a stand-in
  generation engine returning the response's tokens and finish reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from types import SimpleNamespace
from typing import Any


def _verl(request: dict[str, Any]) -> list[float] | None:
    if importlib.util.find_spec("verl") is None:
        return None
    import numpy as np
    import torch
    import verl
    from hydra import compose, initialize_config_dir
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    entry = request["verl_file"]
    overrides = [
        f"actor_rollout_ref.model.path={request['tokenizer']}",
        f"reward.custom_reward_function.path={entry}",
        "reward.custom_reward_function.name=compute_score",
        "reward.reward_manager.source=importlib",
        "reward.reward_manager.name=FailtuneRewardManager",
        f"reward.reward_manager.module.path={entry}",
    ]
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    worker = RewardLoopWorker(config)
    tokenizer = worker.input_tokenizer

    def one(case: dict[str, Any]) -> Any:
        ids = tokenizer(case["completion"], add_special_tokens=False)["input_ids"]
        budget = len(ids) if case["cut"] else len(ids) + 5
        ids = ids if case["cut"] else [*ids, tokenizer.eos_token_id]
        pad = budget - len(ids)
        prompt = tokenizer(case["prompt"], add_special_tokens=False)["input_ids"]
        tensors = {
            "prompts": torch.tensor([prompt]),
            "responses": torch.tensor([ids + [tokenizer.pad_token_id] * pad]),
            "attention_mask": torch.tensor([[1] * (len(prompt) + len(ids)) + [0] * pad]),
        }
        extra = {"id": case["id"], "split": case["id"].split("/")[1], "index": 0}
        reward_model = {"style": "rule", "ground_truth": case["ground_truth"]}
        non_tensors = {
            "data_source": np.array([case["data_source"]], dtype=object),
            "reward_model": np.array([reward_model], dtype=object),
            "extra_info": np.array([extra], dtype=object),
        }
        data = DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)
        return worker.compute_score_batch(data)

    async def every() -> list[Any]:
        return await asyncio.gather(*(one(case) for case in request["cases"]))

    return [float(r[0]["reward_score"]) for r in worker.loop.run_until_complete(every())]


class _Engine:
    """Stands in for OpenRLHF's vLLM engine: returns the case's tokens and finish reason."""

    partial_rollout = False

    def __init__(self, ids: list[int], finish: str) -> None:
        self.ids, self.finish = ids, finish

    def get_weight_version(self) -> int:
        return 0

    async def generate(self, prompt_ids: list[int], params: Any, **kw: Any) -> Any:
        output = SimpleNamespace(token_ids=self.ids, finish_reason=self.finish, logprobs=None)
        return SimpleNamespace(outputs=[output])


def _openrlhf(request: dict[str, Any]) -> list[float] | None:
    if importlib.util.find_spec("openrlhf") is None:
        return None
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request["tokenizer"])
    executor = SingleTurnAgentExecutor(remote_rm_url=request["openrlhf_file"])

    async def one(case: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer(case["completion"], add_special_tokens=False)["input_ids"]
        ids = ids if case["cut"] else [*ids, tokenizer.eos_token_id]
        engine = _Engine(ids, "length" if case["cut"] else "stop")
        params = SimpleNamespace(max_tokens=len(ids), logprobs=None)
        return await executor.execute(
            case["prompt"], case["id"], params, 1 << 16, tokenizer, engine
        )

    async def every() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(case) for case in request["cases"]))

    return [float(output["reward"]) for output in asyncio.run(every())]


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    print(json.dumps({"verl": _verl(request), "openrlhf": _openrlhf(request)}))
