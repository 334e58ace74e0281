"""Per-node scorecard ("karma"): how often each signal node's firing preceded a profitable trade.

For every entry order the strategy sent, the boolean nodes that were true at that moment (the
latest value of each node in the strategy log) are the ones that "fired" for the trade; the
trade's realised pnl then scores each of them. Attribution, not causation: a node true at every
entry scores the same as the strategy as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NodeScore:
    node: str
    trades: int  # trades entered while the node was true
    profitable: int  # of those, trades with pnl > 0
    pnl: float  # sum of their pnl (quote currency)

    @property
    def hit_rate_pct(self) -> float:
        return 100.0 * self.profitable / self.trades if self.trades else 0.0


def entry_nodes(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """client_order_id of each entry order -> sorted names of the boolean nodes true when sent."""
    values: dict[str, Any] = {}
    fired: dict[str, tuple[str, ...]] = {}
    for r in records:
        kind = r.get("kind")
        if kind == "nodes":
            values.update(r.get("values") or {})
        elif kind == "command":
            msg = r.get("msg") or {}
            if msg.get("type") == "SubmitOrder" and msg.get("tag") == "entry":
                fired[str(msg["client_order_id"])] = tuple(
                    sorted(k for k, v in values.items() if v is True)
                )
    return fired


def score(fired: Mapping[str, tuple[str, ...]], trade_pnl: Mapping[str, float]) -> list[NodeScore]:
    """Aggregate per node over closed trades; sorted by node name (deterministic)."""
    acc: dict[str, list[float]] = {}
    for trade_id in sorted(trade_pnl):
        for node in fired.get(trade_id, ()):
            acc.setdefault(node, []).append(trade_pnl[trade_id])
    return [
        NodeScore(node, len(p), sum(1 for x in p if x > 0), round(sum(p), 10))
        for node, p in sorted(acc.items())
    ]
