"""failtune's graders as rewards for TRL, verl and OpenRLHF, through extract's grading path.

    from failtune.rewards import RewardGrader, TRLReward, LengthCap
    reward = TRLReward(RewardGrader(), LengthCap(max_completion_length=256, eos_token_ids=[2]))
    GRPOTrainer(..., reward_funcs=reward, train_dataset=...)  # rows of rewards.datasets

A reward is 1.0 when extract would grade the completion correct and it was not cut by the
length cap, else 0.0 (failtune.rewards.grader says where grading runs and why).
"""

from failtune.rewards.engines import (
    LengthCap,
    OpenRLHFReward,
    TRLReward,
    VerlReward,
    completion_text,
    eos_ids_of,
)
from failtune.rewards.grader import Item, RewardGrader, reward_of

__all__ = [
    "Item",
    "LengthCap",
    "OpenRLHFReward",
    "RewardGrader",
    "TRLReward",
    "VerlReward",
    "completion_text",
    "eos_ids_of",
    "reward_of",
]
