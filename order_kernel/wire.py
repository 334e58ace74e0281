"""The order kernel's ZeroMQ wire format (transport framing around `messages`).

Commands: a DEALER sends the multipart message ``[session_id, command]`` to the server's
ROUTER, where ``command`` is `messages.encode(cmd)` (msgpack). Replies: the ROUTER answers
every command, also duplicates and refusals, with ``[REPLY, Reply]``; a Reply names the
command it answers by ``(session_id, ref_kind, ref_seq)`` (request/ack correlation by seq)
and carries the events it caused, already msgpack-encoded. Events are also published on the
PUB socket as ``[session_id, event]`` (topic = session id); server liveness beats go out as
``[HEARTBEAT_TOPIC, ServerBeat]``. The server acknowledges a command only after its log
records were written (and fsynced, per the fsync policy).
"""

from __future__ import annotations

from typing import Final

import msgspec

from order_kernel import messages as m

REPLY: Final = b"R"
#: A one-frame `[PING]` from a DEALER is answered `[PONG]`: liveness, no session touched.
PING: Final = b"\x00ping"
PONG: Final = b"\x00pong"
HEARTBEAT_TOPIC: Final = b"\x00hb"
#: `ref_kind` of a Reply: a session command (sequenced) or market data (a MarketBar).
KIND_COMMAND: Final = 0
KIND_MARKET: Final = 1


class Reply(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The server's answer to one command (the encoder side: events stay raw bytes)."""

    session_id: str
    ref_kind: int
    ref_seq: int
    events: list[msgspec.Raw]


class DecodedReply(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The same frame decoded on the client, events typed."""

    session_id: str
    ref_kind: int
    ref_seq: int
    events: list[m.Event]


class ServerBeat(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Published every heartbeat interval: the server is alive (transport level, never logged)."""

    beat: int
    sessions: int


_enc: Final = msgspec.msgpack.Encoder()
_reply_dec: Final = msgspec.msgpack.Decoder(DecodedReply)
_beat_dec: Final = msgspec.msgpack.Decoder(ServerBeat)


def encode(obj: Reply | ServerBeat) -> bytes:
    return _enc.encode(obj)


def decode_reply(data: bytes) -> DecodedReply:
    out: DecodedReply = _reply_dec.decode(data)
    return out


def decode_beat(data: bytes) -> ServerBeat:
    out: ServerBeat = _beat_dec.decode(data)
    return out


def ref_kind(cmd: m.Command) -> int:
    return KIND_MARKET if isinstance(cmd, m.MarketBar) else KIND_COMMAND


def pub_endpoint(endpoint: str) -> str:
    """The PUB endpoint paired with a ROUTER endpoint: ``ipc://p`` -> ``ipc://p.events``,
    ``tcp://host:port`` -> ``tcp://host:port+1``, ``inproc://n`` -> ``inproc://n.events``."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if not port.isdigit():
            from order_kernel.errors import ConfigError

            raise ConfigError(
                f"endpoint {endpoint!r}: give an explicit port (tcp://host:port) or --pub-bind"
            )
        return f"tcp://{host}:{int(port) + 1}"
    return endpoint + ".events"
