"""`failtune run CONFIG`: extract → train → validate from one config file, resumable, in rounds.

Each step records a hash of its inputs (its config section, the sha256 of its input files, the
model) in run_state.json. A rerun skips a step whose hash is unchanged and whose outputs exist,
resumes one that was interrupted (the steps themselves resume: graded ids, training
checkpoints), and redoes one whose inputs changed. Round r > 1 extracts on the previous round's
model and trains again; the run stops early when a gate fails or the gain over the previous
round is not significant.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failtune.backends import Backend, LazyBackend
from failtune.console import live_view, note, out
from failtune.errors import FailtuneError
from failtune.extract import RESULTS, RESULTS_SOURCE, evaluate, extract, load_problems
from failtune.files import atomic_write_json, read_jsonl, sha256_file
from failtune.manifest import now
from failtune.models import resolve_model
from failtune.validate import VALIDATION, compare, validate

if TYPE_CHECKING:
    from failtune.backends.hf import HFBackend

STATE = "run_state.json"
BASELINE = "baseline"  # the base model graded once on the held-out problems, shared by rounds

DEFAULTS: dict[str, Any] = {
    "model": None,
    "output_dir": "failtune-run",
    "rounds": 1,
    "seed": 0,
    "tasks": {},  # per-task options, e.g. {"arith": {"size": 2000}}
    "extract": {
        "categories": "math",
        "split": "train",
        "limit": None,
        "batch_size": 32,
        "max_new_tokens": None,
    },
    "train": {
        "num_train_epochs": 2.0,
        "learning_rate": 2e-4,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_length": 1024,
        "save_steps": 50,
    },
    "validate": {
        "categories": None,  # default: the extracted categories
        "split": "test",
        "limit": None,
        "batch_size": 32,
        "max_new_tokens": None,
        "gates": [],
        "min_gain_p": 0.05,  # McNemar p a round must beat (vs the previous round) to go on
    },
    "cost": {"gpu_hourly_usd": None, "api_usd_per_mtok": None},
}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML run config (by suffix) into a plain dict."""
    p = Path(path)
    if not p.is_file():
        raise FailtuneError(f"config file not found: {p}")
    try:
        if p.suffix == ".toml":
            import tomllib  # Python 3.11+; YAML configs work on 3.10 too

            data = tomllib.loads(p.read_text())
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(p.read_text()) or {}
        else:
            raise FailtuneError(f"{p}: config files are .toml, .yaml or .yml")
    except FailtuneError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: the user's file is broken
        raise FailtuneError(f"{p}: not a valid config ({e})") from None
    if not isinstance(data, dict):
        raise FailtuneError(f"{p}: the config must be a table of keys")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`train.learning_rate=1e-4` → ("train.learning_rate", 0.0001); values read as YAML."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise FailtuneError(f"--set {text!r}: write it as section.key=value")
    return key.strip(), yaml.safe_load(value)


def resolve_config(data: Mapping[str, Any], overrides: Mapping[str, Any] = {}) -> dict[str, Any]:
    """Defaults ← config file ← overrides (dotted keys); unknown keys are a user error."""
    config = copy.deepcopy(DEFAULTS)
    merged = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    for key, value in merged.items():
        if key not in config:
            raise FailtuneError(f"unknown config key {key!r} (known: {', '.join(config)})")
        if isinstance(config[key], dict) and key != "tasks":
            if not isinstance(value, dict):
                raise FailtuneError(f"config key {key!r} must be a table")
            unknown = set(value) - set(config[key])
            if unknown:
                raise FailtuneError(
                    f"unknown key(s) {', '.join(sorted(unknown))} in [{key}] "
                    f"(known: {', '.join(config[key])})"
                )
            config[key].update(value)
        else:
            config[key] = value
    if not config["model"]:
        raise FailtuneError("the config needs a model (or pass --model)")
    if not isinstance(config["rounds"], int) or config["rounds"] < 1:
        raise FailtuneError("rounds must be a positive whole number")
    if config["validate"]["categories"] is None:
        config["validate"]["categories"] = config["extract"]["categories"]
    config["tasks"] = {**config["tasks"]}
    for name in ("arith",):  # generated tasks take the run's seed unless set per task
        config["tasks"].setdefault(name, {}).setdefault("seed", config["seed"])
    return config


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
        self.dir = Path(config["output_dir"])
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / STATE
        self.state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.state.setdefault("steps", {})
        self.state["config"] = config
        self.state["rounds"] = []
        self.backends: dict[str, HFBackend] = {}  # opened models, reused between steps
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

    def backend(self, model: str, batch_size: int) -> HFBackend:
        """One opened model per id for the whole run: extract and baseline share the weights.

        Called only inside a step that has work to do, so a fully resumed run loads nothing.
        """
        if model not in self.backends:
            from failtune.backends.hf import HFBackend

            self.backends[model] = HFBackend.load(model, batch_size=batch_size)
        self.backends[model].batch_size = batch_size
        return self.backends[model]


def run_pipeline(config: dict[str, Any], *, show_progress: bool = True) -> RunResult:
    """Run (or resume) every round of `config`; returns the state written to run_state.json."""
    run = Run(config, show_progress)
    rounds = config["rounds"]
    with live_view(show_progress) as view:
        run.view = view
        # Round 1 has one step more (grading the base on the held-out problems).
        run.view_task = view.add_task("run", total=3 * rounds + 1, info="")
        final = _rounds(run)
    run.state["finished"] = now()
    run.save()
    return RunResult(run.dir, run.state, final, _seconds(run.state))


def _seconds(state: Mapping[str, Any]) -> dict[str, float]:
    return {name: rec.get("seconds", 0.0) for name, rec in state["steps"].items()}


def _rounds(run: Run) -> Path | None:
    cfg = run.config
    tasks = cfg["tasks"]
    val = cfg["validate"]
    base_model = cfg["model"]
    model = base_model  # what round r extracts on
    upstream: str | None = None
    previous: Path | None = None  # the previous round's candidate results (None: the base)
    final: Path | None = None
    baseline_dir = run.dir / BASELINE
    for r in range(1, cfg["rounds"] + 1):
        rdir = run.dir / f"round-{r}"
        last_round = r == cfg["rounds"]
        run.view.update(run.view_task, description=f"run · round {r}/{cfg['rounds']}")

        ex = cfg["extract"]
        ex_dir = rdir / "extract"
        problems = load_problems(ex["categories"], ex["split"], ex["limit"], tasks)
        data_files = sorted({f for t, p in problems for f in t.data_files(p.split)})
        run.step(
            f"round-{r}/extract",
            {
                "section": ex,
                "tasks": tasks,
                "model": model,
                "upstream": upstream,  # the training that made `model`, for rounds after the first
                "data": _file_hashes(data_files),
            },
            [ex_dir / RESULTS, ex_dir / "manifest.json"],
            [ex_dir],
            _extract_step,
            run,
            model,
            ex_dir,
        )

        if r == 1:
            held_out = load_problems(val["categories"], val["split"], val["limit"], tasks)
            run.step(
                "baseline",
                {"section": _generation_keys(val), "tasks": tasks, "model": base_model},
                [baseline_dir / RESULTS],
                [baseline_dir],
                _grade_step,
                run,
                held_out,
                base_model,
                baseline_dir,
                "base",
            )

        tr = cfg["train"]
        adapter = rdir / "adapter"
        training_files = sorted(ex_dir.glob("*_training_ready.jsonl"))
        merge = not last_round
        train_outputs = [adapter / "adapter_config.json", adapter / "adapter_model.safetensors"]
        if merge:
            train_outputs.append(adapter / "merged" / "config.json")
        training: dict[str, Any] = {}
        run.step(
            f"round-{r}/train",
            {
                "section": tr,
                "model": model,
                "seed": cfg["seed"],
                "merge": merge,
                "data": _file_hashes(training_files),
            },
            train_outputs,
            [adapter],
            _train_step,
            run,
            model,
            ex_dir,
            adapter,
            merge,
            training,
        )

        vdir = rdir / "validate"
        run.step(
            f"round-{r}/validate",
            {
                "section": val,
                "tasks": tasks,
                "base": sha256_file(baseline_dir / RESULTS),
                "adapter": sha256_file(adapter / "adapter_model.safetensors"),
            },
            [vdir / VALIDATION],
            [vdir],
            _validate_step,
            run,
            base_model,
            functools.partial(_candidate_backend, run, adapter, training),
            baseline_dir,
            vdir,
        )
        final = vdir / VALIDATION
        outcome = json.loads(final.read_text())
        decision = _decide(vdir / "candidate" / RESULTS, previous or baseline_dir / RESULTS, val)
        gates_passed = all(g["passed"] for g in outcome["gates"])
        go_on = gates_passed and decision["significant"] and not last_round
        reason = (
            "last round"
            if last_round and gates_passed
            else "a gate failed"
            if not gates_passed
            else "the gain over the previous round is not significant"
            if not decision["significant"]
            else "continuing"
        )
        run.state["rounds"].append(
            {
                "round": r,
                "validation": str(final.relative_to(run.dir)),
                "gates_passed": gates_passed,
                "vs_previous": decision,
                "next": "continue" if go_on else f"stop: {reason}",
            }
        )
        run.save()
        if not go_on:
            if not last_round:
                note(f"round {r}: stopping early, {reason}")
            break
        previous = vdir / "candidate" / RESULTS
        model = str(adapter / "merged")
        upstream = run.state["steps"][f"round-{r}/train"]["hash"]
    return final


def _generation_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that change what a model generates (gates do not)."""
    keys = ("categories", "split", "limit", "batch_size", "max_new_tokens")
    return {k: section[k] for k in keys}


def _extract_step(run: Run, model: str, out_dir: Path) -> dict[str, Any]:
    ex, tasks = run.config["extract"], run.config["tasks"]
    result = extract(
        model,
        out_dir,
        ex["categories"],
        split=ex["split"],
        limit=ex["limit"],
        batch_size=ex["batch_size"],
        max_new_tokens=ex["max_new_tokens"],
        task_options=tasks,
        model=run.backend(model, ex["batch_size"]),
        show_progress=run.show_progress,
    )
    return {
        "summary": result.summary,
        "failures": sum(s["n"] - s["correct"] for s in result.summary.values()),
        **_token_counts(model, result.records),
    }


@functools.cache
def _tokenizer(model: str) -> Any:
    from failtune.models import load_tokenizer

    return load_tokenizer(resolve_model(model))


def _token_counts(model: str, records: list[dict[str, Any]]) -> dict[str, int]:
    """Measured tokens of an extraction: what a teacher API would be sent and would write."""
    tokenizer = _tokenizer(model)
    prompts = [r["prompt"] for r in records]
    if tokenizer.chat_template:
        rendered = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in rendered]
    else:
        lengths = [len(tokenizer(p).input_ids) for p in prompts]
    return {
        "problems": len(records),
        "prompt_tokens": sum(lengths),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in records),
    }


def _grade_step(run: Run, problems: list, model: str, out_dir: Path, label: str) -> dict[str, Any]:
    val = run.config["validate"]
    records = evaluate(
        problems,
        out_dir,
        backend=run.backend(model, val["batch_size"]),
        max_new_tokens=val["max_new_tokens"],
        show_progress=run.show_progress,
        label=label,
    )
    return {"accuracy": sum(r["correct"] for r in records) / len(records)}


def _train_step(
    run: Run, model: str, ex_dir: Path, adapter: Path, merge: bool, keep: dict[str, Any]
) -> dict[str, Any]:
    from failtune.train import train

    tr = dict(run.config["train"])
    # Weights opened for generation are not needed again in this round: free them for training.
    run.backends.clear()
    result = train(
        model,
        ex_dir / "*_training_ready.jsonl",
        adapter,
        seed=run.config["seed"],
        merge=merge,
        show_progress=False,
        callbacks=[_loss_callback(run)],
        **tr,
    )
    keep["result"] = result
    # HF's train_loss averages only the steps run by the last process; the log history is kept
    # in checkpoints, so the last logged loss is the same whether or not training was resumed.
    losses = [h["loss"] for h in result.metrics.get("log_history", []) if "loss" in h]
    return {
        "examples": result.examples,
        "steps": result.metrics.get("steps"),
        "last_logged_loss": losses[-1] if losses else None,
    }


def _loss_callback(run: Run) -> Any:
    """Feeds training steps and loss into the run's live view (HF's own bar is turned off)."""
    from transformers import TrainerCallback

    view = run.view

    class _Progress(TrainerCallback):
        task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.task = view.add_task(
                "train", total=state.max_steps, completed=state.global_step, info=""
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            view.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                view.update(self.task, info=f"loss {logs['loss']:.4f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            view.remove_task(self.task)

    return _Progress()


def _candidate_backend(run: Run, adapter: Path, training: dict[str, Any]) -> Backend:
    """The trained model still in memory when this process trained it, else opened lazily."""
    result = training.get("result")
    # A merged model computes slightly differently from base + adapter: only the unmerged one in
    # memory is what a resumed run (which loads base + adapter) would generate with.
    if result is not None and result.merged_dir is None:
        label = resolve_model(str(adapter)).label  # what LazyBackend would call it on a resume
        from failtune.backends.hf import HFBackend

        return HFBackend(
            result.model,
            result.tokenizer,
            batch_size=run.config["validate"]["batch_size"],
            label=label,
        )
    return LazyBackend(str(adapter), batch_size=run.config["validate"]["batch_size"])


def _validate_step(
    run: Run,
    base_model: str,
    candidate: Callable[[], Backend],
    baseline_dir: Path,
    vdir: Path,
) -> dict[str, Any]:
    val = run.config["validate"]
    base_copy = vdir / "base"
    base_copy.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS, RESULTS_SOURCE):
        shutil.copyfile(baseline_dir / name, base_copy / name)
    result = validate(
        base_model,
        candidate(),  # opened only now: the adapter exists once the train step is done
        val["categories"],
        output_dir=vdir,
        split=val["split"],
        limit=val["limit"],
        gates=val["gates"],
        batch_size=val["batch_size"],
        max_new_tokens=val["max_new_tokens"],
        seed=run.config["seed"],
        task_options=run.config["tasks"],
        show_progress=run.show_progress,
    )
    return {"passed": result.passed}


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


def print_run(result: RunResult) -> None:
    """Per-round outcome and time per step (the report command draws the full picture)."""
    for rnd in result.state["rounds"]:
        gain = rnd["vs_previous"]
        out.print(
            f"round {rnd['round']}: gates {'passed' if rnd['gates_passed'] else 'FAILED'}, "
            f"Δ vs previous {gain['delta']:+.1%} (McNemar p {gain['mcnemar_p']:.2g}) → "
            f"{rnd['next']}"
        )
    total = sum(result.seconds.values())
    out.print(
        "time per step: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
        + f"; total {total:.0f} s"
    )
