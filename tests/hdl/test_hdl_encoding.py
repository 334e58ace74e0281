"""The hardware encodings are generated from the spec and match it bit for bit."""

from __future__ import annotations

from enum import Enum, IntEnum

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Shape

from hdl.errors import HdlConfigError
from hdl.order_fsm import (
    OrderEventCode,
    OrderStateCode,
    OrderTable,
    OrderTableConfig,
    ReasonCode,
    event_layout,
    result_layout,
    slot_layout,
)
from order_kernel import spec


@pytest.mark.parametrize(
    ("hw", "sw", "bits"),
    [
        (OrderStateCode, spec.OrderState, spec.STATE_BITS),
        (OrderEventCode, spec.OrderEvent, spec.EVENT_BITS),
        (ReasonCode, spec.Reason, spec.REASON_BITS),
    ],
)
def test_enum_matches_spec(hw: type[Enum], sw: type[IntEnum], bits: int) -> None:
    assert [(m.name, m.value) for m in hw] == [(m.name, int(m)) for m in sw]
    assert Shape.cast(hw) == Shape(bits, signed=False)


def test_action_bits_fit_the_declared_width() -> None:
    assert max(int(a) for a in spec.Action).bit_length() <= spec.ACTION_BITS
    assert result_layout(OrderTableConfig())["actions"].width == spec.ACTION_BITS


@pytest.mark.parametrize(("n", "bits"), [(2, 1), (16, 4), (64, 6), (256, 8)])
def test_slot_index_width(n: int, bits: int) -> None:
    cfg = OrderTableConfig(n_slots=n)
    assert cfg.slot_bits == bits
    assert event_layout(cfg)["slot"].width == bits


def test_field_widths_follow_config() -> None:
    cfg = OrderTableConfig(n_slots=16, qty_bits=20, price_bits=24)
    layout = slot_layout(cfg)
    assert layout["filled_qty"].width == 20
    assert layout["leaves_qty"].width == 20
    assert layout["price"].width == 24
    assert layout["amend_qty"].width == 20
    assert layout.size == 4 + 4 + 1 + 2 + 3 * 20 + 4 * 24


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_slots": 12}, "n_slots"),
        ({"n_slots": 1}, "n_slots"),
        ({"qty_bits": 0}, "qty_bits"),
        ({"price_bits": 65}, "price_bits"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(HdlConfigError, match=field):
        OrderTableConfig(**kwargs)  # type: ignore[arg-type]


def test_component_ports_are_streams() -> None:
    table = OrderTable(OrderTableConfig(n_slots=16))
    members = dict(table.signature.members)
    assert set(members) == {"events", "results"}
    assert members["events"].flow.name == "In"
    assert members["results"].flow.name == "Out"
    assert [bank.depth for bank in table.banks] == [16]
    assert "order_table" in rtlil.convert(table, name="order_table")  # elaborates cleanly
