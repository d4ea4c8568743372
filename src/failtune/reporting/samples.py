"""The report's sections on samples: the reach map of the failures, the targets made of them,
and a sampled validation (pass@k per side, the paired change in per-problem success rate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from failtune.files import read_json
from failtune.pipeline.plan import Plan
from failtune.reporting.document import Document


def sampled_section(doc: Document, tables: Mapping[str, Mapping[str, Any]]) -> None:
    sampled = {c: t["sampled"] for c, t in tables.items() if "sampled" in t}
    if not sampled:
        return
    doc.heading("Sampled answers")
    k = max(s["samples"] for s in sampled.values())
    doc.para(
        f"{k} sampled answers per problem on each side. pass@k is the unbiased estimate "
        "(Chen et al. 2021) with a bootstrap 95 % CI over problems; the success rate is the share "
        "of a problem's samples that are right, compared pair by pair (bootstrap CI, sign-flip p)."
    )
    rows = []
    for category, s in sampled.items():
        rate = s["success_rate"]
        top = str(s["samples"])
        rows.append(
            [
                category,
                str(rate["n"]),
                _pass(s["base_pass_at_k"], "1"),
                _pass(s["candidate_pass_at_k"], "1"),
                _pass(s["base_pass_at_k"], top),
                _pass(s["candidate_pass_at_k"], top),
                f"{rate['delta']:+.1%} [{rate['ci_low']:+.1%}, {rate['ci_high']:+.1%}]",
                f"{rate['p']:.2g}",
            ]
        )
    header = ["category", "n", "base pass@1", "cand pass@1", f"base pass@{k}", f"cand pass@{k}"]
    doc.table([*header, "Δ success rate [95% CI]", "p"], rows)


def _pass(table: Mapping[str, Any], k: str) -> str:
    e = table.get(k) or table.get(int(k))  # type: ignore[call-overload]
    return f"{e['estimate']:.1%}" if e else "-"


def reach_section(doc: Document, plan: Plan) -> None:
    """Round 1's reach map (from its extract) and the targets its training lines came from."""
    extract = plan.in_round(1, "extract")
    manifest = plan.path(extract[0]) / "manifest.json" if extract else None
    found = read_json(manifest) if manifest and manifest.is_file() else {}
    targets_step = plan.in_round(1, "targets")
    if targets_step and (plan.path(targets_step[0]) / "manifest.json").is_file():
        found = {**found, **read_json(plan.path(targets_step[0]) / "manifest.json")}
    if not found.get("reach"):
        return
    doc.heading("Reach of the failures")
    doc.para(
        "A failure is near when at least one of the model's samples solved it, out of reach when "
        "none did; solved problems are kept apart for replay."
    )
    counts = ("n", "solved", "near", "out_of_reach")
    rows = [
        [c, *(str(r[k]) for k in counts), ", ".join(r["examples"]["near"]) or "-"]
        for c, r in found["reach"].items()
    ]
    doc.table(["category", "n", "solved", "near", "out of reach", "examples near"], rows)
    t = found.get("targets")
    if t:
        made = ", ".join(f"{t[s]} {s}" for s in ("reference", "self", "rationalized") if t.get(s))
        doc.para(
            f"Targets ({t['kind']}): {made or 'none'}; "
            f"{t['failures_without_target']} of {t['failures']} failures had none of this kind."
        )
