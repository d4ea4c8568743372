"""Sampling through OpenAI-compatible servers: `n` where the server honours it, K seeded
requests where it refuses or ignores it, and the same answers every way.

Scripted servers stand for the three kinds; llama.cpp's real server is the one that ignores `n`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from servers import MODEL_ALIAS, LlamaServer, StubHandler, chat_answer, stub_server

from failtune.backends import GenParams, apply_stop_rules, sample_all, sample_seed
from failtune.backends.openai import OpenAIBackend
from failtune.errors import FailtuneError

K = 3
PARAMS = GenParams(max_new_tokens=16, temperature=0.8, top_p=0.9, samples=K, seed=5)
PROMPTS = ["What is 2 + 2?", "What is 3 + 5?"]


def answer_text(seed: int) -> str:
    """What a scripted server answers for a seed: a function of the seed alone, as a seeded
    sampler's answer is; its length (2 to 4 words) varies with it."""
    return " ".join(["seed", str(seed)] + ["w"] * (seed % 3))


class Server(StubHandler):
    """`mode`: "honours" (n choices, choice j drawn with seed + j, as vLLM's server does),
    "refuses" (HTTP 400 for n > 1) or "ignores" (one choice, as llama.cpp's server)."""

    mode: ClassVar[str] = "honours"
    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Server.bodies.append(body)
        n = body.get("n", 1)
        if n > 1 and Server.mode == "refuses":
            self.reply(400, {"error": {"message": "n must be 1"}})
            return
        count = n if Server.mode == "honours" else 1
        choices = [self._choice(body, body["seed"] + j, j, n > 1) for j in range(count)]
        usage = sum(len(c["_text"].split()) for c in choices)
        reply = chat_answer("", "stop", usage)
        for c in choices:
            del c["_text"]
        reply["choices"] = choices
        self.reply(200, reply)

    @staticmethod
    def _choice(body: dict, seed: int, index: int, logprobs: bool) -> dict[str, Any]:
        text = answer_text(seed)
        tokens = [{"token": w, "logprob": -1.0} for w in text.split()]
        choice: dict[str, Any] = {"index": index, "finish_reason": "stop", "_text": text}
        if "messages" in body:
            choice["message"] = {"role": "assistant", "content": text}
            choice["logprobs"] = {"content": tokens} if logprobs and body["logprobs"] else None
        else:
            choice["text"] = text
            with_tokens = {"tokens": text.split(), "token_logprobs": [-1.0] * len(tokens)}
            choice["logprobs"] = with_tokens if logprobs and body["logprobs"] == 0 else None
        return choice


@pytest.fixture
def server() -> Iterator[str]:
    Server.mode, Server.bodies = "honours", []
    with stub_server(Server) as url:
        yield url


def connect(url: str, **kw: Any) -> OpenAIBackend:
    return OpenAIBackend.connect("m", base_url=url, max_concurrency=1, backoff=0.01, **kw)


def expected(prompts: list[str], params: GenParams = PARAMS) -> list[list[str]]:
    return [
        [answer_text(sample_seed(params.seed, p) + s) for s in range(params.samples)]
        for p in prompts
    ]


@pytest.mark.parametrize("mode", ["honours", "refuses", "ignores"])
def test_every_kind_of_server_gives_the_same_samples(server: str, mode: str) -> None:
    Server.mode = mode
    backend = connect(server)
    got = sample_all(backend, PROMPTS, PARAMS)
    assert [[g.text for g in row] for row in got] == expected(PROMPTS)
    # each answer's own token count: from its log-probabilities with n, else from usage
    assert [[g.completion_tokens for g in row] for row in got] == [
        [len(t.split()) for t in row] for row in expected(PROMPTS)
    ]
    seeds = [b["seed"] for b in Server.bodies]
    first = sample_seed(PARAMS.seed, PROMPTS[0])
    second = sample_seed(PARAMS.seed, PROMPTS[1])
    if mode == "honours":
        assert backend.n_works is True
        assert [(b["n"], b["seed"]) for b in Server.bodies] == [(K, first), (K, second)]
        assert all(b["logprobs"] is True for b in Server.bodies)
    else:  # asked once with n, then one request per sample; the next prompt without n
        assert backend.n_works is False
        again = [first, first + 1, first + 2] if mode == "refuses" else [first + 1, first + 2]
        assert seeds == [first, *again, second, second + 1, second + 2]
        assert [b.get("n", 1) for b in Server.bodies] == [K] + [1] * (len(seeds) - 1)
    sent = Server.bodies[-1]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.8, 0.9, 16)
    assert "top_k" not in sent  # not set: OpenAI's own API would reject it


def test_completions_endpoint_counts_tokens_per_answer(server: str) -> None:
    backend = OpenAIBackend(connect(server).client, "m", endpoint="completions", render=str)
    got = sample_all(backend, PROMPTS[:1], PARAMS)
    assert [g.text for g in got[0]] == expected(PROMPTS[:1])[0]
    assert [g.completion_tokens for g in got[0]] == [len(t.split()) for t in expected(PROMPTS)[0]]
    assert Server.bodies[0]["logprobs"] == 0 and Server.bodies[0]["n"] == K


def test_a_resumed_prompt_asks_only_for_its_missing_samples(server: str) -> None:
    skip = {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)}
    batches = connect(server).stream_samples(PROMPTS, PARAMS, skip)
    got = [item for batch in batches for item in batch]
    assert [(i, s, g.text) for i, s, g in got] == [(0, 2, expected(PROMPTS)[0][2])]
    assert len(Server.bodies) == 1 and "n" not in Server.bodies[0]
    assert Server.bodies[0]["seed"] == sample_seed(PARAMS.seed, PROMPTS[0]) + 2


def test_top_k_keys_and_greedy_requests(server: str) -> None:
    params = GenParams(max_new_tokens=8, temperature=1.0, top_k=20, samples=2, seed=1)
    got = sample_all(connect(server), PROMPTS, params, keys=["gsm8k/test/0", "gsm8k/test/1"])
    assert Server.bodies[0]["top_k"] == 20
    assert Server.bodies[0]["seed"] == sample_seed(1, "gsm8k/test/0")  # keyed by id, not text
    assert got[1][1].text == answer_text(sample_seed(1, "gsm8k/test/1") + 1)
    Server.bodies.clear()
    sample_all(connect(server, seed=3), PROMPTS[:1], GenParams(max_new_tokens=8))
    # greedy: the request the backend has always sent
    assert Server.bodies == [
        {
            "messages": [{"role": "user", "content": PROMPTS[0]}],
            "model": "m",
            "max_tokens": 8,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 3,
        }
    ]


class Rejecting(StubHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply(400, {"error": {"message": "prompt too long"}})


def test_a_request_rejected_for_another_reason_still_stops_the_run() -> None:
    with stub_server(Rejecting) as url, pytest.raises(FailtuneError, match="prompt too long"):
        sample_all(connect(url), PROMPTS, PARAMS)


@pytest.mark.model
def test_llama_cpp_samples_are_seeded_and_match_direct_requests(
    llama_server: LlamaServer,
) -> None:
    """llama.cpp ignores `n`: sample 0 comes from the `n` request, the others from one request
    each, seeded S + s; each matches the server's own answer to that seed, and a rerun repeats
    every sample."""
    prompt = "Write one sentence about the sea."
    params = GenParams(max_new_tokens=24, temperature=1.0, samples=4, seed=11)
    backend = OpenAIBackend.connect(MODEL_ALIAS, base_url=llama_server.base_url)
    [got] = sample_all(backend, [prompt], params)
    assert backend.n_works is False
    assert len({g.text for g in got}) == 4  # four different samples
    assert sample_all(backend, [prompt], params) == [got]
    for s, gen in enumerate(got):
        direct = llama_server.post(
            "/chat/completions",
            {
                "model": MODEL_ALIAS,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 24,
                "temperature": 1.0,
                "top_p": 1.0,
                "seed": sample_seed(11, prompt) + s,
            },
        )
        assert gen.text == apply_stop_rules(direct["choices"][0]["message"]["content"], params)
        assert gen.completion_tokens == direct["usage"]["completion_tokens"]
