"""Helpers shared by the executor tests: building assistant messages and checking histories."""

from __future__ import annotations

import json
from typing import Any

from chatledger.store import Store, ToolCallSucceeded


def call(call_id: str, name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    """One OpenAI tool call."""
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant(*calls: dict[str, Any]) -> dict[str, Any]:
    """A final assistant message carrying tool calls."""
    return {"role": "assistant", "content": None, "tool_calls": list(calls)}


def assert_model_ready(messages: list[dict[str, Any]]) -> None:
    """Every assistant tool call is followed by exactly one result, before the next non-tool message."""
    open_ids: list[str] | None = None
    answered: list[str] = []
    for msg in messages:
        if msg["role"] == "tool":
            assert open_ids is not None, f"tool result {msg['tool_call_id']} has no assistant call before it"
            assert msg["tool_call_id"] in open_ids, f"tool result {msg['tool_call_id']} answers no open call"
            answered.append(msg["tool_call_id"])
            continue
        if open_ids is not None:
            assert sorted(answered) == sorted(open_ids), f"calls {open_ids} answered by {answered}"
        open_ids, answered = None, []
        if msg["role"] == "assistant" and msg.get("tool_calls"):
            open_ids = [c["id"] for c in msg["tool_calls"]]
    if open_ids is not None:
        assert sorted(answered) == sorted(open_ids), f"calls {open_ids} answered by {answered}"


def successes(store: Store) -> dict[str, int]:
    """How many succeeded events each tool-call stream holds."""
    out: dict[str, int] = {}
    for event in store.read_all():
        if isinstance(event, ToolCallSucceeded):
            out[event.stream_id] = out.get(event.stream_id, 0) + 1
    return out
