"""Log-level replay: re-drive a conversation's tool calls against the ledger, running nothing.

Agent-level replay (new AutoGen agents, recorded model answers) lives in the
adapters. This one needs no framework and no tool functions: it walks the
recorded messages in order and, for every tool call an assistant made, asks an
executor in replay mode for the recorded outcome and checks that it is the
result the conversation holds. It answers the auditor's question "would the
record reproduce itself?" without a single tool run, and names the first
position where it would not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatledger.store.errors import ReplayDivergence
from chatledger.store.handle import Store
from chatledger.store.messages import tool_calls_of
from chatledger.store.tools.executor import Executor

__all__ = ["LogReplayReport", "replay_log"]


@dataclass
class LogReplayReport:
    """What a log-level replay checked: messages walked and tool outcomes served from the record."""

    conversation_id: str
    messages: int = 0
    tool_calls: int = 0
    tools_run: int = 0
    transcript: list[dict[str, Any]] = field(default_factory=list)


def replay_log(store: Store, conversation_id: str) -> LogReplayReport:
    """Replay a conversation's tool calls from the ledger; no tool function is called.

    Raises:
        ReplayDivergence: a tool call has no recorded outcome, or its recorded outcome is not
            the tool result the conversation holds; ``position`` is the message's index.
        NotFoundError: no such conversation for this tenant.
    """
    messages = store.messages(conversation_id)
    executor = Executor(store, {}, replay=True)
    report = LogReplayReport(conversation_id)
    results: dict[str, list[tuple[int, Any]]] = {}
    for index, msg in enumerate(messages):
        if msg.get("role") == "tool":
            results.setdefault(str(msg.get("tool_call_id")), []).append((index, msg.get("content")))
    for index, msg in enumerate(messages):
        report.messages += 1
        report.transcript.append(msg)
        for call in tool_calls_of(msg):
            fn = call.get("function") or {}
            call_id, name = str(call.get("id")), str(fn.get("name"))
            arguments = str(fn.get("arguments", "{}"))
            try:
                outcome = executor.execute_call(conversation_id, call_id, name, arguments, append_result=False)
            except ReplayDivergence as exc:
                raise ReplayDivergence(conversation_id, index, exc.expected, exc.actual) from None
            recorded = results.get(call_id) or []
            later = [content for at, content in recorded if at > index]
            if not later or later[0] != outcome.content:
                raise ReplayDivergence(
                    conversation_id,
                    index,
                    {"tool_call_id": call_id, "result": later[0] if later else None},
                    {"tool_call_id": call_id, "result": outcome.content},
                )
            report.tool_calls += 1
    return report
