"""The bundled sample data is what its README says, and regenerates byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from feeds.files import read_bars
from feeds.synthetic import main
from feeds.validate import check_bars

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "data" / "btcusdt-1h-synthetic.csv"
README = ROOT / "examples" / "data" / "README.md"


def _documented_command() -> list[str]:
    """The argv of the command written in the README (so docs and test cannot drift)."""
    text = README.read_text()
    start = text.index("python -m feeds.synthetic")
    command = text[start : text.index("```", start)].replace("\\\n", " ")
    return command.split()[3:]  # drop "python -m feeds.synthetic"


def test_sample_is_labelled_and_a_year_of_clean_hourly_bars() -> None:
    assert "synthetic" in SAMPLE.name
    assert "SYNTHETIC" in README.read_text()
    bars = read_bars(SAMPLE)
    assert bars.height >= 8_760
    assert bars["ts_ns"][0] == 1_704_067_200_000_000_000
    assert check_bars(bars, "1h").clean
    close = bars["close"].to_numpy()
    assert close.min() > 30_000 and close.max() < 100_000


def test_sample_regenerates_identically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _documented_command()
    out_at = argv.index("--out") + 1
    assert argv[out_at] == "examples/data/btcusdt-1h-synthetic.csv"
    argv[out_at] = str(tmp_path / "regen.csv")
    assert main(argv) == 0
    capsys.readouterr()
    assert (tmp_path / "regen.csv").read_bytes() == SAMPLE.read_bytes()
