"""Retry rules of the OpenAI backend, against a local HTTP server that answers with set statuses.

llama.cpp never sends 429 or 503 on purpose, so these statuses come from a scripted server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar

import pytest
from servers import StubHandler, chat_answer, stub_server

from failtune.backends import GenParams, generate_all
from failtune.backends.openai import OpenAIBackend, ServerError
from failtune.errors import FailtuneError

ANSWER = chat_answer("3 + 4 = 7. The answer is 7. Next", "length", 11)


class Scripted(StubHandler):
    statuses: ClassVar[list[int]] = []  # answered in turn, then 200
    bodies: ClassVar[list[dict]] = []  # the requests received

    def do_POST(self) -> None:
        Scripted.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status = Scripted.statuses.pop(0) if Scripted.statuses else 200
        body = ANSWER if status == 200 else {"error": {"message": f"status {status}"}}
        self.reply(status, body)


@pytest.fixture
def server() -> Iterator[str]:
    Scripted.statuses, Scripted.bodies = [], []
    with stub_server(Scripted) as url:
        yield url


def backend(url: str, **kw) -> OpenAIBackend:
    return OpenAIBackend.connect("m", base_url=url, backoff=0.01, **kw)


def test_429_and_5xx_are_retried_then_answered(server: str) -> None:
    Scripted.statuses = [429, 503, 500]
    params = GenParams(max_new_tokens=16, stop_after=r"The answer is \d+\.")
    [gen] = generate_all(backend(server), ["What is 3 + 4?"], params)
    assert gen.text == "3 + 4 = 7. The answer is 7."  # cut after the answer client-side
    assert gen.finish_reason == "stop"  # the cut, not the server's "length"
    assert gen.completion_tokens == 11  # from usage
    assert len(Scripted.bodies) == 4
    sent = Scripted.bodies[-1]
    assert sent["temperature"] == 0 and sent["seed"] == 0 and sent["max_tokens"] == 16
    assert sent["messages"] == [{"role": "user", "content": "What is 3 + 4?"}]


def test_retries_run_out_in_one_sentence(server: str) -> None:
    Scripted.statuses = [502] * 10
    with pytest.raises(ServerError, match=r"failed 3 times \(last: HTTP 502\)"):
        generate_all(backend(server, max_retries=2), ["q"], GenParams())
    assert len(Scripted.bodies) == 3


def test_a_rejected_request_is_not_retried(server: str) -> None:
    Scripted.statuses = [400]
    with pytest.raises(FailtuneError, match=r"rejected the request \(HTTP 400\): status 400"):
        generate_all(backend(server), ["q"], GenParams())
    assert len(Scripted.bodies) == 1


def test_a_fatal_error_mid_run_hands_back_what_finished_first(server: str) -> None:
    Scripted.statuses = [200] * 10 + [401]
    finished: list[int] = []
    with pytest.raises(FailtuneError, match=r"refused the API key \(HTTP 401\)"):
        for batch in backend(server, max_concurrency=4).stream(["q"] * 100, GenParams()):
            finished.extend(i for i, _ in batch)
    assert len(finished) >= 10
    assert len(set(finished)) == len(finished)
    assert len(Scripted.bodies) <= 11 + 2 * 4  # at most the queue already taken: not all 100
