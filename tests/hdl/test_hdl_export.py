"""Verilog export is deterministic; synthesis report parsing; synthesis itself is slow-marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdl.errors import HdlConfigError, HdlToolError
from hdl.export import _parse_reports, export_verilog, harness_overhead_ffs, synthesize, to_verilog
from hdl.order_fsm import OrderTableConfig


@pytest.fixture(scope="module")
def v16() -> str:
    return to_verilog(16)


def test_same_input_same_text(v16: str) -> None:
    assert to_verilog(16) == v16


def test_text_depends_on_parameters(v16: str) -> None:
    assert to_verilog(64) != v16
    assert to_verilog(16, ram_style="block") != v16
    assert "module order_table(" in v16
    assert "[3:0]" in v16  # 4-bit state / slot fields


def test_no_source_paths_leak_into_the_file(v16: str) -> None:
    assert "order_fsm.py" not in v16
    assert str(Path.cwd()) not in v16


def test_export_writes_the_file(tmp_path: Path, v16: str) -> None:
    path = export_verilog(tmp_path / "build", n_slots=16)
    assert path.name == "order_table_n16.v"
    assert path.read_text(encoding="utf-8") == v16


def test_unknown_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HdlConfigError, match="12k"):
        synthesize(tmp_path, 16, device="12k")


def _write_reports(tmp_path: Path, fmax: dict[str, dict[str, float]]) -> tuple[Path, Path]:
    stat = tmp_path / "stat.json"
    stat.write_text(
        "-- noise --\n"
        + json.dumps(
            {
                "design": {
                    "num_cells_by_type": {
                        "LUT4": 700,
                        "TRELLIS_FF": 400,
                        "CCU2C": 48,
                        "TRELLIS_DPR16X4": 19,
                    }
                }
            }
        )
    )
    pnr = tmp_path / "pnr.json"
    pnr.write_text(
        json.dumps(
            {"fmax": fmax, "utilization": {"TRELLIS_COMB": {"used": 900, "available": 24288}}}
        )
    )
    return stat, pnr


def test_reports_are_parsed(tmp_path: Path) -> None:
    cfg = OrderTableConfig(n_slots=16)
    stat, pnr = _write_reports(tmp_path, {"clk": {"achieved": 123.456, "constraint": 200.0}})
    report = _parse_reports(stat, pnr, cfg, "25k", "CABGA381", 200.0, harness_overhead_ffs(cfg))
    assert (report.luts, report.ffs, report.carry_cells, report.lutram, report.brams) == (
        700,
        400,
        48,
        19,
        0,
    )
    assert report.fmax_mhz == 123.46
    assert report.table_ffs == 400 - harness_overhead_ffs(cfg)
    assert json.loads(report.to_json())["comb_used"] == 900


def test_missing_clock_in_report_is_an_error(tmp_path: Path) -> None:
    cfg = OrderTableConfig(n_slots=16)
    stat, pnr = _write_reports(tmp_path, {})
    with pytest.raises(HdlToolError, match="no clock"):
        _parse_reports(stat, pnr, cfg, "25k", "CABGA381", 200.0, harness_overhead_ffs(cfg))


@pytest.mark.slow
def test_synthesis_and_place_and_route_n16(tmp_path: Path) -> None:
    report = synthesize(tmp_path, n_slots=16)
    assert report.fmax_mhz > 50
    assert report.luts > 100 and report.ffs > report.harness_ffs
    assert (tmp_path / "synth_n16.json").exists()
