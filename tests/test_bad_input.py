"""Bad input across every command: one `failtune: error:` line, a non-zero exit, no traceback,
and every file that existed before byte-identical afterwards.

Each case builds its inputs in a temporary folder and runs `failtune.cli.main` in-process, with
the output captured at the file-descriptor level (so library logging counts too). The full-disk
tests mount a small tmpfs (root only) and check that the rerun with space finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import require_smollm2
from servers import StubHandler, chat_answer, free_port, stub_server

from failtune.cli import main

ANSWER = chat_answer("3 + 4 = 7. The answer is 7.", "stop", 9)
GOOD = [
    {"id": "gsm8k/test/0", "completion": "The answer is 18."},
    {"id": "gsm8k/test/1", "completion": "The answer is 2."},
    {"id": "gsm8k/test/2", "completion": "The answer is 5."},
]
NOT_UTF8 = b'{"id": "gsm8k/test/0", "completion": "caf\xe9 au lait"}\n'
# A JSONL file whose second line a careless edit cut short.
BROKEN_JSONL = (
    json.dumps(GOOD[0]) + "\n" + json.dumps(GOOD[1])[:20] + "\n" + json.dumps(GOOD[2]) + "\n"
)
EXAMPLES = [
    {"instruction": f"What is {i} + {i}?", "output": f"The answer is {2 * i}."} for i in (1, 2)
]


class Answering(StubHandler):
    """An OpenAI-compatible server that answers every request with `status`."""

    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        self.reply(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.status == 200:
            self.reply(200, ANSWER)
        else:
            self.reply(self.status, {"error": {"message": "Incorrect API key provided"}})


class Env:
    """Builds a case's inputs; every file under `roots` is checked unchanged after the run."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest, stack: ExitStack) -> None:
        self.dir, self.request, self.stack = tmp_path, request, stack
        self.roots = [tmp_path]

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def parent(self, name: str, content: str | bytes) -> str:
        """Write a file into a folder and return the folder."""
        return str(Path(self.file(name, content)).parent)

    def jsonl(self, name: str, rows: list[Any]) -> str:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in rows))

    def good(self) -> str:
        return self.jsonl("good.jsonl", GOOD)

    def examples(self) -> str:
        return self.jsonl("data/math_training_ready.jsonl", EXAMPLES)

    def tiny(self) -> str:
        path = self.request.getfixturevalue("tiny_model_dir")
        self.roots.append(path)
        return str(path)

    def without_vllm(self) -> Env:
        """As on a machine where vLLM is not installed."""
        monkeypatch = self.request.getfixturevalue("monkeypatch")
        monkeypatch.setattr("failtune.backends.vllm_installed", lambda: False)
        return self

    def server(self, status: int = 200) -> str:
        handler = type(f"Answering{status}", (Answering,), {"status": status})
        return self.stack.enter_context(stub_server(handler))

    def adapter(self, name: str, config: str, meta: str | None = None) -> str:
        """A LoRA adapter folder with the given adapter_config.json (and failtune_train.json)."""
        self.file(f"{name}/adapter_config.json", config)
        self.file(f"{name}/adapter_model.safetensors", b"")
        if meta is not None:
            self.file(f"{name}/failtune_train.json", meta)
        return self.path(name)

    def shards(self, *, spoil: bytes = b"") -> list[str]:
        """Two finished shards of a GSM8K test extraction, made by a scripted model.

        `spoil` is appended to the first shard's results.jsonl.
        """
        from conftest import ScriptedBackend

        from failtune.evaluation.extraction import extract

        dirs = [self.path(f"shard{i}") for i in range(2)]
        for i, d in enumerate(dirs):
            extract(
                output_dir=d,
                categories="math",
                split="test",
                limit=4,
                model=ScriptedBackend(lambda p: "The answer is 3."),
                show_progress=False,
                num_shards=2,
                shard_index=i,
            )
        _append(Path(dirs[0]) / "results.jsonl", spoil)
        return dirs

    def validated(self, *, spoil: bytes = b"", report_file: bool = False) -> str:
        """A finished `failtune validate` folder made from completions files.

        `spoil` is appended to its base results; `report_file` puts a file where the report
        folder goes.
        """
        from failtune.validation.paired import validate

        other = [{**r, "completion": "The answer is 1."} for r in GOOD]
        out = self.path("val")
        validate(
            base_completions=self.good(),
            candidate_completions=self.jsonl("cand.jsonl", other),
            output_dir=out,
            n_boot=100,
        )
        _append(Path(out) / "base" / "results.jsonl", spoil)
        if report_file:
            self.file("val/report", "keep\n")
        return out

    def resumable(self, results: str | bytes, source: str | None = None) -> list[str]:
        """An extract output folder holding `results` from an earlier run, and a live server."""
        self.file("out/results.jsonl", results)
        if source is not None:
            self.file("out/results.source.json", source)
        return _server_extract(self.server(), self.path("out"), limit=3)


def _server_extract(url: str, out: str, *, limit: int, retries: int = 0) -> list[str]:
    return [
        "extract",
        *("--backend", "openai", "--base-url", url, "--model_path", "m"),
        *("--categories", "math", "--split", "test", "--limit", str(limit)),
        *("--output_dir", out, "--max-retries", str(retries), "--no-progress"),
    ]


MODEL_RUN = "extract --categories arith --limit 1 --backend hf --output_dir o"
TRAIN = "train --output_dir a --model_name {}"
RUN = "run {} --no-progress"


def _run_config(env: Env, state: str | None = None, **keys: str | int) -> str:
    """A `failtune run` config; `state` is an earlier run_state.json in its output folder."""
    if state is not None:
        env.file("run/run_state.json", state)
    body = {"model": "builtin:smollm2", "output_dir": env.path("run"), **keys}
    lines = [f"{k} = {json.dumps(v)}" for k, v in body.items()]
    return "\n".join(lines) + '\n[extract]\ncategories = "arith"\nlimit = 2\n'


def cli(template: str, *values: str) -> list[str]:
    """`failtune` arguments from a template whose `{}` words are filled with `values` in turn."""
    fill = iter(values)
    return [next(fill) if word == "{}" else word for word in template.split()]


Builder = Callable[[Env], list[str]]
CASES: list[tuple[str, Builder, str]] = [
    # --- extract: completions files ---
    (
        "extract-completions-not-utf8",
        lambda e: cli("extract --completions {} --output_dir o", e.file("c.jsonl", NOT_UTF8)),
        r"c\.jsonl: line 1 is not UTF-8",
    ),
    (
        "extract-completions-malformed-line",
        lambda e: cli("extract --completions {} --output_dir o", e.file("c.jsonl", BROKEN_JSONL)),
        r"c\.jsonl: line 2: not valid JSON",
    ),
    (
        "extract-completions-not-objects",
        lambda e: cli("extract --completions {} --output_dir o", e.jsonl("c.jsonl", [["id", 1]])),
        r"line 1: expected a JSON object",
    ),
    (
        "extract-completions-id-not-a-string",
        lambda e: cli(
            "extract --completions {} --output_dir o",
            e.jsonl("c.jsonl", [{"id": 0, "completion": "x"}]),
        ),
        r'line 1 needs a string "id"',
    ),
    (
        "extract-completions-unknown-id",
        lambda e: cli(
            "extract --completions {} --output_dir o",
            e.jsonl("c.jsonl", [{"id": "gsm8k/test/999999", "completion": "x"}]),
        ),
        r"no problem with id 'gsm8k/test/999999'",
    ),
    (
        "extract-completions-unknown-task",
        lambda e: cli(
            "extract --completions {} --output_dir o",
            e.jsonl("c.jsonl", [{"id": "nosuch/test/1", "completion": "x"}]),
        ),
        r"unknown task 'nosuch'",
    ),
    (
        "extract-completions-missing",
        lambda e: cli("extract --completions {} --output_dir o", e.path("none.jsonl")),
        r"none\.jsonl(, which does not exist)?$",
    ),
    (
        "extract-completions-is-a-folder",
        lambda e: cli("extract --completions {} --output_dir o", str(e.dir)),
        r"is a folder, not a file",
    ),
    (
        "extract-completions-empty",
        lambda e: cli("extract --completions {} --output_dir o", e.file("c.jsonl", "")),
        r"holds no completions",
    ),
    (
        "extract-output-dir-is-a-file",
        lambda e: cli("extract --completions {} --output_dir {}", e.good(), e.file("o", "keep")),
        r"o is a file, not a folder",
    ),
    (
        "extract-output-dir-inside-a-file",
        lambda e: cli(
            "extract --completions {} --output_dir {}", e.good(), e.file("o", "keep") + "/sub"
        ),
        r"o is a file, not a folder",
    ),
    (
        "extract-unknown-category",
        lambda e: cli("extract --completions {} --categories mathz --output_dir o", e.good()),
        r"unknown category 'mathz'",
    ),
    # --- extract: task files ---
    (
        "extract-task-file-not-utf8",
        lambda e: cli(
            "extract --task-file {} --completions {} --output_dir o",
            e.file("t.jsonl", b'{"question": "\xff", "answer": 1}\n'),
            e.jsonl("c.jsonl", [{"id": "custom/test/0", "completion": "1"}]),
        ),
        r"t\.jsonl: line 1 is not UTF-8",
    ),
    (
        "extract-task-file-question-not-text",
        lambda e: cli(
            "extract --task-file {} --completions {} --output_dir o",
            e.jsonl("t.jsonl", [{"question": 5, "answer": "a"}]),
            e.jsonl("c.jsonl", [{"id": "custom/test/0", "completion": "a"}]),
        ),
        r't\.jsonl: line 1 needs "question" and "answer"',
    ),
    (
        "extract-task-file-choices-not-a-list",
        lambda e: cli(
            "extract --grader choice --task-file {} --completions {} --output_dir o",
            e.jsonl("t.jsonl", [{"question": "q", "answer": "A", "choices": 3}]),
            e.jsonl("c.jsonl", [{"id": "custom/test/0", "completion": "A"}]),
        ),
        r't\.jsonl: line 1: "choices" must be a list',
    ),
    # --- extract: models and servers ---
    (
        "extract-model-missing",
        lambda e: cli(f"{MODEL_RUN} --model_path {{}}", e.path("no/model.gguf")),
        r"model not found: .*no/model\.gguf",
    ),
    (
        "extract-model-garbage-gguf",
        lambda e: cli(
            f"{MODEL_RUN} --model_path {{}}", e.file("m.gguf", b"GGUF" + b"\x00garbage" * 64)
        ),
        r"could not load model .*m\.gguf",
    ),
    (
        "extract-model-truncated-gguf",
        lambda e: cli(f"{MODEL_RUN} --model_path {{}}", _cut_smollm2(e)),
        r"could not load model .*cut\.gguf",
    ),
    (
        "extract-model-broken-config",
        lambda e: cli(f"{MODEL_RUN} --model_path {{}}", e.parent("m/config.json", "{oops")),
        r"could not load model .*m",
    ),
    (
        "extract-model-broken-safetensors",
        lambda e: cli(f"{MODEL_RUN} --model_path {{}}", _broken_weights(e)),
        r"could not load model .*broken",
    ),
    (
        "extract-server-down",
        lambda e: _server_extract(f"http://127.0.0.1:{free_port()}/v1", e.path("o"), limit=1),
        r"failed 1 times \(last: cannot connect\)",
    ),
    (
        "extract-server-address-without-scheme",
        lambda e: _server_extract("localhost:8000/v1", e.path("o"), limit=1),
        r"--base-url localhost:8000/v1: write it as http://host:port/v1",
    ),
    (
        "extract-server-rejects-key",
        lambda e: _server_extract(e.server(401), e.path("o"), limit=1),
        r"refused the API key \(HTTP 401\)",
    ),
    # --- extract: resuming into an earlier run's results ---
    (
        "extract-resume-results-malformed",
        lambda e: e.resumable("{broken\n" + json.dumps({"id": "gsm8k/test/0", "correct": True})),
        r"results\.jsonl: line 1: not valid JSON",
    ),
    (
        "extract-resume-results-not-utf8",
        lambda e: e.resumable(b'{"id": "gsm8k/test/0", "correct": true, "x": "\xe9"}\n{}\n'),
        r"results\.jsonl: line 1 is not UTF-8",
    ),
    (
        "extract-resume-results-wrong-fields",
        lambda e: e.resumable(json.dumps({"id": "gsm8k/test/0", "correct": "yes"}) + "\n"),
        r'results\.jsonl: line 1: "correct" must be true or false',
    ),
    (
        "extract-resume-source-broken",
        lambda e: e.resumable("", source='{"model": '),
        r"results\.source\.json: not valid JSON",
    ),
    # --- validate ---
    (
        "validate-base-completions-not-utf8",
        lambda e: cli(
            "validate --base-completions {} --candidate-completions {} --output_dir v",
            e.file("b.jsonl", NOT_UTF8),
            e.good(),
        ),
        r"b\.jsonl: line 1 is not UTF-8",
    ),
    (
        "validate-candidate-completions-malformed",
        lambda e: cli(
            "validate --base-completions {} --candidate-completions {} --output_dir v",
            e.good(),
            e.file("c.jsonl", BROKEN_JSONL),
        ),
        r"c\.jsonl: line 2: not valid JSON",
    ),
    (
        "validate-output-dir-is-a-file",
        lambda e: cli(
            "validate --base-completions {} --candidate-completions {} --output_dir {}",
            e.good(),
            e.good(),
            e.file("v", "keep"),
        ),
        r"v is a file, not a folder",
    ),
    (
        "validate-adapter-config-broken",
        lambda e: cli(
            "validate --base-completions {} --candidate {} --output_dir v",
            e.good(),
            e.adapter("ad", "{not json"),
        ),
        r"adapter_config\.json: not valid JSON",
    ),
    (
        "validate-adapter-train-record-broken",
        lambda e: cli(
            "validate --base-completions {} --candidate {} --output_dir v",
            e.good(),
            e.adapter("ad", json.dumps({"base_model_name_or_path": "x"}), meta="[1,"),
        ),
        r"failtune_train\.json: not valid JSON",
    ),
    (
        "validate-unreadable-gate",
        lambda e: cli(
            "validate --base-completions {} --candidate-completions {} --gate math.wins>>3",
            e.good(),
            e.good(),
        ),
        r"cannot read gate 'math\.wins>>3'",
    ),
    (
        "validate-unknown-category",
        lambda e: cli(
            "validate --base builtin:smollm2 --candidate builtin:smollm2 --categories nosuch"
        ),
        r"unknown category 'nosuch'",
    ),
    # --- train ---
    (
        "train-dataset-not-utf8",
        lambda e: cli(
            f"{TRAIN} --dataset_path {{}}",
            e.tiny(),
            e.file("d.jsonl", b'{"instruction": "\xe9", "output": "x"}\n'),
        ),
        r"d\.jsonl: line 1 is not UTF-8",
    ),
    (
        "train-dataset-wrong-field-type",
        lambda e: cli(
            f"{TRAIN} --dataset_path {{}}",
            e.tiny(),
            e.jsonl("d.jsonl", [{"instruction": 1, "output": "x"}]),
        ),
        r'd\.jsonl: example 1 must have exactly non-empty string fields "instruction"',
    ),
    (
        "train-dataset-malformed",
        lambda e: cli(
            f"{TRAIN} --dataset_path {{}}",
            e.tiny(),
            e.file("d.jsonl", '{"instruction": "q", "output": "a"}\n{"ins\n'),
        ),
        r"d\.jsonl: line 2: not valid JSON",
    ),
    (
        "train-dataset-matches-nothing",
        lambda e: cli(f"{TRAIN} --dataset_path {{}}", e.tiny(), e.path("nothing/*.jsonl")),
        r"no training file matches",
    ),
    (
        "train-replay-malformed",
        lambda e: cli(
            f"{TRAIN} --dataset_path {{}} --replay {{}}",
            e.tiny(),
            e.examples(),
            e.file("r.jsonl", "[1, 2\n"),
        ),
        r"r\.jsonl: line 1: not valid JSON",
    ),
    (
        "train-output-dir-is-a-file",
        lambda e: cli(
            "train --model_name {} --dataset_path {} --output_dir {}",
            e.tiny(),
            e.examples(),
            e.file("a", "keep"),
        ),
        r"a is a file, not a folder",
    ),
    (
        "train-model-missing",
        lambda e: cli(f"{TRAIN} --dataset_path {{}}", e.path("no/model"), e.examples()),
        r"model not found: .*no/model",
    ),
    (
        "train-model-garbage-gguf",
        lambda e: cli(
            f"{TRAIN} --dataset_path {{}}", e.file("m.gguf", b"\x00" * 512), e.examples()
        ),
        r"could not load model .*m\.gguf",
    ),
    # --- merge ---
    (
        "merge-shard-manifest-broken",
        lambda e: cli("merge {} --output_dir m", e.parent("s/manifest.json", "{")),
        r"manifest\.json:? (is )?not valid JSON",
    ),
    (
        "merge-output-dir-is-a-file",
        lambda e: cli("merge {} {} --output_dir {}", *e.shards(), e.file("m", "keep")),
        r"m is a file, not a folder",
    ),
    (
        "merge-shard-results-not-utf8",
        lambda e: cli("merge {} {} --output_dir m", *e.shards(spoil=b"\xff\n")),
        r"results\.jsonl: line \d+ is not UTF-8",
    ),
    # --- run ---
    (
        "run-config-not-toml",
        lambda e: cli(RUN, e.file("c.toml", "model = [unclosed\n")),
        r"c\.toml: not a valid config",
    ),
    (
        "run-config-not-yaml",
        lambda e: cli(RUN, e.file("c.yaml", "model: [unclosed\n  - : :\n")),
        r"c\.yaml: not a valid config",
    ),
    (
        "run-config-not-utf8",
        lambda e: cli(RUN, e.file("c.toml", b'model = "caf\xe9"\n')),
        r"c\.toml is not UTF-8",
    ),
    (
        "run-output-dir-is-a-file",
        lambda e: cli(RUN, e.file("c.toml", _run_config(e, output_dir=e.file("r", "keep")))),
        r"r is a file, not a folder",
    ),
    (
        "run-state-broken",
        lambda e: cli(RUN, e.file("c.toml", _run_config(e, state='{"steps": {'))),
        r"run_state\.json: not valid JSON",
    ),
    (
        "run-unknown-category",
        lambda e: cli(RUN, e.file("c.toml", _run_config(e).replace('"arith"', '"arithm"'))),
        r"unknown category 'arithm'",
    ),
    (
        "run-model-missing",
        lambda e: cli(RUN, e.file("c.toml", _run_config(e, model=e.path("no/model.gguf")))),
        r"model not found: .*no/model\.gguf",
    ),
    (
        "run-backend-vllm-not-installed",
        lambda e: cli(RUN, e.file("c.toml", _run_config(e.without_vllm(), backend="vllm"))),
        r'backend = "vllm" needs vLLM: pip install',
    ),
    (
        "run-backend-openai-several-rounds",
        lambda e: cli(
            RUN, e.file("c.toml", _run_config(e, backend="openai", base_url=e.server(), rounds=2))
        ),
        r'backend = "openai" runs one round',
    ),
    (
        "run-backend-openai-server-cannot-load-adapters",
        lambda e: cli(
            RUN, e.file("c.toml", _run_config(e, backend="openai", base_url=e.server(404)))
        ),
        r"cannot load LoRA adapters at run time .*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
    ),
    # --- report ---
    (
        "report-folder-missing",
        lambda e: cli("report {}", e.path("nothing")),
        r"holds neither run_state\.json nor validation\.json",
    ),
    (
        "report-run-state-broken",
        lambda e: cli("report {}", e.parent("r/run_state.json", "{")),
        r"run_state\.json: not valid JSON",
    ),
    (
        "report-validation-broken",
        lambda e: cli("report {}", e.parent("r/validation.json", "[")),
        r"validation\.json: not valid JSON",
    ),
    (
        "report-results-not-utf8",
        lambda e: cli("report {}", e.validated(spoil=b"\xfe")),
        r"results\.jsonl: line \d+ is not UTF-8",
    ),
    (
        "report-target-is-a-file",
        lambda e: cli("report {}", e.validated(report_file=True)),
        r"report is a file, not a folder",
    ),
    # --- demo ---
    (
        "demo-output-dir-is-a-file",
        lambda e: cli("demo --no-progress --output_dir {}", e.file("d", "keep")),
        r"d is a file, not a folder",
    ),
    (
        "demo-model-missing",
        lambda e: cli("demo --no-progress --output_dir d --model_path {}", e.path("no/m.gguf")),
        r"model not found: .*no/m\.gguf",
    ),
]


def _broken_weights(env: Env) -> str:
    """The tiny model's config and tokenizer with a weights file that is not safetensors."""
    target = env.dir / "broken"
    shutil.copytree(env.tiny(), target)
    (target / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    return str(target)


def _cut_smollm2(env: Env) -> str:
    """The first 64 KB of the real SmolLM2 GGUF, as a download cut short leaves it."""
    require_smollm2()
    from failtune.model_loading import smollm2_gguf

    with smollm2_gguf().open("rb") as f:
        return env.file("cut.gguf", f.read(1 << 16))


def _append(path: Path, tail: bytes) -> None:
    with path.open("ab") as f:
        f.write(tail)


def _snapshot(roots: list[Path]) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """Exit code and stderr of `failtune ARGV`; an escaped exception counts as a traceback."""
    try:
        code: int | None = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        return None, capfd.readouterr().err + traceback.format_exc()
    return code, capfd.readouterr().err


def assert_one_clean_line(code: int | None, err: str, expect: str) -> None:
    """Non-zero exit, no traceback, and one `failtune: error:` line, the last thing printed.

    Lines before it are the command's progress (a bar, "round-1/extract: started"); after it
    come only the "  - " items of a config or flag check that lists several problems at once.
    """
    assert "Traceback" not in err, err
    assert code not in (0, None), err
    lines = err.rstrip("\n").splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("failtune: error: ")]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}:\n{err}"
    after = lines[errors[0] + 1 :]
    assert all(line.startswith("  - ") for line in after), f"printed after the error:\n{err}"
    assert re.search(expect, lines[errors[0]] + "".join(after)), err


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch) -> Iterator[Env]:
    monkeypatch.chdir(tmp_path)
    with ExitStack() as stack:
        yield Env(tmp_path, request, stack)


@pytest.mark.parametrize(("build", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(
    env: Env, capfd: pytest.CaptureFixture[str], build: Builder, expect: str
) -> None:
    argv = build(env)
    capfd.readouterr()  # what building the inputs printed is not the command's output
    before = _snapshot(env.roots)
    code, err = run_cli(argv, capfd)
    assert_one_clean_line(code, err, expect)
    after = _snapshot(env.roots)
    changed = [str(p) for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"inputs or earlier outputs changed: {changed}"


def test_the_battery_covers_every_command() -> None:
    commands = {c[0].split("-")[0] for c in CASES}
    assert len(CASES) >= 30
    assert commands == {"extract", "validate", "train", "merge", "run", "report", "demo"}


# --- a full disk: stop with one line, keep everything written, the rerun finishes ---


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A tmpfs of a given size (e.g. "16k"); call again with a size to grow it in place."""
    point = tmp_path / "disk"
    point.mkdir()
    mounted = False

    def mount(size: str) -> Path:
        nonlocal mounted
        options = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            message = f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI runs as root: a silent skip would hide lost coverage
            pytest.skip(message)
        mounted = True
        return point

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(point)], check=True)


def _ids(n: int) -> list[str]:
    """The first n GSM8K test ids, sorted as text (a server answers in any order)."""
    return sorted(f"gsm8k/test/{i}" for i in range(n))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_full_disk_while_appending_results_keeps_them_and_the_rerun_finishes(
    small_disk: Callable[[str], Path], capfd: pytest.CaptureFixture[str]
) -> None:
    disk = small_disk("16k")
    out = disk / "out"
    with stub_server(Answering) as url:
        argv = _server_extract(url, str(out), limit=60)
        code, err = run_cli(argv, capfd)
        assert_one_clean_line(code, err, r"the disk is full while writing .*results\.jsonl")
        assert "everything written so far is kept" in err and "rerun to resume" in err
        kept = _lines(out / "results.jsonl")
        assert 0 < len(kept) < 60
        assert all(line.endswith("\n") and json.loads(line)["id"] for line in kept)
        small_disk("4m")
        code, err = run_cli(argv, capfd)
    assert code == 0, err
    final = _lines(out / "results.jsonl")
    assert final[: len(kept)] == kept  # nothing graded before the disk filled was redone
    assert sorted(json.loads(line)["id"] for line in final) == _ids(60)
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"


def test_full_disk_while_writing_outputs_keeps_the_earlier_ones(
    small_disk: Callable[[str], Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    disk = small_disk("24k")
    out = disk / "out"
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in GOOD[:1]))
    assert (
        run_cli(["extract", "--completions", str(small), "--output_dir", str(out)], capfd)[0] == 0
    )
    earlier = _snapshot([out])
    big = tmp_path / "big.jsonl"
    rows = [{"id": f"gsm8k/test/{i}", "completion": "The answer is 3."} for i in range(200)]
    big.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["extract", "--completions", str(big), "--output_dir", str(out)]
    code, err = run_cli(argv, capfd)
    assert_one_clean_line(code, err, r"the disk is full while writing .*out/")
    assert _snapshot([out])[out / "results.jsonl"] == earlier[out / "results.jsonl"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files
    small_disk("4m")
    code, err = run_cli(argv, capfd)
    assert code == 0, err
    assert len(_lines(out / "results.jsonl")) == 200


def test_full_disk_while_training_keeps_checkpoints_and_the_rerun_finishes(
    small_disk: Callable[[str], Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint every step (about 4 MB each): the first fits in 6 MB, the second does not."""
    data = tmp_path / "math_training_ready.jsonl"
    examples = [{"instruction": f"What is {i} + 1?", "output": f"It is {i + 1}."} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in examples))
    before = data.read_bytes()
    adapter = small_disk("6m") / "adapter"
    argv = ["train", "--model_name", str(tiny_model_dir), "--dataset_path", str(data)]
    argv += ["--output_dir", str(adapter), "--batch_size", "2", "--num_train_epochs", "1"]
    argv += ["--save-steps", "1", "--device", "cpu", "--no-progress"]
    code, err = run_cli(argv, capfd)
    assert_one_clean_line(code, err, r"the disk is full while writing .*adapter/checkpoints")
    first = adapter / "checkpoints" / "checkpoint-1"
    assert json.loads((first / "trainer_state.json").read_text())["global_step"] == 1
    small_disk("64m")
    code, err = run_cli(argv, capfd)
    assert code == 0, err
    assert f"resuming training from {first}" in err
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    assert json.loads((adapter / "metrics.json").read_text())["steps"] == 2
    assert data.read_bytes() == before


# --- a results file whose last line a kill cut: repaired on resume ---


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda line: line[: len(line) // 2], id="mid-line"),
        pytest.param(lambda line: line.rstrip(b"\n"), id="before-newline"),
        pytest.param(lambda line: line[: line.index(b"\xc3") + 1], id="mid-character"),
    ],
)
def test_a_results_line_cut_by_a_kill_is_repaired_on_resume(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], cut: Callable[[bytes], bytes]
) -> None:
    out = tmp_path / "out"
    with stub_server(Answering) as url:
        assert run_cli(_server_extract(url, str(out), limit=4), capfd)[0] == 0
        results = out / "results.jsonl"
        lines = results.read_bytes().splitlines(keepends=True)
        last = json.loads(lines[-1])
        last["completion"] = "é " + last["completion"]  # a two-byte character to cut through
        whole = json.dumps(last, ensure_ascii=False).encode() + b"\n"
        results.write_bytes(b"".join(lines[:-1]) + cut(whole))
        code, err = run_cli(_server_extract(url, str(out), limit=6), capfd)
    assert code == 0, err
    repaired = results.read_bytes().splitlines(keepends=True)
    assert repaired[:3] == lines[:3]  # the whole lines are kept as they were
    assert sorted(json.loads(line)["id"] for line in repaired) == _ids(6)
    assert all(line.endswith(b"\n") for line in repaired)
