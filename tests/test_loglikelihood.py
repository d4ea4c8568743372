"""MMLU log-likelihood mode: the HF backend's letter scores equal a direct computation."""

from __future__ import annotations

import pytest

from failtune.backends import GenParams
from failtune.errors import FailtuneError
from failtune.scoring import answer_batches
from failtune.tasks.mmlu import MMLU


@pytest.mark.model
def test_letter_scores_match_direct_logits_on_the_dev_set(smollm2_backend) -> None:
    import torch

    task = MMLU(mode="loglikelihood")
    problems = task.load("dev")
    assert len(problems) == 285
    requests = [task.choice_requests(p) for p in problems]
    scores = {i: s for batch in smollm2_backend.loglikelihood(requests) for i, s in batch}
    assert sorted(scores) == list(range(285))
    tok, model = smollm2_backend.tokenizer, smollm2_backend.model
    letter_ids = []
    for letter in "ABCD":  # each " X" is one token for this tokenizer
        (token,) = tok(f" {letter}", add_special_tokens=False).input_ids
        letter_ids.append(token)
    worst, picks = 0.0, []
    with torch.inference_mode():
        for i, (context, continuations) in enumerate(requests):
            assert continuations == [" A", " B", " C", " D"]
            logits = model(torch.tensor([tok(context).input_ids])).logits[0, -1].float()
            direct = torch.log_softmax(logits, dim=-1)[letter_ids].tolist()
            worst = max(worst, max(abs(a - b) for a, b in zip(direct, scores[i], strict=True)))
            assert direct.index(max(direct)) == scores[i].index(max(scores[i])), problems[i].id
            picks.append("ABCD"[direct.index(max(direct))])
    assert worst < 1e-3  # batched and padded vs one by one: float noise only
    # Through the same path extract uses: the completion is the best letter, graded as usual.
    few = problems[:6]
    gens = {i: g for b in answer_batches(smollm2_backend, task, few, GenParams()) for i, g in b}
    assert [gens[i].text for i in range(6)] == picks[:6]
    assert all(g.finish_reason == "loglikelihood" for g in gens.values())


def test_backends_without_loglikelihood_give_a_clear_error(scripted) -> None:
    task = MMLU(mode="loglikelihood")
    with pytest.raises(FailtuneError, match="cannot score log-likelihoods"):
        next(answer_batches(scripted(lambda p: "A"), task, task.load("dev")[:2], GenParams()))
    with pytest.raises(FailtuneError, match="unknown MMLU mode"):
        MMLU(mode="sample")
