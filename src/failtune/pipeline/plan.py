"""The steps of a run, declared once: name, kind, folder, model and the steps it reads.

The runner executes this plan, `--estimate` prices it, and the progress view, the tracking
summary, the cost table and the report read it, so a run's layout is written down here and
nowhere else. Round r's steps: extract (on the base, or on round r-1's merged model) →
targets (only when [extract] targets is not the reference: the training files, made from the
extract's records, so changing the targets keeps its samples) → baseline (round 1 only: the
base on the held-out problems) → train (SFT, or GRPO on the extract's failures within reach:
each round has its method, so ["sft", "grpo"] trains SFT, then GRPO on the SFT model) →
validate. A learning-rate sweep trains once per rate, then a select step chooses, and the
baseline waits until then so that nothing is generated on the held-out problems before the
choice.

Adding a step kind: one entry in KINDS and one line where it goes in `build_plan`, plus its work
function (failtune.pipeline.steps.WORK) and its price (failtune.pipeline.estimate.PRICES).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE = "run_state.json"
BASELINE = "baseline"  # the base model graded once on the held-out problems, shared by rounds


@dataclass(frozen=True)
class Kind:
    """What every step of one kind leaves behind, as paths in the run folder ({folder}: the
    step's own, {adapter}: its round's adapter): the files whose presence (beside an unchanged
    input hash) means it finished, and the folders it owns, emptied when its inputs change."""

    outputs: tuple[str, ...]
    owns: tuple[str, ...] = ("{folder}",)


KINDS: dict[str, Kind] = {
    "extract": Kind(("{folder}/results.jsonl", "{folder}/manifest.json")),
    "targets": Kind(("{folder}/manifest.json",)),
    "baseline": Kind(("{folder}/results.jsonl",)),
    "train": Kind(("{folder}/adapter_config.json", "{folder}/adapter_model.safetensors")),
    # The chosen candidate is copied to the round's adapter, where validation finds it.
    "select": Kind(
        ("{folder}/selection.json", "{adapter}/adapter_model.safetensors"),
        ("{folder}", "{adapter}"),
    ),
    "validate": Kind(("{folder}/validation.json",)),
}


@dataclass(frozen=True)
class Step:
    """One step of the plan. `folder` is where it writes, relative to the run folder; `inputs`
    are the steps whose outputs it reads (their hashes or files enter its own input hash)."""

    name: str
    kind: str
    folder: str
    round: int | None  # None: once for the whole run
    model: str  # the model it starts from: the base, or the previous round's merged model
    inputs: tuple[str, ...] = ()
    learning_rate: float | None = None  # a sweep's candidate
    merge: bool = False  # train: also save base + adapter merged (another round follows)
    method: str = "sft"  # train: sft or grpo

    def _paths(self, templates: tuple[str, ...]) -> list[str]:
        adapter = adapter_folder(self.round) if self.round else ""
        return [t.format(folder=self.folder, adapter=adapter) for t in templates]

    @property
    def outputs(self) -> list[str]:
        merged = [f"{self.folder}/merged/config.json"] if self.merge else []
        return self._paths(KINDS[self.kind].outputs) + merged

    @property
    def owns(self) -> list[str]:
        return self._paths(KINDS[self.kind].owns)


@dataclass(frozen=True)
class Plan:
    dir: Path  # the run folder
    steps: tuple[Step, ...]

    def __getitem__(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def kind_of(self, name: str) -> str | None:
        """The kind of a recorded step (None: a name this plan does not have)."""
        return next((s.kind for s in self.steps if s.name == name), None)

    def in_round(self, r: int, kind: str) -> list[Step]:
        return [s for s in self.steps if s.round == r and s.kind == kind]

    def adapter_step(self, r: int) -> Step:
        """The step that made round r's adapter: its train step, or the select step of a sweep."""
        return (self.in_round(r, "select") or self.in_round(r, "train"))[0]

    def path(self, step: Step | str) -> Path:
        """A step's folder, or any path relative to the run folder."""
        return self.dir / (step.folder if isinstance(step, Step) else step)


def candidates(rates: float | list[float]) -> list[float] | None:
    """The learning rates of a sweep, smallest first; None when the run trains once."""
    return sorted(float(r) for r in rates) if isinstance(rates, list) else None


def recorded_plan(run_dir: Path, config: Mapping[str, Any]) -> Plan:
    """The plan of a run folder, from the config its run_state.json records."""
    rates = candidates(config["train"]["learning_rate"])
    retargets = config.get("extract", {}).get("targets", "reference") != "reference"
    from_base = bool(config.get("retrain_from_base", False))
    methods = round_methods(config)
    return build_plan(
        run_dir, config["model"], config["rounds"], rates, retargets, from_base, methods
    )


def round_methods(config: Mapping[str, Any]) -> list[str]:
    """Each round's training method: [train] method, one for all rounds or a list of them."""
    method, rounds = config["train"].get("method", "sft"), config["rounds"]
    if isinstance(method, list):
        return list(method)
    return [method] * (rounds if isinstance(rounds, int) else 1)


def adapter_folder(r: int) -> str:
    return f"round-{r}/adapter"


def lr_name(lr: float) -> str:
    """A step and folder name for one candidate of a sweep: lr-2e-04."""
    return f"lr-{lr:.0e}" if float(f"{lr:.0e}") == lr else f"lr-{lr:.6g}"


def build_plan(
    run_dir: Path,
    model: str,
    rounds: int,
    rates: list[float] | None,
    retargets: bool = False,
    from_base: bool = False,
    methods: list[str] | None = None,
) -> Plan:
    """Every step of a run of `rounds` rounds in the order they run (a round that fails its
    gates or gains nothing significant ends the run early); `rates`: a sweep's learning rates;
    `retargets`: a targets step makes the training files; `from_base`: each round samples on
    the last round's model but trains a fresh adapter on the base (no stacking); `methods`:
    each round's training method (sft when not given)."""
    methods = methods or ["sft"] * rounds
    steps: list[Step] = []
    base, upstream = model, ()  # upstream: the step that made the model a round starts from
    for r in range(1, rounds + 1):
        merge, extract = r < rounds, f"round-{r}/extract"
        steps.append(Step(extract, "extract", extract, r, model, upstream))
        data, method = extract, methods[r - 1]
        if retargets and method == "sft":  # GRPO reads the extract's records, not a target
            data = f"round-{r}/targets"
            steps.append(Step(data, "targets", data, r, model, (extract,)))
        trains_on = base if from_base else model
        baseline = Step(BASELINE, "baseline", BASELINE, None, base)
        if r == 1 and rates is None:
            steps.append(baseline)
        if rates is None:
            made_by = f"round-{r}/train"
            folder = adapter_folder(r)
            steps.append(
                Step(made_by, "train", folder, r, trains_on, (data,), merge=merge, method=method)
            )
        else:
            for lr in rates:
                name, folder = f"round-{r}/train-{lr_name(lr)}", f"round-{r}/sweep/{lr_name(lr)}"
                steps.append(Step(name, "train", folder, r, trains_on, (data,), lr, merge))
            made_by = f"round-{r}/select"
            trained = tuple(s.name for s in steps if s.round == r and s.kind == "train")
            steps.append(Step(made_by, "select", made_by, r, trains_on, trained))
        if r == 1 and rates is not None:
            steps.append(baseline)
        validate = f"round-{r}/validate"
        steps.append(Step(validate, "validate", validate, r, base, (BASELINE, made_by)))
        # The next round starts from this one's adapter folded into its base (saved by training).
        model, upstream = str(run_dir / adapter_folder(r) / "merged"), (made_by,)
    return Plan(run_dir, tuple(steps))
