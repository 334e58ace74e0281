"""The control channel between the service (API, bot, CLI) and a running `stratagem service run`.

Protocol: the runner binds a ZeroMQ ROUTER socket (default ``ipc://<state_dir>/control.sock``;
keep it on ipc so file permissions guard it, or on tcp loopback). A client connects a DEALER,
sends ONE frame, a JSON `ControlRequest`, and waits for ONE frame back, a JSON `ControlReply`
with the same `request_id`. The runner answers only after every targeted strategy session
applied the request between two bars (and logged it in its strategy log), so `ok` means
*enforced*. A client that hears nothing within its timeout closes its socket with linger 0: the
request is then dropped, never delivered late, and reported as "recorded, not acknowledged".

Requests the runner cannot decode get ``ok: false`` with the reason and change nothing.
"""

from __future__ import annotations

import time
from typing import Final, Literal

import msgspec
import zmq

from stratagem.service import ServiceError

Action = Literal["kill", "pause", "resume", "swap", "status"]
ACTIONS: Final = ("kill", "pause", "resume", "swap", "status")


class ControlError(ServiceError):
    """A control request that could not be sent or was refused."""


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One request; `scope` is "all" or a strategy name from the runner's config."""

    request_id: int
    action: Action
    scope: str = "all"
    flatten: bool = False  # kill: also close positions at market
    reason: str = ""
    artifact: str = ""  # swap: path of the new artifact version (readable by the runner)
    by: str = ""


class ControlReply(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`applied`: sessions that enforced it; `errors`: session -> why not; `status`: per session."""

    request_id: int
    action: str
    ok: bool
    applied: list[str] = msgspec.field(default_factory=list)
    errors: dict[str, str] = msgspec.field(default_factory=dict)
    detail: str = ""
    status: dict[str, dict[str, object]] = msgspec.field(default_factory=dict)


_enc = msgspec.json.Encoder(order="sorted")
_req_dec = msgspec.json.Decoder(ControlRequest)
_rep_dec = msgspec.json.Decoder(ControlReply)


def encode(msg: ControlRequest | ControlReply) -> bytes:
    return _enc.encode(msg)


def decode_request(data: bytes) -> ControlRequest:
    """Raises msgspec.ValidationError / DecodeError with the offending field's path."""
    return _req_dec.decode(data)


def decode_reply(data: bytes) -> ControlReply:
    return _rep_dec.decode(data)


def send_request(endpoint: str, request: ControlRequest, timeout_s: float) -> ControlReply | None:
    """Send and wait for the reply; None when no runner answered in time (request dropped)."""
    deadline = time.monotonic() + timeout_s
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a runner that is not there
    try:
        sock.connect(endpoint)
        while True:  # with IMMEDIATE, a send before the connection is up would block
            try:
                sock.send(encode(request), zmq.NOBLOCK)
                break
            except zmq.Again:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.005)
        while (left := deadline - time.monotonic()) > 0:
            if sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                reply = decode_reply(sock.recv())
                if reply.request_id == request.request_id:
                    return reply
        return None
    finally:
        sock.close(linger=0)
