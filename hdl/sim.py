"""Drive `OrderTable` in `amaranth.sim` and check it against the reference model.

One simulation runs a whole batch of events (the Python simulator costs far more per
construction than per cycle), with optional idle cycles on the input and back-pressure on
the output so the handshake is exercised along with the table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.lib import data
from amaranth.sim import Simulator, SimulatorContext

from hdl.errors import HdlConfigError, HdlMismatchError
from hdl.order_fsm import (
    LATENCY_CYCLES,
    SAME_SLOT_GAP,
    OrderTable,
    OrderTableConfig,
    event_layout,
    result_layout,
    slot_layout,
)
from hdl.reference import EventIn, ReferenceOrderTable, ResultOut, Slot, SpecTables
from order_kernel import spec

_TERMINAL = frozenset(int(s) for s in spec.TERMINAL_STATES)

__all__ = [
    "EquivalenceReport",
    "SimTrace",
    "check_against_reference",
    "compare_trace",
    "random_events",
    "run_equivalence",
    "simulate",
]


@dataclass(frozen=True, slots=True)
class SimTrace:
    """What the hardware produced: results in order, the addressed slot after each, all slots at the end."""

    results: list[ResultOut]
    slot_after: list[Slot]
    final_slots: list[Slot]
    cycles: int


@dataclass(frozen=True, slots=True)
class EquivalenceReport:
    """Outcome of `run_equivalence`: how much was compared and how fast the simulator ran."""

    n_events: int
    seed: int
    n_slots: int
    cycles: int
    accepted: int
    refused: int
    wall_s: float

    @property
    def cycles_per_event(self) -> float:
        """Simulated clock cycles per event (1.0 when nothing stalls)."""
        return self.cycles / self.n_events if self.n_events else 0.0


def _packer(layout: data.StructLayout, ev: EventIn) -> int:
    value = 0
    for name, field in layout:
        raw = int(getattr(ev, name))
        value |= (raw & ((1 << field.width) - 1)) << field.offset
    return value


def _unpack(layout: data.StructLayout, raw: int) -> dict[str, int]:
    return {name: (raw >> field.offset) & ((1 << field.width) - 1) for name, field in layout}


def _to_result(fields: dict[str, int]) -> ResultOut:
    return ResultOut(
        slot=fields["slot"],
        load=bool(fields["load"]),
        event=fields["event"],
        accepted=bool(fields["accepted"]),
        reason=fields["reason"],
        state=fields["state"],
        prev_state=fields["prev_state"],
        actions=fields["actions"],
        filled_qty=fields["filled_qty"],
        leaves_qty=fields["leaves_qty"],
    )


def simulate(
    events: Sequence[EventIn],
    config: OrderTableConfig | None = None,
    *,
    idle: Sequence[bool] = (),
    stall: Sequence[bool] = (),
    vcd_path: Path | None = None,
) -> SimTrace:
    """Run `events` through a fresh `OrderTable`.

    `idle[c % len(idle)]` holds `events.valid` low in cycle c; `stall[c % len(stall)]`
    holds `results.ready` low. Both default to never. With `vcd_path` a trace is written.
    """
    cfg = config if config is not None else OrderTableConfig()
    if idle and all(idle):
        raise HdlConfigError(f"idle={list(idle)} holds events.valid low forever; allow a cycle")
    if stall and all(stall):
        raise HdlConfigError(f"stall={list(stall)} holds results.ready low forever; allow a cycle")
    # Each event needs at most SAME_SLOT_GAP cycles (same-slot bubbles) per free input and
    # output cycle of the patterns; beyond that the design is stuck.
    max_cycles = (
        SAME_SLOT_GAP * (len(events) + LATENCY_CYCLES + 1) * (len(idle) + 1) * (len(stall) + 1) + 64
    )
    dut = OrderTable(cfg)
    ev_layout, res_layout, sl_layout = event_layout(cfg), result_layout(cfg), slot_layout(cfg)
    packed = [_packer(ev_layout, ev) for ev in events]
    results: list[ResultOut] = []
    slot_after: list[Slot] = []
    final_slots: list[Slot] = []
    cycles = 0
    slot_mask = cfg.n_slots - 1  # `slot` is the lowest field of the result layout

    async def bench(ctx: SimulatorContext) -> None:
        nonlocal cycles
        sent = 0
        payload = dut.events.payload.as_value()
        out_payload = dut.results.payload.as_value()
        while len(results) < len(packed):
            drive = sent < len(packed) and not (idle and idle[cycles % len(idle)])
            ready = not (stall and stall[cycles % len(stall)])
            ctx.set(dut.events.valid, drive)
            if drive:
                ctx.set(payload, packed[sent])
            ctx.set(dut.results.ready, ready)
            # The result register is stable until the edge, so its slot is known now and
            # that RAM row can be sampled at the same edge (before the next write lands).
            out_slot = ctx.get(out_payload) & slot_mask
            _, _, in_ready, out_valid, out_raw, row = await ctx.tick().sample(
                dut.events.ready, dut.results.valid, out_payload, dut.row(out_slot)
            )
            cycles += 1
            if drive and in_ready:
                sent += 1
            if out_valid and ready:
                results.append(_to_result(_unpack(res_layout, out_raw)))
                slot_after.append(Slot(**_unpack(sl_layout, row.as_value().value)))
            if cycles > max_cycles:
                raise HdlMismatchError(
                    f"the order table stopped producing results after {len(results)} of "
                    f"{len(packed)} events ({cycles} cycles): a handshake deadlock"
                )
        for i in range(cfg.n_slots):
            row = ctx.get(dut.row(i)).as_value().value
            final_slots.append(Slot(**_unpack(sl_layout, row)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd_path is not None:
        vcd_path.parent.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(vcd_path)):
            sim.run()
    else:
        sim.run()
    return SimTrace(results, slot_after, final_slots, cycles)


def compare_trace(
    events: Sequence[EventIn], trace: SimTrace, ref: ReferenceOrderTable
) -> str | None:
    """Step `ref` through `events`; describe the first result or slot that differs, or None."""
    for i, ev in enumerate(events):
        want = ref.step(ev)
        got = trace.results[i]
        if got != want:
            return f"event #{i} {ev}: result differs\n  hdl:       {got}\n  reference: {want}"
        want_slot = ref.slots[want.slot]
        if trace.slot_after[i] != want_slot:
            return (
                f"event #{i} {ev}: slot {want.slot} differs after the event\n"
                f"  hdl:       {trace.slot_after[i]}\n  reference: {want_slot}"
            )
    for i, (got_slot, want_slot) in enumerate(zip(trace.final_slots, ref.slots, strict=True)):
        if got_slot != want_slot:
            return f"final slot {i} differs\n  hdl:       {got_slot}\n  reference: {want_slot}"
    return None


def check_against_reference(
    events: Sequence[EventIn],
    config: OrderTableConfig | None = None,
    *,
    idle: Sequence[bool] = (),
    stall: Sequence[bool] = (),
    tables: SpecTables | None = None,
    vcd_dir: Path | None = None,
) -> SimTrace:
    """Simulate and compare every result and every addressed slot with the reference model.

    On a mismatch the batch is re-simulated with a VCD trace in `vcd_dir` (when given)
    and `HdlMismatchError` names the first differing event and the trace file.
    """
    cfg = config if config is not None else OrderTableConfig()
    trace = simulate(events, cfg, idle=idle, stall=stall)
    ref = ReferenceOrderTable(cfg.n_slots, cfg.qty_bits, cfg.price_bits, tables=tables)
    problem = compare_trace(events, trace, ref)
    if problem is None:
        return trace
    where = ""
    if vcd_dir is not None:
        vcd = vcd_dir / f"order_table_mismatch_{len(events)}ev.vcd"
        simulate(events, cfg, idle=idle, stall=stall, vcd_path=vcd)
        where = f"\n  VCD trace: {vcd}"
    raise HdlMismatchError(f"HDL and reference model disagree at {problem}{where}")


def random_events(n_events: int, seed: int, n_slots: int = 16) -> list[EventIn]:
    """A seeded event stream that follows legal lifecycles most of the time.

    A shadow reference model tracks each slot: 55 % of events are ones the table allows in
    the slot's current state (deep lifecycles, fill races, PREV restores), 35 % ones it
    refuses there, 10 % arbitrary 4-bit codes (undefined ones included).
    """
    rng = np.random.default_rng(seed)
    shadow = ReferenceOrderTable(n_slots)
    hot = min(n_slots, 4)  # most events hit a few slots so their lifecycles interleave
    allowed = [np.flatnonzero(spec.REASONS[s] == 0) for s in range(spec.N_STATES)]
    refused = [np.flatnonzero(spec.REASONS[s] != 0) for s in range(spec.N_STATES)]
    out: list[EventIn] = []
    for _ in range(n_events):
        slot = int(rng.integers(0, hot)) if rng.random() < 0.8 else int(rng.integers(0, n_slots))
        cur = shadow.slots[slot]
        price = int(rng.integers(1, 1 << 20)) if rng.random() > 0.03 else 0
        trigger = int(rng.integers(0, 1 << 20))
        legal = allowed[cur.state]
        if rng.random() < 0.04 or (cur.state in _TERMINAL and rng.random() < 0.3):
            qty = int(rng.integers(1, 1 << 32)) if rng.random() < 0.05 else int(rng.integers(0, 40))
            ev = EventIn(
                slot=slot,
                load=True,
                side=int(rng.integers(0, 2)),
                order_type=int(rng.integers(0, 4)),
                qty=qty,
                price=price,
                trigger_price=trigger,
            )
        else:
            pick = rng.random()
            if pick < 0.55 and len(legal):
                # TRIGGER is the only way into TRIGGERED: favour it so that state gets traffic.
                weights = np.where(legal == int(spec.OrderEvent.TRIGGER), 8.0, 1.0)
                code = int(rng.choice(legal, p=weights / weights.sum()))
            elif pick < 0.9:
                code = int(rng.choice(refused[cur.state]))
            else:
                code = int(rng.integers(0, 1 << spec.EVENT_BITS))
            roll = rng.random()
            if roll < 0.15:
                qty = cur.leaves_qty  # exactly completes a fill
            elif roll < 0.25:
                qty = cur.leaves_qty + int(rng.integers(1, 4))  # overfill / larger amend
            elif roll < 0.3:
                qty = int(rng.integers(0, 1 << 32))
            else:
                qty = int(rng.integers(0, max(2, cur.leaves_qty + cur.filled_qty + 1)))
            ev = EventIn(slot=slot, event=code, qty=qty, price=price, trigger_price=trigger)
        shadow.step(ev)
        out.append(ev)
    return out


def run_equivalence(
    n_events: int,
    seed: int,
    n_slots: int = 16,
    *,
    batch: int = 10_000,
    vcd_dir: Path | None = None,
) -> EquivalenceReport:
    """Random events through the HDL and the reference model, compared event by event.

    Runs in batches of `batch` events (a fresh table and stream per batch, seeds derived
    from `seed`) so a 10^6-event run needs no more memory than a 10^4 one. Idle input
    cycles and output back-pressure come from the same seeds. Raises `HdlMismatchError`
    on the first disagreement.
    """
    cfg = OrderTableConfig(n_slots=n_slots)
    cycles = accepted = done = 0
    start = time.perf_counter()
    index = 0
    while done < n_events:
        size = min(batch, n_events - done)
        batch_seed = seed * 1_000_003 + index
        events = random_events(size, batch_seed, n_slots)
        rng = np.random.default_rng(batch_seed + 1)
        idle = [bool(x) for x in rng.random(97) < 0.1]
        stall = [bool(x) for x in rng.random(89) < 0.1]
        trace = check_against_reference(events, cfg, idle=idle, stall=stall, vcd_dir=vcd_dir)
        cycles += trace.cycles
        accepted += sum(r.accepted for r in trace.results)
        done += size
        index += 1
    return EquivalenceReport(
        n_events=n_events,
        seed=seed,
        n_slots=n_slots,
        cycles=cycles,
        accepted=accepted,
        refused=n_events - accepted,
        wall_s=time.perf_counter() - start,
    )
