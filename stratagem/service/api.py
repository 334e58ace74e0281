"""The HTTP API (FastAPI) and the dashboard routes, over the read model.

Security rules, all tested: every `/api/v1` route needs `Authorization: Bearer <token>` (tokens
from settings, compared in constant time against every configured token); each token has its own
token bucket (429 + Retry-After when empty); bodies over `max_body_bytes` get 413 before they
are parsed; malformed JSON gets 422 without echoing the input; the TradingView webhook needs the
shared secret (401 otherwise). Every refusal is logged with the reason and the path, never with
a token or a secret, and nothing refused is acted on. The dashboard is a read-only view: serve
it on loopback or behind your own authenticating proxy.
"""

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from compiler.tv_alerts import MAX_ALERT_BYTES, AlertAuthError, AlertError, parse_alert
from stratagem.service import review_chain
from stratagem.service.bus import Update
from stratagem.service.dashboard import STATIC_DIR, equity_svg, fmt_num, render
from stratagem.service.health import summary as health_summary
from stratagem.service.ratelimit import TokenBucket
from stratagem.service.scorecard import NodeScore
from stratagem.service.state import ConflictError, NotFoundError, ServiceState

log = logging.getLogger("stratagem.service.api")
API = "/api/v1"
PageLimit = Annotated[int, Query(ge=1, le=10_000, description="rows per page")]
PageOffset = Annotated[int, Query(ge=0, description="rows to skip")]


# -- request bodies ----------------------------------------------------------------------------
class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=500, description="why; kept in the journal")


class KillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: str = Field(default="all", max_length=100, description="'all' or a strategy name")
    flatten: bool = Field(default=False, description="also close positions at market")
    reason: str = Field(default="", max_length=500)


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: str = Field(default="all", max_length=100, description="'all' or a strategy name")
    reason: str = Field(default="", max_length=500)


class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100, description="the strategy name in the runner's config")
    artifact: str = Field(
        max_length=1000, description="path of the new version, on the runner's host"
    )
    reason: str = Field(default="", max_length=500)


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100, description="artifact name")
    version: int | None = Field(default=None, description="proposed version")
    summary: str = Field(max_length=2000, description="what changes and the gate results")
    payload: dict[str, Any] = Field(default_factory=dict, description="e.g. ReviewReport.as_dict()")


# -- body size limit (pure ASGI: refuses before anything is parsed) -----------------------------
class _TooLargeError(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, send: Send, size: str) -> None:
        log.warning("rejected %s %s: body %s bytes > limit %d", scope["method"], scope["path"],
                    size, self.max_bytes)  # fmt: skip
        body = json.dumps(
            {"detail": f"request body too large: the limit is {self.max_bytes} bytes"}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, declared.decode())
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLargeError
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracking_send)
        except _TooLargeError:
            if not started:
                await self._refuse(scope, send, f">{seen - 1}")


# -- the app -----------------------------------------------------------------------------------
def create_app(state: ServiceState, *, monotonic: Callable[[], float] = time.monotonic) -> FastAPI:
    """Build the app around `state`; `monotonic` drives the rate limiter (inject it in tests)."""
    settings = state.settings
    bucket = TokenBucket(settings.rate_limit.burst, settings.rate_limit.per_second, monotonic)
    tokens = sorted(
        (name, s.get_secret_value().encode()) for name, s in settings.api_tokens.items()
    )
    bearer = HTTPBearer(auto_error=False, description="an API token from the service settings")

    app = FastAPI(
        title="stratagem service API",
        version="1",
        description=(
            "Runs, trades, orders, positions, equity, artifacts, alerts and approvals from the "
            "read model; kill switch, pause, resume and hot-swap forwarded to the service runner; "
            "TradingView webhook alerts. Bearer token on every /api/v1 route; rate limited per "
            "token."
        ),
    )
    #: Set by whoever stops the server so open event streams end instead of holding shutdown.
    app.state.stopping = threading.Event()
    app.add_middleware(BodyLimit, max_bytes=min(settings.max_body_bytes, 1024 * 1024))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def refuse(request: Request, status: int, reason: str, **headers: str) -> HTTPException:
        client = request.client.host if request.client else "?"
        log.warning("rejected %s %s from %s: %s", request.method, request.url.path, client, reason)
        return HTTPException(status, reason, headers=headers or None)

    def principal(
        request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str:
        """The token's name, after authentication and rate limiting."""
        if not tokens:
            raise refuse(request, 401, "no API tokens are configured on this server",
                         **{"WWW-Authenticate": "Bearer"})  # fmt: skip
        if creds is None:
            raise refuse(request, 401, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
        given = creds.credentials.encode()
        match = ""
        for name, secret in tokens:  # no early exit: time does not depend on which token matched
            if hmac.compare_digest(given, secret):
                match = name
        if not match:
            raise refuse(request, 401, "invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        wait = bucket.take(f"token:{match}")
        if wait:
            raise refuse(request, 429, f"rate limit exceeded for token {match!r}",
                         **{"Retry-After": TokenBucket.retry_after(wait)})  # fmt: skip
        return match

    Who = Annotated[str, Depends(principal)]  # noqa: N806 - a type alias

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The default handler echoes the input back; a body may hold things that must not leak.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        log.warning("rejected %s %s: invalid request (%s)", request.method, request.url.path,
                    "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))  # fmt: skip
        return JSONResponse({"detail": errors}, status_code=422)

    # -- read endpoints ---------------------------------------------------------------------
    def run_row(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        out["metrics"] = json.loads(out.pop("metrics_json") or "{}")
        return out

    @app.get("/health", tags=["service"], summary="Liveness of the API and the runner (no auth)")
    def health() -> dict[str, Any]:
        out = health_summary(state.runner_health())
        runner = out["runner"]
        if runner is not None:  # components and ages only: no paths or endpoints without auth
            out["runner"] = {
                "service": runner.get("service"), "state": runner.get("state"),
                "age_s": runner.get("age_s"), "alive": runner.get("runner_alive"),
                "order_kernel": {k: runner.get("order_kernel", {}).get(k)
                                 for k in ("alive", "restarts", "last_ping_age_s")},
                "feed": {k: runner.get("feed", {}).get(k)
                         for k in ("mode", "alive", "published", "last_event_age_s")},
                "strategies": {n: {k: st.get(k) for k in ("state", "alive", "bars", "paused",
                                                           "killed", "restarts", "last_bar_age_s")}
                               for n, st in sorted(runner.get("strategies", {}).items())},
            }  # fmt: skip
        return out

    @app.get(f"{API}/runner", tags=["service"], summary="The service runner's full health report")
    def runner_health(who: Who) -> dict[str, Any]:
        h = state.runner_health()
        if h is None:
            raise NotFoundError("no service runner has written a health file; is one running?")
        return h

    @app.get(f"{API}/runs", tags=["runs"], summary="All runs, newest first, with metrics")
    def runs(who: Who) -> list[dict[str, Any]]:
        rows = state.query("SELECT * FROM runs ORDER BY last_ts_ns DESC, run_id")
        return [run_row(r) for r in rows]

    @app.get(f"{API}/runs/{{run_id}}", tags=["runs"], summary="One run with metrics and counts")
    def run_detail(run_id: str, who: Who) -> dict[str, Any]:
        out = run_row(state.run(run_id))
        for table in ("trades", "orders", "fills", "refusals", "alerts"):
            out[f"n_{table}"] = state.query(
                f"SELECT count(*) AS n FROM {table} WHERE run_id = ?", (run_id,)
            )[0]["n"]
        return out

    def per_run(
        table: str, order: str, run_id: str, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        state.run(run_id)
        return state.query(
            f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order} LIMIT ? OFFSET ?",
            (run_id, limit, offset),
        )

    @app.get(f"{API}/runs/{{run_id}}/trades", tags=["runs"], summary="Closed trades")
    def trades(run_id: str, limit: PageLimit = 500, offset: PageOffset = 0,
               *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        rows = per_run("trades", "exit_ts_ns, trade_id", run_id, limit, offset)
        for r in rows:
            r["nodes"] = json.loads(r["nodes"])
        return rows

    @app.get(
        f"{API}/runs/{{run_id}}/orders", tags=["runs"], summary="Orders (open_only=true: working)"
    )
    def orders(run_id: str, open_only: bool = False, limit: PageLimit = 500, offset: PageOffset = 0,
               *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        if open_only:
            state.run(run_id)
            return state.open_orders(run_id, limit)
        return per_run("orders", "created_ts_ns, client_order_id", run_id, limit, offset)

    @app.get(f"{API}/runs/{{run_id}}/fills", tags=["runs"], summary="Fills")
    def fills(run_id: str, limit: PageLimit = 500, offset: PageOffset = 0,
              *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        return per_run("fills", "ts_ns, trade_id", run_id, limit, offset)

    @app.get(f"{API}/runs/{{run_id}}/positions", tags=["runs"], summary="Last position per symbol")
    def positions(run_id: str, who: Who) -> list[dict[str, Any]]:
        return per_run("positions", "symbol", run_id, 10_000, 0)

    @app.get(f"{API}/runs/{{run_id}}/equity", tags=["runs"], summary="Equity per bar (every n-th)")
    def equity(run_id: str, every: int = Query(1, ge=1, le=10_000),
               *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        state.run(run_id)
        return state.query(
            "SELECT ts_ns, close, equity, drawdown_pct, position_lots FROM "
            "(SELECT *, row_number() OVER (ORDER BY ts_ns) - 1 AS i FROM equity WHERE run_id = ?) "
            "WHERE i % ? = 0 ORDER BY ts_ns",
            (run_id, every),
        )

    @app.get(f"{API}/runs/{{run_id}}/scorecard", tags=["runs"], summary="Per-node karma")
    def scorecard(run_id: str, who: Who) -> list[dict[str, Any]]:
        rows = per_run("node_scores", "node", run_id, 10_000, 0)
        for r in rows:
            r["hit_rate_pct"] = NodeScore(
                r["node"], r["trades"], r["profitable"], r["pnl"]
            ).hit_rate_pct
        return rows

    @app.get(f"{API}/artifacts", tags=["artifacts"], summary="Artifacts seen in runs")
    def artifacts(who: Who) -> list[dict[str, Any]]:
        return state.query(
            "SELECT content_hash, name, version FROM artifacts ORDER BY name, version"
        )

    @app.get(f"{API}/artifacts/{{content_hash}}", tags=["artifacts"], summary="One artifact's YAML")
    def artifact(content_hash: str, who: Who) -> dict[str, Any]:
        rows = state.query("SELECT * FROM artifacts WHERE content_hash = ?", (content_hash,))
        if not rows:
            raise NotFoundError(f"no artifact with content hash {content_hash!r}")
        return rows[0]

    @app.get(f"{API}/alerts", tags=["alerts"], summary="Alerts, newest first")
    def alerts(limit: int = Query(100, ge=1, le=10_000), kind: str | None = None,
               *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        return state.query(
            f"SELECT * FROM alerts {where} ORDER BY ts_ns DESC, alert_id LIMIT ?", (*params, limit)
        )

    # -- approvals and kill switch ----------------------------------------------------------
    @app.get(f"{API}/approvals", tags=["approvals"], summary="Review items (filter by status)")
    def approvals(status: Literal["pending", "approved", "rejected"] | None = None,
                  *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = state.query(f"SELECT * FROM approvals {where} ORDER BY ts_ns, approval_id", params)
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return [state.with_outcome(r) for r in rows]

    @app.post(f"{API}/approvals", tags=["approvals"], status_code=201,
              summary="Submit a proposal for human approval")  # fmt: skip
    def submit_approval(body: ApprovalRequest, who: Who) -> dict[str, Any]:
        return state.request_approval(body.name, body.version, body.summary, body.payload)

    @app.post(f"{API}/approvals/{{approval_id}}/approve", tags=["approvals"],
              summary="Approve; a review is then promoted and hot-swapped ([review] on_approve)",
              description="Records the decision (409 when already decided). For a review made by "
              "`stratagem review`, `[review] on_approve` then promotes it (refused when a gate "
              "failed or the head moved) and hot-swaps every running session of that artifact, "
              "acknowledged. `outcome.promote` / `outcome.swap` say what each step did; a later "
              "step never undoes an earlier one.")  # fmt: skip
    def approve(approval_id: str, body: Decision, who: Who) -> dict[str, Any]:
        return review_chain.approve(state, approval_id, f"api:{who}", body.note)

    @app.post(f"{API}/approvals/{{approval_id}}/reject", tags=["approvals"], summary="Reject")
    def reject(approval_id: str, body: Decision, who: Who) -> dict[str, Any]:
        return state.decide(approval_id, "rejected", f"api:{who}", body.note)

    @app.post(
        f"{API}/kill",
        tags=["control"],
        status_code=202,
        summary="Kill switch: cancel all, block new orders (optionally flatten); enforced by the "
        "runner, `enforced: false` with a note when no runner acknowledged in time",
    )
    def kill(body: KillRequest, who: Who) -> dict[str, Any]:
        return state.request_kill(f"api:{who}", body.scope, body.flatten, body.reason)

    @app.get(f"{API}/kill", tags=["control"], summary="Kill requests and their state")
    def kill_requests(who: Who) -> list[dict[str, Any]]:
        return state.query("SELECT * FROM control_requests WHERE action = 'kill' ORDER BY n")

    @app.post(f"{API}/pause", tags=["control"], status_code=202,
              summary="Pause: no new entries (a working entry is cancelled), exits still managed")  # fmt: skip
    def pause(body: PauseRequest, who: Who) -> dict[str, Any]:
        return state.request_control("pause", f"api:{who}", body.scope, False, body.reason)

    @app.post(f"{API}/resume", tags=["control"], status_code=202, summary="Resume after a pause")
    def resume(body: PauseRequest, who: Who) -> dict[str, Any]:
        return state.request_control("resume", f"api:{who}", body.scope, False, body.reason)

    @app.post(f"{API}/swap", tags=["control"], status_code=202,
              summary="Hot-swap a strategy to a new artifact version, state carried over")  # fmt: skip
    def swap(body: SwapRequest, who: Who) -> dict[str, Any]:
        return state.request_control(
            "swap", f"api:{who}", body.name, False, body.reason, artifact=body.artifact
        )

    @app.get(f"{API}/control", tags=["control"], summary="Every control request and its state")
    def control_requests(who: Who) -> list[dict[str, Any]]:
        return state.query("SELECT * FROM control_requests ORDER BY n")

    @app.get(f"{API}/llm-calls", tags=["compiler"], summary="Model calls from the compiler's logs")
    def llm_calls(conversation_id: str | None = None, run_id: str | None = None,
                  limit: PageLimit = 500, offset: PageOffset = 0,
                  *, who: Who) -> list[dict[str, Any]]:  # fmt: skip
        where, params = [], []
        for col, val in (("conversation_id", conversation_id), ("run_id", run_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = "SELECT * FROM llm_calls" + (f" WHERE {' AND '.join(where)}" if where else "")
        return state.query(
            f"{sql} ORDER BY ts_utc, source, id LIMIT ? OFFSET ?", (*params, limit, offset)
        )

    # -- TradingView webhook ----------------------------------------------------------------
    hook_bucket = TokenBucket(settings.rate_limit.burst, settings.rate_limit.per_second, monotonic)

    @app.post(
        "/webhooks/tradingview",
        tags=["webhooks"],
        status_code=202,
        summary="TradingView alert (shared secret in the JSON body or X-Stratagem-Secret)",
    )
    async def tradingview(request: Request) -> dict[str, Any]:
        secret = settings.webhook_secret.get_secret_value()
        if not secret:
            raise refuse(request, 503, "webhook alerts are disabled: no webhook secret configured")
        wait = hook_bucket.take("webhook")
        if wait:
            raise refuse(request, 429, "webhook rate limit exceeded",
                         **{"Retry-After": TokenBucket.retry_after(wait)})  # fmt: skip
        body = await request.body()
        if len(body) > MAX_ALERT_BYTES:
            raise refuse(
                request, 413, f"alert body too large: the limit is {MAX_ALERT_BYTES} bytes"
            )
        try:
            item = parse_alert(
                body,
                secret=secret,
                received_ts_ns=state.clock(),
                header_secret=request.headers.get("x-stratagem-secret"),
            )
        except AlertAuthError as exc:
            raise refuse(request, 401, str(exc)) from None
        except AlertError as exc:
            raise refuse(request, 422, str(exc)) from None
        alert = await asyncio.to_thread(state.record_webhook, item)
        return {"accepted": True, "alert_id": alert["alert_id"]}

    # -- dashboard --------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(run: str | None = None) -> str:
        return render("index.html", run_id=run)

    @app.get("/partials/status", response_class=HTMLResponse, include_in_schema=False)
    def p_status() -> str:
        c = state.query(
            "SELECT (SELECT count(*) FROM runs) AS runs, "
            "(SELECT count(*) FROM runs WHERE status = 'quarantined') AS quarantined, "
            "(SELECT count(*) FROM alerts) AS alerts, "
            "(SELECT count(*) FROM approvals WHERE status = 'pending') AS pending"
        )[0]
        return render("status.html", now=state.clock(), **c)

    @app.get("/partials/service", response_class=HTMLResponse, include_in_schema=False)
    def p_service() -> str:
        return render("service.html", runner=state.runner_health())

    @app.get("/partials/runs", response_class=HTMLResponse, include_in_schema=False)
    def p_runs() -> str:
        rows = [run_row(r) for r in state.query("SELECT * FROM runs ORDER BY run_id LIMIT 50")]
        return render("runs.html", runs=rows)

    def pick_run(run: str | None) -> str | None:
        if run:
            return run
        rows = state.query(
            "SELECT run_id FROM runs WHERE status IN ('live', 'ok') "
            "ORDER BY status = 'live' DESC, run_id LIMIT 1"
        )
        return rows[0]["run_id"] if rows else None

    @app.get("/partials/equity", response_class=HTMLResponse, include_in_schema=False)
    def p_equity(run: str | None = None) -> str:
        run_id = pick_run(run)
        pts = (
            [(r["ts_ns"], r["equity"]) for r in state.query(
                "SELECT ts_ns, equity FROM equity WHERE run_id = ? ORDER BY ts_ns", (run_id,))]
            if run_id else []
        )  # fmt: skip
        summary = (
            f"{fmt_num(pts[0][1])} → {fmt_num(pts[-1][1])} over {len(pts):,} bars" if pts else ""
        )
        return render("equity.html", run_id=run_id, summary=summary,
                      svg=equity_svg(pts, title=f"Equity of {run_id}"))  # fmt: skip

    @app.get("/partials/orders", response_class=HTMLResponse, include_in_schema=False)
    def p_orders() -> str:
        return render("orders.html", orders=state.open_orders(None, 20))

    @app.get("/partials/fills", response_class=HTMLResponse, include_in_schema=False)
    def p_fills() -> str:
        rows = state.query("SELECT * FROM fills ORDER BY ts_ns DESC, trade_id LIMIT 10")
        return render("fills.html", fills=rows)

    @app.get("/partials/alerts", response_class=HTMLResponse, include_in_schema=False)
    def p_alerts() -> str:
        rows = state.query("SELECT * FROM alerts ORDER BY ts_ns DESC, alert_id LIMIT 10")
        return render("alerts.html", alerts=rows)

    @app.get("/partials/scorecard", response_class=HTMLResponse, include_in_schema=False)
    def p_scorecard(run: str | None = None) -> str:
        run_id = pick_run(run)
        rows = state.query("SELECT * FROM node_scores WHERE run_id = ? ORDER BY node", (run_id,))
        scores = [NodeScore(r["node"], r["trades"], r["profitable"], r["pnl"]) for r in rows]
        return render("scorecard.html", scores=scores, run_id=run_id)

    @app.get("/events", include_in_schema=False)
    async def events(request: Request) -> StreamingResponse:
        q = state.bus.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            # One pending get() kept across timeouts: wait_for(q.get()) can lose an item when
            # its timeout races the get (Python 3.11).
            getter: asyncio.Future[Update] | None = None
            try:
                yield b": connected\n\n"
                while not app.state.stopping.is_set() and not await request.is_disconnected():
                    if getter is None:
                        getter = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait({getter}, timeout=0.5)
                    if not done:
                        yield b": keep-alive\n\n"
                        continue
                    upd, getter = getter.result(), None
                    data = json.dumps({"kind": upd.kind, **upd.data}, sort_keys=True, default=str)
                    yield f"event: update\ndata: {data}\n\n".encode()
            finally:
                if getter is not None:
                    getter.cancel()
                state.bus.unsubscribe(q)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app
