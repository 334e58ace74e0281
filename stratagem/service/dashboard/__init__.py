"""Server-rendered dashboard pieces: HTML partials (Jinja2) and the inline SVG equity curve.

No JavaScript build: htmx (vendored in `static/`, 0BSD) swaps partials in when the page's
server-sent-events stream says something changed.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def fmt_ts(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def fmt_num(x: float | int | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


TEMPLATES.filters["ts"] = fmt_ts
TEMPLATES.filters["num"] = fmt_num


def equity_svg(
    points: Sequence[tuple[int, float]],
    *,
    width: int = 640,
    height: int = 200,
    max_points: int = 400,
    title: str = "Equity curve",
) -> str:
    """An accessible inline SVG polyline of (ts_ns, equity), decimated to `max_points`."""
    if len(points) < 2:
        return (
            f'<svg role="img" aria-label="{html.escape(title)}: no data" viewBox="0 0 {width} '
            f'{height}" class="equity"><text x="10" y="30">no equity data yet</text></svg>'
        )
    step = max(1, len(points) // max_points)
    pts = list(points[::step])
    if pts[-1] != points[-1]:
        pts.append(points[-1])
    t0, t1 = pts[0][0], pts[-1][0]
    lo = min(p[1] for p in pts)
    hi = max(p[1] for p in pts)
    span_t = max(1, t1 - t0)
    span_v = hi - lo or 1.0
    pad = 8
    coords = " ".join(
        f"{pad + (t - t0) / span_t * (width - 2 * pad):.1f},"
        f"{height - pad - (v - lo) / span_v * (height - 2 * pad):.1f}"
        for t, v in pts
    )
    first, last = points[0][1], points[-1][1]
    label = (
        f"{title}: from {first:,.2f} to {last:,.2f}, low {lo:,.2f}, high {hi:,.2f}, "
        f"{fmt_ts(points[0][0])} to {fmt_ts(points[-1][0])}"
    )
    colour = "#1a7f37" if last >= first else "#b42318"
    return (
        f'<svg role="img" aria-label="{html.escape(label)}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" class="equity"><title>{html.escape(label)}</title>'
        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/></svg>'
    )


def render(name: str, **ctx: Any) -> str:
    return TEMPLATES.get_template(name).render(**ctx)
