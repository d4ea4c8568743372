"""Extract with K samples per problem: records, pass@k, reach, targets, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ScriptedBackend
from helpers import GSM8K_TEST, read_jsonl

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.evaluation.extraction import extract
from failtune.files import read_json

PROBLEMS = GSM8K_TEST[:4]
GOLD = {p.prompt: p.expected for p in PROBLEMS}
INDEX = {p.id: i for i, p in enumerate(PROBLEMS)}


def wrong(prompt: str) -> str:
    return "I think it is 1 + 1 = 2.\nThe answer is 2."


def sampled(prompt: str, key: str, s: int) -> str:
    """Problem i: samples 0 … i-1 right (each with its own calculation), the rest wrong."""
    gold = int(GOLD[prompt])
    if s < INDEX[key]:
        return f"{s} + {gold - s} = {gold}.\nThe answer is {gold}."
    return f"{gold} + {100 + s} = {gold + 100 + s}.\nThe answer is {gold + 100 + s}."


def run(tmp_path: Path, backend: ScriptedBackend, **options) -> object:
    options = {"samples": 4, "temperature": 0.7, **options}
    return extract(
        None,
        tmp_path / "out",
        model=backend,
        categories="math",
        split="test",
        limit=4,
        show_progress=False,
        **options,
    )


def test_one_record_per_sample_pass_at_k_and_reach(tmp_path: Path) -> None:
    result = run(tmp_path, ScriptedBackend(wrong, sample=sampled))
    rows = read_jsonl(tmp_path / "out" / "results.jsonl")
    greedy = [r for r in rows if "sample" not in r]
    samples = sorted((r["id"], r["sample"], r["correct"]) for r in rows if "sample" in r)
    assert len(greedy) == 4 and not any(r["correct"] for r in greedy)
    assert samples == sorted((p.id, s, s < i) for i, p in enumerate(PROBLEMS) for s in range(4))
    manifest = read_json(tmp_path / "out" / "manifest.json")
    table = manifest["pass_at_k"]["math"]
    # by hand: c = 0, 1, 2, 3 right of n = 4; pass@1 = mean c/n, pass@2 = mean 1 - C(n-c,2)/C(n,2)
    assert table["1"]["estimate"] == pytest.approx((0 + 0.25 + 0.5 + 0.75) / 4)
    assert table["2"]["estimate"] == pytest.approx((0 + (1 - 3 / 6) + (1 - 1 / 6) + 1) / 4)
    assert table["4"]["estimate"] == pytest.approx(0.75)
    assert table["1"]["ci_low"] <= table["1"]["estimate"] <= table["1"]["ci_high"]
    reach = manifest["reach"]["math"]
    assert (reach["solved"], reach["near"], reach["out_of_reach"]) == (0, 3, 1)
    assert reach["examples"]["out_of_reach"] == [PROBLEMS[0].id]
    assert result.reach["math"]["near"] == 3
    # reference targets by default: one solution per failure, whatever the samples
    assert manifest["targets"] == {
        "kind": "reference",
        "reference": 4,
        "self": 0,
        "rationalized": 0,
        "failures": 4,
        "failures_without_target": 0,
    }


def test_self_targets_are_the_distinct_correct_samples_with_provenance(tmp_path: Path) -> None:
    run(tmp_path, ScriptedBackend(wrong, sample=sampled), targets="self", per_problem=2)
    out = tmp_path / "out"
    lines = read_jsonl(out / "math_training_ready.jsonl")
    provenance = read_jsonl(out / "math_training_provenance.jsonl")
    assert all(set(line) == {"instruction", "output"} for line in lines)
    expected = [(p.id, s) for i, p in enumerate(PROBLEMS) for s in range(min(i, 2))]
    assert [(r["id"], r["sample"]) for r in provenance] == expected
    assert {r["source"] for r in provenance} == {"self"}
    for line, origin in zip(lines, provenance, strict=True):
        problem = PROBLEMS[INDEX[origin["id"]]]
        assert line["instruction"] == problem.prompt
        assert line["output"].endswith(f"The answer is {problem.expected}.")
    targets = read_json(out / "manifest.json")["targets"]
    assert (targets["self"], targets["failures_without_target"]) == (5, 1)


def test_same_reasoning_is_kept_once(tmp_path: Path) -> None:
    def same(prompt: str, key: str, s: int) -> str:
        gold = GOLD[prompt]
        return f"{'  ' * s}{gold} = {gold}.\nTHE answer is {gold}."  # only spacing and case

    run(tmp_path, ScriptedBackend(wrong, sample=same), targets="self")
    provenance = read_jsonl(tmp_path / "out" / "math_training_provenance.jsonl")
    assert [r["sample"] for r in provenance] == [0, 0, 0, 0]


def test_rationalized_targets_keep_only_rationales_that_reason(tmp_path: Path) -> None:
    def answer(prompt: str) -> str:
        if "Hint:" not in prompt:
            return wrong(prompt)
        original = prompt.split("\n\nHint:")[0]
        gold = GOLD[original]
        if original == PROBLEMS[0].prompt:
            return f"As given, the answer is {gold}."  # leans on the hint
        if original == PROBLEMS[1].prompt:
            return f"The answer is {gold}."  # repeats it without working
        return f"{gold} - 1 + 1 = {gold}.\nThe answer is {gold}."

    backend = ScriptedBackend(answer)
    result = run(tmp_path, backend, samples=None, temperature=0.0, targets="rationalized")
    out = tmp_path / "out"
    assert sum("Hint: the correct final answer is" in p for p in backend.prompts_seen) == 4
    provenance = read_jsonl(out / "math_training_provenance.jsonl")
    assert [r["id"] for r in provenance] == [PROBLEMS[2].id, PROBLEMS[3].id]
    assert {r["source"] for r in provenance} == {"rationalized"}
    lines = read_jsonl(out / "math_training_ready.jsonl")
    assert [line["instruction"] for line in lines] == [PROBLEMS[2].prompt, PROBLEMS[3].prompt]
    assert result.targets["failures_without_target"] == 2
    assert len(read_jsonl(out / "rationales" / "results.jsonl")) == 4


def test_auto_takes_self_then_rationalized_then_reference(tmp_path: Path) -> None:
    def answer(prompt: str) -> str:
        if "Hint:" in prompt:
            original = prompt.split("\n\nHint:")[0]
            return f"{GOLD[original]} * 1 = {GOLD[original]}.\nThe answer is {GOLD[original]}."
        return wrong(prompt)

    backend = ScriptedBackend(answer, sample=sampled)
    run(tmp_path, backend, targets="auto", per_problem=1)
    provenance = read_jsonl(tmp_path / "out" / "math_training_provenance.jsonl")
    assert [r["source"] for r in provenance] == ["rationalized", "self", "self", "self"]
    # only the problem no sample reached was asked again with the hint
    assert sum("Hint:" in p for p in backend.prompts_seen) == 1


def test_killed_sampling_resumes_to_the_same_records(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    whole.mkdir()
    run(whole, ScriptedBackend(wrong, sample=sampled))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, ScriptedBackend(wrong, sample=sampled, die_after_batches=2))
    again = ScriptedBackend(wrong, sample=sampled)
    run(tmp_path, again)
    assert len(again.samples_seen) == 16 - 8 and not again.prompts_seen  # greedy all kept

    def key(r: dict) -> tuple:
        return r["id"], r.get("sample", -1)

    resumed = sorted(read_jsonl(tmp_path / "out" / "results.jsonl"), key=key)
    assert resumed == sorted(read_jsonl(whole / "out" / "results.jsonl"), key=key)


def test_more_samples_add_to_the_file_other_settings_are_refused(tmp_path: Path) -> None:
    run(tmp_path, ScriptedBackend(wrong, sample=sampled), samples=2)
    source = tmp_path / "out" / "results.source.json"  # as the release with the option wrote
    meta = read_json(source)
    meta["sampling"]["batch_invariant"] = False
    source.write_text(json.dumps(meta))
    more = ScriptedBackend(wrong, sample=sampled)
    run(tmp_path, more, samples=4)
    assert sorted(s for _, s in more.samples_seen) == [2, 2, 2, 2, 3, 3, 3, 3]
    with pytest.raises(FailtuneError, match="temperature differ"):
        run(tmp_path, ScriptedBackend(wrong, sample=sampled), temperature=1.0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--samples", "4"], "--samples 4 needs --temperature above 0"),
        (["--samples", "0", "--temperature", "1"], "--samples must be at least 1"),
        (["--samples", "4", "--temperature", "-0.5"], "--temperature must be at least 0"),
        (["--targets", "self"], "--targets self trains on the model's own correct samples"),
        (["--targets", "best"], "argument --targets: invalid choice: 'best'"),
    ],
)
def test_bad_sampling_input_is_one_sentence_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    model = tmp_path / "no-such-model"  # loading it would fail with another message
    args = ["extract", "--model_path", str(model), "--output_dir", str(tmp_path / "o"), *flags]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own refusals exit with 2
        code = e.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_rl_datasets_hold_the_failures_within_reach(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    run(tmp_path, ScriptedBackend(wrong, sample=sampled), rl_datasets=True)
    out = tmp_path / "out"
    near = [p.id for p in PROBLEMS[1:]]  # problem 0: no sample right
    assert [r["id"] for r in read_jsonl(out / "math_rl_prompts.jsonl")] == near
    verl = pq.read_table(out / "math_verl.parquet").to_pylist()
    assert [r["extra_info"]["id"] for r in verl] == near
    assert verl[0]["reward_model"]["ground_truth"] == PROBLEMS[1].expected
