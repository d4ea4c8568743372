"""`failtune report DIR`: report.md (with its plots as PNG files) and a self-contained
report.html for a run folder or a validate folder.

Each section reads the run's own files (run_state.json, validation.json, results, manifests;
where they are comes from the run's plan) and adds blocks to a failtune.reporting.document
Document; the two formats are laid out there, from the same blocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.evaluation.records import BREAKDOWN, greedy_records
from failtune.files import atomic_write_text, read_json, read_jsonl
from failtune.pipeline.cost import summarize_cost
from failtune.pipeline.plan import STATE, Plan, recorded_plan
from failtune.reporting import plots
from failtune.reporting.document import Document, fmt, render_html, render_markdown
from failtune.reporting.samples import reach_section, sampled_section
from failtune.reporting.training import candidate_section, rounds_section, sweep_section
from failtune.validation.forgetting import check_label

_EXAMPLES = 3  # fixed and broken problems shown
_SNIPPET = 280  # characters of a completion shown in the examples table


@dataclass
class _Source:
    """Where the report's numbers come from: a `failtune run` folder or a `validate` folder."""

    title: str
    vdir: Path  # the folder holding the final validation.json
    steps: dict[str, Any]  # timed steps, for the cost section
    state: dict[str, Any] | None = None  # run_state.json of a run folder
    config: dict[str, Any] | None = None
    plan: Plan | None = None
    candidate: Path | None = None  # a validate folder's candidate adapter, when failtune trained it
    gpu_hourly_usd: float | None = None
    api_usd_per_mtok: float | None = None


def build_report(
    folder: Path, *, gpu_hourly_usd: float | None, api_usd_per_mtok: float | None
) -> Document:
    """Read a run folder (run_state.json) or a validate folder (validation.json)."""
    source = _read_source(folder, gpu_hourly_usd, api_usd_per_mtok)
    validation = read_json(source.vdir / "validation.json")
    tables = validation["categories"]
    base = _results(source.vdir / "base" / "results.jsonl")
    cand = _results(source.vdir / "candidate" / "results.jsonl")
    doc = Document(source.title)
    _gates(doc, validation["gates"], source.vdir)
    _paired(doc, tables, reference=bool(validation.get("baseline")))
    _breakdown(doc, base, cand)
    sampled_section(doc, tables)
    if source.plan is not None:
        reach_section(doc, source.plan)
    if validation.get("learning_rate_sweep"):
        sweep_section(doc, validation["learning_rate_sweep"])
    if validation.get("judge"):
        _judge(doc, validation["judge"])
    _forgetting(doc, validation, tables, source.config)
    _reasons(doc, base, cand, source.plan)
    _examples(doc, base, cand)
    if source.state is not None and source.plan is not None:
        rounds_section(doc, source.plan, source.state)
    if source.candidate is not None:
        candidate_section(doc, source.candidate)
    kind_of = source.plan.kind_of if source.plan is not None else lambda name: name
    cost = summarize_cost(
        source.steps,
        kind_of,
        gpu_hourly_usd=source.gpu_hourly_usd,
        api_usd_per_mtok=source.api_usd_per_mtok,
    )
    _cost(doc, cost)
    return doc


def _read_source(
    folder: Path, gpu_hourly_usd: float | None, api_usd_per_mtok: float | None
) -> _Source:
    """A run folder's prices come from its config unless given here; a validate folder has none."""
    state_path = folder / STATE
    if state_path.is_file():
        state = read_json(state_path)
        if not state.get("rounds"):
            raise FailtuneError(f"{folder}: no round has finished yet; rerun `failtune run`")
        config = state["config"]
        prices = config.get("cost", {})
        return _Source(
            title=f"failtune report: {config['model']}",
            vdir=(folder / state["rounds"][-1]["validation"]).parent,
            steps=state["steps"],
            state=state,
            config=config,
            plan=recorded_plan(folder, config),
            gpu_hourly_usd=(
                gpu_hourly_usd if gpu_hourly_usd is not None else prices.get("gpu_hourly_usd")
            ),
            api_usd_per_mtok=(
                api_usd_per_mtok if api_usd_per_mtok is not None else prices.get("api_usd_per_mtok")
            ),
        )
    if (folder / "validation.json").is_file():
        manifest = _read_json(folder / "manifest.json")
        seconds = manifest.get("cost", {}).get("wall_seconds", 0.0)
        # Folders validated before the manifest named the adapter give it as the candidate.
        adapter = manifest.get("candidate_adapter") or manifest.get("args", {}).get("candidate")
        return _Source(
            title=f"failtune report: {folder}",
            vdir=folder,
            steps={"validate": {"status": "done", "seconds": seconds}},
            candidate=Path(adapter) if adapter and Path(adapter).is_dir() else None,
            gpu_hourly_usd=gpu_hourly_usd,
            api_usd_per_mtok=api_usd_per_mtok,
        )
    raise FailtuneError(f"{folder} holds neither run_state.json nor validation.json")


def _gates(doc: Document, gates: list[dict[str, Any]], vdir: Path) -> None:
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


def _paired(doc: Document, tables: dict[str, Any], *, reference: bool) -> None:
    doc.heading(
        f"{'Reference' if reference else 'Base'} vs candidate, paired on the same held-out problems"
    )
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
            "check",
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
                check_label(s),
            ]
            for cat, s in tables.items()
        ],
    )
    doc.image("wtl.png", "wins, ties and losses per category", plots.wtl_bars(tables))
    doc.image(
        "accuracy.png", "accuracy before and after, with 95% intervals", plots.accuracy_bars(tables)
    )


def _breakdown(
    doc: Document, base: dict[str, dict[str, Any]], cand: dict[str, dict[str, Any]]
) -> None:
    """The paired counts per subject and per level, for tasks whose records carry them (MATH)."""
    ids = [i for i in cand if i in base]
    for key in BREAKDOWN:
        groups: dict[tuple[str, str], list[str]] = {}
        for i in ids:
            if key in cand[i]:
                groups.setdefault((cand[i]["task"], str(cand[i][key])), []).append(i)
        if not groups:
            continue
        doc.heading(f"By {key}")
        rows = []
        for (task, value), group in sorted(groups.items()):
            right = [(base[i]["correct"], cand[i]["correct"]) for i in group]
            rows.append(
                [
                    task,
                    value,
                    str(len(group)),
                    f"{sum(b for b, _ in right) / len(group):.1%}",
                    f"{sum(c for _, c in right) / len(group):.1%}",
                    str(sum(c and not b for b, c in right)),
                    str(sum(b and not c for b, c in right)),
                ]
            )
        doc.table(["task", key, "n", "base acc", "candidate acc", "wins", "losses"], rows)


def _judge(doc: Document, judged: dict[str, Any]) -> None:
    doc.heading(f"Judge: {judged['judge_model']}")
    doc.para(
        "Each pair was judged twice with the answers swapped; a verdict that flips with the "
        "order counts as a tie. A reply the judge did not make readable after one reminder is "
        "counted as unreadable, apart from the ties."
    )
    doc.table(
        ["n", "candidate wins", "ties (inconsistent)", "losses", "unreadable", "sign test p"],
        [
            [
                str(judged["n"]),
                f"{judged['wins']} ({judged['win_rate']:.0%})",
                f"{judged['ties']} ({judged['inconsistent']})",
                f"{judged['losses']} ({judged['loss_rate']:.0%})",
                str(judged.get("unreadable", 0)),
                f"{judged['sign_test_p']:.2g}",
            ]
        ],
    )


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _results(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in greedy_records(read_jsonl(path))} if path.is_file() else {}


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
                [cat, *(fmt(v.get(k)) for k in keys)] if isinstance(v, dict) else [cat, fmt(v)]
                for cat, v in recorded.items()
            ],
        )
        return
    rows = [
        [
            cat,
            _trained_on(cat, s, config),
            f"{s['base_accuracy']:.1%}",
            f"{s['candidate_accuracy']:.1%}",
            f"{s['delta']:+.1%}",
            f"{s['mcnemar_p']:.2g}",
        ]
        for cat, s in tables.items()
        if cat != "overall"
    ]
    note = "Categories validated but not trained on show whether the tuning cost skills elsewhere."
    if all(r[1] == "?" for r in rows):
        note += " This folder does not record which categories were trained on."
    elif not any(r[1] == "no" for r in rows):
        note += (
            " Every validated category here was trained on, so this run does not measure "
            "forgetting; validate on more categories to see it."
        )
    doc.para(note)
    doc.table(["category", "trained on", "base acc", "candidate acc", "Δ acc", "McNemar p"], rows)


def _trained_on(category: str, table: dict[str, Any], config: dict[str, Any] | None) -> str:
    """yes / no as the validation recorded it; in a run folder made before validation recorded
    it, whether the run extracted the category; else ?."""
    trained = table.get("trained")
    if trained is None and config is not None:
        trained = category in {c.strip() for c in str(config["extract"]["categories"]).split(",")}
    return "?" if trained is None else ("yes" if trained else "no")


def _reasons(
    doc: Document,
    base: dict[str, dict[str, Any]],
    cand: dict[str, dict[str, Any]],
    plan: Plan | None,
) -> None:
    counts: dict[str, dict[str, int]] = {}
    if plan is not None:
        extract = plan.path(plan.in_round(1, "extract")[0])
        summary = _read_json(extract / "manifest.json").get("summary", {})
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


REPORT_DIR = "report"


def write_report(
    folder: str | Path,
    *,
    gpu_hourly_usd: float | None = None,
    api_usd_per_mtok: float | None = None,
) -> list[Path]:
    """Write <folder>/report/report.md with its PNGs, and report.html; returns both paths."""
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
