"""Answer a task's problems with a backend: generate text, or score choices by log-likelihood.

Tasks that ask for log-likelihood (MMLU with mode="loglikelihood") get, per problem, the
continuation with the highest log-probability as their completion (" B" → "B"), so grading,
records and statistics stay the same for both modes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from failtune.backends import Backend, Generation, GenParams, stream_remaining
from failtune.errors import FailtuneError
from failtune.tasks import Problem, Task


def answer_batches(
    backend: Backend,
    task: Task,
    problems: Sequence[Problem],
    params: GenParams,
    done: Collection[int] = (),
) -> Iterator[list[tuple[int, Generation]]]:
    """Yield finished batches as (index into `problems`, generation) for those not in `done`."""
    requests = [task.choice_requests(p) for p in problems]
    if not requests or requests[0] is None:
        yield from stream_remaining(backend, [p.prompt for p in problems], done, params)
        return
    score = getattr(backend, "loglikelihood", None)
    if score is None:
        raise FailtuneError(
            f"the {backend.info.backend} backend cannot score log-likelihoods; "
            f"use the hf backend or generative mode for {task.name}"
        )
    todo = [i for i in range(len(problems)) if i not in done]
    for batch in score([requests[i] for i in todo]):
        yield [
            (todo[j], Generation(_best(requests[todo[j]][1], logprobs), "loglikelihood", 0))  # type: ignore[index]
            for j, logprobs in batch
        ]


def _best(continuations: Sequence[str], logprobs: Sequence[float]) -> str:
    return continuations[max(range(len(logprobs)), key=logprobs.__getitem__)].strip()
