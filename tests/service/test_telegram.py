"""Telegram bot end to end against a local fake Bot API server (python-telegram-bot, real HTTP)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.conftest import FakeClock, make_settings
from service.fake_telegram import FakeTelegram
from stratagem.service import ServiceError
from stratagem.service.bus import Update
from stratagem.service.state import ServiceState
from stratagem.service.telegram import Bot

BOT_TOKEN = "123456:TEST-bot-token-abcdef"
ME, STRANGER = 1001, 999


@dataclass
class Reply:
    text: str


class FakeChat:
    """Stands in for compiler.chat.ChatSession (same send/accept/reject/pending surface)."""

    def __init__(self) -> None:
        self.pending: object | None = None
        self.accepted = 0

    def send(self, text: str) -> Reply:
        self.pending = object()
        return Reply(f"proposed rsi-reversion v4 for: {text}\naccept with /approve")

    def accept(self) -> str:
        self.pending = None
        self.accepted += 1
        return "rsi-reversion v4"

    def reject(self) -> None:
        self.pending = None


@pytest.fixture
def bot_env(
    tmp_path: Path, runs_copy: Path
) -> Iterator[tuple[FakeTelegram, ServiceState, FakeChat]]:
    with FakeTelegram(BOT_TOKEN) as fake:
        settings = make_settings(
            tmp_path, runs_copy, telegram_token=SecretStr(BOT_TOKEN), telegram_chat_ids=[ME],
            telegram_base_url=f"{fake.url}/bot",
        )  # fmt: skip
        state = ServiceState(settings, clock=FakeClock())
        state.rebuild()
        chat = FakeChat()
        bot = Bot(
            state, chat=chat, render_chart=lambda pts, title: b"\x89PNG fake " + title.encode()
        )
        ready: dict[str, Any] = {}

        async def main() -> None:
            ready["loop"] = asyncio.get_running_loop()
            ready["stop"] = asyncio.Event()
            await bot.run(ready["stop"], poll_timeout=1)

        t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        t.start()
        while "stop" not in ready or "getUpdates" not in fake.calls:
            threading.Event().wait(0.02)
        try:
            yield fake, state, chat
        finally:
            ready["loop"].call_soon_threadsafe(ready["stop"].set)
            t.join(timeout=15)
            assert not t.is_alive()
            state.conn.close()


def test_bot_end_to_end(
    bot_env: tuple[FakeTelegram, ServiceState, FakeChat], caplog: pytest.LogCaptureFixture
) -> None:
    fake, state, chat = bot_env
    caplog.set_level(logging.INFO)

    def to_me(needle: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: s["chat_id"] == ME and needle in (s["text"] + s["caption"])

    # an unknown chat is ignored (nothing sent, nothing recorded) and logged
    fake.say(STRANGER, "/kill now")
    fake.say(ME, "/start")
    fake.wait_sent(to_me("/status - runs"))
    assert not any(s["chat_id"] == STRANGER for s in fake.sent)
    assert state.query("SELECT * FROM control_requests") == []
    assert any("unknown chat id 999" in r.getMessage() for r in caplog.records)

    fake.say(ME, "/status")
    fake.wait_sent(to_me("2 runs (0 quarantined)"))
    fake.say(ME, "/strategies")
    fake.wait_sent(to_me("sma-cross v1 [sma-cross-v1] ok"))
    fake.say(ME, "/positions")
    fake.wait_sent(to_me("rsi-reversion-v3 BTC/USDT"))
    fake.say(ME, "/history sma-cross-v1")
    fake.wait_sent(to_me("trades of sma-cross-v1"))
    photo = fake.wait_sent(lambda s: s["method"] == "sendPhoto")
    assert photo["chat_id"] == ME and photo["photo_bytes"] > 0 and "equity" in photo["caption"]

    # a proposal awaiting approval is pushed, then approved from the chat
    row = state.request_approval("rsi-reversion", 4, "tighter stop", {})
    fake.wait_sent(to_me(f"/approve {row['approval_id']}"))
    fake.say(ME, f"/approve {row['approval_id']} ship it")
    fake.wait_sent(to_me(f"{row['approval_id']}: approved"))
    assert state.approval(row["approval_id"])["decided_by"] == f"telegram:{ME}"
    fake.say(ME, f"/reject {row['approval_id']}")
    fake.wait_sent(to_me("already approved"))

    # kill / pause with no runner listening: recorded, and the reply says nothing was enforced
    fake.say(ME, "/kill market looks broken")
    fake.wait_sent(to_me("kill switch request #"))
    fake.say(ME, "/pause rsi-reversion")
    fake.wait_sent(to_me("pause rsi-reversion: recorded, not yet acknowledged"))
    rows = state.query(
        "SELECT action, requested_by, scope, reason FROM control_requests ORDER BY n"
    )
    assert [(r["action"], r["scope"]) for r in rows] == [
        ("kill", "all"),
        ("pause", "rsi-reversion"),
    ]
    assert rows[0]["reason"] == "market looks broken"

    # chat with the compiler: free text -> proposal; /approve without an id accepts it
    fake.say(ME, "tighten the stop to 1.5 ATR")
    fake.wait_sent(to_me("proposed rsi-reversion v4 for: tighten the stop"))
    fake.say(ME, "/approve")
    fake.wait_sent(to_me("accepted and committed: rsi-reversion v4"))
    assert chat.accepted == 1

    # pushes: stop fills and risk refusals
    state.bus.publish("fill", {"client_order_id": "rsi-reversion-9.sl", "side": "SELL", "qty": 0.1,
                               "symbol": "BTC/USDT", "price": 61000.0})  # fmt: skip
    fake.wait_sent(to_me("STOP hit: SELL 0.1000 BTC/USDT @ 61,000.00"))
    state.bus.publish("alert", {"kind": "risk_refusal", "severity": "warning",
                                "message": "risk.max_daily_loss_pct: daily loss 3.1 %"})  # fmt: skip
    fake.wait_sent(to_me("risk refusal: risk.max_daily_loss_pct"))
    assert not any(s["chat_id"] == STRANGER for s in fake.sent)
    assert BOT_TOKEN not in "\n".join(r.getMessage() for r in caplog.records)


def test_bot_refuses_to_start_without_token_or_whitelist(tmp_path: Path, runs_copy: Path) -> None:
    s = make_settings(tmp_path, runs_copy)
    with pytest.raises(ServiceError, match="token"):
        Bot(ServiceState(s, clock=FakeClock()))
    s2 = make_settings(tmp_path, runs_copy, telegram_token=SecretStr(BOT_TOKEN))
    with pytest.raises(ServiceError, match="whitelisted"):
        Bot(ServiceState(s2, clock=FakeClock()))


def test_push_formatting_skips_decided_approvals() -> None:
    assert Bot.format_push(Update("approval", {"status": "approved"})) is None
    assert Bot.format_push(Update("equity", {})) is None
    text = Bot.format_push(Update("fill", {"client_order_id": "x-1", "side": "BUY", "qty": 1.0,
                                           "symbol": "ETH/USDT", "price": 3000.0}))  # fmt: skip
    assert text is not None and text.startswith("fill: BUY")
