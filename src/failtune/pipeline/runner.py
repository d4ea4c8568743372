"""`failtune run CONFIG`: extract → train → validate from one config file, resumable, in rounds.

Each step records a hash of its inputs (its config section, the sha256 of its input files, the
model) in run_state.json. A rerun skips a step whose hash is unchanged and whose outputs exist,
resumes one that was interrupted (the steps themselves resume: graded ids, training
checkpoints), and redoes one whose inputs changed. Round r > 1 extracts on the previous round's
model and trains again; the run stops early when a gate fails or the gain over the previous
round is not significant. What each step does, and which engine it opens, is in `steps`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.backends import Backend
from failtune.config.options import GenerationOptions
from failtune.console import live_view, note
from failtune.evaluation.records import RESULTS, load_problems
from failtune.files import atomic_write_json, output_folder, read_json, read_jsonl, sha256_file
from failtune.manifest import now
from failtune.pipeline import steps, sweep
from failtune.training.sft import tensorboard_dir
from failtune.training.tracking import track_round, without_trackers
from failtune.validation.paired import VALIDATION
from failtune.validation.stats import compare

STATE = "run_state.json"
BASELINE = "baseline"  # the base model graded once on the held-out problems, shared by rounds


def input_hash(**inputs: Any) -> str:
    """A stable digest of a step's inputs (JSON with sorted keys)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_hashes(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(paths)}


@dataclass
class RunResult:
    output_dir: Path
    state: dict[str, Any]
    final_validation: Path | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        rounds = self.state.get("rounds", [])
        return bool(rounds) and rounds[-1]["gates_passed"]


class Run:
    """The state of one run folder; each step goes through `step` for skip/resume bookkeeping."""

    def __init__(self, config: dict[str, Any], show_progress: bool) -> None:
        self.config, self.show_progress = config, show_progress
        self.dir = output_folder(config["output_dir"])
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / STATE
        self.state: dict[str, Any] = read_json(path) if path.exists() else {}
        self.state.setdefault("steps", {})
        self.state["config"] = config
        self.state["rounds"] = []
        self.backends: dict[str, Backend] = {}  # the opened model, reused between steps
        self.served: str | None = None  # backend openai: the base model's name on the server
        self.view: Any = None

    def save(self) -> None:
        atomic_write_json(self.dir / STATE, self.state)

    def step(
        self,
        name: str,
        inputs: dict[str, Any],
        outputs: list[Path],
        work_dirs: list[Path],
        work: Callable[..., dict[str, Any]],
        *args: Any,
    ) -> dict[str, Any]:
        """Run `work(*args)` unless its recorded input hash matches and `outputs` exist."""
        digest = input_hash(**inputs)
        record = self.state["steps"].get(name)
        if (
            record
            and record["status"] == "done"
            and record["hash"] == digest
            and all(p.exists() for p in outputs)
        ):
            note(f"{name}: inputs unchanged and outputs present, skipped")
            self._advance()
            return record
        if record and record["hash"] != digest:
            note(f"{name}: inputs changed since the last run, starting this step over")
            for d in work_dirs:
                shutil.rmtree(d, ignore_errors=True)
        elif record:
            note(f"{name}: resuming")
        self.state["steps"][name] = {"hash": digest, "status": "running", "started": now()}
        self.save()
        if not self.show_progress:  # logs still show where a long run is
            note(f"{name}: started")
        t0 = time.perf_counter()
        info = work(*args)
        record = {
            "hash": digest,
            "status": "done",
            "started": self.state["steps"][name]["started"],
            "finished": now(),
            "seconds": round(time.perf_counter() - t0, 2),
            **info,
        }
        self.state["steps"][name] = record
        self.save()
        if not self.show_progress:
            note(f"{name}: done in {record['seconds']:.0f} s")
        self._advance()
        return record

    def _advance(self) -> None:
        if self.view is not None:
            self.view.advance(self.view_task)

    def backend(self, model: str, o: GenerationOptions) -> Backend:
        """The opened model, kept while steps use it: extract and baseline share the weights
        (or the vLLM engine). Called only inside a step that has work to do, so a fully resumed
        run loads nothing."""
        from failtune.backends.hf import HFBackend

        if model not in self.backends:
            self.backends.clear()  # the previous round's model is not used again
            self.backends[model] = steps.open_backend(model, o, self.served)
        opened = self.backends[model]
        if isinstance(opened, HFBackend):  # transformers batches statically; vLLM by itself
            opened.batch_size = o.batch_size
        return opened

    def release(self, before: str | None = None) -> None:
        """Free the generation engine (training needs the memory); record what vLLM gave back."""
        from failtune.backends.vllm import close_engine

        self.backends.clear()
        freed = close_engine()
        if freed is None or before is None:
            return
        self.state.setdefault("engine_closed", {})[before] = freed
        self.save()
        gpu = (
            f", CUDA allocated {freed['cuda_allocated_mib_before']:.0f} → "
            f"{freed['cuda_allocated_mib_after']:.0f} MiB"
            if "cuda_allocated_mib_before" in freed
            else ""
        )
        note(
            f"vLLM engine closed before {before}: process RSS {freed['rss_mib_before']:.0f} → "
            f"{freed['rss_mib_after']:.0f} MiB{gpu}"
        )


def run_pipeline(config: dict[str, Any], *, show_progress: bool = True) -> RunResult:
    """Run (or resume) every round of `config`; returns the state written to run_state.json."""
    served = steps.served_base(config)
    run = Run(config, show_progress)
    run.served = served
    rounds = config["rounds"]
    try:
        with live_view(show_progress) as view:
            run.view = view
            # Round 1 has one step more (grading the base on the held-out problems); a sweep
            # trains once per learning rate and adds the step that chooses.
            rates = sweep.candidates(config["train"])
            per_round = 3 if rates is None else 3 + len(rates)
            run.view_task = view.add_task("run", total=per_round * rounds + 1, info="")
            final = _rounds(run)
    finally:
        run.release()
    run.state["finished"] = now()
    run.save()
    return RunResult(run.dir, run.state, final, _seconds(run.state))


def _seconds(state: Mapping[str, Any]) -> dict[str, float]:
    return {name: rec.get("seconds", 0.0) for name, rec in state["steps"].items()}


@dataclass
class Round:
    """Where round r reads and writes: its model (the base, or the last round's merged model)."""

    r: int
    dir: Path
    model: str
    upstream: str | None  # the train step that made `model`, for rounds after the first
    last: bool
    extract_dir: Path = field(init=False)
    adapter: Path = field(init=False)
    validate_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.extract_dir, self.adapter, self.validate_dir = (
            self.dir / name for name in ("extract", "adapter", "validate")
        )


def _rounds(run: Run) -> Path | None:
    """Extract → (baseline, once) → train → validate, round after round, until one stops.

    With a learning-rate sweep the baseline waits until round 1's choice is made, so nothing is
    generated on the held-out problems before it.
    """
    cfg = run.config
    model, upstream = cfg["model"], None
    previous: Path | None = None  # the previous round's candidate results (None: the base)
    final: Path | None = None
    sweeping = sweep.candidates(cfg["train"]) is not None
    for r in range(1, cfg["rounds"] + 1):
        rnd = Round(r, run.dir / f"round-{r}", model, upstream, last=r == cfg["rounds"])
        run.view.update(run.view_task, description=f"run · round {r}/{cfg['rounds']}")
        _extract_round(run, rnd)
        if r == 1 and not sweeping:
            _baseline(run)
        training: dict[str, Any] = {}
        made_by = _train_round(run, rnd, training)
        if r == 1 and sweeping:
            _baseline(run)
        final = _validate_round(run, rnd, training)
        if sweeping:
            _record_sweep(rnd)
        if not _record_round(run, rnd, previous):
            break
        previous = rnd.validate_dir / "candidate" / RESULTS
        model = str(rnd.adapter / "merged")
        upstream = run.state["steps"][made_by]["hash"]
    return final


def _extract_round(run: Run, rnd: Round) -> None:
    ex, tasks = run.config["extract"], run.config["tasks"]
    problems = load_problems(ex["categories"], ex["split"], ex["limit"], tasks)
    data_files = sorted({f for t, p in problems for f in t.data_files(p.split)})
    run.step(
        f"round-{rnd.r}/extract",
        {
            "section": ex,
            "tasks": tasks,
            "model": rnd.model,
            "upstream": rnd.upstream,
            "data": _file_hashes(data_files),
        },
        [rnd.extract_dir / RESULTS, rnd.extract_dir / "manifest.json"],
        [rnd.extract_dir],
        steps.extract_step,
        run,
        rnd.model,
        rnd.extract_dir,
    )


def _baseline(run: Run) -> None:
    """The base model graded once on the held-out problems; every round compares with it."""
    val, tasks, base_model = run.config["validate"], run.config["tasks"], run.config["model"]
    held_out = load_problems(val["categories"], val["split"], val["limit"], tasks)
    baseline_dir = run.dir / BASELINE
    run.step(
        "baseline",
        {"section": _generation_keys(val), "tasks": tasks, "model": base_model},
        [baseline_dir / RESULTS],
        [baseline_dir],
        steps.grade_step,
        run,
        held_out,
        base_model,
        baseline_dir,
        "base",
    )


def _train_round(run: Run, rnd: Round, training: dict[str, Any]) -> str:
    """Train on this round's failures; merged into a plain model when another round follows.

    A sweep trains one adapter per learning rate, each its own resumable step, then chooses
    one on the selection problems. Returns the name of the step that made `rnd.adapter`.
    """
    rates = sweep.candidates(run.config["train"])
    if rates is None:
        _train_one(run, rnd, f"round-{rnd.r}/train", rnd.adapter, {}, training)
        return f"round-{rnd.r}/train"
    trained = {}
    for lr in rates:
        name = sweep.lr_name(lr)
        folder = rnd.dir / "sweep" / name
        # Each candidate's model stays unloaded: the choice and validation open adapters anew.
        _train_one(run, rnd, f"round-{rnd.r}/train-{name}", folder, {"learning_rate": lr}, {})
        trained[lr] = folder
    return _select_round(run, rnd, trained)


def _train_one(
    run: Run,
    rnd: Round,
    name: str,
    adapter: Path,
    overrides: dict[str, Any],
    training: dict[str, Any],
) -> None:
    merge = not rnd.last
    outputs = [adapter / "adapter_config.json", adapter / "adapter_model.safetensors"]
    if merge:
        outputs.append(adapter / "merged" / "config.json")
    # selection_size is the select step's input, not training's: a run that trains once hashes
    # what it always did.
    section = {k: v for k, v in run.config["train"].items() if k != "selection_size"}
    run.step(
        name,
        {
            "section": without_trackers({**section, **overrides}),
            "model": rnd.model,
            "seed": run.config["seed"],
            "merge": merge,
            "data": _file_hashes(sorted(rnd.extract_dir.glob("*_training_ready.jsonl"))),
        },
        outputs,
        [adapter],
        steps.train_step,
        run,
        rnd.model,
        rnd.extract_dir,
        adapter,
        merge,
        training,
        overrides,
    )


def _select_round(run: Run, rnd: Round, trained: dict[float, Path]) -> str:
    """Grade the round's model and every candidate on the selection problems; the chosen
    adapter is copied to round-N/adapter, where validation and the next round find it."""
    name = f"round-{rnd.r}/select"
    select_dir = rnd.dir / "select"
    val = run.config["validate"]
    run.step(
        name,
        {
            "extract": {k: run.config["extract"][k] for k in ("categories", "split")},
            "selection_size": run.config["train"]["selection_size"],
            "generation": {k: val[k] for k in ("batch_size", "max_new_tokens", "stop")},
            "tasks": run.config["tasks"],
            "model": rnd.model,
            "candidates": {
                str(lr): sha256_file(d / "adapter_model.safetensors") for lr, d in trained.items()
            },
        },
        [select_dir / sweep.SELECTION, rnd.adapter / "adapter_model.safetensors"],
        [select_dir, rnd.adapter],
        steps.select_step,
        run,
        rnd,
        trained,
        select_dir,
    )
    return name


def _validate_round(run: Run, rnd: Round, training: dict[str, Any]) -> Path:
    baseline_dir = run.dir / BASELINE
    run.step(
        f"round-{rnd.r}/validate",
        {
            "section": run.config["validate"],
            "tasks": run.config["tasks"],
            "base": sha256_file(baseline_dir / RESULTS),
            "adapter": sha256_file(rnd.adapter / "adapter_model.safetensors"),
        },
        [rnd.validate_dir / VALIDATION],
        [rnd.validate_dir],
        steps.validate_step,
        run,
        run.config["model"],
        functools.partial(steps.candidate_backend, run, rnd.adapter, training),
        baseline_dir,
        rnd.validate_dir,
    )
    return rnd.validate_dir / VALIDATION


def _record_round(run: Run, rnd: Round, previous: Path | None) -> bool:
    """Record the round's outcome in the run state; whether the next round should start."""
    val = run.config["validate"]
    outcome = read_json(rnd.validate_dir / VALIDATION)
    track_round(run.config, run.state["steps"], rnd.r, tensorboard_dir(rnd.adapter), outcome)
    decision = _decide(
        rnd.validate_dir / "candidate" / RESULTS, previous or run.dir / BASELINE / RESULTS, val
    )
    gates_passed = all(g["passed"] for g in outcome["gates"])
    go_on = gates_passed and decision["significant"] and not rnd.last
    if rnd.last and gates_passed:
        reason = "last round"
    elif not gates_passed:
        reason = "a gate failed"
    elif not decision["significant"]:
        reason = "the gain over the previous round is not significant"
    else:
        reason = "continuing"
    run.state["rounds"].append(
        {
            "round": rnd.r,
            "validation": str((rnd.validate_dir / VALIDATION).relative_to(run.dir)),
            "gates_passed": gates_passed,
            "vs_previous": decision,
            "next": "continue" if go_on else f"stop: {reason}",
        }
    )
    run.save()
    if not go_on and not rnd.last:
        note(f"round {rnd.r}: stopping early, {reason}")
    return go_on


def _generation_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that change what a model generates (gates do not)."""
    keys = ("categories", "split", "limit", "batch_size", "max_new_tokens", "stop")
    return {k: section[k] for k in keys}


def _record_sweep(rnd: Round) -> None:
    """validation.json says which learning rate was chosen, how, and among which."""
    path = rnd.validate_dir / VALIDATION
    body = read_json(path)
    record = read_json(rnd.dir / "select" / sweep.SELECTION)
    if body.get("learning_rate_sweep") != record:
        atomic_write_json(path, {**body, "learning_rate_sweep": record})


def _decide(candidate: Path, previous: Path, val: Mapping[str, Any]) -> dict[str, Any]:
    """Is this round's candidate significantly better than the previous round's model?"""
    cand = {r["id"]: r["correct"] for r in read_jsonl(candidate)}
    prev = {r["id"]: r["correct"] for r in read_jsonl(previous)}
    ids = [i for i in cand if i in prev]
    table = compare([prev[i] for i in ids], [cand[i] for i in ids], n_boot=1000)
    significant = table["delta"] > 0 and table["mcnemar_p"] < val["min_gain_p"]
    return {
        "delta": table["delta"],
        "mcnemar_p": table["mcnemar_p"],
        "min_gain_p": val["min_gain_p"],
        "significant": significant,
    }
