"""MMLU log-likelihood mode: the HF backend's letter scores equal a direct computation."""

from __future__ import annotations

import pytest

from failtune.backends import GenParams
from failtune.errors import FailtuneError
from failtune.evaluation.answer import answer_batches
from failtune.tasks.mmlu import MMLU


@pytest.mark.model
def test_letter_scores_match_direct_logits_on_the_dev_set(smollm2_backend) -> None:
    import torch

    task = MMLU(mode="loglikelihood")
    problems = task.load("dev")
    assert len(problems) == 285
    # A spread of the dev set, batched (every subject's questions are alike in length): the
    # first six, whose letters the extract path must give, and every third.
    problems = [p for i, p in enumerate(problems) if i < 6 or i % 3 == 0]
    requests = [task.choice_requests(p) for p in problems]
    scores = {i: s for batch in smollm2_backend.loglikelihood(requests) for i, s in batch}
    assert sorted(scores) == list(range(len(problems)))
    tok, model = smollm2_backend.tokenizer, smollm2_backend.model
    letter_ids = []
    for letter in "ABCD":  # each " X" is one token for this tokenizer
        (token,) = tok(f" {letter}", add_special_tokens=False).input_ids
        letter_ids.append(token)
    worst, picks = 0.0, []
    # One by one: the first six and every third of the rest.
    checked = sorted({*range(6), *range(6, len(requests), 3)})
    with torch.inference_mode():
        for i in checked:
            context, continuations = requests[i]
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


@pytest.mark.model
def test_multi_token_continuations_match_direct_logits_and_only_needed_logits_are_made(
    smollm2_backend,
) -> None:
    """Continuations of several tokens, batched with contexts of different lengths (left
    padding), score as one sequence alone does; the model returns logits for the scored
    positions only, not batch × length × vocabulary (which ran a 24 GB machine out of memory
    on MMLU's long contexts)."""
    import torch

    tok, model = smollm2_backend.tokenizer, smollm2_backend.model
    requests = [
        ("The capital of France is", [" Paris", " the city of London", " a large river"]),
        ("Two plus two equals", [" four", " 4, as everyone knows"]),
        ("A" + " very" * 40 + " long context ends with", [" this", " that word here"]),
    ]
    shapes: list[tuple[int, ...]] = []
    hook = model.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.logits.shape)))
    try:
        scores = {i: s for batch in smollm2_backend.loglikelihood(requests) for i, s in batch}
    finally:
        hook.remove()
    worst = 0.0
    with torch.inference_mode():
        for i, (context, continuations) in enumerate(requests):
            ctx = tok(context).input_ids
            for c, cont in enumerate(continuations):
                whole = tok(context + cont).input_ids
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
                direct = sum(float(logprobs[k - 1, whole[k]]) for k in range(len(ctx), len(whole)))
                worst = max(worst, abs(direct - scores[i][c]))
    assert worst < 1e-3
    most_targets = max(
        len(tok(cx + c).input_ids) - len(tok(cx).input_ids) for cx, cs in requests for c in cs
    )
    assert shapes and all(s[1] <= most_targets for s in shapes), shapes


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_extract_and_validate_refuse_scoring_on_such_backends_before_any_model_loads(
    tmp_path, backend
) -> None:
    """Not after the generation of every other category: the paths name no model at all, so a
    load would fail with another error."""
    from failtune.evaluation.extraction import extract
    from failtune.validation.paired import validate

    mmlu = {"mmlu": {"mode": "loglikelihood"}}
    refused = f"the {backend} backend cannot score log-likelihoods"
    with pytest.raises(FailtuneError, match=refused):
        validate(
            "/no/such/model",
            "/no/such/adapter",
            categories="math,knowledge",
            backend=backend,
            task_options=mmlu,
            output_dir=str(tmp_path / "validate"),
        )
    with pytest.raises(FailtuneError, match=refused):
        extract(
            "/no/such/model",
            tmp_path / "extract",
            categories="knowledge",
            backend=backend,
            task_options=mmlu,
        )
