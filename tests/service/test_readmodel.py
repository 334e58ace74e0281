"""Read model: faithful to the logs, idempotent and deterministic, quarantines what does not verify."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stratagem.service import ServiceError
from stratagem.service.alerts import disconnect_alerts, drawdown_alerts, stale_data_alerts
from stratagem.service.journal import Journal
from stratagem.service.readmodel import (
    OPEN_STATUSES,
    connect,
    discover_runs,
    dump,
    import_run,
    rebuild,
)
from stratagem.service.scorecard import entry_nodes, score
from stratagem.service.settings import AlertThresholds
from strategy_kernel.log import LogCorruptError


def _trades_csv(run: Path) -> list[dict[str, str]]:
    with (run / "trades.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_rebuild_matches_the_runs_own_reports(runs_copy: Path, tmp_path: Path) -> None:
    conn = connect(tmp_path / "rm.sqlite")
    report = rebuild(conn, discover_runs(runs_copy))
    assert report.imported == ("rsi-reversion-v3", "sma-cross-v1")
    assert report.quarantined == {}
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for run_id in report.imported:
        run_dir = runs_copy / run_id
        expected = _trades_csv(run_dir)
        got = conn.execute(
            "SELECT trade_id, pnl, entry_price, side FROM trades WHERE run_id = ? ORDER BY exit_ts_ns",
            (run_id,),
        ).fetchall()
        assert [r[0] for r in got] == [t["trade_id"] for t in expected]
        for r, t in zip(got, expected, strict=True):
            assert r[1] == pytest.approx(float(t["pnl"]), abs=1e-6)
            assert r[2] == pytest.approx(float(t["entry_price"]), abs=1e-9)
            assert r[3] == t["side"]
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        row = conn.execute(
            "SELECT metrics_json, bars, status FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        assert json.loads(row[0])["trades"] == metrics["trades"] == len(expected)
        assert row[2] == "ok"
        n_equity = conn.execute(
            "SELECT count(*) FROM equity WHERE run_id = ?", (run_id,)
        ).fetchone()
        assert n_equity[0] == row[1]
        # every fill's order is known; filled orders' quantities equal the sum of their fills
        bad = conn.execute(
            "SELECT o.client_order_id FROM orders o JOIN fills f USING (run_id, client_order_id) "
            "WHERE o.run_id = ? GROUP BY o.client_order_id, o.filled_qty "
            "HAVING abs(sum(f.qty) - o.filled_qty) > 1e-9",
            (run_id,),
        ).fetchall()
        assert bad == []
    # final positions are flat or open consistently with the last equity row
    for run_id, qty in conn.execute("SELECT run_id, qty FROM positions"):
        lots = conn.execute(
            "SELECT position_lots FROM equity WHERE run_id = ? ORDER BY ts_ns DESC LIMIT 1",
            (run_id,),
        ).fetchone()[0]
        assert (qty == 0) == (lots == 0)


def test_rebuild_is_idempotent_and_deterministic(runs_copy: Path, tmp_path: Path) -> None:
    dirs = discover_runs(runs_copy)
    a = connect(tmp_path / "a.sqlite")
    rebuild(a, dirs)
    first = dump(a)
    rebuild(a, list(reversed(dirs)))  # order of arguments does not matter
    assert dump(a) == first
    b = connect(tmp_path / "b.sqlite")
    rebuild(b, dirs)
    assert dump(b) == first
    # re-importing one run in place changes nothing either
    assert import_run(a, dirs[0]) is None
    assert dump(a) == first
    assert all(first[t] for t in ("runs", "orders", "fills", "trades", "equity", "artifacts"))
    # every record is traceable to its run
    for table, rows in first.items():
        if table in ("runs", "orders", "fills", "positions", "equity", "trades", "node_scores"):
            assert {r[0] for r in rows} <= {d.name for d in dirs}, table


@pytest.mark.parametrize(
    "damage",
    ["torn_strategy_log", "edited_strategy_log", "torn_order_log", "flipped_order_log", "missing"],
)
def test_corrupt_runs_are_quarantined_never_half_imported(
    runs_copy: Path, tmp_path: Path, damage: str
) -> None:
    victim = runs_copy / "sma-cross-v1"
    slog, olog = victim / "strategy.log.jsonl", victim / "orders.log"
    if damage == "torn_strategy_log":
        slog.write_bytes(slog.read_bytes()[:-7])
    elif damage == "edited_strategy_log":
        slog.write_text(slog.read_text().replace('"side":"long"', '"side":"short"', 1))
    elif damage == "torn_order_log":
        olog.write_bytes(olog.read_bytes()[:-5])
    elif damage == "flipped_order_log":
        raw = bytearray(olog.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        olog.write_bytes(bytes(raw))
    else:
        olog.unlink()
    conn = connect(tmp_path / "rm.sqlite")
    report = rebuild(conn, discover_runs(runs_copy))
    assert report.imported == ("rsi-reversion-v3",)
    assert "sma-cross-v1" in report.quarantined
    status, problem = conn.execute(
        "SELECT status, problem FROM runs WHERE run_id = 'sma-cross-v1'"
    ).fetchone()
    assert status == "quarantined"
    assert ("orders.log" in problem) or ("strategy" in problem)
    for table in ("orders", "fills", "positions", "equity", "trades", "alerts", "node_scores"):
        n = conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = 'sma-cross-v1'").fetchone()[
            0
        ]
        assert n == 0, table
    # the healthy run is fully there
    assert conn.execute("SELECT count(*) FROM trades WHERE run_id = 'rsi-reversion-v3'").fetchone()[
        0
    ]


def test_reimporting_a_damaged_run_replaces_its_old_rows(runs_copy: Path, tmp_path: Path) -> None:
    conn = connect(tmp_path / "rm.sqlite")
    rebuild(conn, discover_runs(runs_copy))
    victim = runs_copy / "sma-cross-v1" / "strategy.log.jsonl"
    victim.write_bytes(victim.read_bytes()[:-3])
    problem = import_run(conn, victim.parent)
    assert problem is not None and "torn tail" in problem
    assert (
        conn.execute("SELECT count(*) FROM trades WHERE run_id='sma-cross-v1'").fetchone()[0] == 0
    )


def test_duplicate_run_ids_are_an_error(runs_copy: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "sma-cross-v1"
    other.parent.mkdir()
    other.mkdir()
    with pytest.raises(ServiceError, match="share the run id"):
        rebuild(connect(tmp_path / "x.sqlite"), [runs_copy / "sma-cross-v1", other])


def test_open_orders_are_the_working_ones(state: object) -> None:
    from stratagem.service.state import ServiceState

    assert isinstance(state, ServiceState)
    rows = state.open_orders()
    assert all(r["status"] in OPEN_STATUSES for r in rows)
    closed = state.query("SELECT count(*) AS n FROM orders WHERE status = 'FILLED'")[0]["n"]
    assert closed > 0


def test_scorecard_counts_nodes_true_at_entry() -> None:
    records = [
        {"kind": "nodes", "values": {"a": True, "b": False, "x": 1.5}},
        {
            "kind": "command",
            "msg": {"type": "SubmitOrder", "tag": "entry", "client_order_id": "t1"},
        },
        {"kind": "nodes", "values": {"b": True}},
        {
            "kind": "command",
            "msg": {"type": "SubmitOrder", "tag": "tp1", "client_order_id": "t1.tp"},
        },
        {
            "kind": "command",
            "msg": {"type": "SubmitOrder", "tag": "entry", "client_order_id": "t2"},
        },
    ]
    fired = entry_nodes(records)
    assert fired == {"t1": ("a",), "t2": ("a", "b")}
    scores = {s.node: s for s in score(fired, {"t1": 10.0, "t2": -4.0})}
    assert (scores["a"].trades, scores["a"].profitable, scores["a"].pnl) == (2, 1, 6.0)
    assert (scores["b"].trades, scores["b"].profitable, scores["b"].hit_rate_pct) == (1, 0, 0.0)


def test_alert_rules() -> None:
    eq = [(1, 0.0), (2, -3.0), (3, -6.0), (4, -7.0), (5, 0.0), (6, -5.5)]
    dd = drawdown_alerts("r", eq, 5.0)
    assert [a.ts_ns for a in dd] == [3, 6]  # one per episode
    hour = 3_600_000_000_000
    bars = [0, hour, 2 * hour, 3 * hour, 9 * hour, 10 * hour]
    stale = stale_data_alerts("r", bars, 3.0)
    assert [a.ts_ns for a in stale] == [9 * hour]
    s = 1_000_000_000
    hb = disconnect_alerts("r", [0, 10 * s, 20 * s, 80 * s], 30 * s, end_ts_ns=90 * s)
    assert [a.ts_ns for a in hb] == [50 * s]
    assert (
        disconnect_alerts("r", [0, 10 * s], 30 * s, end_ts_ns=100 * s)[0].kind
        == "kernel_disconnect"
    )


def test_refusals_become_alerts(runs_copy: Path, tmp_path: Path) -> None:
    # Append a refusal to a copy of a real log, keeping the hash chain valid (as the kernel would).
    import hashlib

    import msgspec

    slog = runs_copy / "rsi-reversion-v3" / "strategy.log.jsonl"
    lines = slog.read_bytes().splitlines()
    head = hashlib.sha256(lines[-1]).hexdigest()
    rec = {"n": len(lines), "ts_ns": json.loads(lines[-1])["ts_ns"], "kind": "refusal",
           "prev": head, "rule": "risk.max_daily_loss_pct", "detail": "daily loss 3.1 % > 3 %"}  # fmt: skip
    slog.write_bytes(b"\n".join(lines) + b"\n" + msgspec.json.encode(rec, order="sorted") + b"\n")
    conn = connect(tmp_path / "rm.sqlite")
    rebuild(conn, discover_runs(runs_copy), thresholds=AlertThresholds(max_drawdown_pct=50))
    rows = [
        tuple(r)
        for r in conn.execute("SELECT kind, message FROM alerts WHERE run_id='rsi-reversion-v3'")
    ]
    assert ("risk_refusal", "risk.max_daily_loss_pct: daily loss 3.1 % > 3 %") in rows


def test_journal_chain_survives_reopen_and_detects_edits(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append("control_requested", 1, action="kill", by="x", scope="all", flatten=False, reason="")
    j2 = Journal(tmp_path / "j.jsonl")
    j2.append("control_requested", 2, action="kill", by="y", scope="all", flatten=False, reason="")
    # two writers on one file (API and bot, or two processes): each catches up, no fork
    j.append("control_requested", 3, action="pause", by="x", scope="a", flatten=False, reason="")
    j2.append("approval_requested", 4, approval_id="a-1", name="a", summary="s", payload={})
    assert [r["n"] for r in j2.records()] == [0, 1, 2, 3]
    assert (j.count, j2.count) == (3, 4) and j2.head != j.head
    with pytest.raises(ValueError, match="set by the journal"):
        j.append("control_requested", 5, n=7)
    p = tmp_path / "j.jsonl"
    p.write_text(p.read_text().replace('"by":"x"', '"by":"z"'))
    with pytest.raises(LogCorruptError):
        Journal(p)
