"""Bounded model checks (yosys `sat`): the invariants hold, and a broken table is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil

from hdl.formal import DEFAULT_DEPTH, lifecycle_depth, run_bmc
from hdl.order_fsm import OrderTable, OrderTableConfig
from order_kernel import spec


def test_default_depth_covers_a_lifecycle() -> None:
    # five events on one slot, spaced by the pipeline, the last one committed
    assert DEFAULT_DEPTH == lifecycle_depth(5) == 17


def test_formal_build_carries_the_asserts() -> None:
    cfg = OrderTableConfig(n_slots=2, qty_bits=4, price_bits=2)
    with_asserts = rtlil.convert(OrderTable(cfg, formal=True), name="top")
    without = rtlil.convert(OrderTable(cfg), name="top")
    assert with_asserts.count("cell $check") == 5
    assert "cell $check" not in without


@pytest.mark.slow
def test_invariants_hold_through_a_whole_lifecycle(tmp_path: Path) -> None:
    report = run_bmc(tmp_path, depth=DEFAULT_DEPTH)
    assert report.passed, f"counterexample: {report.counterexample_vcd}"
    assert report.n_asserts == 5


@pytest.mark.slow
def test_a_table_edge_out_of_a_terminal_state_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Let FILLED + EXPIRE go to EXPIRED: the generator follows the table, the invariant fails.
    # LOAD, SUBMIT, FILL_FULL (from PENDING), EXPIRE on one slot reach it.
    nxt, reasons = np.array(spec.NEXT_STATE), np.array(spec.REASONS)
    nxt[spec.OrderState.FILLED, spec.OrderEvent.EXPIRE] = spec.OrderState.EXPIRED
    reasons[spec.OrderState.FILLED, spec.OrderEvent.EXPIRE] = 0
    monkeypatch.setattr(spec, "NEXT_STATE", nxt)
    monkeypatch.setattr(spec, "REASONS", reasons)
    report = run_bmc(tmp_path, depth=lifecycle_depth(4))
    assert not report.passed
    assert (
        report.counterexample_vcd is not None and Path(report.counterexample_vcd).stat().st_size > 0
    )
