"""A non-static, MCP-style ``Workbench`` wrapped by chatledger: once per call, errors and cancellation as results.

:class:`InProcessMcpWorkbench` stands in for ``autogen_ext.tools.mcp.McpWorkbench``
without a network: it lists its tools as schemas (no ``BaseTool`` objects), runs
each call as a future on a "server" coroutine linked to the cancellation token,
turns a failing tool into ``ToolResult(is_error=True)`` and lets ``CancelledError``
out, exactly as ``McpWorkbench.call_tool`` does (autogen-ext 0.7.5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import CancellationToken
from autogen_core.tools import TextResultContent, ToolResult, ToolSchema, Workbench

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import Store
from chatledger.store.messages import pending_tool_calls
from chatledger.store.tools.ledger import load_call

from .helpers import effects, record_effect

pytestmark = pytest.mark.anyio

DEADLINE = 10.0  # a hang fails the test instead of blocking the suite

TOOLS: list[ToolSchema] = [
    {
        "name": "lookup_order",
        "description": "Where an order is.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
    {"name": "broken", "description": "A tool whose server fails.", "parameters": {"type": "object", "properties": {}}},
    {
        "name": "unreachable",
        "description": "A tool on a dead link.",
        "parameters": {"type": "object", "properties": {}},
    },
    {"name": "slow", "description": "A long export.", "parameters": {"type": "object", "properties": {}}},
]


class InProcessMcpWorkbench(Workbench):
    """An MCP-server-like workbench in this process: no ``BaseTool``\\ s, started lazily, errors as results."""

    def __init__(self) -> None:
        self.started = False
        self.slow_started = asyncio.Event()

    async def list_tools(self) -> list[ToolSchema]:
        """The server's tools, as schemas only."""
        return list(TOOLS)

    async def _serve(self, name: str, arguments: Mapping[str, Any]) -> str:
        record_effect(name)
        if name == "lookup_order":
            return f"order {arguments['order_id']} ships tomorrow"
        if name == "broken":
            raise ValueError("the export server returned 500")
        self.slow_started.set()
        await asyncio.sleep(30)
        return "exported"

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Run one call on the "server"; a failing tool is an error result, a cancellation propagates."""
        if not self.started:
            await self.start()
        if name == "unreachable":
            record_effect(name)
            raise ConnectionError("the MCP session is gone")
        token = cancellation_token or CancellationToken()
        future = asyncio.ensure_future(self._serve(name, dict(arguments or {})))
        token.link_future(future)
        try:
            text, is_error = await future, False
        except Exception as exc:
            text, is_error = f"{type(exc).__name__}: {exc}", True
        return ToolResult(name=name, result=[TextResultContent(content=text)], is_error=is_error)

    async def start(self) -> None:
        """Open the (imaginary) session."""
        self.started = True

    async def stop(self) -> None:
        """Close the session."""
        self.started = False

    async def reset(self) -> None:
        """Nothing to reset."""

    async def save_state(self) -> Mapping[str, Any]:
        """No state."""
        return {}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """No state."""


SCRIPT: dict[str, list[Any]] = {
    "Where is order 42?": [call("lookup_order", order_id="42"), "Order 42 ships tomorrow."],
    "Export and check the link": [[call("broken"), call("unreachable")], "Both failed."],
    "Export everything": [call("slow"), "Export cancelled."],
}


def agent(store: Store, request_id: str, workbench: Workbench, client: ScriptedChatCompletionClient) -> Any:
    """A fresh agent for one request, its tools served by the MCP-style workbench."""
    return chatledger_agent(
        store,
        "mcp",
        name="assistant",
        request_id=request_id,
        model_client=client,
        workbench=workbench,
        reflect_on_tool_use=True,
    )


def results(messages: Any) -> list[tuple[str, str, bool]]:
    """The tool results a run produced: (name, content, is_error)."""
    return [
        (r.name, r.content, bool(r.is_error))
        for m in messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
    ]


async def test_an_mcp_style_tool_runs_once_across_a_duplicate_delivery(sqlite_store: Store) -> None:
    """The same request delivered twice (fresh agent, fresh workbench) runs the tool once and calls no model again."""
    first = await asyncio.wait_for(
        agent(sqlite_store, "m1", InProcessMcpWorkbench(), ScriptedChatCompletionClient(SCRIPT)).run(
            task="Where is order 42?"
        ),
        DEADLINE,
    )
    assert results(first.messages) == [("lookup_order", "order 42 ships tomorrow", False)]
    client = ScriptedChatCompletionClient(SCRIPT)
    again = await asyncio.wait_for(
        agent(sqlite_store, "m1", InProcessMcpWorkbench(), client).run(task="Where is order 42?"), DEADLINE
    )
    assert again.messages[-1].to_text() == "Order 42 ships tomorrow."
    assert effects("lookup_order") == 1
    assert client.create_calls == []
    assert [m["role"] for m in sqlite_store.history("mcp")] == ["user", "assistant", "tool", "assistant"]


async def test_a_failing_mcp_tool_comes_back_as_an_error_result_and_is_not_rerun(sqlite_store: Store) -> None:
    """An error result from the server and an exception from the workbench both reach the model as errors."""
    first = await asyncio.wait_for(
        agent(sqlite_store, "m1", InProcessMcpWorkbench(), ScriptedChatCompletionClient(SCRIPT)).run(
            task="Export and check the link"
        ),
        DEADLINE,
    )
    got = results(first.messages)
    assert [(name, is_error) for name, _, is_error in got] == [("broken", True), ("unreachable", True)]
    assert "the export server returned 500" in got[0][1] and "the MCP session is gone" in got[1][1]
    assert first.messages[-1].to_text() == "Both failed."
    await asyncio.wait_for(
        agent(sqlite_store, "m1", InProcessMcpWorkbench(), ScriptedChatCompletionClient(SCRIPT)).run(
            task="Export and check the link"
        ),
        DEADLINE,
    )
    assert (effects("broken"), effects("unreachable")) == (1, 1)  # the recorded failures are final
    history = sqlite_store.history("mcp")
    assert pending_tool_calls(history) == []
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_a_cancelled_mcp_tool_call_comes_back_as_an_error_result_without_a_hang(sqlite_store: Store) -> None:
    """Cancelling mid-call ends the run with an error result; the call is settled as outcome unknown, never re-run."""
    workbench, token = InProcessMcpWorkbench(), CancellationToken()
    run = asyncio.ensure_future(
        agent(sqlite_store, "m1", workbench, ScriptedChatCompletionClient(SCRIPT)).run(
            task="Export everything", cancellation_token=token
        )
    )
    await asyncio.wait_for(workbench.slow_started.wait(), DEADLINE)
    token.cancel()
    result = await asyncio.wait_for(run, DEADLINE)
    got = results(result.messages)
    assert [(name, is_error) for name, _, is_error in got] == [("slow", True)]
    assert "unknown" in got[0][1] and "cancelled" in got[0][1]
    history = sqlite_store.history("mcp")
    assert pending_tool_calls(history) == []
    state = load_call(sqlite_store, "mcp", history[1]["tool_calls"][0]["id"])
    assert state is not None and state.status == "outcome_unknown" and state.content == got[0][1]

    # A retry of the cancelled request gets the record at once (no wait for the 30 s lease).
    client = ScriptedChatCompletionClient(SCRIPT)
    again = await asyncio.wait_for(
        agent(sqlite_store, "m1", InProcessMcpWorkbench(), client).run(task="Export everything"), DEADLINE
    )
    assert results(again.messages) == got
    assert effects("slow") == 1 and client.create_calls == []
