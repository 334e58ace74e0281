"""A local fake of the Telegram Bot API: enough of getMe/getUpdates/sendMessage/sendPhoto for PTB.

Tests queue incoming messages with `say(chat_id, text)` and read what the bot sent from `sent`.
Serves on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class FakeTelegram:
    def __init__(self, token: str) -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self._next_update = 1
        self._next_message = 1
        self._cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                fake._handle(self)

            do_GET = do_POST  # noqa: N815 - http.server's naming

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- test side ---------------------------------------------------------------------------
    def say(self, chat_id: int, text: str) -> None:
        msg: dict[str, Any] = {
            "message_id": self._next_message,
            "date": 1_735_689_600,
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Trader"},
            "text": text,
        }
        self._next_message += 1
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        with self._cond:
            self.updates.append({"update_id": self._next_update, "message": msg})
            self._next_update += 1
            self._cond.notify_all()

    def wait_sent(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for s in self.sent:
                    if pred(s):
                        return s
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"bot never sent a matching message; sent: {self.sent}")
                self._cond.wait(left)

    # -- server side -------------------------------------------------------------------------
    def _params(self, h: BaseHTTPRequestHandler) -> dict[str, Any]:
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        ctype = h.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            out: dict[str, Any] = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                raw = payload if isinstance(payload, bytes) else b""
                out[str(name)] = raw if part.get_filename() else raw.decode()
            return out
        if ctype.startswith("application/json"):
            return dict(json.loads(body or b"{}"))
        return {k: v[0] for k, v in parse_qs(body.decode()).items()}

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        prefix = f"/bot{self.token}/"
        if not h.path.startswith(prefix):
            self._reply(h, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        method = h.path[len(prefix) :].split("?")[0]
        params = self._params(h)
        self.calls.append(method)
        if method == "getMe":
            result: Any = {"id": 42, "is_bot": True, "first_name": "stratagem",
                           "username": "stratagem_test_bot", "can_join_groups": False,
                           "can_read_all_group_messages": False, "supports_inline_queries": False}  # fmt: skip
        elif method in ("deleteWebhook", "setMyCommands", "close", "logOut"):
            result = True
        elif method == "getUpdates":
            offset = int(params.get("offset") or 0)
            timeout = min(float(params.get("timeout") or 0), 1.0)
            with self._cond:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                if not self.updates and timeout:
                    self._cond.wait(timeout)
                result = list(self.updates)
        elif method in ("sendMessage", "sendPhoto"):
            chat_id = int(str(params["chat_id"]).strip('"'))
            record = {"method": method, "chat_id": chat_id, "text": params.get("text", ""),
                      "caption": params.get("caption", ""),
                      "photo_bytes": len(params["photo"]) if isinstance(params.get("photo"), bytes) else 0}  # fmt: skip
            result = {"message_id": 10_000 + len(self.sent), "date": 1_735_689_600,
                      "chat": {"id": chat_id, "type": "private"}}  # fmt: skip
            if method == "sendMessage":
                result["text"] = record["text"]
            else:
                result["photo"] = [
                    {"file_id": "p1", "file_unique_id": "u1", "width": 600, "height": 300}
                ]
                result["caption"] = record["caption"]
            with self._cond:
                self.sent.append(record)
                self._cond.notify_all()
        else:
            self._reply(
                h, 400, {"ok": False, "error_code": 400, "description": f"unsupported {method}"}
            )
            return
        self._reply(h, 200, {"ok": True, "result": result})

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the bot hung up a long poll while shutting down

    def __enter__(self) -> FakeTelegram:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
