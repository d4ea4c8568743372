"""Human-readable views of results: tables on the terminal (stdout), never the only copy.

The file report (report.md, report.html) is failtune.reporting.report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from failtune.console import out
from failtune.files import read_json
from failtune.validation.forgetting import check_label
from failtune.validation.paired import ValidationResult

if TYPE_CHECKING:
    from failtune.evaluation.extraction import ExtractResult
    from failtune.pipeline.runner import RunResult
    from failtune.training.grpo import GRPOResult
    from failtune.training.sft import TrainResult


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
    if result.reach:
        out.print(reach_table(result.reach, result.pass_at_k))
    for category, path in result.training_files.items():
        lines = sum(1 for line in path.open() if line.strip()) if path.is_file() else 0
        out.print(f"{category}: {lines} training examples → {path}")
    if result.targets and result.targets["reference"] != result.targets["failures"]:
        t = result.targets
        sources = ", ".join(f"{t[s]} {s}" for s in ("reference", "self", "rationalized") if t[s])
        out.print(
            f"training lines: {sources or 'none'}"
            + (
                f"; {t['failures_without_target']} failures have no target of this kind"
                if t["failures_without_target"]
                else ""
            )
        )


def reach_table(reach: dict, pass_at_k: dict) -> Table:
    """Per category: solved, near (a sample right) and out of reach, and pass@1 … pass@K."""
    ks = sorted({int(k) for table in pass_at_k.values() for k in table})
    shown = [k for k in ks if k in (1, ks[-1]) or k & (k - 1) == 0] if ks else []
    table = Table(title="reach of the failures (K samples per problem)")
    for col in ("category", "solved", "near", "out of reach", "examples near"):
        table.add_column(col, justify="left" if col in ("category", "examples near") else "right")
    for k in shown:
        table.add_column(f"pass@{k}", justify="right")
    for category, r in reach.items():
        cells = [category, str(r["solved"]), str(r["near"]), str(r["out_of_reach"])]
        cells.append(", ".join(r["examples"]["near"]) or "-")
        for k in shown:
            e = pass_at_k.get(category, {}).get(k) or pass_at_k.get(category, {}).get(str(k))
            cells.append(
                f"{e['estimate']:.1%} [{e['ci_low']:.1%}, {e['ci_high']:.1%}]" if e else "-"
            )
        table.add_row(*cells)
    return table


def print_grpo(result: GRPOResult) -> None:
    """The last step's reward and how many groups carried a gradient."""
    logged = [h for h in result.metrics.get("log_history", []) if "reward" in h]
    last = logged[-1] if logged else {}
    out.print(
        f"GRPO on {result.prompts} prompts, {result.metrics.get('steps')} steps in "
        f"{result.seconds:.0f} s → adapter {result.output_dir}"
        + (
            f"; last step: mean reward {last['reward']:.3f}, groups without reward variance "
            f"{last.get('frac_reward_zero_std', float('nan')):.0%}"
            if last
            else ""
        )
        + f"; per step: {result.metrics_file}"
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
    label = check_label(table)
    return f"[red]{label}[/red]" if label == "FORGETTING" else label


def print_validation(result: ValidationResult) -> None:
    out.print(validation_table(result))
    for category, table in result.categories.items():
        if "sampled" in table:
            s, rate = table["sampled"], table["sampled"]["success_rate"]
            out.print(
                f"{category}, {s['samples']} samples per problem: success rate "
                f"{rate['base_rate']:.1%} → {rate['candidate_rate']:.1%}, "
                f"Δ {rate['delta']:+.1%} [{rate['ci_low']:+.1%}, {rate['ci_high']:+.1%}], "
                f"p {rate['p']:.2g} (paired by problem)"
            )
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
            f"({j['inconsistent']} inconsistent under the swap), losses {j['losses']}, "
            f"unreadable {j.get('unreadable', 0)} of {j['n']}; sign test p {j['sign_test_p']:.2g}"
        )
    for g in result.gates:
        mark = "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]"
        out.print(f"gate {g['expr']}: {mark} (value {g['value']:.4g})")


def print_run(result: RunResult) -> None:
    """Per-round outcome and time per step (the report command draws the full picture)."""
    for name, step in result.state["steps"].items():
        selects = result.plan is not None and result.plan.kind_of(name) == "select"
        for c in step.get("candidates", []) if selects else []:
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
    if result.final_validation is None:
        return
    data = read_json(result.final_validation)
    print_validation(
        ValidationResult(
            result.final_validation.parent,
            data["categories"],
            data["gates"],
            data.get("unpaired_ids", 0),
            data.get("overlap"),
        )
    )
