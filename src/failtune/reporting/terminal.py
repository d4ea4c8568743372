"""Human-readable views of results: tables on the terminal (stdout), never the only copy.

`write_report` is the entry to the file report; its content lives in failtune.reporting.report
and its two formats in failtune.reporting.document, loaded only when a report is written
(matplotlib is slow).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from failtune.console import out
from failtune.files import read_json

if TYPE_CHECKING:
    from failtune.evaluation.extraction import ExtractResult
    from failtune.pipeline.runner import RunResult
    from failtune.training.sft import TrainResult
    from failtune.validation.paired import ValidationResult


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
        "check",
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
            _check(s),
        )
    return table


def _check(table: dict) -> str:
    """Trained categories show their gain; the others are forgetting checks."""
    trained = table.get("trained")
    if trained is None:
        return ""
    if trained:
        return "trained"
    return "[red]FORGETTING[/red]" if table.get("forgetting") else "forgetting: ok"


def print_validation(result: ValidationResult) -> None:
    out.print(validation_table(result))
    if result.unpaired:
        out.print(
            f"[yellow]{result.unpaired} ids were graded on one side only and left out[/yellow]"
        )
    if result.overlap:
        for category, row in result.overlap["categories"].items():
            out.print(
                f"{category}: {row['ngram_overlap']} of {row['n']} eval prompts share a 13-gram "
                f"with the training data ({row['ngram_overlap_rate']:.1%}), {row['exact']} exact"
            )
    if result.judge:
        j = result.judge
        out.print(
            f"judge {j['judge_model']}: candidate wins {j['wins']}, ties {j['ties']} "
            f"({j['inconsistent']} inconsistent under the swap), losses {j['losses']} of {j['n']}; "
            f"sign test p {j['sign_test_p']:.2g}"
        )
    for g in result.gates:
        mark = "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]"
        out.print(f"gate {g['expr']}: {mark} (value {g['value']:.4g})")


def print_run(result: RunResult) -> None:
    """Per-round outcome and time per step (the report command draws the full picture)."""
    for name, step in result.state["steps"].items():
        for c in step.get("candidates", []) if name.endswith("/select") else []:
            chosen = " ← chosen" if c["learning_rate"] == step["chosen"] else ""
            out.print(
                f"{name}: lr {c['learning_rate']:g}: selection acc {c['accuracy']:.1%} "
                f"(Δ vs base {c['delta']:+.1%}, McNemar p {c['mcnemar_p']:.2g}){chosen}"
            )
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


def print_run_validation(result: RunResult) -> None:
    """The last round's paired table, read back from its validation.json."""
    from failtune.validation.paired import ValidationResult

    if result.final_validation is None:
        return
    data = read_json(result.final_validation)
    print_validation(
        ValidationResult(
            result.final_validation.parent,
            data["categories"],
            data["gates"],
            data.get("unpaired_ids", 0),
        )
    )


# ---- failtune report DIR: report.md (+ PNG files) and a self-contained report.html ----

REPORT_DIR = "report"


def write_report(
    folder: str | Path,
    *,
    gpu_hourly_usd: float | None = None,
    api_usd_per_mtok: float | None = None,
) -> list[Path]:
    """Write <folder>/report/report.md with its PNGs, and report.html; returns both paths."""
    from failtune.files import atomic_write_text
    from failtune.reporting.document import render_html, render_markdown
    from failtune.reporting.report import build_report

    doc = build_report(
        Path(folder), gpu_hourly_usd=gpu_hourly_usd, api_usd_per_mtok=api_usd_per_mtok
    )
    target = Path(folder) / REPORT_DIR
    target.mkdir(parents=True, exist_ok=True)
    for kind, body in doc.blocks:
        if kind == "img":
            name, _, png = body
            tmp = target / f".{name}.tmp"
            tmp.write_bytes(png)
            tmp.replace(target / name)
    md, page = target / "report.md", target / "report.html"
    atomic_write_text(md, render_markdown(doc))
    atomic_write_text(page, render_html(doc))
    return [md, page]
