"""The OpenAI-compatible backend against a real llama.cpp server serving SmolLM2 on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from helpers import read_jsonl
from servers import MODEL_ALIAS, LlamaServer

from failtune.backends import GenParams, apply_stop_rules, generate_all
from failtune.backends.openai import OpenAIBackend, ServerError
from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.evaluation.extraction import extract
from failtune.evaluation.records import load_problems

pytestmark = pytest.mark.model

SPLIT, LIMIT, MAX_TOKENS = "test", 5, 32
ARITH = [p for _, p in load_problems("arith", SPLIT, LIMIT)]
STOP_AFTER = load_problems("arith", SPLIT, 1)[0][0].stop_after


def direct(server: LlamaServer, prompt: str, **extra) -> dict:
    """What the server itself answers to the same greedy request, with no failtune in between."""
    body = {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
        **extra,
    }
    return server.post("/chat/completions", body)


def run(server: LlamaServer, out: Path, **options) -> None:
    extract(
        MODEL_ALIAS,
        out,
        categories="arith",
        split=SPLIT,
        limit=LIMIT,
        max_new_tokens=MAX_TOKENS,
        backend="openai",
        server={"base_url": server.base_url, "max_concurrency": 3, **options},
        show_progress=False,
    )


def extract_cli(server: LlamaServer, out: Path, *options: str) -> int:
    return main(
        [
            "extract",
            *("--backend", "openai", "--base-url", server.base_url, "--categories", "arith"),
            *("--split", SPLIT, "--limit", str(LIMIT), "--max-new-tokens", str(MAX_TOKENS)),
            *("--output_dir", str(out), "--no-progress", *options),
        ]
    )


@pytest.fixture(scope="module")
def reference(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """One uninterrupted, unsharded run: what every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    run(llama_server, out)
    return sorted(read_jsonl(out / "results.jsonl"), key=lambda r: r["id"])


def test_extract_matches_direct_requests(llama_server: LlamaServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # no --model-name: the only model the server lists
    assert extract_cli(llama_server, out, "--max-concurrency", "3") == 0
    records = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert len(records) == LIMIT
    for problem in ARITH:
        answer = direct(llama_server, problem.prompt)
        choice, record = answer["choices"][0], records[problem.id]
        text = choice["message"]["content"]
        assert record["completion"] == apply_stop_rules(text, GenParams(stop_after=STOP_AFTER))
        assert record["completion_tokens"] == answer["usage"]["completion_tokens"]
        if record["completion"] == text.strip():  # not cut client-side: the server's reason
            assert record["finish_reason"] == choice["finish_reason"]
    assert {r["finish_reason"] for r in records.values()} <= {"stop", "length"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["backend"] == "openai"
    assert manifest["source"]["model"] == MODEL_ALIAS
    assert manifest["status"] == "done"


def test_stop_strings_and_completions_endpoint(llama_server: LlamaServer) -> None:
    prompts = [p.prompt for p in ARITH[:3]]
    params = GenParams(max_new_tokens=MAX_TOKENS, stop=("\n",))
    chat = OpenAIBackend.connect(MODEL_ALIAS, base_url=llama_server.base_url)
    got = generate_all(chat, prompts, params)
    for prompt, gen in zip(prompts, got, strict=True):
        answer = direct(llama_server, prompt, stop=["\n"])
        assert gen.text == answer["choices"][0]["message"]["content"].strip()
        assert "\n" not in gen.text
    # completions: failtune renders the prompt with the model's chat template
    plain = OpenAIBackend.connect(
        MODEL_ALIAS,
        base_url=llama_server.base_url,
        endpoint="completions",
        chat_template_from="builtin:smollm2",
    )
    assert plain.render is not None
    rendered = plain.render(prompts[0])
    assert rendered.startswith("<|im_start|>") and rendered.endswith("<|im_start|>assistant\n")
    same = generate_all(plain, prompts, params)
    assert [g.text for g in same] == [g.text for g in got]  # same template, same greedy answers
    gen = same[0]
    greedy = {"temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": ["\n"]}
    body = {"model": MODEL_ALIAS, "prompt": rendered, "max_tokens": MAX_TOKENS, **greedy}
    answer = llama_server.post("/completions", body)
    assert gen.text == answer["choices"][0]["text"].strip()
    assert gen.text  # the template was understood: an answer, not an echo of markup
    assert "<|im" not in gen.text


def test_requests_run_concurrently(llama_server: LlamaServer) -> None:
    backend = OpenAIBackend.connect(base_url=llama_server.base_url, max_concurrency=3)
    create = backend.client.chat.completions.create
    active, peak, lock = [0], [0], threading.Lock()

    def counting(**kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return create(**kw)
        finally:
            with lock:
                active[0] -= 1

    backend.client.chat.completions.create = counting  # type: ignore[method-assign]
    params = GenParams(max_new_tokens=8)
    batches = list(backend.stream([p.prompt for p in ARITH], params))
    assert sorted(i for b in batches for i, _ in b) == list(range(LIMIT))
    assert len(batches) > 1  # handed back as they finish, not all at the end
    assert peak[0] == 3


def test_killed_server_stops_cleanly_and_the_rerun_completes(
    llama_server: LlamaServer, reference: list[dict], tmp_path: Path
) -> None:
    crashing = LlamaServer(llama_server.model, tmp_path / "server.log").start()
    out = tmp_path / "out"
    results = out / "results.jsonl"

    def kill_after_two_answers() -> None:
        while not (results.exists() and len(results.read_text().splitlines()) >= 2):
            time.sleep(0.02)
        crashing.kill()

    killer = threading.Thread(target=kill_after_two_answers, daemon=True)
    killer.start()
    try:
        with pytest.raises(ServerError, match=r"failed 3 times .*rerun to resume"):
            run(crashing, out, max_retries=2, backoff=0.1)
        killer.join(5)
        kept = read_jsonl(results)
        assert 2 <= len(kept) < LIMIT
        assert json.loads((out / "manifest.json").read_text())["status"] == "running"
        crashing.start()  # same port: the same command resumes
        run(crashing, out, max_retries=2, backoff=0.1)
    finally:
        crashing.stop()
    final = read_jsonl(results)
    assert final[: len(kept)] == kept  # nothing lost, nothing redone
    assert len(final) == LIMIT
    assert sorted(final, key=lambda r: r["id"]) == reference


def test_shards_through_the_server_merge_into_the_reference(
    llama_server: LlamaServer, reference: list[dict], tmp_path: Path
) -> None:
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, d in enumerate(shards):
        options = ("--model-name", MODEL_ALIAS, "--num-shards", "2", "--shard-index", str(i))
        assert extract_cli(llama_server, d, *options) == 0
    merged = tmp_path / "merged"
    assert main(["merge", *map(str, shards), "--output_dir", str(merged)]) == 0
    by_id = {r["id"]: r for r in reference}
    assert read_jsonl(merged / "results.jsonl") == [by_id[p.id] for p in ARITH]  # dataset order


def test_validate_through_the_server(llama_server: LlamaServer, tmp_path: Path) -> None:
    """Base and candidate are served names; the same model on both sides ties everywhere."""
    from failtune.validation.paired import validate

    result = validate(
        MODEL_ALIAS,
        MODEL_ALIAS,
        categories="arith",
        output_dir=tmp_path,
        limit=3,
        max_new_tokens=MAX_TOKENS,
        backend="openai",
        server={"base_url": llama_server.base_url},
        show_progress=False,
    )
    table = result.categories["arith"]
    assert (table["n"], table["wins"], table["losses"]) == (3, 0, 0)


def test_wrong_key_url_and_model_are_one_sentence(llama_server: LlamaServer, tmp_path) -> None:
    keyed = LlamaServer(llama_server.model, tmp_path / "keyed.log", api_key="sekret").start()
    try:
        with pytest.raises(FailtuneError, match=r"refused the API key \(HTTP 401\)"):
            OpenAIBackend.connect(base_url=keyed.base_url)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SERVER_KEY", "sekret")
            backend = OpenAIBackend.connect(base_url=keyed.base_url, api_key_env="SERVER_KEY")
            assert backend.model_name == MODEL_ALIAS
    finally:
        keyed.stop()
    wrong_url = llama_server.base_url.removesuffix("/v1") + "/api"
    with pytest.raises(FailtuneError, match=r"HTTP 404 .*wrong --base-url"):
        OpenAIBackend.connect(base_url=wrong_url)
    with pytest.raises(FailtuneError, match="NOPE_KEY: that environment variable is not set"):
        OpenAIBackend.connect(base_url=llama_server.base_url, api_key_env="NOPE_KEY")
    code = main(["extract", "--backend", "openai", "--output_dir", str(tmp_path / "o")])
    assert code == 2  # no --base-url: a clear error, no traceback
