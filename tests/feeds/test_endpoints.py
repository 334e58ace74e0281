"""ipc endpoints stay under the socket-path limit and are stable per directory."""

from __future__ import annotations

from pathlib import Path

import zmq

from feeds.endpoints import MAX_IPC_PATH, ipc_endpoint


def test_short_paths_are_kept_and_long_ones_shortened_stably(tmp_path: Path) -> None:
    short = tmp_path / "k.sock"
    if len(str(short.resolve())) <= MAX_IPC_PATH:
        assert ipc_endpoint(short) == f"ipc://{short.resolve()}"
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "ok.sock"
    ep = ipc_endpoint(deep)
    assert len(ep) - len("ipc://") <= MAX_IPC_PATH
    assert ep == ipc_endpoint(deep)  # same directory, same endpoint
    assert ep != ipc_endpoint(deep.with_name("other.sock"))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    events = ctx.socket(zmq.PUB)
    try:
        sock.bind(ep)  # the kernel binds the endpoint and `<endpoint>.events`
        events.bind(ep + ".events")
    finally:
        sock.close(linger=0)
        events.close(linger=0)
