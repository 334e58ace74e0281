"""The self-correcting compile loop: planner -> author (with tools) -> checks -> judge -> emit.

Each attempt: the author calls tools and drafts an artifact (via `emit_strategy` or as JSON/YAML
text); the draft goes through schema validation, the DAG check, direction sanity and a backtest
on a held-out window the tools never showed; any failure is fed back *verbatim* and the author
tries again, up to `max_attempts`. The judge (its own prompt, a JSON verdict with reasons) can
veto. Nothing falls back silently: when attempts run out, `CompileFailedError` lists every error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from artifacts.errors import ArtifactError
from artifacts.graph import check
from artifacts.io import content_hash, dumps, json_schema, loads
from artifacts.schema import Artifact, Provenance
from compiler.context import Turn, build_context
from compiler.errors import CompileFailedError, CompilerError, ToolError
from compiler.llm import LLMClient, LLMOutputError, LLMRefusalError, Message
from compiler.tools import (
    QueryChart,
    SentimentSetup,
    ToolContext,
    ToolSession,
    openai_tools,
    read_items,
)
from compiler.tradingview import ParsedLayout
from compiler.versioning import provenance_backtest, trace_sha256
from feeds.schema import UnstructuredItem
from strategy_kernel.backtest import run_backtest
from strategy_kernel.errors import StrategyError

COMPILER_ID = "stratagem.compiler.loop/1"

AUTHOR_PROMPT = """You are the author of trading strategy artifacts (schema stratagem/v1).
Use the tools to inspect the chart and build nodes, then call emit_strategy, or answer with the
whole artifact as one JSON object. Rules: every node id is lower_snake_case; entry.when names a
bool node; a long's stop is below entry and a short's above; always set exit.stop_loss.
When told a draft failed, fix exactly the errors listed and try again."""

JUDGE_PROMPT = """You are the judge. You did not write this strategy. Given the user's request,
the artifact and its held-out backtest, decide whether it does what was asked without unjustified
risk. Answer only JSON: {"approve": true|false, "reasons": ["..."]}."""

PLANNER_PROMPT = """You are the planner. Break the user's request into a short plan for the
author. Answer only JSON: {"steps": ["..."], "side": "long"|"short"|null, "signals": ["..."],
"risk_notes": "..."}."""


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: bool
    reasons: list[str] = Field(min_length=1)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[str] = Field(min_length=1)
    side: Literal["long", "short"] | None = None
    signals: list[str] = Field(default_factory=list)
    risk_notes: str = ""


@dataclass(frozen=True)
class Gates:
    """What a held-out backtest must show before a draft may be emitted."""

    holdout_fraction: float = 0.3
    min_trades: int = 1
    max_drawdown_pct: float = 50.0  # a positive number: the deepest allowed drawdown


@dataclass
class CompileRequest:
    text: str
    symbol: str
    timeframe: str
    bars: pl.DataFrame
    turn: int = 0  # the conversation turn this request is (for blame)
    conversation: Sequence[Turn] = ()
    drawings: ParsedLayout | None = None
    current: Artifact | None = None
    last_backtest: dict[str, Any] | None = None
    venue: str = "sim"
    news_path: Path | None = None  # stored news (JSONL items) for fetch_news_sentiment
    sentiment: SentimentSetup | None = None  # the local sentiment backend the tools may use


@dataclass
class CompileResult:
    artifact: Artifact
    backtest: dict[str, Any]
    attempts: list[str]  # errors of the attempts that failed before this one
    verdict: Verdict | None
    plan: Plan | None
    prompt_sha: str
    trace: dict[str, Any]
    trace_sha: str
    node_turns: dict[str, int]
    cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    messages: list[Message] = field(default_factory=list)
    turn: int = 0

    def provenance(self) -> dict[str, Any]:
        """What `ArtifactRepo.commit` records for this compile (typed fields + provenance.json)."""
        return {
            "model": self.trace.get("model"),
            "host_class": self.trace.get("host_class"),
            "base_url_class": self.trace.get("base_url_class"),
            "prompt_sha": self.prompt_sha,
            "trace_sha": self.trace_sha,
            "backtest": self.backtest,
            "conversation_turn": self.turn,
            "cost_usd": self.cost,
            "attempt_errors": list(self.attempts),
        }


class DraftRejectedError(CompilerError):
    """One attempt's draft failed a check; the message is fed back to the author."""


def split_holdout(bars: pl.DataFrame, fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(in-sample, held-out): the held-out window is the last `fraction` of the bars."""
    if not 0 < fraction < 1:
        raise CompilerError(f"holdout_fraction must be in (0, 1), got {fraction}")
    cut = int(bars.height * (1 - fraction))
    return bars.head(cut), bars.slice(cut)


def direction_problems(artifact: Artifact) -> list[str]:
    """Direction sanity of the order templates and exits (what the schema alone cannot say)."""
    out: list[str] = []
    side = artifact.entry.side
    order = artifact.entry.order
    if artifact.exit.stop_loss is None:
        out.append("exit.stop_loss: missing; every strategy needs a stop (e.g. {pct: 2})")
    if order.type == "limit" and (
        (side == "long" and order.offset_ticks > 0) or (side == "short" and order.offset_ticks < 0)
    ):
        out.append(
            f"entry.order.offset_ticks: a {side} limit at {order.offset_ticks:+d} ticks is on the wrong "
            f"side of the close (it would fill at once): use {'<= 0' if side == 'long' else '>= 0'}"
        )
    if order.type == "stop" and (
        (side == "long" and order.offset_ticks <= 0)
        or (side == "short" and order.offset_ticks >= 0)
    ):
        out.append(
            f"entry.order.offset_ticks: a {side} stop entry must sit {'above' if side == 'long' else 'below'} "
            f"the close, got {order.offset_ticks:+d} ticks"
        )
    return out


def backtest_summary(
    artifact: Artifact,
    bars: pl.DataFrame,
    *,
    base_dir: Path | None = None,
    items: Sequence[UnstructuredItem] = (),
) -> dict[str, Any]:
    """Run the held-out backtest and return JSON-ready metrics; raises DraftRejectedError if it cannot run.

    `base_dir` resolves files the artifact names (a sentiment node's model_dir, python nodes);
    `items` are the stored news a sentiment node reads.
    """
    graph = check(artifact, "draft")
    try:
        result = run_backtest(artifact, graph, bars, base_dir=base_dir, items=items)
    except StrategyError as exc:
        raise DraftRejectedError(f"backtest on the held-out window failed: {exc}") from None
    m = result.metrics.as_dict()
    keep = (
        "trades",
        "total_return_pct",
        "max_drawdown_pct",
        "sharpe",
        "win_rate_pct",
        "profit_factor",
    )
    out: dict[str, Any] = {
        k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items() if k in keep
    }
    out["bars"] = bars.height
    out["window_from_ns"] = int(bars["ts_ns"][0])
    out["window_to_ns"] = int(bars["ts_ns"][-1])
    out["artifact_sha"] = content_hash(artifact)
    return out


def _gate(summary: dict[str, Any], gates: Gates) -> None:
    if summary["trades"] < gates.min_trades:
        raise DraftRejectedError(
            f"backtest gate: {summary['trades']} trade(s) on the held-out window ({summary['bars']} bars), "
            f"need >= {gates.min_trades}: loosen the entry condition"
        )
    dd = summary.get("max_drawdown_pct")
    if dd is not None and math.isfinite(dd) and -dd > gates.max_drawdown_pct:
        raise DraftRejectedError(
            f"backtest gate: max drawdown {-dd:.2f}% > {gates.max_drawdown_pct:g}% allowed: "
            "tighten the stop or reduce risk_per_trade_pct"
        )


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rstrip().removesuffix("```")
    return t


def sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


class CompileLoop:
    """One compile: bounded attempts, each validated end to end; the judge may veto."""

    def __init__(
        self,
        client: LLMClient,
        *,
        max_attempts: int = 3,
        max_tool_rounds: int = 8,
        budget_tokens: int = 6000,
        gates: Gates | None = None,
        judge: bool = True,
        plan: bool | None = None,  # None: plan when the request is long (> 400 chars)
        judge_client: LLMClient | None = None,
        structured_drafts: bool = False,  # ask for JSON matching the artifact JSON Schema
    ) -> None:
        self.client = client
        self.judge_client = judge_client or client
        self.max_attempts = max_attempts
        self.max_tool_rounds = max_tool_rounds
        self.budget_tokens = budget_tokens
        self.gates = gates or Gates()
        self.judge = judge
        self.plan = plan
        self._usage = [0.0, 0, 0]
        self._draft_schema = ("stratagem_artifact", json_schema()) if structured_drafts else None

    def _count(self, cost: float, pt: int, ct: int) -> None:
        self._usage[0] += cost
        self._usage[1] += pt
        self._usage[2] += ct

    def run(self, req: CompileRequest) -> CompileResult:
        self._usage = [0.0, 0, 0]
        in_sample, held_out = split_holdout(req.bars, self.gates.holdout_fraction)
        ctx = ToolContext(
            req.symbol,
            req.timeframe,
            in_sample,
            drawings=req.drawings,
            venue=req.venue,
            news_path=req.news_path,
            sentiment=req.sentiment,
        )
        session = ToolSession(ctx)
        items = read_items(req.news_path) if req.news_path is not None else []
        market = QueryChart(last_n=5).run(ctx, session).observation
        context = build_context(
            request=req.text,
            budget_tokens=self.budget_tokens,
            conversation=req.conversation,
            drawings=req.drawings,
            market_summary=market,
            current=req.current,
            last_backtest=req.last_backtest,
        )
        plan = self._plan(req, context.text) if self._wants_plan(req) else None
        user = context.text
        if plan is not None:
            user += "\n\n## Plan from the planner\n" + plan.model_dump_json()
        messages: list[Message] = [
            {"role": "system", "content": AUTHOR_PROMPT},
            {"role": "user", "content": user},
        ]
        prompt_sha = sha256_json(messages)
        tools = openai_tools()
        errors: list[str] = []
        verdict: Verdict | None = None
        for _attempt in range(self.max_attempts):
            try:
                draft = self._draft(messages, tools, session, req.turn)
                artifact = self._finish(draft, req, session, prompt_sha)
                summary = backtest_summary(
                    artifact,
                    held_out,
                    base_dir=req.sentiment.base_dir if req.sentiment is not None else None,
                    items=items,
                )
                _gate(summary, self.gates)
            except (DraftRejectedError, LLMOutputError) as exc:
                errors.append(str(exc))
                messages.append(
                    {
                        "role": "user",
                        "content": f"Your draft was rejected:\n{exc}\nFix exactly this and answer again.",
                    }
                )
                continue
            except LLMRefusalError as exc:
                errors.append(str(exc))
                raise CompileFailedError("compile stopped: the model refused", errors) from None
            if self.judge:
                verdict = self._judge(req, artifact, summary)
                if not verdict.approve:
                    errors.append("judge veto: " + "; ".join(verdict.reasons))
                    messages.append(
                        {
                            "role": "user",
                            "content": "The judge vetoed your draft:\n- "
                            + "\n- ".join(verdict.reasons)
                            + "\nRevise the strategy to address every reason.",
                        }
                    )
                    continue
            trace = {
                "compiler": COMPILER_ID,
                "model": self.client.config.model,
                "host_class": self.client.host_class,
                "base_url_class": self.client.endpoint_class,
                "context": {"kept": context.kept, "dropped": context.dropped},
                "plan": plan.model_dump() if plan else None,
                "messages": messages,
                "tool_calls": [e.as_dict() for e in session.trace],
                "attempt_errors": errors,
                "verdict": verdict.model_dump() if verdict else None,
                "backtest": summary,
            }
            node_turns = {n: session.node_turn.get(n, req.turn) for n in artifact.nodes}
            t_sha = trace_sha256(trace)
            prov = artifact.provenance.model_copy(
                update={
                    "trace_sha": t_sha,
                    "conversation_turn": req.turn,
                    "backtest": provenance_backtest(summary),
                }
            )
            artifact = artifact.model_copy(update={"provenance": prov})
            return CompileResult(
                artifact=artifact,
                backtest=summary,
                attempts=errors,
                verdict=verdict,
                plan=plan,
                prompt_sha=prompt_sha,
                trace=trace,
                trace_sha=t_sha,
                node_turns=node_turns,
                cost=self._usage[0],
                prompt_tokens=int(self._usage[1]),
                completion_tokens=int(self._usage[2]),
                messages=messages,
                turn=req.turn,
            )
        raise CompileFailedError(
            f"compile failed after {self.max_attempts} attempt(s); nothing was emitted", errors
        )

    def _wants_plan(self, req: CompileRequest) -> bool:
        return self.plan if self.plan is not None else len(req.text) > 400

    def _plan(self, req: CompileRequest, context: str) -> Plan:
        messages: list[Message] = [
            {"role": "system", "content": PLANNER_PROMPT},
            {"role": "user", "content": context},
        ]
        try:
            plan, reply = self.client.structured(messages, Plan, role="planner")
        except (LLMOutputError, LLMRefusalError) as exc:
            raise CompileFailedError("compile stopped: the planner failed", [str(exc)]) from None
        self._count(reply.cost, reply.prompt_tokens, reply.completion_tokens)
        return plan

    def _judge(self, req: CompileRequest, artifact: Artifact, summary: dict[str, Any]) -> Verdict:
        messages: list[Message] = [
            {"role": "system", "content": JUDGE_PROMPT},
            {
                "role": "user",
                "content": f"## Request\n{req.text}\n\n## Artifact\n{dumps(artifact)}\n\n"
                f"## Held-out backtest\n{json.dumps(summary, sort_keys=True)}",
            },
        ]
        try:
            verdict, reply = self.judge_client.structured(messages, Verdict, role="judge")
        except (LLMOutputError, LLMRefusalError) as exc:
            raise CompileFailedError(
                "compile stopped: the judge gave no usable verdict", [str(exc)]
            ) from None
        self._count(reply.cost, reply.prompt_tokens, reply.completion_tokens)
        return verdict

    def _draft(
        self, messages: list[Message], tools: list[dict[str, Any]], session: ToolSession, turn: int
    ) -> Artifact | str:
        """Talk to the author until it emits (a tool) or answers with text; bounded tool rounds."""
        session.artifact = None
        for _round in range(self.max_tool_rounds):
            reply = self.client.complete(
                messages, tools=tools, role="author", response_schema=self._draft_schema
            )
            self._count(reply.cost, reply.prompt_tokens, reply.completion_tokens)
            messages.append(reply.raw_message)
            if not reply.tool_calls:
                if not reply.content:
                    raise DraftRejectedError(
                        "empty answer: call emit_strategy or answer with the artifact JSON"
                    )
                return reply.content
            for tc in reply.tool_calls:
                try:
                    content: dict[str, Any] = session.call(tc.name, tc.arguments, turn).observation
                except ToolError as exc:
                    content = {"error": str(exc)}
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": tc.id,
                        "content": json.dumps(content, sort_keys=True),
                    }
                )
            if session.artifact is not None:
                return session.artifact
        raise DraftRejectedError(
            f"no draft after {self.max_tool_rounds} tool rounds: call emit_strategy with what you have"
        )

    def _finish(
        self, draft: Artifact | str, req: CompileRequest, session: ToolSession, prompt_sha: str
    ) -> Artifact:
        """Schema + DAG + direction checks; stamp version and provenance."""
        if isinstance(draft, str):
            try:
                artifact = loads(_strip_fences(draft), "draft")
            except ArtifactError as exc:
                raise DraftRejectedError(f"the draft is not a valid artifact:\n{exc}") from None
        else:
            artifact = draft
        if (
            artifact.instrument.symbol != req.symbol
            or artifact.instrument.timeframe != req.timeframe
        ):
            raise DraftRejectedError(
                f"instrument: the draft trades {artifact.instrument.symbol} {artifact.instrument.timeframe}, "
                f"the request is for {req.symbol} {req.timeframe}"
            )
        try:
            check(artifact, "draft")
        except ArtifactError as exc:
            raise DraftRejectedError(f"the signal graph is wrong:\n{exc}") from None
        problems = direction_problems(artifact)
        if problems:
            raise DraftRejectedError("direction sanity:\n" + "\n".join(problems))
        version = req.current.version + 1 if req.current is not None else 1
        provenance = Provenance(
            compiler=COMPILER_ID,
            model=self.client.config.model,
            prompt_sha=prompt_sha,
            tools=[e.tool for e in session.trace if e.ok],
            parent=content_hash(req.current) if req.current is not None else None,
            base_url_class=self.client.endpoint_class,
            conversation_turn=req.turn,
        )
        return artifact.model_copy(update={"version": version, "provenance": provenance})
