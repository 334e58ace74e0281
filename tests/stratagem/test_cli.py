"""The `stratagem` CLI: the README's main job and bad input (exit 2, clear message, nothing half-written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stratagem.cli import main

ROOT = Path(__file__).resolve().parents[2]
RSI = ROOT / "examples" / "rsi-reversion.yaml"
DATA = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"


def test_run_prints_metrics_and_writes_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", str(RSI), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "rsi-reversion v1" in text and "total return %" in text and "trades" in text
    for name in (
        "strategy.log.jsonl",
        "orders.log",
        "trades.csv",
        "equity.csv",
        "metrics.json",
        "report.png",
        "report.html",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "temporary directory left behind"
    )


def test_run_json_and_date_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "run",
            str(RSI),
            "--out",
            str(tmp_path / "r"),
            "--json",
            "--no-plots",
            "--from",
            "2024-03-01",
            "--to",
            "2024-06-01",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["from"].startswith("2024-03-01") and data["to"] < "2024-06-01"
    assert data["artifact"]["name"] == "rsi-reversion"
    assert not (tmp_path / "r" / "report.png").exists()


def _bad(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    return err


def test_validate_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(RSI)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(RSI.read_text().replace("fn: RSI", "fn: RSII"))
    err = _bad(["validate", str(bad)], capsys)
    assert f"{bad}:" in err and "nodes.rsi.fn" in err and "RSII" in err


def test_cycle_unknown_kind_and_malformed_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "x.yaml"
    p.write_text(
        RSI.read_text().replace(
            "inputs: [was_oversold, turning_up]", "inputs: [was_oversold, entry_ok]"
        )
    )
    assert "cycle" in _bad(["validate", str(p)], capsys)
    p.write_text(RSI.read_text().replace("kind: threshold", "kind: thresh", 1))
    assert "unknown node kind 'thresh'" in _bad(["validate", str(p)], capsys)
    p.write_text("schema: [\n")
    assert "invalid YAML" in _bad(["validate", str(p)], capsys)


def test_empty_data_and_missing_column_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,open,high,low,close,volume\n")
    out = tmp_path / "out"
    err = _bad(["run", str(RSI), "--data", str(empty), "--out", str(out)], capsys)
    assert "empty.csv" in err
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("timestamp,open,high,low,volume\n2024-01-01T00:00:00Z,1,2,0.5,10\n")
    err = _bad(["run", str(RSI), "--data", str(nocol), "--out", str(out)], capsys)
    assert "close" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "nocol.csv"]


def test_not_enough_bars_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(["run", str(RSI), "--out", str(tmp_path / "o"), "--to", "2024-01-01T10:00Z"], capsys)
    assert "warm-up" in err


def test_schema_command(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["title"].startswith("stratagem artifact")


def test_help_for_every_command() -> None:
    for cmd in ([], ["run"], ["validate"], ["schema"]):
        proc = subprocess.run(
            [sys.executable, "-m", "stratagem.cli", *cmd, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and "usage: stratagem" in proc.stdout


def test_replay_identical_then_divergent_and_log_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(ROOT / "examples" / "sma-cross.yaml"),
                "--out",
                str(out),
                "--quiet",
                "--no-plots",
                "--to",
                "2024-04-01",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["replay", str(out)]) == 0
    assert "byte-identical" in capsys.readouterr().out
    assert main(["log", "verify", str(out / "strategy.log.jsonl"), str(out / "orders.log")]) == 0
    assert capsys.readouterr().out.count(": OK") == 2

    # a strategy log edited in place breaks the hash chain at that line
    log = out / "strategy.log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[40] = lines[40].replace(b'"ts_ns":', b'"ts_ns":9', 1)
    log.write_bytes(b"".join(lines))
    err = _bad(["log", "verify", str(log)], capsys)
    assert f"{log}:42:" in err and "hash chain broken" in err

    # an order log with a torn tail is named with the record and offset
    olog = out / "orders.log"
    olog.write_bytes(olog.read_bytes()[:-5])
    err = _bad(["log", "verify", str(olog)], capsys)
    assert "torn" in err and "offset" in err


def test_replay_detects_changed_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bars.csv"
    data.write_text(DATA.read_text())
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(RSI),
                "--data",
                str(data),
                "--out",
                str(out),
                "--quiet",
                "--no-plots",
                "--to",
                "2024-03-01",
            ]
        )
        == 0
    )
    lines = data.read_text().splitlines()
    parts = lines[5].split(",")
    parts[4] = str(float(parts[4]) + 0.01)  # nudge one close price
    parts[2] = str(max(float(parts[2]), float(parts[4])))
    lines[5] = ",".join(parts)
    data.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    err = _bad(["replay", str(out)], capsys)
    assert "sha256 mismatch" in err


def test_sweep_command_csv_and_bad_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sma = str(ROOT / "examples" / "sma-cross.yaml")
    out = tmp_path / "sweep.csv"
    args = [
        "sweep",
        sma,
        "--param",
        "nodes.fast.params.period=10,20",
        "--executor",
        "serial",
        "--to",
        "2024-03-01",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "top 2 of 2 by sharpe" in printed and "engine: fast (--engine auto)" in printed
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and "nodes.fast.params.period" in lines[0]
    col = lines[0].split(",").index("engine")
    assert [row.split(",")[col] for row in lines[1:]] == ["fast", "fast"]
    assert main([*args, "--engine", "event"]) == 0
    assert "engine: event (--engine event)" in capsys.readouterr().out
    heads = [row.split(",")[col + 1] for row in out.read_text().splitlines()[1:]]
    assert all(len(h) == 64 for h in heads)  # the kernels' strategy-log heads
    err = _bad(
        ["sweep", sma, "--param", "nodes.fast.params.period=0,5", "--executor", "serial"], capsys
    )
    assert "period" in err and "invalid artifact" in err
    err = _bad(
        ["sweep", sma, "--param", "nodes.fast.params.period=5..9", "--executor", "serial"], capsys
    )
    assert "--random" in err


def test_timeframe_mismatch_is_refused_and_gaps_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import polars as pl

    from feeds.files import read_bars, write_bars
    from feeds.resample import resample_bars

    bars = read_bars(DATA).head(2000)
    coarse = tmp_path / "4h.csv"
    write_bars(resample_bars(bars, "1h", "4h"), coarse)
    err = _bad(["run", str(RSI), "--data", str(coarse), "--out", str(tmp_path / "o")], capsys)
    assert "timeframe mismatch" in err and "resample" in err
    gappy = tmp_path / "gappy.csv"
    write_bars(pl.concat([bars.head(700), bars.slice(710, 1290)]), gappy)
    assert (
        main(
            [
                "run",
                str(RSI),
                "--data",
                str(gappy),
                "--out",
                str(tmp_path / "g"),
                "--quiet",
                "--no-plots",
            ]
        )
        == 0
    )
    assert "1 gap(s) in the data, 10 bar(s) missing" in capsys.readouterr().out
    log = (tmp_path / "g" / "strategy.log.jsonl").read_text()
    assert '"kind":"data_gaps"' in log


def test_run_several_artifacts_as_one_paper_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sma = tmp_path / "sma-perp.yaml"  # one order kernel, one instrument table: make them agree
    sma.write_text(
        (ROOT / "examples" / "sma-cross.yaml").read_text().replace("kind: spot", "kind: perp")
    )
    args = ["run", str(RSI), str(sma), "--to", "2024-02-01", "--out", str(tmp_path / "svc")]
    assert main([*args, "--paper", "--json"]) == 0  # without --paper: one-account backtest
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == ["rsi-reversion", "sma-perp"]
    for name, row in out.items():
        assert row["state"] == "finished" and row["bars"] == 744, name
        d = Path(row["run_dir"])
        assert d == tmp_path / "svc" / f"paper-{name}"
        assert (d / "orders.log").is_file() and (d / "metrics.json").is_file()
    # the rsi session traded exactly like a backtest of the same bars
    assert main(["run", str(RSI), "--to", "2024-02-01", "--out", str(tmp_path / "bt"), "--json",
                 "--no-plots", "--quiet"]) == 0  # fmt: skip
    bt = json.loads(capsys.readouterr().out)["metrics"]
    assert out["rsi-reversion"]["metrics"]["trades"] == bt["trades"]
    assert out["rsi-reversion"]["metrics"]["total_return_pct"] == pytest.approx(
        bt["total_return_pct"], abs=1e-9
    )


def test_paper_run_refuses_too_few_bars_before_starting_a_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sma = str(ROOT / "examples" / "sma-cross.yaml")
    out = tmp_path / "paper"
    err = _bad(["run", sma, "--paper", "--to", "2024-01-02", "--out", str(out)], capsys)
    assert "24 bars is not enough" in err and "warm-up" in err
    assert not out.exists()  # refused up front: no run directory, no kernel process


def test_run_with_funding_records_it_and_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rsi = str(ROOT / "examples" / "rsi-reversion.yaml")
    funding = tmp_path / "funding.csv"
    funding.write_bytes((ROOT / "examples" / "data" / "btcusdt-funding-synthetic.csv").read_bytes())
    out = tmp_path / "run"
    common = ["--to", "2024-05-01", "--json", "--no-plots"]
    assert main(["run", rsi, *common, "--funding", str(funding), "--out", str(out)]) == 0
    paid = json.loads(capsys.readouterr().out)
    assert paid["metrics"]["funding_paid"] > 0
    info = json.loads((out / "run.json").read_text())
    assert info["funding"]["data"] == str(funding.resolve())
    log = (out / "strategy.log.jsonl").read_text()
    assert '"kind":"funding"' in log and '"missing":0' in log
    assert main(["replay", str(out)]) == 0
    assert "byte-identical" in capsys.readouterr().out
    assert main(["run", rsi, *common, "--out", str(tmp_path / "free")]) == 0
    free = json.loads(capsys.readouterr().out)
    assert free["metrics"]["funding_paid"] == 0
    assert free["metrics"]["total_return_pct"] > paid["metrics"]["total_return_pct"]
    # the rates changed after the run: replay refuses instead of diverging silently
    lines = funding.read_text().splitlines()
    lines[5] = lines[5].replace("0.0", "0.1", 1)
    funding.write_text("\n".join(lines) + "\n")
    assert "funding rates differ" in _bad(["replay", str(out)], capsys)
    sma = str(ROOT / "examples" / "sma-cross.yaml")
    err = _bad(
        ["run", sma, *common, "--funding", str(funding), "--out", str(tmp_path / "s")], capsys
    )
    assert "perpetuals" in err and "spot" in err and not (tmp_path / "s").exists()


def test_paper_run_with_funding_writes_the_backtests_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The order-kernel process is given the same rates: same strategy log, and the replay (an
    in-process backtest) reproduces the paper run's logs byte for byte."""
    rsi = str(ROOT / "examples" / "rsi-reversion.yaml")
    funding = str(ROOT / "examples" / "data" / "btcusdt-funding-synthetic.csv")
    common = ["--to", "2024-03-01", "--json", "--no-plots", "--funding", funding]
    assert main(["run", rsi, *common, "--out", str(tmp_path / "bt")]) == 0
    assert main(["run", rsi, *common, "--paper", "--out", str(tmp_path / "paper")]) == 0
    capsys.readouterr()
    bt = (tmp_path / "bt" / "strategy.log.jsonl").read_bytes()
    assert bt == (tmp_path / "paper" / "strategy.log.jsonl").read_bytes()
    assert b'"kind":"funding"' in bt
    assert main(["replay", str(tmp_path / "paper")]) == 0
    assert "byte-identical" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "bt" / "metrics.json").read_text())["metrics"]
    assert metrics["funding_paid"] > 0


def test_sweep_command_feeds_data_inputs_from_bars_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import polars as pl

    from feeds.files import write_bars
    from feeds.synthetic import generate_bars

    start = 1_704_067_200_000_000_000
    for sym, seed in (("btc", 1), ("eth", 2)):
        frame: pl.DataFrame = generate_bars(seed=seed, start_ns=start, n=900, timeframe="1h")
        write_bars(frame, tmp_path / f"{sym}.csv")
    from test_cli_portfolio import BTC_ETH

    (tmp_path / "a.yaml").write_text(BTC_ETH)
    args = ["sweep", str(tmp_path / "a.yaml"), "--param", "nodes.eth_sma.params.period=5,10"]
    args += ["--data", str(tmp_path / "btc.csv"), "--executor", "serial", "--json"]
    assert main([*args, "--bars", f"ETH/USDT={tmp_path / 'eth.csv'}"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in rows] == ["fast", "fast"] and all(not r["error"] for r in rows)
    err = _bad([*args, "--bars", f"SOL/USDT={tmp_path / 'eth.csv'}"], capsys)
    assert "SOL/USDT" in err and "no `data:` input" in err
