"""One grading path for every RL engine: problem ids and completions → extract's records.

A reward is the verdict `failtune extract` gives the same completion: the problem is found by
its id, and failtune.evaluation.make_records grades it with the task's own grader. One rule is
added for training: a completion cut by the length cap never earns reward, even where extract
credits a final answer stated before the cut, since rewarding it teaches the policy to run on
past its answer.

Where grading runs, so that it is safe from any thread and any process:
- tasks that run code grade in the calling thread: the sandbox is thread-safe and uses no signals;
- other tasks grade in the calling thread when it is the main thread, else in a pool of worker
  processes (failtune.rewards.pool), each grading in its own main thread: math-verify's timeouts
  use signal.alarm, which raises outside the main thread (Math-Verify#50), so the same graders
  with the same timeouts run where their timeouts work, and verdicts do not change;
- after a fork the child drops what it inherited (the sandbox's warm workers, the pool, locks),
  so a reward copied into engine processes starts its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from failtune.errors import FailtuneError
from failtune.evaluation.records import Completion, make_records
from failtune.grading import TRUNCATED
from failtune.grading.code import shared_sandbox
from failtune.rewards.items import Item
from failtune.rewards.pool import GradingPool
from failtune.tasks import Problem, Task, TaskOptions, task_by_name

DEFAULT_ITEM_TIMEOUT = 60.0  # seconds one completion may take in the pool before it counts as 0


def reward_of(record: Mapping[str, Any]) -> float:
    """1.0 for a correct answer that was not cut by the length cap, else 0.0."""
    return 1.0 if record["correct"] and record["finish_reason"] != TRUNCATED else 0.0


class RewardGrader:
    """Grades completions by problem id, as extract does; shared by every engine's reward.

    `task_options` are the tasks' constructor arguments, as extract takes them (e.g. a custom
    task's {"custom": {"path": ..., "grader": "math"}}). `workers` sizes the pool used off the
    main thread (default: CPU cores, at most 4); `item_timeout` bounds one completion's grading
    there (a grader that hangs past its own timeouts gives 0, reason "grading_timeout").
    Picklable: a copy sent to another process rebuilds its tasks there.
    """

    def __init__(
        self,
        task_options: TaskOptions | None = None,
        *,
        workers: int | None = None,
        item_timeout: float = DEFAULT_ITEM_TIMEOUT,
    ) -> None:
        if workers is not None and workers < 1:
            raise FailtuneError("reward workers must be a positive number")
        if item_timeout <= 0:
            raise FailtuneError("the reward's item timeout must be a positive number of seconds")
        self.task_options = {k: dict(v) for k, v in (task_options or {}).items()}
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.item_timeout = item_timeout
        self._fresh()

    def _fresh(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._runs_code: dict[str, bool] = {}
        self._index: dict[tuple[str, str], dict[str, Problem]] = {}
        self._lock = threading.Lock()
        self._pool: Any = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "task_options": self.task_options,
            "workers": self.workers,
            "timeout": self.item_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.task_options, self.workers = state["task_options"], state["workers"]
        self.item_timeout = state["timeout"]
        self._fresh()

    def _own(self) -> None:
        """In a forked child, forget the parent's pool and a lock another thread may have held."""
        if os.getpid() != self._pid:
            self._fresh()

    def problem(self, problem_id: str) -> tuple[Task, Problem]:
        """The task and problem an id names; a malformed or unknown id is a FailtuneError."""
        self._own()
        parts = problem_id.split("/") if isinstance(problem_id, str) else []
        if len(parts) != 3:
            raise FailtuneError(
                f"reward rows need failtune's problem id <task>/<split>/<key>, got {problem_id!r}"
            )
        name, split, _ = parts
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = task_by_name(name, self.task_options)
            task = self._tasks[name]
            if (name, split) not in self._index:
                task.check_split(split)
                self._index[(name, split)] = {p.id: p for p in task.load(split)}
            found = self._index[(name, split)].get(problem_id)
        if found is None:
            raise FailtuneError(f"no problem with id {problem_id!r}")
        return task, found

    def check(self, items: Sequence[Item]) -> None:
        """Find every item's problem and compare the ground truth and task given with it; start
        the code sandbox its tasks need (refused where there is none), before a model loads."""
        for item in items:
            task, problem = self.problem(item.id)
            if item.task is not None and item.task != problem.task:
                raise FailtuneError(
                    f"problem {item.id} belongs to task {problem.task!r}, not {item.task!r}"
                )
            if item.ground_truth is not None and str(item.ground_truth) != problem.expected:
                raise FailtuneError(
                    f"the ground truth {item.ground_truth!r} given for {item.id} is not the "
                    f"problem's {problem.expected!r}: write the dataset again"
                )
            self._code_task(task)

    def _code_task(self, task: Task) -> bool:
        """Whether grading `task` runs code (its sandbox is started on first ask)."""
        with self._lock:
            if task.name not in self._runs_code:
                self._runs_code[task.name] = task.sandbox() is not None
            return self._runs_code[task.name]

    def records(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Extract's graded record of every item, in order."""
        self.check(items)
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.id.split("/")[0], []).append(i)
        found: list[dict[str, Any] | None] = [None] * len(items)
        in_main = threading.current_thread() is threading.main_thread()
        for name, where in groups.items():
            task = self._tasks[name]
            chosen = [items[i] for i in where]
            if in_main or self._code_task(task):
                rows = self.grade_here(task, chosen)
            else:
                rows = self._pool_for().records(chosen)
            for i, row in zip(where, rows, strict=True):
                found[i] = row
        return [r for r in found if r is not None]

    def grade_here(self, task: Task, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Grade in this thread, with the very function extract grades with."""
        pairs = [(self.problem(i.id)[1], Completion(i.completion, i.finish_reason)) for i in items]
        return make_records(task, pairs)

    def rewards(self, items: Sequence[Item]) -> list[float]:
        return [reward_of(r) for r in self.records(items)]

    def _pool_for(self) -> Any:

        with self._lock:
            if self._pool is None:
                self._pool = GradingPool(self.task_options, self.workers, self.item_timeout)
            return self._pool

    def close(self) -> None:
        """Stop the grading pool, if one was started (a later call starts another)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _drop_inherited_sandboxes() -> None:
    """A forked child must not talk to its parent's warm sandbox workers through shared pipes:
    it starts its own on first use."""
    shared_sandbox.cache_clear()


os.register_at_fork(after_in_child=_drop_inherited_sandboxes)
