"""verl's naive reward manager, telling failtune's compute_score which responses were cut.

verl decodes a response without special tokens and gives `compute_score` no length, so the score
alone cannot tell a response the length cap cut from one that ended. This manager sees the
response's token ids first and marks `extra_info["truncated"]` (no end-of-sequence token at the
end of a response that filled its whole budget), so a cut response earns no reward in verl
either. Select it with `reward.reward_manager.source=importlib`,
`reward.reward_manager.name=FailtuneRewardManager` and `reward.reward_manager.module.path=` the
entry file failtune.rewards.datasets.write_verl_reward writes. Imports verl: only that file,
run inside verl, imports this module.
"""

from __future__ import annotations

from typing import Any

from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager


class FailtuneRewardManager(NaiveRewardManager):
    async def run_single(self, data: Any) -> dict:
        item = data[-1:][0]  # the sequence the naive manager scores
        responses = item.batch["responses"]
        budget = responses.shape[-1]
        used = int(item.batch["attention_mask"][-budget:].sum())
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        ended = used > 0 and int(responses[used - 1]) in ends
        extra = item.non_tensor_batch.get("extra_info")
        if isinstance(extra, dict):
            extra["truncated"] = not ended and used >= budget
        return await super().run_single(data)
