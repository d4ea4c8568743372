"""Rewards copied into other processes, as engines do: forked with the parent's warm sandbox and
grading pool, or pickled into spawned ones. Each grades on its own and agrees with extract."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ThreadPoolExecutor

from conftest import EOS, Graded

from failtune.rewards import LengthCap, RewardGrader, TRLReward

_inherited: dict[str, TRLReward] = {}


def _score(reward: TRLReward, ids: list[str], texts: list[str]) -> list[float]:
    return reward(prompts=[""] * len(ids), completions=texts, completion_ids=None, id=ids)


def _score_inherited(ids: list[str], texts: list[str]) -> list[float]:
    """In a forked child: the parent's reward object, its sandbox and pool as fork left them;
    graded from a thread too, which sends the math task to a worker process."""
    reward = _inherited["reward"]
    main = _score(reward, ids, texts)
    with ThreadPoolExecutor(1) as thread:
        threaded = thread.submit(_score, reward, ids, texts).result()
    return main + threaded


def test_forked_and_spawned_copies_grade_like_extract(graded: Graded) -> None:
    chosen = [c for c in graded.cases if c.finish_reason != "length"]
    chosen = [c for c in chosen if c.id.startswith(("mbpp", "custom", "gsm8k"))]
    ids, texts = [c.id for c in chosen], [c.completion for c in chosen]
    expected = [graded.expected_reward(c) for c in chosen]
    reward = TRLReward(RewardGrader(graded.task_options), LengthCap(16, [EOS]))
    with ThreadPoolExecutor(1) as thread:  # the parent starts its sandbox and its grading pool
        assert thread.submit(_score, reward, ids, texts).result() == expected
    _inherited["reward"] = reward
    # Two children grade different orders at once: had they shared the parent's warm sandbox
    # workers (one pipe each), one could read the other's verdicts.
    orders = [list(range(len(ids))), list(reversed(range(len(ids))))]
    with multiprocessing.get_context("fork").Pool(2) as forked:
        jobs = [([ids[i] for i in o], [texts[i] for i in o]) for o in orders]
        for order, found in zip(orders, forked.starmap(_score_inherited, jobs), strict=True):
            assert found == [expected[i] for i in order] * 2
    with multiprocessing.get_context("spawn").Pool(1) as spawned:
        assert spawned.apply(_score, (pickle.loads(pickle.dumps(reward)), ids, texts)) == expected
    # The children's exits left the parent's sandbox and pool working.
    assert _score(reward, ids, texts) == expected
    with ThreadPoolExecutor(1) as thread:
        assert thread.submit(_score, reward, ids, texts).result() == expected
    reward.grader.close()
