"""Each engine's reward, called as the engine calls it, from 8 threads at once, equals the verdict
`failtune extract --completions` gave the same completion (a cut one earning nothing); so do
copies of a reward forked or spawned into other processes, as engines make them."""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import pickle
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from reward_cases import CAP, CUT, EOS, EOS_TEXT, SANDBOX_TIMEOUT, Case, Graded, grade_with_extract

from failtune.rewards import LengthCap, RewardGrader, TRLReward
from failtune.rewards.datasets import write_openrlhf_reward, write_verl_reward

THREADS = 8
_inherited: dict[str, TRLReward] = {}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    return grade_with_extract(tmp_path_factory.mktemp("reward-cases"))


def _load(path: Path, name: str) -> ModuleType:
    """A reward file loaded as verl (load_extern_object) and OpenRLHF (spec_from_file_location)
    load it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids_for(case: Case) -> list[int]:
    """Made-up token ids as TRL passes them: a cut completion fills the cap without an EOS."""
    return [7] * CAP if case.finish_reason == CUT else [7, 8, EOS]


def _problem(graded: Graded, case: Case) -> Any:
    return RewardGrader(graded.task_options).problem(case.id)[1]


def _in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls from THREADS threads at once (a barrier lines them up), each thread taking
    every THREADS-th call; results in the calls' order."""
    groups = [list(range(start, len(calls), THREADS)) for start in range(THREADS)]
    groups = [g for g in groups if g]
    barrier = threading.Barrier(len(groups))

    def run(group: list[int]) -> list[tuple[int, Any]]:
        barrier.wait()
        return [(i, calls[i]()) for i in group]

    with ThreadPoolExecutor(len(groups)) as pool:
        done = dict(pair for pairs in pool.map(run, groups) for pair in pairs)
    return [done[i] for i in range(len(calls))]


def test_every_kind_of_verdict_is_covered(graded: Graded) -> None:
    """The cases must exercise rewards of both kinds per task, and the cut-but-credited case."""
    by_task: dict[str, set[float]] = {}
    for case in graded.cases:
        by_task.setdefault(case.id.split("/")[0], set()).add(graded.expected_reward(case))
    assert all(found == {0.0, 1.0} for found in by_task.values()), by_task
    credited_cut = [
        c for c in graded.cases if c.finish_reason == CUT and graded.records[c.id]["correct"]
    ]
    assert credited_cut, "extract should credit an answer stated before the cut"
    reasons = {graded.records[c.id]["reason"] for c in graded.cases}
    assert {"timeout", "exited_early", "syntax_error", "truncated"} <= reasons


def test_trl_reward_as_grpo_trainer_calls_it(graded: Graded) -> None:
    reward = TRLReward(RewardGrader(graded.task_options), LengthCap(CAP, [EOS]))
    logged: dict[str, list] = {}

    def call(cases: list[Case]) -> dict[str, float]:
        problems = [_problem(graded, c) for c in cases]
        values = reward(
            prompts=[[{"role": "user", "content": p.prompt}] for p in problems],
            completions=[[{"role": "assistant", "content": c.completion}] for c in cases],
            completion_ids=[_ids_for(c) for c in cases],
            id=[c.id for c in cases],
            ground_truth=[p.expected for p in problems],
            task=[p.task for p in problems],
            trainer_state=None,
            log_extra=lambda column, values: logged.setdefault(column, []).extend(values),
            log_metric=lambda name, value: None,
        )
        return dict(zip([c.id for c in cases], values, strict=True))

    expected = {c.id: graded.expected_reward(c) for c in graded.cases}
    assert call(graded.cases) == expected  # the main thread grades in place
    shuffled = [random.Random(seed).sample(graded.cases, len(graded.cases)) for seed in range(8)]
    for found in _in_threads([lambda cases=cases: call(cases) for cases in shuffled]):
        assert found == expected
    assert len(logged["failtune_reason"]) == 9 * len(graded.cases)
    assert not graded.escape_target.exists()


def test_verl_compute_score_from_its_reward_file(graded: Graded, tmp_path: Path) -> None:
    """verl's reward loop calls compute_score one response at a time through run_in_executor."""
    module = _load(write_verl_reward(tmp_path / "verl_reward.py", graded.task_options), "custom")

    def score(case: Case) -> float:
        problem = _problem(graded, case)
        extra = {"id": case.id, "split": problem.split, "index": 0, "num_turns": None}
        extra["truncated"] = case.finish_reason == CUT  # as FailtuneRewardManager marks it
        return module.compute_score(
            data_source=problem.task,
            solution_str=case.completion,
            ground_truth=problem.expected,
            extra_info=extra,
        )

    found = _in_threads([lambda case=case: score(case) for case in graded.cases])
    assert found == [graded.expected_reward(c) for c in graded.cases]


def test_openrlhf_reward_func_from_its_reward_file(graded: Graded, tmp_path: Path) -> None:
    """OpenRLHF's executor sends each query (prompt + response with special tokens) through
    asyncio.to_thread; a finished response ends in the EOS text, a cut one does not."""
    path = write_openrlhf_reward(tmp_path / "orl.py", [EOS_TEXT], graded.task_options)
    module = _load(path, "reward_func")
    template = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"

    async def score_all() -> list[dict]:
        calls = []
        for case in graded.cases:
            prompt = template.format(_problem(graded, case).prompt)
            ending = "" if case.finish_reason == CUT else EOS_TEXT
            calls.append(
                asyncio.to_thread(
                    module.reward_func, [prompt + case.completion + ending], [prompt], [case.id]
                )
            )
        return await asyncio.gather(*calls)

    replies = asyncio.run(score_all())
    assert [float(r["rewards"][0]) for r in replies] == [
        graded.expected_reward(c) for c in graded.cases
    ]
    assert [float(r["extra_logs"]["truncated"][0]) for r in replies] == [
        float(c.finish_reason == CUT) for c in graded.cases
    ]
    assert all(float(r["scores"][0]) == float(r["rewards"][0]) for r in replies)


def test_a_query_without_its_prompt_earns_nothing(graded: Graded) -> None:
    from failtune.rewards import OpenRLHFReward

    reward = OpenRLHFReward(RewardGrader(graded.task_options), [EOS_TEXT])
    case = graded.cases[0]
    assert graded.expected_reward(case) == 1.0
    reply = reward([case.completion + EOS_TEXT], ["a prompt that is not in the query"], [case.id])
    assert float(reply["rewards"][0]) == 0.0


def test_hostile_code_from_8_threads_keeps_the_time_limit(graded: Graded) -> None:
    """Eight infinite loops graded at once, each from its own thread: every one is stopped at
    the sandbox's limit, none escapes, and the grading process survives its own children."""
    loop = next(c for c in graded.cases if c.id == "mbpp/test/16")
    reward = TRLReward(RewardGrader(graded.task_options), LengthCap(CAP, [EOS]))

    def timed() -> tuple[float, float]:
        started = time.monotonic()
        value = reward(
            prompts=[""], completions=[loop.completion], completion_ids=[[EOS]], id=[loop.id]
        )
        return value[0], time.monotonic() - started

    results = _in_threads([timed] * THREADS)
    assert [value for value, _ in results] == [0.0] * THREADS
    # Every program is killed at SANDBOX_TIMEOUT; the slack covers starting the extra warm
    # workers eight concurrent programs need on a 2-core machine.
    assert max(seconds for _, seconds in results) < SANDBOX_TIMEOUT + 15
    assert not graded.escape_target.exists()


@pytest.mark.parametrize("bad", ["gsm8k/test", "nosuchtask/test/0", "gsm8k/test/99999"])
def test_rows_without_a_problem_are_refused(bad: str) -> None:
    from failtune.errors import FailtuneError

    with pytest.raises(FailtuneError):
        TRLReward()(prompts=[""], completions=["The answer is 1."], id=[bad])


def test_a_stale_ground_truth_is_refused() -> None:
    from failtune.errors import FailtuneError

    with pytest.raises(FailtuneError, match="write the dataset again"):
        TRLReward()(prompts=[""], completions=["1"], id=["gsm8k/test/0"], ground_truth=["17"])


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
    reward = TRLReward(RewardGrader(graded.task_options), LengthCap(CAP, [EOS]))
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
