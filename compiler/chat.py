"""The conversation API behind `stratagem chat` (and, later, the chat bots).

A `ChatSession` keeps the conversation, the current artifact and its last backtest. `send(text)`
compiles a revision and returns it as a pending proposal (artifact, YAML diff, held-out backtest);
`accept()` commits it to the artifact repository, `reject()` drops it. Terminal I/O lives in
`run_terminal`, which takes plain streams, so it is testable without a TTY.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import TextIO

import polars as pl

from artifacts.io import dumps
from artifacts.schema import Artifact
from compiler.context import Turn
from compiler.errors import CompileFailedError, CompilerError
from compiler.loop import CompileLoop, CompileRequest, CompileResult
from compiler.tradingview import ParsedLayout
from compiler.versioning import ArtifactRepo, Version


@dataclass
class ChatReply:
    text: str
    result: CompileResult | None = None
    diff: str = ""


@dataclass
class ChatSession:
    loop: CompileLoop
    repo: ArtifactRepo
    symbol: str
    timeframe: str
    bars: pl.DataFrame
    drawings: ParsedLayout | None = None
    current: Artifact | None = None
    last_backtest: dict[str, object] | None = None
    conversation: list[Turn] = field(default_factory=list)
    pending: CompileResult | None = None
    pending_request: str = ""
    conversation_id: str | None = None  # tags this conversation's model calls in the call log

    def send(self, text: str) -> ChatReply:
        """Compile the message into a pending revision; a failed compile is reported, not hidden."""
        turn = len(self.conversation)
        self.conversation.append(Turn("user", text))
        if self.conversation_id is not None:
            self.loop.client.conversation_id = self.conversation_id
        req = CompileRequest(
            text=text,
            symbol=self.symbol,
            timeframe=self.timeframe,
            bars=self.bars,
            turn=turn,
            conversation=self.conversation[:-1],
            drawings=self.drawings,
            current=self.current,
            last_backtest=dict(self.last_backtest) if self.last_backtest else None,
        )
        try:
            result = self.loop.run(req)
        except CompileFailedError as exc:
            self.conversation.append(Turn("assistant", f"compile failed: {exc}"))
            return ChatReply(f"compile failed:\n{exc}")
        before = dumps(self.current) if self.current is not None else ""
        diff = "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                dumps(result.artifact).splitlines(keepends=True),
                "current",
                "proposed",
            )
        )
        self.pending, self.pending_request = result, text
        summary = json.dumps(result.backtest, sort_keys=True)
        verdict = "; ".join(result.verdict.reasons) if result.verdict else "no judge"
        msg = (
            f"proposed {result.artifact.name} v{result.artifact.version}\n"
            f"held-out backtest: {summary}\njudge: {verdict}\n"
            "accept with /accept, reject with /reject"
        )
        self.conversation.append(
            Turn("assistant", f"proposed {result.artifact.name} v{result.artifact.version}")
        )
        return ChatReply(msg, result, diff)

    def accept(self) -> Version:
        if self.pending is None:
            raise CompilerError("nothing to accept: send a request first")
        r = self.pending
        v = self.repo.commit(
            r.artifact,
            trace=r.trace,
            provenance=r.provenance(),
            node_turns=r.node_turns,
            request=self.pending_request,
        )
        self.current = self.repo.head_artifact(r.artifact.name)
        self.last_backtest = dict(r.backtest)
        self.pending = None
        return v

    def reject(self) -> None:
        if self.pending is None:
            raise CompilerError("nothing to reject")
        self.pending = None
        self.conversation.append(Turn("user", "(rejected the proposal)"))


def run_terminal(session: ChatSession, stdin: TextIO, stdout: TextIO) -> int:
    """A line-based chat: text compiles, /accept, /reject, /show, /quit. Returns an exit code."""
    stdout.write("stratagem chat: describe a strategy; /accept /reject /show /quit\n")
    for line in stdin:
        text = line.strip()
        if not text:
            continue
        try:
            if text == "/quit":
                break
            if text == "/accept":
                v = session.accept()
                stdout.write(f"committed v{v.version} {v.commit[:10]}\n")
            elif text == "/reject":
                session.reject()
                stdout.write("rejected\n")
            elif text == "/show":
                stdout.write(dumps(session.current) if session.current else "(no artifact yet)\n")
            else:
                reply = session.send(text)
                if reply.diff:
                    stdout.write(reply.diff)
                stdout.write(reply.text + "\n")
        except CompilerError as exc:
            stdout.write(f"error: {exc}\n")
        stdout.flush()
    return 0
