"""OpenAI-compatible server backend (vLLM serve, SGLang, llama.cpp, Ollama, hosted APIs).

Requests run concurrently in threads; each finished answer is handed back at once so extract
appends it to results.jsonl, and a server that dies mid-run costs only the requests in flight.
Transient failures (429, 5xx, refused or dropped connections, timeouts) are retried with
exponential backoff and jitter; a wrong key, model or URL stops the run with one sentence.

Sampling asks for a prompt's K answers in one request (`n`, seeded with the prompt's seed S),
or, where a server refuses `n` or ignores it (llama.cpp returns one answer), in K requests with
seeds S, S+1, ...: vLLM's server gives the answers of an `n` request exactly those seeds, so
both ways, and a resumed run asking for one missing answer, agree there. With `n` each answer's
token count comes from its token log-probabilities (the usage counts all answers together).

Over 450 lines because it is one protocol's client: connecting and checking the server, the two
endpoints, retries and the two ways of sampling depend on each other's details.
`top_k` is sent only when set, since OpenAI's own API rejects it; a server's own default then
applies (llama.cpp's is 40).
"""

from __future__ import annotations

import copy
import os
import random
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai

from failtune.backends import (
    BackendInfo,
    Generation,
    GenParams,
    Sampled,
    ScoreRequest,
    apply_stop_rules,
    cannot_score,
    first_samples,
    prompt_keys,
    sample_seed,
    vllm_lora_rank,
)
from failtune.errors import FailtuneError
from failtune.files import read_json

ENDPOINTS = ("chat", "completions")
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_RETRY_STATUS = (408, 409, 429)  # plus every 5xx


class ServerError(FailtuneError):
    """The server kept failing after every retry; what finished before is saved."""


class OpenAIBackend:
    """Generation through `/v1/chat/completions` or `/v1/completions`."""

    def __init__(
        self,
        client: openai.OpenAI,
        model_name: str,
        *,
        endpoint: str = "chat",
        render: Callable[[str], str] | None = None,
        max_concurrency: int = 8,
        max_retries: int = 6,
        backoff: float = 1.0,
        seed: int = 0,
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise FailtuneError(f"unknown endpoint {endpoint!r} (choose from: chat, completions)")
        if endpoint == "completions" and render is None:
            raise FailtuneError(
                "--endpoint completions needs the model's chat template: give --chat-template-from "
                "(the served model as a folder, hub id or .gguf file), or use --endpoint chat"
            )
        if max_concurrency < 1:
            raise FailtuneError("--max-concurrency must be at least 1")
        self.client, self.model_name, self.endpoint = client, model_name, endpoint
        self.render = render
        self.max_concurrency, self.max_retries, self.backoff = max_concurrency, max_retries, backoff
        self.seed = seed
        self.n_works: bool | None = None  # whether the server honours `n`; None: not yet asked
        self.info = BackendInfo(
            backend="openai",
            model=model_name,
            details={
                "base_url": str(client.base_url),
                "endpoint": endpoint,
                "max_concurrency": max_concurrency,
                "seed": seed,
            },
        )

    @classmethod
    def connect(
        cls,
        model_name: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        endpoint: str = "chat",
        chat_template_from: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 600.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        seed: int = 0,
    ) -> OpenAIBackend:
        """Make a client; ask the server for its model when `model_name` is not given."""
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise FailtuneError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        client = make_client(
            base_url,
            "--base-url",
            api_key=_api_key(api_key_env),
            timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=0,  # retried here, so a dead server ends in one clear sentence
        )
        render = _template_renderer(chat_template_from) if endpoint == "completions" else None
        backend = cls(
            client,
            model_name or "",
            endpoint=endpoint,
            render=render,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            backoff=backoff,
            seed=seed,
        )
        if not model_name:
            backend.model_name = backend.info.model = backend._only_model()
        return backend

    def _only_model(self) -> str:
        """The model the server serves, when it serves exactly one (LoRA adapters loaded into it
        are listed too, with their base as `parent`: they do not count)."""
        names = [m.id for m in self._models() if not getattr(m, "parent", None)]
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise FailtuneError(
                f"the server at {self.client.base_url} serves {len(names)} models ({listed}); "
                "choose one with --model-name"
            )
        return names[0]

    def _models(self) -> list[Any]:
        return list(self._call(self.client.models.list, threading.Event()).data)

    def check_adapter_loading(self, rank: int) -> None:
        """Refuse, in one sentence saying what to do, a server that cannot load LoRA adapters
        at run time (vLLM registers /v1/load_lora_adapter only when that is enabled).

        The probe names no adapter: an enabled server answers 400 (missing fields), one without
        the route 404. A server started without --enable-lora (or with too small a
        --max-lora-rank) is only found out when the adapter is loaded, with the same advice.
        """
        status, _ = self._post("/load_lora_adapter", {"lora_name": "", "lora_path": ""})
        if status in (404, 405):
            raise FailtuneError(
                f"the server at {self.client.base_url} cannot load LoRA adapters at run time "
                f"(HTTP {status} from /load_lora_adapter), so the trained adapter could not be "
                f"validated on it: {_lora_advice(rank)}"
            )

    def with_adapter(self, name: str, adapter: Path) -> OpenAIBackend:
        """Load `adapter` into the server as `name` (vLLM's /v1/load_lora_adapter) unless it is
        already there, and return a backend that generates through it."""
        if name not in {m.id for m in self._models()}:
            path = str(adapter.resolve())  # read by the server: same machine or shared disk
            status, message = self._post(
                "/load_lora_adapter", {"lora_name": name, "lora_path": path}
            )
            if status != 200:
                rank = int(read_json(adapter / "adapter_config.json").get("r", 16))
                raise FailtuneError(
                    f"the server at {self.client.base_url} could not load the adapter {path} "
                    f"(HTTP {status}: {message}); {_lora_advice(rank)}, and make sure the "
                    "server can read that folder"
                )
        twin = copy.copy(self)
        twin.model_name = name
        twin.info = BackendInfo("openai", name, {**self.info.details, "lora_path": str(adapter)})
        return twin

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        """POST to a server route outside the OpenAI API: (HTTP status, message); lost
        connections and busy servers are retried as for generation."""

        def request() -> tuple[int, str]:
            try:
                return 200, self.client.post(path, body=body, cast_to=str)
            except openai.APIStatusError as e:
                if e.status_code in (*_RETRY_STATUS, 401, 403, 502, 503, 504):
                    raise  # retried, or the API key's sentence
                return e.status_code, _message(e)

        return self._call(request, threading.Event())

    def stream(
        self, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
    ) -> Iterator[list[tuple[int, Generation]]]:
        return first_samples(self, prompts, params, skip)

    def stream_samples(
        self,
        prompts: Sequence[str],
        params: GenParams,
        skip: Collection[tuple[int, int]] = (),
        keys: Sequence[str] | None = None,
    ) -> Iterator[list[Sampled]]:
        """Yield answers as they finish; on a fatal error, first yield what did finish.

        At most twice `max_concurrency` requests are queued, so waiting stays cheap on long runs.
        """
        cancel = threading.Event()
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="failtune-openai")
        todo = self._jobs(prompts, params, skip, prompt_keys(prompts, keys))
        pending: set[Future[list[Sampled]]] = set()
        failure: BaseException | None = None
        try:
            while True:
                while failure is None and len(pending) < 2 * self.max_concurrency:
                    job = next(todo, None)
                    if job is None:
                        break
                    pending.add(pool.submit(self._answer, *job, params, cancel))
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                batch: list[Sampled] = []
                for future in finished:
                    pending.discard(future)
                    error = None if future.cancelled() else future.exception()
                    if future.cancelled() or isinstance(error, _Cancelled):
                        continue
                    if error is None:
                        batch += future.result()
                    elif failure is None:
                        failure = error
                        cancel.set()  # stop queued work and retry loops; keep what finishes
                        for queued in pending:
                            queued.cancel()
                if batch:
                    yield batch
            if failure is not None:
                raise failure
        finally:
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if pending:  # interrupted: drop requests in flight instead of waiting for them
                self.client.close()

    def _jobs(
        self,
        prompts: Sequence[str],
        params: GenParams,
        skip: Collection[tuple[int, int]],
        keys: Sequence[str],
    ) -> Iterator[tuple[int, str, list[int], int | None]]:
        """(prompt index, prompt, its samples, its seed) per request; all of a prompt's samples
        in one request while the server may honour `n` (decided lazily, as answers come)."""
        for i, prompt in enumerate(prompts):
            missing = [s for s in range(params.samples) if (i, s) not in skip]
            seed = sample_seed(params.seed, keys[i]) if params.sampled else None
            if len(missing) == params.samples > 1 and self.n_works is not False:
                yield i, prompt, missing, seed
            else:
                yield from ((i, prompt, [s], seed) for s in missing)

    def _answer(
        self,
        index: int,
        prompt: str,
        samples: list[int],
        seed: int | None,
        params: GenParams,
        cancel: threading.Event,
    ) -> list[Sampled]:
        """The prompt's answers for `samples`; with several, through `n` while the server may
        honour it, else one seeded request each (and `n_works` says which from then on)."""
        kept: list[Sampled] = []
        if len(samples) > 1 and self.n_works is not False:
            try:
                got = self._request(prompt, params, cancel, seed, n=len(samples))
            except _NRefused:
                got = []
            if len(got) == len(samples):
                self.n_works = True
                return [(index, s, gen) for s, gen in zip(samples, got, strict=True)]
            self.n_works = False
            if len(got) == 1:  # a server ignoring `n` answered once, with the first seed
                kept.append((index, samples[0], got[0]))
        for s in samples[len(kept) :]:
            [gen] = self._request(prompt, params, cancel, None if seed is None else seed + s)
            kept.append((index, s, gen))
        return kept

    def loglikelihood(
        self, requests: Sequence[ScoreRequest]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        raise cannot_score("openai")

    def _request(
        self,
        prompt: str,
        params: GenParams,
        cancel: threading.Event,
        seed: int | None,
        n: int = 1,
    ) -> list[Generation]:
        """One request's answers, in choice order: greedy when `seed` is None, else sampled.

        With `n` > 1 it raises _NRefused where the server rejects the request, and gives fewer
        answers than asked for where the server ignored `n` or sent no per-answer token counts.
        """
        if cancel.is_set():
            raise _Cancelled
        common: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": self.seed,
        }
        if seed is not None:
            common.update(temperature=params.temperature, top_p=params.top_p, seed=seed)
            if params.top_k:
                common["extra_body"] = {"top_k": params.top_k}
        if n > 1:  # per-answer token counts come from the answers' token log-probabilities
            common.update(n=n, logprobs=True if self.endpoint == "chat" else 0)
        if params.stop:
            common["stop"] = list(params.stop)
        if self.endpoint == "chat":
            messages = [{"role": "user", "content": prompt}]
            create = self.client.chat.completions.create
            response = self._call(lambda: create(messages=messages, **common), cancel, n > 1)
        else:
            assert self.render is not None
            rendered = self.render(prompt)
            create = self.client.completions.create
            response = self._call(lambda: create(prompt=rendered, **common), cancel, n > 1)
        chat = self.endpoint == "chat"
        choices = sorted(response.choices, key=lambda c: c.index)
        if n == 1 or len(choices) == 1:
            tokens = response.usage.completion_tokens if response.usage else None
            return [finish(_text(choices[0], chat), choices[0].finish_reason, tokens, params)]
        counts = [_token_count(c, chat) for c in choices]
        if len(choices) != n or None in counts:
            return []
        return [
            finish(_text(c, chat), c.finish_reason, k, params)
            for c, k in zip(choices, counts, strict=True)
        ]

    def _call(
        self, request: Callable[[], Any], cancel: threading.Event, asks_n: bool = False
    ) -> Any:
        """Run one request, retrying transient failures with exponential backoff and jitter.

        A request for several answers (`asks_n`) that the server rejects raises _NRefused, so
        the caller asks once per answer (a rejection for another reason comes back then).
        """
        for attempt in range(self.max_retries + 1):
            try:
                return request()
            except openai.APIStatusError as e:
                if asks_n and e.status_code in (400, 422):
                    raise _NRefused from None
                if e.status_code in (401, 403):
                    raise FailtuneError(
                        f"the server at {self.client.base_url} refused the API key "
                        f"(HTTP {e.status_code}); set it with --api-key-env NAME"
                    ) from None
                if e.status_code == 404:
                    raise FailtuneError(
                        f"HTTP 404 from {e.request.url}: wrong --base-url (it usually ends in "
                        f"/v1) or a model the server does not serve ({self.model_name!r})"
                    ) from None
                if e.status_code not in _RETRY_STATUS and e.status_code < 500:
                    raise FailtuneError(
                        f"the server rejected the request (HTTP {e.status_code}): {_message(e)}"
                    ) from None
                error: Exception = e
            except openai.APIConnectionError as e:
                error = e
            if attempt == self.max_retries or cancel.wait(self._delay(attempt)):
                if cancel.is_set():
                    raise _Cancelled from None
                raise ServerError(
                    f"the server at {self.client.base_url} failed {attempt + 1} times "
                    f"({_describe(error)}); everything finished so far is saved, "
                    "rerun to resume"
                ) from None
        raise AssertionError("unreachable")

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped at a minute."""
        return random.uniform(0.5, 1.0) * min(60.0, self.backoff * 2**attempt)


def make_client(base_url: str, flag: str, **options: Any) -> openai.OpenAI:
    """An OpenAI client; a malformed address is a user error naming the flag that gave it."""
    if urlsplit(base_url).scheme not in ("http", "https"):
        raise FailtuneError(f"{flag} {base_url}: write it as http://host:port/v1")
    try:
        return openai.OpenAI(base_url=base_url, **options)
    except Exception as e:  # the HTTP library's InvalidURL (no stable import path)
        raise FailtuneError(f"{flag} {base_url} is not a valid address: {e}") from None


class _Cancelled(Exception):
    """A request abandoned because another one already failed for good."""


class _NRefused(Exception):
    """The server rejected a request for several answers (`n`)."""


def _text(choice: Any, chat: bool) -> str:
    return (choice.message.content or "") if chat else choice.text


def _token_count(choice: Any, chat: bool) -> int | None:
    """How many tokens a choice holds, from its token log-probabilities (None: not sent)."""
    if choice.logprobs is None:
        return None
    tokens = choice.logprobs.content if chat else choice.logprobs.tokens
    return None if tokens is None else len(tokens)


def finish(text: str, reason: str | None, tokens: int | None, params: GenParams) -> Generation:
    """Apply the stop rules client-side: servers know stop strings but not `stop_after` regexes.

    A cut makes the finish reason "stop"; the token count stays what the server generated.
    """
    cut = apply_stop_rules(text, params)
    if cut != text.strip():
        reason = "stop"
    return Generation(cut, "length" if reason == "length" else "stop", tokens or 0)


def _api_key(env_name: str | None) -> str:
    """The key from the named variable; a local server needs none, so the default may be unset."""
    if env_name and env_name != DEFAULT_KEY_ENV and env_name not in os.environ:
        raise FailtuneError(f"--api-key-env {env_name}: that environment variable is not set")
    return os.environ.get(env_name or DEFAULT_KEY_ENV) or "no-key"


def _template_renderer(model: str | None) -> Callable[[str], str] | None:
    """Render prompts with the served model's own chat template for the completions endpoint."""
    if not model:
        return None
    from failtune.backends.hf import render as render_chat
    from failtune.model_loading import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(model))
    if not tokenizer.chat_template:
        raise FailtuneError(f"{model} has no chat template; use --endpoint chat")

    # Servers tokenize a prompt as the model's tokenizer does: if that adds BOS, the template's
    # own BOS must go, or it is doubled.
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [
        tokenizer.bos_token_id
    ]
    bos = tokenizer.bos_token if adds_bos else ""

    def render(prompt: str) -> str:
        text = render_chat(tokenizer, prompt)
        return text.removeprefix(bos) if bos else text

    return render


def _lora_advice(rank: int) -> str:
    """What to start a vLLM server with so that a run can load its adapter."""
    return (
        "restart it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment and "
        f"--enable-lora --max-lora-rank {vllm_lora_rank(rank)} (or use backend vllm or hf)"
    )


def _message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return e.message


def _describe(error: Exception) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"last: HTTP {error.status_code}"
    if isinstance(error, openai.APITimeoutError):
        return "last: request timed out"
    return "last: cannot connect"
