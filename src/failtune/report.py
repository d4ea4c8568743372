"""Human-readable views of results: tables on the terminal (stdout), never the only copy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from failtune.console import out

if TYPE_CHECKING:
    from failtune.extract import ExtractResult
    from failtune.pipeline import RunResult
    from failtune.train import TrainResult
    from failtune.validate import ValidationResult


def print_extract(result: ExtractResult) -> None:
    table = Table(title=f"extract → {result.output_dir}")
    for col in (
        "category",
        "n",
        "correct",
        "accuracy",
        "failures",
        "failure rate",
        "failure reasons",
    ):
        table.add_column(col, justify="left" if col in ("category", "failure reasons") else "right")
    for category, s in result.summary.items():
        reasons = ", ".join(f"{k} {v}" for k, v in s["failure_reasons"].items())
        table.add_row(
            category,
            str(s["n"]),
            str(s["correct"]),
            f"{s['accuracy']:.1%}",
            str(s["n"] - s["correct"]),
            f"{s['failure_rate']:.1%}",
            reasons,
        )
    out.print(table)
    for category, path in result.training_files.items():
        out.print(
            f"{category}: {result.summary[category]['n'] - result.summary[category]['correct']} "
            f"training examples → {path}"
        )


def print_train(result: TrainResult) -> None:
    loss = result.metrics.get("train_loss")
    out.print(
        f"trained on {result.examples} examples, {result.metrics.get('steps')} steps, "
        f"final train loss {loss:.4f} in {result.seconds:.0f} s → adapter {result.output_dir}"
        + (f", merged model {result.merged_dir}" if result.merged_dir else "")
    )


def validation_table(result: ValidationResult) -> Table:
    table = Table(title=f"validate → {result.output_dir / 'validation.json'}")
    cols = (
        "category",
        "n",
        "wins",
        "ties (✓/✗)",
        "losses",
        "base acc",
        "cand acc",
        "Δ acc [95% CI]",
        "McNemar p",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "category" else "right")
    for category, s in result.categories.items():
        low, high = s["delta_ci95"]
        table.add_row(
            category,
            str(s["n"]),
            f"{s['wins']} ({s['win_rate']:.0%})",
            f"{s['ties']} ({s['ties_correct']}/{s['ties_wrong']})",
            f"{s['losses']} ({s['loss_rate']:.0%})",
            f"{s['base_accuracy']:.1%}",
            f"{s['candidate_accuracy']:.1%}",
            f"{s['delta']:+.1%} [{low:+.1%}, {high:+.1%}]",
            f"{s['mcnemar_p']:.2g}",
        )
    return table


def print_validation(result: ValidationResult) -> None:
    out.print(validation_table(result))
    if result.unpaired:
        out.print(
            f"[yellow]{result.unpaired} ids were graded on one side only and left out[/yellow]"
        )
    for g in result.gates:
        mark = "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]"
        out.print(f"gate {g['expr']}: {mark} (value {g['value']:.4g})")


def print_run_validation(result: RunResult) -> None:
    """The last round's paired table, read back from its validation.json."""
    import json

    from failtune.validate import ValidationResult

    if result.final_validation is None:
        return
    data = json.loads(result.final_validation.read_text())
    print_validation(
        ValidationResult(
            result.final_validation.parent,
            data["categories"],
            data["gates"],
            data.get("unpaired_ids", 0),
        )
    )
