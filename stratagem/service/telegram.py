"""The Telegram bot (python-telegram-bot): commands, pushes and chat with the compiler.

Only whitelisted chat ids are served: any other update is logged (chat id only, never its text)
and dropped before a handler sees it. Commands act through `ServiceState`, so a /kill or
/approve here is journaled and shown on the dashboard exactly like one made through the API.
Free text goes to the compiler's conversation API (`compiler.chat.ChatSession`) when one is
configured; its pending proposal is accepted with /approve and dropped with /reject.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any, Literal, Protocol

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from stratagem.service import ServiceError, review_chain
from stratagem.service.bus import Update as BusUpdate
from stratagem.service.dashboard import fmt_num, fmt_ts
from stratagem.service.state import ConflictError, NotFoundError, ServiceState

log = logging.getLogger("stratagem.service.telegram")

HELP = """stratagem bot
/status - runs, alerts, pending approvals
/strategies - strategies and their last run
/positions - last position per run
/history [run] - recent trades and the equity chart
/approve <id> | /reject <id> - decide a pending approval (no id: the chat proposal);
  an approved review is promoted and hot-swapped ([review] on_approve)
/pause [name] | /resume [name] - pause or resume a strategy (enforced by the service runner)
/kill [reason] - kill switch: cancel all, block new orders (enforced by the service runner)
Anything else is sent to the strategy compiler."""


class ChatLike(Protocol):
    """What the bot needs from `compiler.chat.ChatSession` (duck-typed so tests can fake it)."""

    pending: Any

    def send(self, text: str) -> Any: ...

    def accept(self) -> Any: ...

    def reject(self) -> None: ...


ContextT = ContextTypes.DEFAULT_TYPE


class RedactToken(logging.Filter):
    """httpx logs request URLs at INFO, and the Bot API puts the bot token in the URL: mask it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.token in text:
            record.msg, record.args = text.replace(self.token, "<bot-token>"), None
        return True


def _install_redaction(token: str) -> None:
    for name in ("httpx", "httpcore", "telegram", "telegram.ext"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactToken) and f.token == token for f in lg.filters):
            lg.addFilter(RedactToken(token))


class Bot:
    def __init__(
        self,
        state: ServiceState,
        *,
        chat: ChatLike | None = None,
        render_chart: Callable[[list[tuple[int, float]], str], bytes] | None = None,
    ) -> None:
        settings = state.settings
        token = settings.telegram_token.get_secret_value()
        if not token:
            raise ServiceError(
                "no Telegram bot token: set telegram_token or STRATAGEM_TELEGRAM_TOKEN"
            )
        if not settings.telegram_chat_ids:
            raise ServiceError(
                "no Telegram chat ids are whitelisted: set telegram_chat_ids (the bot would "
                "otherwise answer nobody)"
            )
        _install_redaction(token)
        self.state = state
        self.chat = chat
        self.allowed = frozenset(settings.telegram_chat_ids)
        self.render_chart = render_chart or equity_png
        self.sent = 0
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            Application.builder()
            .token(token)
            .base_url(settings.telegram_base_url)
            .base_file_url(settings.telegram_base_url.replace("/bot", "/file/bot"))
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self._gate), group=-1)
        commands: dict[str, Callable[[Update, ContextT], Any]] = {
            "start": self.cmd_help,
            "help": self.cmd_help,
            "status": self.cmd_status,
            "positions": self.cmd_positions,
            "strategies": self.cmd_strategies,
            "history": self.cmd_history,
            "approve": self.cmd_approve,
            "reject": self.cmd_reject,
            "pause": self.cmd_pause,
            "resume": self.cmd_resume,
            "kill": self.cmd_kill,
        }
        for name, fn in commands.items():
            self.app.add_handler(CommandHandler(name, fn))
        self.app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.on_text))

    # -- whitelist ---------------------------------------------------------------------------
    async def _gate(self, update: Update, context: ContextT) -> None:
        chat = update.effective_chat
        if chat is None or chat.id not in self.allowed:
            log.warning(
                "ignored update %s from unknown chat id %s",
                update.update_id,
                chat.id if chat else "?",
            )
            raise ApplicationHandlerStop

    async def _reply(self, update: Update, text: str) -> None:
        assert update.effective_chat is not None
        await self.app.bot.send_message(update.effective_chat.id, text[:4000])
        self.sent += 1

    def _who(self, update: Update) -> str:
        return f"telegram:{update.effective_chat.id if update.effective_chat else '?'}"

    async def _q(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.state.query, sql, params)

    # -- commands ----------------------------------------------------------------------------
    async def cmd_help(self, update: Update, context: ContextT) -> None:
        await self._reply(update, HELP)

    async def cmd_status(self, update: Update, context: ContextT) -> None:
        c = (
            await self._q(
                "SELECT (SELECT count(*) FROM runs) AS runs, "
                "(SELECT count(*) FROM runs WHERE status = 'quarantined') AS quarantined, "
                "(SELECT count(*) FROM alerts) AS alerts, "
                "(SELECT count(*) FROM approvals WHERE status = 'pending') AS pending"
            )
        )[0]
        last = await self._q(
            "SELECT kind, message FROM alerts ORDER BY ts_ns DESC, alert_id LIMIT 3"
        )
        lines = [
            f"{c['runs']} runs ({c['quarantined']} quarantined), {c['alerts']} alerts, "
            f"{c['pending']} approvals pending"
        ]
        lines += [f"- {a['kind']}: {a['message']}" for a in last]
        await self._reply(update, "\n".join(lines))

    async def cmd_strategies(self, update: Update, context: ContextT) -> None:
        rows = await self._q(
            "SELECT artifact_name, artifact_version, run_id, status, metrics_json FROM runs "
            "ORDER BY artifact_name, run_id"
        )
        if not rows:
            await self._reply(update, "no runs yet")
            return
        out = []
        for r in rows:
            m = json.loads(r["metrics_json"] or "{}")
            out.append(
                f"{r['artifact_name'] or '?'} v{r['artifact_version'] or '?'} [{r['run_id']}] "
                f"{r['status']}: return {fmt_num(m.get('total_return_pct'))} %, "
                f"trades {m.get('trades', '-')}"
            )
        await self._reply(update, "\n".join(out))

    async def cmd_positions(self, update: Update, context: ContextT) -> None:
        rows = await self._q("SELECT * FROM positions ORDER BY run_id, symbol")
        if not rows:
            await self._reply(update, "no positions")
            return
        await self._reply(
            update,
            "\n".join(
                f"{r['run_id']} {r['symbol']}: qty {fmt_num(r['qty'], 4)} "
                f"avg {fmt_num(r['avg_price'])} realized {fmt_num(r['realized_pnl'])}"
                for r in rows
            ),
        )

    async def cmd_history(self, update: Update, context: ContextT) -> None:
        run_id = context.args[0] if context.args else None
        if run_id is None:
            rows = await self._q(
                "SELECT run_id FROM runs WHERE status='ok' ORDER BY run_id LIMIT 1"
            )
            if not rows:
                await self._reply(update, "no runs yet")
                return
            run_id = rows[0]["run_id"]
        trades = await self._q(
            "SELECT * FROM trades WHERE run_id = ? ORDER BY exit_ts_ns DESC, trade_id LIMIT 10",
            (run_id,),
        )
        if not trades:
            await self._reply(update, f"no trades in run {run_id!r}")
            return
        text = [f"last {len(trades)} trades of {run_id}:"] + [
            f"{fmt_ts(t['exit_ts_ns'])} {t['side']} {t['trade_id']}: pnl {fmt_num(t['pnl'])} "
            f"({t['reason']})"
            for t in trades
        ]
        await self._reply(update, "\n".join(text))
        eq = await self._q(
            "SELECT ts_ns, equity FROM equity WHERE run_id = ? ORDER BY ts_ns", (run_id,)
        )
        if eq:
            png = await asyncio.to_thread(
                self.render_chart, [(r["ts_ns"], r["equity"]) for r in eq], run_id
            )
            assert update.effective_chat is not None
            await self.app.bot.send_photo(update.effective_chat.id, png, caption=f"equity {run_id}")
            self.sent += 1

    async def _decide(
        self, update: Update, context: ContextT, status: Literal["approved", "rejected"]
    ) -> None:
        if not context.args:
            if self.chat is not None and self.chat.pending is not None:
                if status == "approved":
                    v = await asyncio.to_thread(self.chat.accept)
                    await self._reply(update, f"accepted and committed: {v}")
                else:
                    await asyncio.to_thread(self.chat.reject)
                    await self._reply(update, "proposal rejected")
                return
            await self._reply(update, f"usage: /{status[:-1]} <approval id> (see /status)")
            return
        who, note = self._who(update), " ".join(context.args[1:])
        try:
            if status == "approved":  # then promote / hot-swap as [review] on_approve says
                row = await asyncio.to_thread(
                    review_chain.approve, self.state, context.args[0], who, note
                )
            else:
                row = await asyncio.to_thread(self.state.decide, context.args[0], status, who, note)
        except (NotFoundError, ConflictError) as exc:
            await self._reply(update, str(exc))
            return
        await self._reply(update, review_chain.describe(row))

    async def cmd_approve(self, update: Update, context: ContextT) -> None:
        await self._decide(update, context, "approved")

    async def cmd_reject(self, update: Update, context: ContextT) -> None:
        await self._decide(update, context, "rejected")

    async def _control(
        self, update: Update, context: ContextT, action: Literal["pause", "resume"]
    ) -> None:
        scope = context.args[0] if context.args else "all"
        out = await asyncio.to_thread(
            self.state.request_control, action, self._who(update), scope, False, ""
        )
        await self._reply(update, f"{action} {scope}: {out['note']}")

    async def cmd_pause(self, update: Update, context: ContextT) -> None:
        await self._control(update, context, "pause")

    async def cmd_resume(self, update: Update, context: ContextT) -> None:
        await self._control(update, context, "resume")

    async def cmd_kill(self, update: Update, context: ContextT) -> None:
        reason = " ".join(context.args or [])
        out = await asyncio.to_thread(
            self.state.request_kill, self._who(update), "all", False, reason
        )
        await self._reply(update, f"kill switch request #{out['request_id']}: {out['note']}")

    async def on_text(self, update: Update, context: ContextT) -> None:
        if self.chat is None:
            await self._reply(update, "the strategy compiler is not configured for this bot")
            return
        assert update.message is not None and update.message.text is not None
        reply = await asyncio.to_thread(self.chat.send, update.message.text)
        await self._reply(update, str(getattr(reply, "text", reply)))

    # -- pushes ------------------------------------------------------------------------------
    @staticmethod
    def format_push(upd: BusUpdate) -> str | None:
        """The Telegram text for a bus update, or None when it is not pushed."""
        d = upd.data
        if upd.kind == "fill":
            coid = str(d.get("client_order_id", ""))
            stop = coid.endswith(".sl") or d.get("tag") == "stop_loss"
            head = "STOP hit" if stop else "fill"
            return (
                f"{head}: {d.get('side', '')} {fmt_num(d.get('qty'), 4)} {d.get('symbol', '')} @ "
                f"{fmt_num(d.get('price'))} ({coid})"
            )
        if upd.kind == "alert":
            if d.get("kind") == "risk_refusal":
                return f"risk refusal: {d.get('message')}"
            return f"alert {d.get('kind')} [{d.get('severity')}]: {d.get('message')}"
        if upd.kind == "approval" and d.get("status") == "pending":
            return (
                f"awaiting approval: {d.get('name')} v{d.get('version')} - {d.get('summary')}\n"
                f"/approve {d.get('approval_id')} or /reject {d.get('approval_id')}"
            )
        return None

    async def push_loop(self, stop: asyncio.Event) -> None:
        q = self.state.bus.subscribe()
        getter: asyncio.Future[BusUpdate] | None = None  # kept across timeouts: no lost items
        try:
            while not stop.is_set():
                if getter is None:
                    getter = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait({getter}, timeout=0.2)
                if not done:
                    continue
                upd, getter = getter.result(), None
                text = self.format_push(upd)
                if text is None:
                    continue
                for chat_id in sorted(self.allowed):
                    await self.app.bot.send_message(chat_id, text[:4000])
                    self.sent += 1
        finally:
            if getter is not None:
                getter.cancel()
            self.state.bus.unsubscribe(q)

    async def run(self, stop: asyncio.Event, poll_timeout: int = 10) -> None:
        """Poll for updates and push bus events until `stop` is set."""
        async with self.app:
            await self.app.start()
            assert self.app.updater is not None
            await self.app.updater.start_polling(poll_interval=0.0, timeout=poll_timeout)
            pusher = asyncio.create_task(self.push_loop(stop))
            try:
                await stop.wait()
            finally:
                await pusher
                await self.app.updater.stop()
                await self.app.stop()


def equity_png(points: list[tuple[int, float]], title: str) -> bytes:
    """A small equity chart (matplotlib, Agg) for /history."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter, date2num

    xs = [datetime.fromtimestamp(t // 1_000_000_000, tz=UTC) for t, _ in points]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    try:
        ax.plot(date2num(xs), [v for _, v in points], linewidth=1.2)  # type: ignore[no-untyped-call]
        ax.set_title(f"equity {title}")
        ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))  # type: ignore[no-untyped-call]
        fig.autofmt_xdate()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)
