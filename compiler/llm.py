"""The one door to a language model: the `openai` SDK against any OpenAI-compatible `base_url`.

Retries with exponential backoff on timeouts, connection errors, 429 and 5xx (other 4xx fail at
once); structured output validated by pydantic; refusals are errors; every attempt is logged to
SQLite (model, prompt sha256, tokens, latency, cost, outcome); cost ceilings per call and per
day stop the caller *before* spending more. The API key is read from the environment and never
logged.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.errors import CostCeilingError, LLMError

T = TypeVar("T", bound=BaseModel)
Message = dict[str, Any]


class LLMOutputError(LLMError):
    """The model answered, but not with what was asked (bad JSON, schema mismatch, bad tool call)."""


class LLMRefusalError(LLMError):
    """The model refused (a `refusal` field or finish_reason content_filter)."""


class LLMConfig(BaseModel):
    """Where and how to call the model, and what it may cost (USD per 1k tokens, ceilings in USD)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = "http://127.0.0.1:11434/v1"
    model: str = "llama3.1"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int | None = 0
    max_tokens: int = Field(default=2048, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0)
    prompt_price_per_1k: float = Field(default=0.0, ge=0)
    completion_price_per_1k: float = Field(default=0.0, ge=0)
    max_cost_per_call: float | None = Field(default=None, gt=0)
    max_cost_per_day: float | None = Field(default=None, gt=0)
    log_path: str = "llm_calls.sqlite"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_price_per_1k
            + completion_tokens * self.completion_price_per_1k
        ) / 1000.0


def host_class(base_url: str) -> str:
    """What kind of endpoint: `loopback`, `private`, or the public host name (no path, no secrets)."""
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return "loopback"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    if ip.is_loopback:
        return "loopback"
    return "private" if ip.is_private else "public-ip"


EndpointClass = Literal["openai", "local", "proxy"]


def endpoint_class(base_url: str) -> EndpointClass:
    """The provenance class of an endpoint: OpenAI itself, a local server, or anything else (a proxy).

    `local` is a loopback or private address (Ollama, vLLM on this machine or the LAN); `openai`
    is `api.openai.com`; every other host (LiteLLM, OpenRouter, a hosted vLLM) is a `proxy`.
    """
    host = (urlparse(base_url).hostname or "").lower()
    if host == "api.openai.com":
        return "openai"
    return "local" if host_class(base_url) in ("loopback", "private") else "proxy"


def prompt_sha256(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()
) -> str:
    """A stable hash of exactly what the model is shown (messages + tool definitions)."""
    blob = json.dumps({"messages": list(messages), "tools": list(tools)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (4 characters per token) for budgets and pre-call cost checks."""
    return max(1, -(-len(text) // 4))


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model wrote it


@dataclass
class LLMReply:
    content: str | None
    tool_calls: list[ToolCall]
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_ms: float
    prompt_sha: str
    finish_reason: str | None
    raw_message: Message = field(default_factory=dict)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_utc TEXT NOT NULL,
  day TEXT NOT NULL,
  role TEXT NOT NULL,
  model TEXT NOT NULL,
  host_class TEXT NOT NULL,
  prompt_sha256 TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  latency_ms REAL NOT NULL,
  cost REAL NOT NULL,
  status TEXT NOT NULL,
  error TEXT,
  conversation_id TEXT,
  run_id TEXT
)
"""
#: Columns added after the first release; an older log gains them on open (NULL in old rows).
_ADDED_COLUMNS = (("conversation_id", "TEXT"), ("run_id", "TEXT"))


class CallLog:
    """Append-only SQLite log of model calls; also answers "how much was spent on this day"."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path)
        self._db.execute(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(llm_calls)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE llm_calls ADD COLUMN {name} {kind}")
        self._db.commit()

    def record(self, **row: Any) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._db.execute(f"INSERT INTO llm_calls ({cols}) VALUES ({marks})", tuple(row.values()))
        self._db.commit()

    def spent_on(self, day: str) -> float:
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(cost), 0) FROM llm_calls WHERE day = ?", (day,)
        ).fetchone()
        return float(total)

    def rows(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM llm_calls ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        self._db.close()


_RETRYABLE = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)


class LLMClient:
    """Calls the model with retries, ceilings and logging. `sleep`/`clock_ns` are injected for tests.

    `conversation_id` and `run_id` (set by the chat and the review) tag every logged call, so the
    service's read model can show what a conversation or a review cost.
    """

    conversation_id: str | None = None
    run_id: str | None = None

    def __init__(
        self,
        config: LLMConfig,
        *,
        log: CallLog | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.log = log if log is not None else CallLog(config.log_path)
        self._sleep = sleep
        self._clock_ns = clock_ns
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env) or "unused-local-endpoint",
            timeout=config.timeout_s,
            max_retries=0,  # we retry ourselves, so every attempt is logged and counted
        )
        self.host_class = host_class(config.base_url)
        self.endpoint_class: EndpointClass = endpoint_class(config.base_url)

    def close(self) -> None:
        self._client.close()
        self.log.close()

    def _day(self) -> str:
        return datetime.fromtimestamp(self._clock_ns() / 1e9, tz=UTC).strftime("%Y-%m-%d")

    def _check_ceilings(self, prompt_text: str, role: str) -> None:
        cfg = self.config
        worst = cfg.cost(estimate_tokens(prompt_text), cfg.max_tokens)
        if cfg.max_cost_per_call is not None and worst > cfg.max_cost_per_call:
            raise CostCeilingError(
                f"{role}: this call could cost up to ${worst:.4f} (~{estimate_tokens(prompt_text)} prompt "
                f"+ {cfg.max_tokens} completion tokens) > max_cost_per_call ${cfg.max_cost_per_call:.4f}: "
                "shorten the context, lower max_tokens or raise the ceiling"
            )
        if cfg.max_cost_per_day is not None:
            day = self._day()
            spent = self.log.spent_on(day)
            if spent + worst > cfg.max_cost_per_day:
                raise CostCeilingError(
                    f"{role}: daily ceiling reached: ${spent:.4f} spent on {day} + up to ${worst:.4f} for "
                    f"this call > max_cost_per_day ${cfg.max_cost_per_day:.4f}; the compile loop stops here"
                )

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        response_schema: tuple[str, Mapping[str, Any]] | None = None,
        role: str = "author",
    ) -> LLMReply:
        """One chat completion, retried on transient failures; raises LLMError when it cannot."""
        cfg = self.config
        sha = prompt_sha256(messages, tools)
        prompt_text = json.dumps(list(messages)) + json.dumps(list(tools))
        self._check_ceilings(prompt_text, role)
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "messages": list(messages),
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
        }
        if cfg.seed is not None:
            kwargs["seed"] = cfg.seed
        if tools:
            kwargs["tools"] = list(tools)
        if response_schema is not None:
            name, schema = response_schema
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": dict(schema)},
            }
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self._sleep(cfg.backoff_s * 2 ** (attempt - 1))
            t0 = time.perf_counter()
            try:
                resp = self._client.chat.completions.create(**kwargs)
            except _RETRYABLE as exc:
                last = _describe(exc)
                self._record(role, sha, attempt, 0, 0, t0, 0.0, "retryable", last)
                continue
            except openai.APIStatusError as exc:
                msg = _describe(exc)
                self._record(role, sha, attempt, 0, 0, t0, 0.0, "error", msg)
                raise LLMError(
                    f"{role}: {cfg.base_url} refused the request: {msg}; check the model name, "
                    "the API key variable and the server"
                ) from None
            except openai.OpenAIError as exc:
                msg = _describe(exc)
                self._record(role, sha, attempt, 0, 0, t0, 0.0, "error", msg)
                raise LLMError(f"{role}: unusable answer from {cfg.base_url}: {msg}") from None
            except ValueError as exc:  # the SDK lets a non-JSON response body through as-is
                msg = _describe(exc)
                self._record(role, sha, attempt, 0, 0, t0, 0.0, "error", msg)
                raise LLMOutputError(
                    f"{role}: {cfg.base_url} sent a response that is not JSON ({msg}); "
                    "is base_url an OpenAI-compatible /v1 endpoint?"
                ) from None
            return self._reply(resp, role, sha, attempt, t0)
        raise LLMError(
            f"{role}: {cfg.base_url} failed {cfg.max_retries + 1} time(s); last error: {last}. "
            "Check that the server is up, or raise timeout_s / max_retries"
        )

    def _reply(self, resp: Any, role: str, sha: str, attempt: int, t0: float) -> LLMReply:
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.config.cost(pt, ct)
        choices = getattr(resp, "choices", None) or []
        if not choices:
            self._record(role, sha, attempt, pt, ct, t0, cost, "error", "no choices")
            raise LLMOutputError(f"{role}: the model answered with no choices")
        choice = choices[0]
        msg = choice.message
        refusal = getattr(msg, "refusal", None)
        status = "ok"
        if refusal or choice.finish_reason == "content_filter":
            status = "refused"
        self._record(role, sha, attempt, pt, ct, t0, cost, status, refusal)
        if self.config.max_cost_per_call is not None and cost > self.config.max_cost_per_call:
            raise CostCeilingError(
                f"{role}: the call cost ${cost:.4f} > max_cost_per_call ${self.config.max_cost_per_call:.4f}; "
                "stopping before the next call"
            )
        if status == "refused":
            raise LLMRefusalError(f"{role}: the model refused: {refusal or 'content filtered'}")
        calls = [
            ToolCall(tc.id, tc.function.name, tc.function.arguments or "")
            for tc in (msg.tool_calls or [])
            if getattr(tc, "function", None) is not None
        ]
        raw: Message = {"role": "assistant", "content": msg.content}
        if calls:
            raw["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ]
        return LLMReply(
            content=msg.content,
            tool_calls=calls,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost=cost,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            prompt_sha=sha,
            finish_reason=choice.finish_reason,
            raw_message=raw,
        )

    def _record(
        self,
        role: str,
        sha: str,
        attempt: int,
        pt: int,
        ct: int,
        t0: float,
        cost: float,
        status: str,
        error: str | None,
    ) -> None:
        now = self._clock_ns()
        self.log.record(
            ts_utc=datetime.fromtimestamp(now / 1e9, tz=UTC).isoformat(),
            day=self._day(),
            role=role,
            model=self.config.model,
            host_class=self.host_class,
            prompt_sha256=sha,
            attempt=attempt,
            prompt_tokens=pt,
            completion_tokens=ct,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            cost=cost,
            status=status,
            error=error,
            conversation_id=self.conversation_id,
            run_id=self.run_id,
        )

    def structured(
        self,
        messages: Sequence[Message],
        model: type[T],
        *,
        role: str = "author",
        schema: Mapping[str, Any] | None = None,
    ) -> tuple[T, LLMReply]:
        """Ask for JSON matching `model` and validate it; mismatches raise LLMOutputError with the paths."""
        reply = self.complete(
            messages,
            response_schema=(model.__name__, schema or model.model_json_schema()),
            role=role,
        )
        return parse_json_reply(reply.content, model, role), reply


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def parse_json_reply(content: str | None, model: type[T], role: str = "author") -> T:
    """Validate a JSON answer against `model`; the error lists each bad field as `$.a.b: msg`."""
    if not content:
        raise LLMOutputError(
            f"{role}: expected a JSON object matching {model.__name__}, got nothing"
        )
    try:
        data = json.loads(_strip_fences(content))
    except json.JSONDecodeError as exc:
        raise LLMOutputError(
            f"{role}: the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"answer with one JSON object matching {model.__name__}"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"$.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise LLMOutputError(
            f"{role}: the JSON does not match {model.__name__}: {problems}"
        ) from None


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    return f"HTTP {status} {name}: {text}" if status else f"{name}: {text}"
