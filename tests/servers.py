"""Real OpenAI-compatible servers for tests: llama-cpp-python's server on 127.0.0.1.

A server runs in its own process group, so stopping it (or killing it to simulate a crash)
takes every process it started with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
MODEL_ALIAS = "smollm2"  # the name the server lists in /v1/models and answers to


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` serving one GGUF model; restartable on the same port."""

    def __init__(
        self, model: Path, log: Path, *, api_key: str | None = None, port: int | None = None
    ) -> None:
        self.model, self.log, self.api_key = model, log, api_key
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 180.0) -> LlamaServer:
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
            "--verbose",
            "False",
        ]
        if self.api_key:
            command += ["--api_key", self.api_key]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited at start:\n{self._log_tail()}")
            try:
                self.get("/models")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama.cpp server silent for {timeout:.0f} s:\n{self._log_tail()}")

    def stop(self) -> None:
        """Terminate the process group; kill it if it does not exit within 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would end the server."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def get(self, path: str) -> Any:
        return self._request(urllib.request.Request(self.base_url + path, headers=self._auth()))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """A request made directly, without failtune, to compare its answers against."""
        headers = {"Content-Type": "application/json", **self._auth()}
        data = json.dumps(body).encode()
        return self._request(urllib.request.Request(self.base_url + path, data, headers))

    def _request(self, request: urllib.request.Request) -> Any:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def chat_answer(content: str, finish_reason: str, completion_tokens: int) -> dict:
    """A chat.completion body as an OpenAI-compatible server sends it."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": completion_tokens,
            "total_tokens": 5 + completion_tokens,
        },
    }


class StubHandler(BaseHTTPRequestHandler):
    """Base of the tests' scripted OpenAI-compatible stubs: JSON replies, no request log."""

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class _StubServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (a command stopping on an error) is expected;
        the stdlib would print its traceback into the output the tests check."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def stub_server(handler: type[StubHandler]) -> Iterator[str]:
    """Serve `handler` in-process on a free 127.0.0.1 port; yields the /v1 base URL."""
    httpd = _StubServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
