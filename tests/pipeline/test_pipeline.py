"""`failtune run`: configs, step skipping by input hash, resume, rounds; on a tiny random model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import arith_training_file, tiny_config
from safetensors.torch import load_file

from failtune.backends import GenParams
from failtune.cli import main
from failtune.demo import demo_config
from failtune.errors import FailtuneError
from failtune.pipeline.config import load_config, parse_override, resolve_config
from failtune.pipeline.plan import STATE
from failtune.tasks.arith import Arith
from failtune.training.sft import last_complete_checkpoint, train

ROOT = Path(__file__).resolve().parents[2]


def test_demo_toml_is_the_demo() -> None:
    from_file = resolve_config(load_config(ROOT / "examples" / "demo.toml"))
    assert from_file == resolve_config(demo_config())


def test_seed_plan_config_reads() -> None:
    config = resolve_config(load_config(ROOT / "examples" / "seed-plan.toml"))
    assert config.run.model == "Qwen/Qwen2.5-7B-Instruct"
    assert config.train.num_train_epochs == 2.0
    assert config.validate.gates == ["math.ties>=60%", "math.wins>=16%", "math.losses<20%"]


def test_yaml_config_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nextract:\n  categories: arith\n  limit: 5\ntrain:\n  lora_r: 4\n")
    config = resolve_config(
        load_config(path),
        dict([parse_override("train.lora_r=8"), ("rounds", 3)]),
    )
    assert config.train.lora_r == 8 and config.run.rounds == 3 and config.run.seed == 0
    assert config.validate.categories == "arith"  # defaults to what was extracted
    assert config.extract.limit == 5 and config.train.learning_rate == 2e-4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "m"\n[train]\nlearning_rte = 1\n', "learning_rte"),
        ('model = "m"\nround = 2\n', "unknown config key 'round'"),
        ("[train]\n", "needs a model"),
        ('model = "m"\nrounds = 0\n', "rounds must be"),
        ("model = \n", "not a valid config"),
    ],
)
def test_config_mistakes_are_one_sentence(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FailtuneError, match=message):
        resolve_config(load_config(path))


def test_resumed_generation_rebuilds_the_same_batches(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers depend on the rows decoded together, so a resume repeats the uninterrupted
    schedule chunk by chunk: a chunk all done is not decoded again, a chunk partly done is
    decoded whole, and only the prompts not done are yielded, each once, with the same answer."""
    from failtune.backends import hf

    calls: list[int] = []  # prompts per decode call: one call per scheduled chunk
    decode = hf.decode

    def counted(model: Any, prompts: Any, **kw: Any) -> Any:
        calls.append(len(prompts))
        return decode(model, prompts, **kw)

    monkeypatch.setattr(hf, "decode", counted)
    backend = hf.HFBackend.load(str(tiny_model_dir), batch_size=2, device="cpu")
    prompts = [p.prompt for p in Arith(size=40).load("train")]
    params = GenParams(max_new_tokens=6)
    full, chunk_of = {}, {}
    for batch in backend.stream(prompts, params):
        for i, gen in batch:
            full[i], chunk_of[i] = gen, len(calls) - 1
    whole = list(calls)
    assert len(whole) >= 3 and sorted(full) == list(range(len(prompts)))
    first, second = (sorted(i for i, c in chunk_of.items() if c == n) for n in (0, 1))
    done = set(first) | set(second[::2])

    calls.clear()
    yielded = [(i, gen) for batch in backend.stream(prompts, params, skip=done) for i, gen in batch]
    assert calls == whole[1:]  # the first chunk, all done, is not decoded again
    assert sorted(i for i, _ in yielded) == sorted(set(range(len(prompts))) - done)
    assert all(gen == full[i] for i, gen in yielded)


def test_training_resumed_from_a_checkpoint_ends_with_the_same_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = arith_training_file(tmp_path / "arith_training_ready.jsonl")
    options = {"num_train_epochs": 2, "batch_size": 4, "save_steps": 1, "show_progress": False}
    train(str(tiny_model_dir), data, tmp_path / "whole", **options)
    expected = load_file(tmp_path / "whole" / "adapter_model.safetensors")

    # The same run killed while saving its last checkpoint, then restarted.
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "whole", partial)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (partial / name).unlink()
    steps = sorted(int(p.name[11:]) for p in (partial / "checkpoints").glob("checkpoint-*"))
    newest = partial / "checkpoints" / f"checkpoint-{steps[-1]}"
    (newest / "trainer_state.json").write_text('{"half')  # killed while saving
    assert last_complete_checkpoint(partial / "checkpoints") == (
        partial / "checkpoints" / f"checkpoint-{steps[-2]}"
    )
    assert not newest.exists()
    train(str(tiny_model_dir), data, partial, **options)
    resumed = load_file(partial / "adapter_model.safetensors")
    assert resumed.keys() == expected.keys()
    for key, tensor in expected.items():
        assert (resumed[key] == tensor).all(), key


def test_run_skips_unchanged_steps_and_redoes_changed_ones(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    assert main(["run", str(config), "--no-progress"]) == 0
    log = capsys.readouterr().err  # without bars, a log still says where the run is
    assert "round-1/train: started" in log and "round-1/validate: done in" in log
    state = json.loads((run / STATE).read_text())
    names = ["round-1/extract", "baseline", "round-1/train", "round-1/validate"]
    assert list(state["steps"]) == names
    assert all(state["steps"][n]["status"] == "done" for n in names)
    # A random model answers nothing right: no gain, so round 2 is not started.
    assert [r["round"] for r in state["rounds"]] == [1]
    assert state["rounds"][0]["next"] == "stop: the gain over the previous round is not significant"
    extract = state["steps"]["round-1/extract"]
    assert extract["problems"] == 6 and extract["prompt_tokens"] > 6 * 20
    assert extract["completion_tokens"] == 6 * 8
    for name in ("report.md", "report.html", "wtl.png", "accuracy.png", "reasons.png"):
        assert (run / "report" / name).is_file(), name
    # Validation knows what the round trained: arith is marked, and the overlap check ran.
    validation = json.loads((run / "round-1" / "validate" / "validation.json").read_text())
    assert validation["categories"]["arith"]["trained"] is True
    assert validation["trained_categories"] == ["arith"]
    assert validation["overlap"]["categories"]["arith"]["exact"] == 0
    assert "| trained |" in (run / "report" / "report.md").read_text()

    assert main(["run", str(config), "--no-progress"]) == 0
    again = json.loads((run / STATE).read_text())
    assert [again["steps"][n]["finished"] for n in names] == [
        state["steps"][n]["finished"] for n in names
    ]

    assert main(["run", str(config), "--no-progress", "--set", "train.lora_r=4"]) == 0
    changed = json.loads((run / STATE).read_text())
    for n in ("round-1/extract", "baseline"):
        assert changed["steps"][n]["finished"] == state["steps"][n]["finished"]
    assert changed["steps"]["round-1/train"]["hash"] != state["steps"]["round-1/train"]["hash"]
    adapter = json.loads((run / "round-1" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4

    # The engine is no input of any step: another one keeps every finished step.
    assert (
        main(["run", str(config), "--no-progress", "--set", "train.lora_r=4", "--backend", "auto"])
        == 0
    )
    switched = json.loads((run / STATE).read_text())
    for n in names:
        assert switched["steps"][n]["hash"] == changed["steps"][n]["hash"], n
        assert switched["steps"][n]["finished"] == changed["steps"][n]["finished"], n
    assert switched["config"]["backend"] == "auto"
    for n in ("round-1/extract", "baseline", "round-1/validate"):
        assert switched["steps"][n]["engine"]["backend"] == "hf", n


def test_run_refuses_a_training_file_holding_a_test_prompt(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `failtune validate` does: validating on a prompt the model was trained on measures
    memorisation, so the run stops with one sentence (here the replay file holds one)."""
    test_prompt = Arith(size=20, seed=0).load("test")[0].prompt
    replay = tmp_path / "replay.jsonl"
    replay.write_text(json.dumps({"instruction": test_prompt, "output": "The answer is 1."}) + "\n")
    config = tiny_config(tmp_path, tiny_model_dir)
    config.write_text(
        config.read_text()
        .replace("rounds = 2", "rounds = 1")
        .replace("[train]\n", f'[train]\nreplay = "{replay}"\nreplay_ratio = 0.5\n')
    )
    assert main(["run", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("failtune: error: 1 evaluation problems (e.g. arith/test/")
    assert "exactly training instructions" in err[-1]
    state = json.loads((tmp_path / "run" / STATE).read_text())
    assert state["steps"]["round-1/validate"]["status"] == "running"


def test_targets_step_keeps_the_samples_when_only_the_targets_change(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """With targets other than the reference, a targets step makes the training files from the
    extract's records; changing only the targets redoes that step, not the sampling."""
    config = tiny_config(tmp_path, tiny_model_dir)
    config.write_text(
        config.read_text()
        .replace("rounds = 2", "rounds = 1")
        .replace("[extract]\n", '[extract]\nsamples = 2\ntemperature = 1.0\ntargets = "auto"\n')
        .replace("[validate]\n", "[validate]\nsamples = 2\ntemperature = 1.0\n")
    )
    run = tmp_path / "run"
    assert main(["run", str(config), "--no-progress"]) == 0
    state = json.loads((run / STATE).read_text())
    names = ["round-1/extract", "round-1/targets", "baseline", "round-1/train", "round-1/validate"]
    assert list(state["steps"]) == names
    rows = [json.loads(line) for line in (run / "round-1/extract/results.jsonl").open()]
    assert sorted(r.get("sample", -1) for r in rows) == [-1] * 6 + [0] * 6 + [1] * 6
    # a random model reaches nothing: auto falls back to the reference solution of each failure
    targets = state["steps"]["round-1/targets"]["targets"]
    assert targets["reference"] == 6 - targets["self"] - targets["rationalized"]
    provenance = run / "round-1/targets/arith_training_provenance.jsonl"
    assert len(provenance.read_text().splitlines()) == 6
    adapter = json.loads((run / "round-1/adapter/adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    validation = json.loads((run / "round-1/validate/validation.json").read_text())
    assert validation["categories"]["arith"]["sampled"]["success_rate"]["n"] == 6
    baseline_rows = (run / "baseline/results.jsonl").read_text().splitlines()
    assert len(baseline_rows) == 6 * 3  # greedy and two samples, reused by validation
    report = (run / "report/report.md").read_text()
    assert "## Reach of the failures" in report and "## Sampled answers" in report
    assert "| arith | 6 | 0 | 0 | 6 |" in report  # n, solved, near, out of reach

    assert main(["run", str(config), "--no-progress", "--set", "extract.per_problem=2"]) == 0
    again = json.loads((run / STATE).read_text())
    assert (
        again["steps"]["round-1/extract"]["finished"]
        == state["steps"]["round-1/extract"]["finished"]
    )
    assert (
        again["steps"]["round-1/targets"]["finished"]
        != state["steps"]["round-1/targets"]["finished"]
    )


def test_hashes_of_runs_without_sampling_are_those_of_earlier_releases() -> None:
    from failtune.pipeline.steps import _hashed

    table = {"categories": "arith", "samples": None, "temperature": 0.0, "targets": "reference"}
    assert _hashed(table) == {"categories": "arith"}
    assert _hashed({**table, "samples": 4})["samples"] == 4


def test_a_run_trains_with_grpo_when_asked(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, tiny_model_dir)
    config.write_text(
        config.read_text()
        .replace("rounds = 2", "rounds = 1")
        .replace("[train]\n", '[train]\nmethod = "grpo"\n')
        + "[grpo]\nmax_steps = 1\nnum_generations = 2\nmax_completion_length = 8\nbatch_size = 1\n"
    )
    assert main(["run", str(config), "--no-progress"]) == 0
    state = json.loads((tmp_path / "run" / STATE).read_text())
    train = state["steps"]["round-1/train"]
    assert train["method"] == "grpo" and train["steps"] == 1 and train["prompts"] == 6
    assert (tmp_path / "run/round-1/validate/validation.json").is_file()
    assert (tmp_path / "run/report/reward.png").is_file()
    assert "GRPO mean reward per step" in (tmp_path / "run/report/report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("rounds = 2\n", None),  # GRPO merges its adapter when another round follows
        ('rounds = 2\n[train]\nmethod = ["sft", "grpo", "grpo"]\n', "3 given for rounds = 2"),
        ('backend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n', "a server cannot serve"),
    ],
)
def test_grpo_run_mistakes_are_one_sentence(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "run.toml"
    train = "" if "[train]" in extra else '[train]\nmethod = "grpo"\n'
    path.write_text(f'model = "m"\n{extra}{train}')
    if message is None:
        resolve_config(load_config(path))
        return
    with pytest.raises(FailtuneError, match=re.escape(message)):
        resolve_config(load_config(path))


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ("[extract]\nsamples = 4\n", "[extract] samples 4 needs temperature above 0"),
        ("[validate]\nsamples = 4\n", "[validate] samples 4 needs temperature above 0"),
        ('[extract]\ntargets = "self"\n', "[extract] targets self trains on the model's own"),
    ],
)
def test_sampling_mistakes_in_a_run_config_are_one_sentence(
    tmp_path: Path, tables: str, message: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f'model = "m"\n{tables}')
    with pytest.raises(FailtuneError, match=re.escape(message)):
        resolve_config(load_config(path))
