"""`stratagem order-kernel`: the parser wiring (the server itself is tested in tests/order_kernel)."""

from __future__ import annotations

import argparse

import pytest

from stratagem.commands_order_kernel import cmd_order_kernel, main, register


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stratagem")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_register_adds_order_kernel_with_its_options() -> None:
    args = parser().parse_args(
        ["order-kernel", "--bind", "ipc:///tmp/x", "--config", "kernel.toml"]
    )
    assert args.func is cmd_order_kernel
    assert (args.bind, args.config, args.pub_bind) == ("ipc:///tmp/x", "kernel.toml", None)


def test_bind_and_config_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["order-kernel", "--bind", "ipc:///tmp/x"])
    assert "--config" in capsys.readouterr().err


def test_missing_config_is_a_user_error(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--bind", "inproc://x", "--config", "/nonexistent/kernel.toml"]) == 2
    assert "config file not found" in capsys.readouterr().err
