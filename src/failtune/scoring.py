"""Answer a task's problems with a backend: generate text, or score choices by log-likelihood.

Tasks that ask for log-likelihood (MMLU with mode="loglikelihood") get, per problem, the
continuation with the highest log-probability as their completion (" B" → "B"), so grading,
records and statistics stay the same for both modes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from failtune.backends import Backend, Generation, GenParams
from failtune.errors import FailtuneError
from failtune.tasks import Problem, Task


def answer_batches(
    backend: Backend, task: Task, problems: Sequence[Problem], params: GenParams
) -> Iterator[list[tuple[int, Generation]]]:
    """Yield finished batches as (index into `problems`, generation), in any order."""
    requests = [task.choice_requests(p) for p in problems]
    if not requests or requests[0] is None:
        yield from backend.stream([p.prompt for p in problems], params)
        return
    score = getattr(backend, "loglikelihood", None)
    if score is None:
        raise FailtuneError(
            f"the {backend.info.backend} backend cannot score log-likelihoods; "
            f"use the hf backend or generative mode for {task.name}"
        )
    for batch in score([r for r in requests if r is not None]):
        yield [
            (i, Generation(_best(requests[i][1], logprobs), "loglikelihood", 0))  # type: ignore[index]
            for i, logprobs in batch
        ]


def _best(continuations: Sequence[str], logprobs: Sequence[float]) -> str:
    return continuations[max(range(len(logprobs)), key=logprobs.__getitem__)].strip()
