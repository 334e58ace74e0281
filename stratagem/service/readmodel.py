"""The SQLite read model: runs, artifacts, orders, fills, positions, equity, trades, alerts.

The logs are the record; this database is a disposable, queryable view of them. `rebuild` wipes
and re-imports every run directory (and the service journal) in one transaction, in sorted
order with natural keys, so rebuilding twice gives identical rows. A run whose logs do not verify
(torn tail, broken hash chain, unreadable files) is recorded as `quarantined` with the reason and
contributes no other rows: never half-imported. Every row carries its `run_id` (the run
directory's name).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from artifacts.io import content_hash, load_with_lines
from order_kernel import messages as m
from order_kernel.errors import LogIntegrityError
from order_kernel.log import read as read_order_log
from order_kernel.spec import Side
from stratagem.service import ServiceError
from stratagem.service.alerts import (
    Alert,
    disconnect_alerts,
    drawdown_alerts,
    refusal_alerts,
    stale_data_alerts,
)
from stratagem.service.scorecard import entry_nodes, score
from stratagem.service.settings import AlertThresholds
from strategy_kernel.log import LogCorruptError
from strategy_kernel.log import read as read_strategy_log

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, path TEXT NOT NULL, status TEXT NOT NULL, problem TEXT,
  artifact_name TEXT, artifact_version INTEGER, content_hash TEXT, session TEXT, seed INTEGER,
  symbol TEXT, bars INTEGER, first_ts_ns INTEGER, last_ts_ns INTEGER, log_head TEXT,
  metrics_json TEXT
);
CREATE TABLE IF NOT EXISTS artifacts (
  content_hash TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, yaml TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
  run_id TEXT NOT NULL, client_order_id TEXT NOT NULL, symbol TEXT, side TEXT, order_type TEXT,
  qty REAL, price REAL, trigger_price REAL, tag TEXT, status TEXT NOT NULL, filled_qty REAL NOT NULL,
  created_ts_ns INTEGER NOT NULL, updated_ts_ns INTEGER NOT NULL,
  PRIMARY KEY (run_id, client_order_id)
);
CREATE TABLE IF NOT EXISTS fills (
  run_id TEXT NOT NULL, trade_id TEXT NOT NULL, client_order_id TEXT NOT NULL, ts_ns INTEGER NOT NULL,
  symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL,
  liquidity TEXT NOT NULL, PRIMARY KEY (run_id, trade_id)
);
CREATE TABLE IF NOT EXISTS positions (
  run_id TEXT NOT NULL, symbol TEXT NOT NULL, ts_ns INTEGER NOT NULL, qty REAL NOT NULL,
  avg_price REAL, realized_pnl REAL NOT NULL, fees_paid REAL NOT NULL, funding_paid REAL NOT NULL,
  PRIMARY KEY (run_id, symbol)
);
CREATE TABLE IF NOT EXISTS equity (
  run_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, close REAL NOT NULL, equity REAL NOT NULL,
  drawdown_pct REAL NOT NULL, position_lots INTEGER NOT NULL, PRIMARY KEY (run_id, ts_ns)
);
CREATE TABLE IF NOT EXISTS trades (
  run_id TEXT NOT NULL, trade_id TEXT NOT NULL, side TEXT NOT NULL, entry_ts_ns INTEGER,
  entry_price REAL, exit_ts_ns INTEGER NOT NULL, qty REAL NOT NULL, pnl REAL NOT NULL,
  reason TEXT NOT NULL, nodes TEXT NOT NULL, PRIMARY KEY (run_id, trade_id)
);
CREATE TABLE IF NOT EXISTS refusals (
  run_id TEXT NOT NULL, n INTEGER NOT NULL, ts_ns INTEGER NOT NULL, rule TEXT NOT NULL,
  detail TEXT NOT NULL, PRIMARY KEY (run_id, n)
);
CREATE TABLE IF NOT EXISTS node_scores (
  run_id TEXT NOT NULL, node TEXT NOT NULL, trades INTEGER NOT NULL, profitable INTEGER NOT NULL,
  pnl REAL NOT NULL, PRIMARY KEY (run_id, node)
);
CREATE TABLE IF NOT EXISTS alerts (
  alert_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, kind TEXT NOT NULL,
  severity TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
  approval_id TEXT PRIMARY KEY, ts_ns INTEGER NOT NULL, name TEXT NOT NULL, version INTEGER,
  summary TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, decided_by TEXT,
  decided_ts_ns INTEGER, note TEXT
);
CREATE TABLE IF NOT EXISTS control_requests (
  n INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, action TEXT NOT NULL, requested_by TEXT NOT NULL,
  scope TEXT NOT NULL, flatten INTEGER NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '', artifact TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS llm_calls (
  source TEXT NOT NULL, id INTEGER NOT NULL, ts_utc TEXT NOT NULL, day TEXT NOT NULL,
  role TEXT NOT NULL, model TEXT NOT NULL, host_class TEXT NOT NULL, prompt_sha256 TEXT NOT NULL,
  attempt INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  latency_ms REAL NOT NULL, cost REAL NOT NULL, status TEXT NOT NULL, error TEXT,
  conversation_id TEXT, run_id TEXT, PRIMARY KEY (source, id)
);
CREATE INDEX IF NOT EXISTS llm_calls_conv ON llm_calls (conversation_id, ts_utc);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts_ns);
CREATE INDEX IF NOT EXISTS fills_ts ON fills (run_id, ts_ns);
"""

#: Tables rebuilt from run directories (in deletion order) and from the service journal.
RUN_TABLES = (
    "alerts",
    "node_scores",
    "refusals",
    "trades",
    "equity",
    "positions",
    "fills",
    "orders",
    "runs",
    "artifacts",
)
JOURNAL_TABLES = ("approvals", "control_requests")
#: Columns of the compiler's `llm_calls` table (compiler/llm.py) copied into the read model.
LLM_COLUMNS = (
    "id", "ts_utc", "day", "role", "model", "host_class", "prompt_sha256", "attempt",
    "prompt_tokens", "completion_tokens", "latency_ms", "cost", "status", "error",
)  # fmt: skip
#: Optional columns taken when a call log has them (a conversation or run id to trace by).
LLM_OPTIONAL = ("conversation_id", "run_id")
OPEN_STATUSES = ("PENDING", "ACCEPTED", "TRIGGERED", "PARTIALLY_FILLED")


class QuarantineError(ServiceError):
    """A run directory whose logs cannot be trusted; the message names the file and the fault."""


def connect(db_path: str | Path) -> sqlite3.Connection:
    """Open (creating) the database in WAL mode with the schema in place."""
    path = Path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(control_requests)")}
    for col in ("detail", "artifact"):  # databases made before the runner answered requests
        if col not in cols:
            conn.execute(f"ALTER TABLE control_requests ADD COLUMN {col} TEXT NOT NULL DEFAULT ''")
    return conn


@dataclass
class RunRows:
    """Everything one run contributes, built fully in memory before anything is written."""

    run: dict[str, Any]
    artifact: tuple[str, str, int, str] | None = None
    swapped: list[tuple[str, str, int, str]] = field(default_factory=list)  # hot-swapped versions
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[tuple[Any, ...]] = field(default_factory=list)
    positions: list[tuple[Any, ...]] = field(default_factory=list)
    equity: list[tuple[Any, ...]] = field(default_factory=list)
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    refusals: list[tuple[Any, ...]] = field(default_factory=list)
    scores: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class RebuildReport:
    imported: tuple[str, ...]
    quarantined: dict[str, str]
    journal_records: int


def _f(x: Decimal) -> float:
    return float(x)


def _prefix(it: Iterable[Any], live: bool, errors: tuple[type[Exception], ...]) -> list[Any]:
    """Every verified record; while a run is live a bad tail is the record being written."""
    out: list[Any] = []
    try:
        for x in it:
            out.append(x)
    except errors:
        if not live:
            raise
    return out


def load_run(
    run_dir: str | Path, thresholds: AlertThresholds | None = None, *, live: bool = False
) -> RunRows:
    """Read and verify one run directory; raise QuarantineError if anything does not check out.

    `live`: the run is still being written (a service runner's run): read the verified prefix of
    each log and mark the run `live`; the import after the run ends is strict again."""
    d = Path(run_dir)
    th = thresholds or AlertThresholds()
    run_id = d.name
    slog, olog = d / "strategy.log.jsonl", d / "orders.log"
    for p in (slog, olog, d / "artifact.yaml"):
        if not p.is_file():
            raise QuarantineError(
                f"{p}: missing; a run directory written by `stratagem run` has it"
            )
    try:
        artifact, _ = load_with_lines(d / "artifact.yaml")
    except Exception as exc:
        raise QuarantineError(f"{d / 'artifact.yaml'}: does not load ({exc})") from None
    pi, si = artifact.instrument.price_increment, artifact.instrument.size_increment

    def px(t: int | None) -> float | None:
        return None if t is None else _f(Decimal(t) * pi)

    def qty(lots: int) -> float:
        return _f(Decimal(lots) * si)

    def money(units: int) -> float:
        return _f(Decimal(units) * pi * si)

    try:
        records = _prefix(read_strategy_log(slog), live, (LogCorruptError,))
    except LogCorruptError as exc:
        raise QuarantineError(f"strategy log: {exc}") from None
    except OSError as exc:
        raise QuarantineError(f"{slog}: unreadable ({exc})") from None
    try:
        entries = _prefix(read_order_log(olog), live, (LogIntegrityError,))
    except LogIntegrityError as exc:
        raise QuarantineError(f"order log: {exc}") from None
    except OSError as exc:
        raise QuarantineError(f"{olog}: unreadable ({exc})") from None
    if not records or records[0].get("kind") != "run":
        raise QuarantineError(f"{slog}:1: the first record is not a 'run' header")
    head = records[0]
    if head.get("content_hash") and (d / "metrics.json").is_file():
        try:
            metrics_doc = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise QuarantineError(f"{d / 'metrics.json'}: not JSON ({exc})") from None
    else:
        metrics_doc = {}
    bar_ts = [int(r["ts_ns"]) for r in records if r["kind"] == "bar"]
    metrics = metrics_doc.get("metrics", {})
    rows = RunRows(
        run={
            "run_id": run_id,
            "path": str(d),
            "status": "live" if live else "ok",
            "problem": None,
            "artifact_name": head.get("artifact"),
            "artifact_version": head.get("version"),
            "content_hash": head.get("content_hash"),
            "session": head.get("session"),
            "seed": head.get("seed"),
            "symbol": artifact.instrument.symbol,
            "bars": len(bar_ts),
            "first_ts_ns": bar_ts[0] if bar_ts else None,
            "last_ts_ns": bar_ts[-1] if bar_ts else None,
            "log_head": metrics_doc.get("strategy_log_head"),
            "metrics_json": json.dumps(metrics, sort_keys=True),
        }
    )
    rows.artifact = (
        str(head.get("content_hash") or ""),
        artifact.name,
        artifact.version,
        (d / "artifact.yaml").read_text(encoding="utf-8"),
    )

    # Versions a service runner hot-swapped in (`artifacts/` of the run directory).
    for path in sorted((d / "artifacts").glob("*.yaml")):
        try:
            swapped, _ = load_with_lines(path)
        except Exception as exc:
            raise QuarantineError(f"{path}: does not load ({exc})") from None
        rows.swapped.append(
            (content_hash(swapped), swapped.name, swapped.version, path.read_text(encoding="utf-8"))
        )

    # Orders, fills and positions: from the order kernel's own log, in record order.
    orders: dict[str, dict[str, Any]] = {}
    fills: list[tuple[Any, ...]] = []
    positions: dict[str, tuple[Any, ...]] = {}
    heartbeats: list[int] = []
    first_fill: dict[str, tuple[int, float | None]] = {}
    children: dict[str, dict[str, Any]] = {}

    def order(coid: str, ts: int) -> dict[str, Any]:
        o = orders.get(coid)
        if o is None:
            o = {
                "client_order_id": coid, "symbol": None, "side": None, "order_type": None,
                "qty": None, "price": None, "trigger_price": None, "tag": None,
                "status": "ACCEPTED", "filled_qty": 0.0, "created": ts, "updated": ts,
            }  # fmt: skip
            orders[coid] = o
        o["updated"] = ts
        return o

    for e in entries:
        msg = e.message
        if msg is None:
            continue
        ts = msg.ts_ns
        if isinstance(msg, m.SubmitOrder):
            o = order(msg.client_order_id, ts)
            o.update(
                symbol=msg.symbol, side=msg.side.name, order_type=msg.order_type.name,
                qty=qty(msg.qty), price=px(msg.price), trigger_price=px(msg.trigger_price),
                tag=msg.tag, status="PENDING", created=ts,
            )  # fmt: skip
            if msg.bracket is not None:
                # The kernel places bracket children as `<id>.sl` / `<id>.tpN`: describe them.
                exit_side = Side.SELL if msg.side == Side.BUY else Side.BUY
                base = {"symbol": msg.symbol, "side": exit_side.name}
                if msg.bracket.stop_loss is not None:
                    children[f"{msg.client_order_id}.sl"] = {
                        **base, "order_type": "STOP", "qty": qty(msg.qty),
                        "trigger_price": px(msg.bracket.stop_loss), "tag": "stop_loss",
                    }  # fmt: skip
                for k, leg in enumerate(msg.bracket.take_profits, 1):
                    children[f"{msg.client_order_id}.tp{k}"] = {
                        **base, "order_type": "LIMIT", "qty": qty(leg.qty),
                        "price": px(leg.price), "tag": f"tp{k}",
                    }  # fmt: skip
        elif isinstance(msg, m.OrderAccepted):
            fresh = msg.client_order_id not in orders
            o = order(msg.client_order_id, ts)
            o["status"] = "ACCEPTED"
            if fresh and msg.client_order_id in children:
                o.update(children[msg.client_order_id])
        elif isinstance(msg, m.AmendAccepted):
            o = order(msg.client_order_id, ts)
            o.update(qty=qty(msg.qty), price=px(msg.price), trigger_price=px(msg.trigger_price))
        elif isinstance(msg, m.OrderTriggered):
            order(msg.client_order_id, ts)["status"] = "TRIGGERED"
        elif isinstance(msg, m.OrderFilled):
            o = order(msg.client_order_id, ts)
            o["status"] = "PARTIALLY_FILLED" if msg.leaves_qty else "FILLED"
            o["filled_qty"] = qty(msg.filled_qty)
            o["symbol"] = o["symbol"] or msg.symbol
            o["side"] = o["side"] or msg.side.name
            fills.append(
                (run_id, msg.trade_id, msg.client_order_id, ts, msg.symbol, msg.side.name,
                 qty(msg.qty), px(msg.price), money(msg.fee), msg.liquidity.name)
            )  # fmt: skip
            first_fill.setdefault(msg.client_order_id, (ts, px(msg.price)))
        elif isinstance(msg, m.OrderCancelled):
            order(msg.client_order_id, ts)["status"] = "CANCELLED"
        elif isinstance(msg, m.OrderExpired):
            order(msg.client_order_id, ts)["status"] = "EXPIRED"
        elif isinstance(msg, m.OrderRejected):
            order(msg.client_order_id, ts)["status"] = "REJECTED"
        elif isinstance(msg, m.OrderDenied):
            order(msg.client_order_id, ts)["status"] = "DENIED"
        elif isinstance(msg, m.PositionUpdate):
            avg = _f(Decimal(msg.cost_basis) * pi / msg.qty) if msg.qty else None
            positions[msg.symbol] = (
                run_id, msg.symbol, ts, qty(msg.qty), avg, money(msg.realized_pnl),
                money(msg.fees_paid), money(msg.funding_paid),
            )  # fmt: skip
        elif isinstance(msg, m.Heartbeat):
            heartbeats.append(ts)
    rows.orders = [
        (run_id, o["client_order_id"], o["symbol"], o["side"], o["order_type"], o["qty"],
         o["price"], o["trigger_price"], o["tag"], o["status"], o["filled_qty"], o["created"],
         o["updated"])
        for _, o in sorted(orders.items())
    ]  # fmt: skip
    rows.fills = sorted(fills, key=lambda r: (r[3], r[1]))
    rows.positions = [positions[s] for s in sorted(positions)]

    # Trades, refusals and the scorecard: from the strategy log.
    fired = entry_nodes(records)
    pnl: dict[str, float] = {}
    for r in records:
        if r["kind"] == "trade":
            tid = str(r["trade_id"])
            pnl[tid] = money(int(r["pnl_units"]))
            entry_ts, entry_px = first_fill.get(tid, (None, None))
            rows.trades.append(
                (run_id, tid, r["side"], entry_ts, entry_px, int(r["ts_ns"]),
                 qty(int(r["entry_qty"])), pnl[tid], r["reason"],
                 json.dumps(list(fired.get(tid, ()))))
            )  # fmt: skip
        elif r["kind"] == "refusal":
            rows.refusals.append(
                (run_id, int(r["n"]), int(r["ts_ns"]), str(r.get("rule")), str(r.get("detail")))
            )
    rows.scores = [(run_id, s.node, s.trades, s.profitable, s.pnl) for s in score(fired, pnl)]

    # Account snapshots (equity per bar) from the run's equity.csv, when the run wrote one.
    eq_path = d / "equity.csv"
    if eq_path.is_file():
        lineno = 1
        try:
            with eq_path.open(newline="", encoding="utf-8") as fh:
                for lineno, row in enumerate(csv.DictReader(fh), start=2):  # noqa: B007
                    rows.equity.append(
                        (run_id, int(row["ts_ns"]), float(row["close"]), float(row["equity"]),
                         float(row["drawdown_pct"]), int(row["position_lots"]))
                    )  # fmt: skip
        except (KeyError, ValueError, TypeError) as exc:
            raise QuarantineError(f"{eq_path}:{lineno}: bad row ({exc})") from None

    rows.alerts = sorted(
        drawdown_alerts(run_id, [(r[1], r[4]) for r in rows.equity], th.max_drawdown_pct)
        + refusal_alerts(run_id, [(r[1], r[2], r[3], r[4]) for r in rows.refusals])
        + stale_data_alerts(run_id, bar_ts, th.stale_bar_factor)
        + disconnect_alerts(run_id, heartbeats, int(th.heartbeat_timeout_s * 1e9)),
        key=lambda a: (a.ts_ns, a.alert_id),
    )
    return rows


def _insert(conn: sqlite3.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        marks = ",".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def _write_run(conn: sqlite3.Connection, rows: RunRows) -> None:
    run_id = rows.run["run_id"]
    for table in RUN_TABLES[:-1]:
        # alerts from the service journal (health:..., webhook:...) are not the run's to delete
        extra = " AND alert_id NOT LIKE 'health:%'" if table == "alerts" else ""
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?{extra}", (run_id,))
    cols = list(rows.run)
    conn.execute(
        f"INSERT INTO runs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
        [rows.run[c] for c in cols],
    )
    if rows.artifact is not None and rows.artifact[0]:
        conn.execute("INSERT OR IGNORE INTO artifacts VALUES (?,?,?,?)", rows.artifact)
    for art in rows.swapped:
        conn.execute("INSERT OR IGNORE INTO artifacts VALUES (?,?,?,?)", art)
    _insert(conn, "orders", rows.orders)
    _insert(conn, "fills", rows.fills)
    _insert(conn, "positions", rows.positions)
    _insert(conn, "equity", rows.equity)
    _insert(conn, "trades", rows.trades)
    _insert(conn, "refusals", rows.refusals)
    _insert(conn, "node_scores", rows.scores)
    _insert(
        conn,
        "alerts",
        [(a.alert_id, a.run_id, a.ts_ns, a.kind, a.severity, a.message) for a in rows.alerts],
    )


def _quarantine_row(run_dir: Path, problem: str) -> RunRows:
    keys = (
        "artifact_name", "artifact_version", "content_hash", "session", "seed", "symbol", "bars",
        "first_ts_ns", "last_ts_ns", "log_head",
    )  # fmt: skip
    run: dict[str, Any] = {"run_id": run_dir.name, "path": str(run_dir)}
    run.update(status="quarantined", problem=problem, **dict.fromkeys(keys), metrics_json="{}")
    return RunRows(run=run)


def import_run(
    conn: sqlite3.Connection,
    run_dir: str | Path,
    thresholds: AlertThresholds | None = None,
    *,
    live: bool = False,
) -> str | None:
    """(Re)import one run atomically; returns None, or the quarantine reason."""
    d = Path(run_dir)
    try:
        rows = load_run(d, thresholds, live=live)
        problem = None
    except QuarantineError as exc:
        rows, problem = _quarantine_row(d, str(exc)), str(exc)
    conn.execute("BEGIN IMMEDIATE")
    try:
        _write_run(conn, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return problem


def apply_journal_record(conn: sqlite3.Connection, rec: dict[str, Any]) -> None:
    """Fold one service-journal record into the approvals / control_requests / alerts tables."""
    kind, ts = rec["kind"], int(rec["ts_ns"])
    if kind == "approval_requested":
        conn.execute(
            "INSERT OR REPLACE INTO approvals VALUES (?,?,?,?,?,?,'pending',NULL,NULL,NULL)",
            (rec["approval_id"], ts, rec["name"], rec.get("version"), rec["summary"],
             json.dumps(rec.get("payload", {}), sort_keys=True)),
        )  # fmt: skip
    elif kind == "approval_decided":
        conn.execute(
            "UPDATE approvals SET status=?, decided_by=?, decided_ts_ns=?, note=? "
            "WHERE approval_id=? AND status='pending'",
            (rec["status"], rec["by"], ts, rec.get("note", ""), rec["approval_id"]),
        )
    elif kind == "control_requested":
        conn.execute(
            "INSERT OR REPLACE INTO control_requests VALUES (?,?,?,?,?,?,?,?,?,?)",
            (int(rec["n"]), ts, rec["action"], rec["by"], rec.get("scope", "all"),
             int(bool(rec.get("flatten"))), rec.get("reason", ""), "recorded", "",
             rec.get("artifact", "")),
        )  # fmt: skip
    elif kind == "control_acknowledged":
        conn.execute(
            "UPDATE control_requests SET state = ?, detail = ? WHERE n = ?",
            (rec["state"], rec.get("detail", ""), int(rec["request_n"])),
        )
    elif kind in ("webhook_alert", "service_alert"):
        conn.execute(
            "INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?)",
            (rec["alert_id"], rec.get("run_id", "service"), ts, rec["alert_kind"],
             rec.get("severity", "info"), rec["message"]),
        )  # fmt: skip


def load_llm_calls(path: str | Path) -> list[tuple[Any, ...]]:
    """Rows of a compiler call log (`compiler.llm.CallLog`), keyed by (source, id); opened
    read-only. A missing file gives no rows; a file without the table is an error."""
    p = Path(path)
    if not p.is_file():
        return []
    src = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True)
    try:
        have = {r[1] for r in src.execute("PRAGMA table_info(llm_calls)")}
        if not have:
            raise ServiceError(
                f"{p}: no llm_calls table; is it a compiler call log (llm_calls.sqlite)?"
            )
        missing = [c for c in LLM_COLUMNS if c not in have]
        if missing:
            raise ServiceError(
                f"{p}: llm_calls lacks columns {missing}; a newer compiler wrote it?"
            )
        opt = [c if c in have else "NULL" for c in LLM_OPTIONAL]
        cur = src.execute(
            f"SELECT {', '.join(LLM_COLUMNS)}, {', '.join(opt)} FROM llm_calls ORDER BY id"
        )
        return [(str(p), *row) for row in cur.fetchall()]
    finally:
        src.close()


def discover_runs(root: str | Path) -> list[Path]:
    """Sub-directories of `root` that look like run directories (have a strategy log or orders log)."""
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted(
        p
        for p in r.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and ((p / "strategy.log.jsonl").exists() or (p / "orders.log").exists())
    )


def rebuild(
    db: sqlite3.Connection | str | Path,
    run_dirs: Iterable[str | Path],
    *,
    journal_records: Iterable[dict[str, Any]] = (),
    thresholds: AlertThresholds | None = None,
    llm_call_logs: Iterable[str | Path] = (),
    live_runs: Iterable[str] = (),
) -> RebuildReport:
    """Wipe and re-import everything in one transaction (idempotent, deterministic)."""
    conn = db if isinstance(db, sqlite3.Connection) else connect(db)
    dirs = sorted({Path(p).resolve() for p in run_dirs}, key=lambda p: (p.name, str(p)))
    names = [p.name for p in dirs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ServiceError(f"two run directories share the run id {dupes[0]!r}; rename one")
    loaded: list[RunRows] = []
    quarantined: dict[str, str] = {}
    live = set(live_runs)
    for d in dirs:
        try:
            loaded.append(load_run(d, thresholds, live=d.name in live))
        except QuarantineError as exc:
            loaded.append(_quarantine_row(d, str(exc)))
            quarantined[d.name] = str(exc)
    records = list(journal_records)
    calls = [
        row for path in sorted({str(p) for p in llm_call_logs}) for row in load_llm_calls(path)
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in (*RUN_TABLES, *JOURNAL_TABLES, "llm_calls"):
            conn.execute(f"DELETE FROM {table}")
        for rows in loaded:
            _write_run(conn, rows)
        for rec in records:
            apply_journal_record(conn, rec)
        _insert(conn, "llm_calls", calls)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return RebuildReport(tuple(n for n in names if n not in quarantined), quarantined, len(records))


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in primary-key order (for determinism checks and debugging)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in (*RUN_TABLES, *JOURNAL_TABLES, "llm_calls"):
        out[table] = [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
    return out
