"""Human-readable views of results: tables on the terminal (stdout), never the only copy."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# ---- failtune report DIR: report.md (+ PNG files) and a self-contained report.html ----

REPORT_DIR = "report"
_EXAMPLES = 3  # fixed and broken problems shown
_SNIPPET = 280  # characters of a completion shown in the examples table


@dataclass
class Document:
    """A report as blocks, rendered once as Markdown and once as HTML (the same content)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, name: str, alt: str, png: bytes) -> None:
        self.blocks.append(("img", (name, alt, png)))


def _md_text(text: str) -> str:
    """GitHub reads `$…$` as math: escape dollar signs (prices) so they print as written."""
    return text.replace("$", "\\$")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for kind, body in doc.blocks:
        if kind == "h2":
            lines += [f"## {body}", ""]
        elif kind == "p":
            lines += [_md_text(body), ""]
        elif kind == "table":
            header, rows = body
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            name, alt, _ = body
            lines += [f"![{alt}]({name})", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}th{background:#f3f3f3}
img{max-width:100%;display:block;margin:.5em 0 1.5em}h2{border-bottom:1px solid #ddd}"""


def render_html(doc: Document) -> str:
    """One file: CSS inline and every plot a base64 PNG, so it can be mailed or archived."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(doc.title)}</h1>",
    ]
    for kind, body in doc.blocks:
        if kind == "h2":
            parts.append(f"<h2>{escape(body)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(body)}</p>")
        elif kind == "table":
            header, rows = body
            parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
            parts += [
                "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                for row in rows
            ]
            parts.append("</table>")
        elif kind == "img":
            _, alt, png = body
            data = base64.b64encode(png).decode()
            parts.append(f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline_html(text: str) -> str:
    """Escape, then keep the two Markdown marks the report uses: **bold** and `code`."""
    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def write_report(
    folder: str | Path,
    *,
    gpu_hourly_usd: float | None = None,
    api_usd_per_mtok: float | None = None,
) -> list[Path]:
    """Write <folder>/report/report.md with its PNGs, and report.html; returns both paths."""
    from failtune.files import atomic_write_text

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


def build_report(
    folder: Path, *, gpu_hourly_usd: float | None, api_usd_per_mtok: float | None
) -> Document:
    """Read a run folder (run_state.json) or a validate folder (validation.json)."""
    from failtune import plots
    from failtune.cost import summarize_cost
    from failtune.errors import FailtuneError
    from failtune.pipeline import STATE

    state_path = folder / STATE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if not state.get("rounds"):
            raise FailtuneError(f"{folder}: no round has finished yet; rerun `failtune run`")
        config = state["config"]
        vdir = folder / state["rounds"][-1]["validation"]
        vdir = vdir.parent
        steps = state["steps"]
        prices = config.get("cost", {})
        gpu_hourly_usd = (
            gpu_hourly_usd if gpu_hourly_usd is not None else prices.get("gpu_hourly_usd")
        )
        if api_usd_per_mtok is None:
            api_usd_per_mtok = prices.get("api_usd_per_mtok")
        title = f"failtune report: {config['model']}"
    elif (folder / "validation.json").is_file():
        state, config, vdir = None, None, folder
        manifest = _read_json(folder / "manifest.json")
        seconds = manifest.get("cost", {}).get("wall_seconds", 0.0)
        steps = {"validate": {"status": "done", "seconds": seconds}}
        title = f"failtune report: {folder}"
    else:
        raise FailtuneError(f"{folder} holds neither run_state.json nor validation.json")

    validation = json.loads((vdir / "validation.json").read_text())
    tables = validation["categories"]
    doc = Document(title)
    base = _results(vdir / "base" / "results.jsonl")
    cand = _results(vdir / "candidate" / "results.jsonl")

    gates = validation["gates"]
    passed = all(g["passed"] for g in gates)
    verdict = (
        "no gates were set"
        if not gates
        else "**all gates passed**"
        if passed
        else "**gate(s) failed**: " + ", ".join(f"`{g['expr']}`" for g in gates if not g["passed"])
    )
    doc.para(f"Final validation: `{vdir}`; {verdict}.")
    if gates:
        doc.heading("Gates")
        doc.table(
            ["gate", "value", "result"],
            [
                [f"`{g['expr']}`", f"{g['value']:.4g}", "PASS" if g["passed"] else "FAIL"]
                for g in gates
            ],
        )

    baseline = "Reference" if validation.get("baseline") else "Base"
    doc.heading(f"{baseline} vs candidate, paired on the same held-out problems")
    doc.table(
        [
            "category",
            "n",
            "wins",
            "ties (both right / both wrong)",
            "losses",
            "base acc",
            "candidate acc",
            "Δ acc [95% CI]",
            "McNemar p",
        ],
        [
            [
                cat,
                str(s["n"]),
                f"{s['wins']} ({s['win_rate']:.0%})",
                f"{s['ties']} ({s['ties_correct']} / {s['ties_wrong']})",
                f"{s['losses']} ({s['loss_rate']:.0%})",
                f"{s['base_accuracy']:.1%}",
                f"{s['candidate_accuracy']:.1%}",
                f"{s['delta']:+.1%} [{s['delta_ci95'][0]:+.1%}, {s['delta_ci95'][1]:+.1%}]",
                f"{s['mcnemar_p']:.2g}",
            ]
            for cat, s in tables.items()
        ],
    )
    doc.image("wtl.png", "wins, ties and losses per category", plots.wtl_bars(tables))
    doc.image(
        "accuracy.png", "accuracy before and after, with 95% intervals", plots.accuracy_bars(tables)
    )

    judged = validation.get("judge")
    if judged:
        doc.heading(f"Judge: {judged['judge_model']}")
        doc.para(
            "Each pair was judged twice with the answers swapped; a verdict that flips with the "
            "order counts as a tie."
        )
        doc.table(
            ["n", "candidate wins", "ties (inconsistent)", "losses", "sign test p"],
            [
                [
                    str(judged["n"]),
                    f"{judged['wins']} ({judged['win_rate']:.0%})",
                    f"{judged['ties']} ({judged['inconsistent']})",
                    f"{judged['losses']} ({judged['loss_rate']:.0%})",
                    f"{judged['sign_test_p']:.2g}",
                ]
            ],
        )
    _forgetting(doc, validation, tables, config)
    _reasons(doc, base, cand, folder, state)
    _examples(doc, base, cand)
    if state is not None:
        _rounds_and_loss(doc, folder, state)
    cost = summarize_cost(steps, gpu_hourly_usd=gpu_hourly_usd, api_usd_per_mtok=api_usd_per_mtok)
    _cost(doc, cost)
    return doc


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _results(path: Path) -> dict[str, dict[str, Any]]:
    from failtune.files import read_jsonl

    return {r["id"]: r for r in read_jsonl(path)} if path.is_file() else {}


def _forgetting(
    doc: Document,
    validation: dict[str, Any],
    tables: dict[str, Any],
    config: dict[str, Any] | None,
) -> None:
    """Categories the model was not trained on: a drop there is what the tuning cost."""
    doc.heading("Forgetting")
    recorded = validation.get("forgetting")
    if isinstance(recorded, dict) and recorded:
        keys = sorted({k for v in recorded.values() if isinstance(v, dict) for k in v})
        doc.table(
            ["category", *keys],
            [
                [cat, *(_fmt(v.get(k)) for k in keys)] if isinstance(v, dict) else [cat, _fmt(v)]
                for cat, v in recorded.items()
            ],
        )
        return
    trained = None
    if config is not None:
        trained = {c.strip() for c in str(config["extract"]["categories"]).split(",")}
    rows = [
        [
            cat,
            "?" if trained is None else ("yes" if cat in trained else "no"),
            f"{s['base_accuracy']:.1%}",
            f"{s['candidate_accuracy']:.1%}",
            f"{s['delta']:+.1%}",
            f"{s['mcnemar_p']:.2g}",
        ]
        for cat, s in tables.items()
        if cat != "overall"
    ]
    note = "Categories validated but not trained on show whether the tuning cost skills elsewhere."
    if trained is None:
        note += " This folder does not record which categories were trained on."
    elif not any(r[1] == "no" for r in rows):
        note += (
            " Every validated category here was trained on, so this run does not measure "
            "forgetting; validate on more categories to see it."
        )
    doc.para(note)
    doc.table(["category", "trained on", "base acc", "candidate acc", "Δ acc", "McNemar p"], rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _reasons(
    doc: Document,
    base: dict[str, dict[str, Any]],
    cand: dict[str, dict[str, Any]],
    folder: Path,
    state: dict[str, Any] | None,
) -> None:
    from failtune import plots

    counts: dict[str, dict[str, int]] = {}
    if state is not None:
        summary = _read_json(folder / "round-1" / "extract" / "manifest.json").get("summary", {})
        merged: Counter[str] = Counter()
        for s in summary.values():
            merged.update(s["failure_reasons"])
        if merged:
            counts["base, training problems"] = dict(merged)
    counts["base, held-out"] = dict(Counter(r["reason"] for r in base.values() if not r["correct"]))
    counts["candidate, held-out"] = dict(
        Counter(r["reason"] for r in cand.values() if not r["correct"])
    )
    doc.heading("Why answers failed")
    reasons = sorted({r for side in counts.values() for r in side})
    doc.table(
        ["", *reasons], [[side, *(str(c.get(r, 0)) for r in reasons)] for side, c in counts.items()]
    )
    if reasons:
        doc.image("reasons.png", "failure reasons", plots.reason_bars(counts))


def _examples(
    doc: Document, base: dict[str, dict[str, Any]], cand: dict[str, dict[str, Any]]
) -> None:
    fixed = [i for i in base if i in cand and not base[i]["correct"] and cand[i]["correct"]]
    broken = [i for i in base if i in cand and base[i]["correct"] and not cand[i]["correct"]]
    for title, ids in (("Failures the tuning fixed", fixed), ("Answers the tuning broke", broken)):
        doc.heading(f"{title} ({len(ids)})")
        if not ids:
            doc.para("None.")
            continue
        doc.table(
            ["problem", "expected", "base answer", "candidate answer"],
            [
                [
                    f"`{i}`: {_snip(base[i]['prompt'])}",
                    str(base[i]["expected"]),
                    _answer(base[i]),
                    _answer(cand[i]),
                ]
                for i in ids[:_EXAMPLES]
            ],
        )


def _answer(record: dict[str, Any]) -> str:
    return f"**{record['extracted']}** ({record['reason']}): {_snip(record['completion'])}"


def _snip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _rounds_and_loss(doc: Document, folder: Path, state: dict[str, Any]) -> None:
    from failtune import plots

    doc.heading("Rounds")
    doc.table(
        ["round", "gates", "Δ vs previous round", "McNemar p", "decision"],
        [
            [
                str(r["round"]),
                "passed" if r["gates_passed"] else "failed",
                f"{r['vs_previous']['delta']:+.1%}",
                f"{r['vs_previous']['mcnemar_p']:.2g}",
                r["next"],
            ]
            for r in state["rounds"]
        ],
    )
    last = state["rounds"][-1]["round"]
    history = _read_json(folder / f"round-{last}" / "adapter" / "metrics.json").get(
        "log_history", []
    )
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if losses:
        doc.image("loss.png", f"training loss, round {last}", plots.loss_curve(losses))


def _cost(doc: Document, cost: Any) -> None:
    doc.heading("Cost")
    priced = cost.machine_usd is not None
    rows = [
        [name, f"{seconds:,.0f}", f"${usd:,.4f}" if usd is not None else "not priced"]
        for name, seconds, usd in cost.rows
    ]
    rows.append(
        [
            "**total (measured)**",
            f"**{cost.total_seconds:,.0f}**",
            f"**${cost.machine_usd:,.4f}**" if priced else "not priced",
        ]
    )
    doc.table(["step", "wall seconds", "machine cost"], rows)
    doc.table(
        ["alternative: distillation from an API", "tokens", "cost"],
        [
            ["prompt tokens", f"{cost.prompt_tokens:,}", ""],
            ["completion tokens", f"{cost.completion_tokens:,}", ""],
            [
                "**total**",
                f"**{cost.prompt_tokens + cost.completion_tokens:,}**",
                f"**${cost.api_usd:,.4f}**" if cost.api_usd is not None else "not priced",
            ],
        ],
    )
    doc.para("Assumptions: " + " ".join(cost.assumptions))
