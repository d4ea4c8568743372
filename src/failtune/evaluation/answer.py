"""Answer a task's problems with a backend: generate text, or score choices by log-likelihood.

Tasks that ask for log-likelihood (MMLU with mode="loglikelihood") get, per problem, the
continuation with the highest log-probability as their completion (" B" → "B"), so grading,
records and statistics stay the same for both modes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from failtune.backends import Backend, Generation, GenParams
from failtune.tasks import Problem, Task


def answer_batches(
    backend: Backend,
    task: Task,
    problems: Sequence[Problem],
    params: GenParams,
    done: Collection[int] = (),
) -> Iterator[list[tuple[int, Generation]]]:
    """Yield finished batches as (index into `problems`, generation) for those not in `done`."""
    if not problems or task.choice_requests(problems[0]) is None:  # the task generates
        yield from backend.stream([p.prompt for p in problems], params, skip=done)
        return
    todo = [i for i in range(len(problems)) if i not in done]
    requests = [r for i in todo if (r := task.choice_requests(problems[i])) is not None]
    for batch in backend.loglikelihood(requests):
        yield [
            (todo[j], Generation(_best(requests[j][1], logprobs), "loglikelihood", 0))
            for j, logprobs in batch
        ]


def _best(continuations: Sequence[str], logprobs: Sequence[float]) -> str:
    return continuations[max(range(len(logprobs)), key=logprobs.__getitem__)].strip()
