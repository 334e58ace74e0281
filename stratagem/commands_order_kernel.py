"""`stratagem order-kernel`: run the order kernel as its own process (ZeroMQ server).

This module is the composition root of the server: it reads `kernel.toml`, injects the
monotonic clock (liveness beats only; nothing time-based reaches a log) and installs the
SIGTERM/SIGINT handlers that stop the loop cleanly (logs flushed and fsynced, sockets closed,
exit code 0). With `[venue] kind = "ccxt"` it also builds the live exchange route (credentials
from the environment or the encrypted file kernel.toml names; see docs/order-kernel.md "Live
venue"). Also runnable as ``python -m stratagem.commands_order_kernel --bind ... --config ...``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["cmd_order_kernel", "main", "register"]


def cmd_order_kernel(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; exit 0 after a clean shutdown."""
    from order_kernel.config import load_config
    from order_kernel.live import route_from_config
    from order_kernel.server import Server

    config = load_config(args.config)
    route = route_from_config(
        config, clock_ns=time.monotonic_ns, sleep=time.sleep, environ=os.environ
    )
    server = Server(
        config,
        args.bind,
        pub_bind=args.pub_bind,
        clock_ns=time.monotonic_ns,
        live_route=route,
    )
    venue = "simulated venue" if route is None else f"live venue {config.venue_name}"

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve(
            ready=lambda: print(
                f"order-kernel: serving {len(server.sessions)} recovered session(s) on the "
                f"{venue}; commands on {server.bind}, events on {server.pub_bind}",
                file=sys.stderr,
                flush=True,
            )
        )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print("order-kernel: stopped cleanly (logs flushed and fsynced)", file=sys.stderr, flush=True)
    return 0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bind",
        required=True,
        help="command endpoint (ROUTER), e.g. ipc:///tmp/ok.sock or tcp://127.0.0.1:5555",
    )
    p.add_argument(
        "--pub-bind",
        help="event endpoint (PUB); default: <bind>.events for ipc/inproc, port+1 for tcp",
    )
    p.add_argument("--config", required=True, help="kernel.toml (instruments, venue, risk, logs)")
    p.set_defaults(func=cmd_order_kernel)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `order-kernel` command to the `stratagem` parser."""
    p = sub.add_parser(
        "order-kernel",
        help="run the order kernel as a ZeroMQ server (several strategy sessions)",
        description="Serve the order kernel over ZeroMQ: commands on a ROUTER socket, events on "
        "a PUB socket (topic = session id), one hash-chained log per session, recovered at "
        "start-up. SIGTERM/SIGINT stop it cleanly. See docs/order-kernel.md.",
    )
    _add_arguments(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (tests start the server this way before the CLI wires it in)."""
    from order_kernel.errors import OrderKernelError

    p = argparse.ArgumentParser(prog="order-kernel")
    _add_arguments(p)
    args = p.parse_args(argv)
    try:
        code: int = args.func(args)
    except OrderKernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
