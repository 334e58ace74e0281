"""Service benchmarks: API requests/s with auth on loopback, dashboard update latency under replay.

Baselines, measured in the same run:
- API: a minimal unauthenticated FastAPI route (`GET /ping -> {"ok": true}`) served by the same
  uvicorn on loopback, called by the same keep-alive httpx client.
- Dashboard: a minimal FastAPI SSE endpoint fed by the same in-process event bus; our number
  adds the real `/events` stream and the htmx partial re-fetch (`/partials/alerts`) a page does
  on every update.

Run: `python benchmarks/bench_service.py` (about 30 s). Prints a markdown table.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import SecretStr

import stratagem.api as sg
from stratagem.service.api import create_app
from stratagem.service.bus import EventBus
from stratagem.service.serving import BackgroundServer
from stratagem.service.settings import RateLimit, ServiceSettings
from stratagem.service.state import ServiceState

TOKEN = "bench-token-0123456789abcdef"
N_REQUESTS = 1500
EVENTS_PER_S = 1000
N_EVENTS = 3000


def baseline_app(bus: EventBus) -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/events")
    async def events() -> StreamingResponse:
        q = bus.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            yield b": connected\n\n"
            while True:
                upd = await q.get()
                yield f"event: update\ndata: {json.dumps(upd.data)}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


def rps(url: str, headers: dict[str, str]) -> float:
    with httpx.Client(headers=headers, timeout=10) as c:
        for _ in range(100):  # warm up
            c.get(url).raise_for_status()
        t0 = time.perf_counter()
        for _ in range(N_REQUESTS):
            c.get(url).raise_for_status()
        return N_REQUESTS / (time.perf_counter() - t0)


def sse_latency(base: str, bus: EventBus, refetch: str | None) -> list[float]:
    """Publish N_EVENTS at EVENTS_PER_S; latency (ms) from publish to the event (and re-fetch)."""
    lat: list[float] = []
    done = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=30) as c, c.stream("GET", base + "/events") as r:
            event = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "update":
                    d = json.loads(line[5:])
                    if refetch is not None and d["i"] % 50 == 0:
                        c.get(base + refetch).raise_for_status()  # what htmx does on sse:update
                    lat.append((time.perf_counter_ns() - d["t"]) / 1e6)
                    if d["i"] == N_EVENTS - 1:
                        done.set()
                        return

    before = bus.subscribers  # an earlier phase's stream may still be winding down
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    while bus.subscribers <= before:
        time.sleep(0.01)
    start = time.perf_counter()
    for i in range(N_EVENTS):
        target = start + i / EVENTS_PER_S
        while time.perf_counter() < target:
            time.sleep(0.0002)
        bus.publish("alert", {"i": i, "t": time.perf_counter_ns()})
    done.wait(30)
    t.join(5)
    return lat


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    sg.run(
        sg.REPO_ROOT / "examples" / "sma-cross.yaml", work / "runs" / "sma-cross", end="2024-06-01"
    )
    settings = ServiceSettings(
        db_path=work / "rm.sqlite",
        runs_dir=work / "runs",
        journal_path=work / "journal.jsonl",
        api_tokens={"bench": SecretStr(TOKEN)},
        rate_limit=RateLimit(burst=1_000_000, per_second=1_000_000.0),
    )
    state = ServiceState(settings)
    state.rebuild()
    ours = create_app(state)
    base_bus = EventBus()
    base = baseline_app(base_bus)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rows: list[tuple[str, str, str]] = []
    with BackgroundServer(base) as burl, BackgroundServer(ours) as ourl:
        # Interleaved rounds, best of 3 each: the machine is shared and noisy.
        targets = {
            "base": (burl + "/ping", {}),
            "health": (ourl + "/health", {}),
            "auth": (ourl + "/api/v1/alerts?limit=10", auth),
            "run": (ourl + "/api/v1/runs/sma-cross", auth),
        }
        best = dict.fromkeys(targets, 0.0)
        for _ in range(3):
            for key, (url, hdrs) in targets.items():
                best[key] = max(best[key], rps(url, hdrs))
        r_base, r_health, r_auth, r_run = (best[k] for k in ("base", "health", "auth", "run"))
        rows += [
            ("baseline: minimal FastAPI `GET /ping`, no auth", f"{r_base:,.0f} req/s", "1.00"),
            ("`GET /health` (body-limit middleware, no auth)", f"{r_health:,.0f} req/s",
             f"{r_health / r_base:.2f}"),
            ("`GET /api/v1/alerts?limit=10` (bearer + rate limit + SQLite)", f"{r_auth:,.0f} req/s",
             f"{r_auth / r_base:.2f}"),
            ("`GET /api/v1/runs/{id}` (bearer + 6 SQLite queries)", f"{r_run:,.0f} req/s",
             f"{r_run / r_base:.2f}"),
        ]  # fmt: skip
        lb = sse_latency(burl, base_bus, None)
        lo = sse_latency(ourl, state.bus, None)
        lr = sse_latency(ourl, state.bus, "/partials/alerts")
        ours.state.stopping.set()
    for name, xs, ref in (
        ("baseline: minimal SSE endpoint, same bus", lb, lb),
        ("dashboard `/events` (SSE)", lo, lb),
        ("dashboard `/events` + htmx partial re-fetch every 50th", lr, lb),
    ):
        rows.append(
            (
                f"{name}: p50 / p99 latency at {EVENTS_PER_S}/s ({len(xs)} events)",
                f"{pct(xs, 0.5):.2f} / {pct(xs, 0.99):.2f} ms",
                f"{pct(xs, 0.99) / pct(ref, 0.99):.2f} (p99)",
            )
        )
        if len(xs) < N_EVENTS:
            print(f"warning: {name} delivered {len(xs)} of {N_EVENTS} events", file=sys.stderr)
    print("| measurement | value | ratio to baseline |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(
        f"\nmean of dashboard latencies: {statistics.mean(lo):.2f} ms; python {sys.version.split()[0]}"
    )
    state.conn.close()
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    raise SystemExit(main())
