"""`stratagem hdl ...` through the real CLI (synthesis itself is covered by the slow hdl tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.cli import main


def test_verilog_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hdl", "verilog", "--out", str(tmp_path / "a"), "--slots", "4"]) == 0
    assert main(["hdl", "verilog", "--out", str(tmp_path / "b"), "--slots", "4"]) == 0
    a = (tmp_path / "a" / "order_table_n4.v").read_text()
    assert a == (tmp_path / "b" / "order_table_n4.v").read_text() and "module" in a
    assert "wrote" in capsys.readouterr().out


def test_equiv_and_sim_with_vcd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hdl", "equiv", "--events", "500", "--slots", "4"]) == 0
    assert "HDL == reference model on 500 random events" in capsys.readouterr().out
    vcd = tmp_path / "t.vcd"
    assert main(["hdl", "sim", "--events", "40", "--slots", "4", "--vcd", str(vcd)]) == 0
    assert vcd.stat().st_size > 0


def test_bad_slot_count_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hdl", "equiv", "--events", "10", "--slots", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
