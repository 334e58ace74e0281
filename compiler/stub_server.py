"""A local OpenAI-compatible HTTP server that replays scripted responses (tests, benchmarks, demos).

It answers `POST /v1/chat/completions` (and `/chat/completions`) from a queue of steps; each step
is a recorded response body or a fault to inject: a delay (client timeout), an HTTP status
(429, 500), raw bytes that are not JSON. Every request body is kept in `requests` so a test can
assert what the model was shown. It binds 127.0.0.1 on a random port and never leaves the machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


def completion(
    content: str | None = None,
    *,
    tool_calls: Sequence[tuple[str, Mapping[str, Any] | str]] = (),
    refusal: str | None = None,
    finish_reason: str | None = None,
    model: str = "stub-model",
    prompt_tokens: int = 100,
    completion_tokens: int = 50,
) -> dict[str, Any]:
    """A chat.completion body as an OpenAI-compatible server sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for i, (name, args) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def load_script(path: str | Path) -> list[dict[str, Any]]:
    """Steps from a JSON fixture file: a list of {"body": ...} / {"status": ...} / {"delay_s": ...}."""
    steps = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(steps, list):
        raise ValueError(f"{path}: a stub script is a JSON list of steps")
    return steps


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        stub = self.server.stub
        step = stub._next(self.path, body)
        try:
            delay = float(step.get("delay_s", 0.0))
            if delay and stub._stopping.wait(delay):
                return
            status = int(step.get("status", 200))
            if "raw" in step:
                payload = str(step["raw"]).encode()
            else:
                payload = json.dumps(step.get("body", {})).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in step.get("headers", {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: StubOpenAI


class StubOpenAI:
    """Context manager: `with StubOpenAI(steps) as s: LLMConfig(base_url=s.base_url, ...)`."""

    def __init__(self, steps: Iterable[Mapping[str, Any]] = ()) -> None:
        self.steps: list[dict[str, Any]] = [dict(s) for s in steps]
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def add(self, *steps: Mapping[str, Any]) -> None:
        with self._lock:
            self.steps.extend(dict(s) for s in steps)

    def reply(self, body: Mapping[str, Any]) -> None:
        self.add({"body": body})

    def _next(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            if not path.rstrip("/").endswith("chat/completions"):
                return {"status": 404, "body": {"error": {"message": f"no route {path}"}}}
            if not self.steps:
                return {
                    "status": 500,
                    "body": {"error": {"message": "stub script exhausted: add more steps"}},
                }
            return self.steps.pop(0)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> StubOpenAI:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StubOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
