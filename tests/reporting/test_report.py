"""`failtune report`: Markdown + self-contained HTML, checked in a real headless chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import gsm8k_answers

from failtune.cli import main
from failtune.pipeline.cost import summarize_cost
from failtune.validation.forgetting import training_info

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def answers(path: Path, right: set[int], n: int) -> Path:
    """A `|` to escape in Markdown tables, and problem 3 never answered."""

    def say(i: int, answer: str, good: bool) -> str:
        return "I am not sure." if i == 3 else f"Let me think | step.\nThe answer is {answer}."

    return gsm8k_answers(path, right, n, say)


@pytest.fixture
def validated(tmp_path: Path) -> Path:
    out = tmp_path / "val"
    code = main(
        [
            "validate",
            "--base-completions",
            str(answers(tmp_path / "b.jsonl", set(range(0, 10)), 30)),
            "--candidate-completions",
            str(answers(tmp_path / "c.jsonl", set(range(2, 22)), 30)),
            "--output_dir",
            str(out),
            "--gate",
            "math.wins>=30%",
            "--gate",
            "math.losses<5%",
        ]
    )
    assert code == 1  # losses are 2/30
    return out


def test_markdown_report(validated: Path) -> None:
    assert main(["report", str(validated), "--gpu-hourly-usd", "2"]) == 0
    md = (validated / "report" / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert images == ["wtl.png", "accuracy.png", "reasons.png"]
    for name in images:  # relative PNG files beside the Markdown, as GitHub renders them
        assert (validated / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| math | 30 | 12 (40%) | 16 (7 / 9) | 2 (7%) | 30.0% | 63.3% |" in md
    assert "| `math.losses<5%` | 0.06667 | FAIL |" in md
    assert "**gate(s) failed**: `math.losses<5%`" in md
    assert "## Failures the tuning fixed (12)" in md and "## Answers the tuning broke (2)" in md
    assert "Let me think \\| step." in md  # a pipe inside a cell does not break the table
    assert "does not record which categories were trained on" in md
    assert "\\$2 per hour" in md and "not priced" in md  # no API price given


def test_report_draws_the_validated_adapters_training_curve(
    validated: Path, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "failtune_train.json").write_text(json.dumps({"method": "grpo"}))
    history = [
        {"step": 1, "reward": 0.25, "frac_reward_zero_std": 0.5},
        {"step": 2, "reward": 0.5, "frac_reward_zero_std": 0.0},
    ]
    (adapter / "metrics.json").write_text(json.dumps({"log_history": history}))
    assert training_info(str(adapter)).adapter == adapter.resolve()  # what validate records
    manifest = json.loads((validated / "manifest.json").read_text())
    (validated / "manifest.json").write_text(
        json.dumps({**manifest, "candidate_adapter": str(adapter)})
    )
    assert main(["report", str(validated)]) == 0
    md = (validated / "report" / "report.md").read_text()
    assert "## The candidate's training" in md and "trained by GRPO" in md
    assert "![GRPO mean reward per step, the candidate](reward.png)" in md
    assert "no gradient): 25% of groups on average over 2 steps" in md
    assert (validated / "report" / "reward.png").read_bytes()[:4] == b"\x89PNG"


def test_cost_uses_measured_times_and_tokens() -> None:
    steps = {
        "round-1/extract": {
            "status": "done",
            "seconds": 1800.0,
            "problems": 100,
            "prompt_tokens": 600_000,
            "completion_tokens": 400_000,
        },
        "round-1/train": {"status": "done", "seconds": 1800.0},
        "round-1/validate": {"status": "running"},
    }
    kind_of = {"round-1/extract": "extract"}.get
    cost = summarize_cost(steps, kind_of, gpu_hourly_usd=3.0, api_usd_per_mtok=15.0)
    assert cost.total_seconds == 3600.0 and cost.machine_usd == pytest.approx(3.0)
    assert [r[0] for r in cost.rows] == ["round-1/extract", "round-1/train"]
    assert cost.api_usd == pytest.approx(15.0)
    assert (
        "$15 per million" in cost.assumptions[2] and "100 extraction prompts" in cost.assumptions[2]
    )
    unpriced = summarize_cost(steps, kind_of, gpu_hourly_usd=None, api_usd_per_mtok=None)
    assert unpriced.machine_usd is None and unpriced.api_usd is None


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a skip there would hide the check
        pytest.skip(message)
    return found


def test_html_report_renders_every_plot_in_chromium(validated: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    assert main(["report", str(validated)]) == 0
    page = (validated / "report" / "report.html").read_text()
    assert "<script" not in page and 'src="data:image/png;base64,' in page
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(srcs) == 3 and all(base64.b64decode(s)[:4] == b"\x89PNG" for s in srcs)
    # A copy with a probe that records, after load, how many images the browser decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(
            "</body>",
            "<script>window.addEventListener('load',()=>{const i=[...document.images];"
            "document.title='decoded '+i.filter(x=>x.complete&&x.naturalWidth>0).length+"
            "' of '+i.length;});</script></body>",
        )
    )
    profile = tmp_path / "profile"
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "<title>decoded 3 of 3</title>" in dom.stdout, dom.stderr[-2000:]
    shot = validated / "report" / "screenshot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1100,2400", probe.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000  # a blank page compresses to a few kB
