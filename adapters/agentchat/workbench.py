"""A ``Workbench`` that runs every tool call of an agent through chatledger's executor.

:class:`ExecutorWorkbench` wraps any AgentChat ``Workbench`` (a ``StaticWorkbench``
of ``FunctionTool``\\ s, an ``McpWorkbench``, your own) and sends each
``call_tool(name, arguments, call_id=...)`` to
``Executor.aexecute_call(conversation_id, call_id, name, arguments)``. The
executor records the call, claims it under a lease, runs the wrapped workbench's
tool once, and returns the recorded outcome on every later call with that id,
in this process or any other: duplicated deliveries, retried requests and
racing workers get the first outcome and the tool does not run again.

It **never raises into AgentChat**: ``AssistantAgent`` runs tool calls inside an
``asyncio.gather`` whose failure (including ``CancelledError``) leaves ``run()``
waiting forever for a sentinel (upstream #5340, #7956). Errors, conflicts,
cancellation and replay divergences come back as ``ToolResult(is_error=True)``;
the ones the caller should know about are also kept in :attr:`problems` (the
replay driver raises the first ``ReplayDivergence`` it finds there).

A call cancelled while this worker runs it (the run's ``CancellationToken``, which
an ``McpWorkbench`` links to its request) may have had its effect, so it is
recorded at once as *outcome unknown*, final: a retried request gets that record
instead of waiting for the lease to expire, and the tool is not run again.

**Every tool form gets its idempotency key.** ``current_idempotency_key()`` is a
context variable; AgentChat runs a plain ``def`` tool in a thread pool without
copying the context, so inside it the key was ``None``. :func:`carry_context` gives
such a ``FunctionTool`` an async twin that runs the function with
``asyncio.to_thread``, which copies the context: the key is there in ``def`` and
``async def`` tools alike.

Tool results are not appended to the conversation by the executor
(``append_result=False``): the adapter stores them with the rest of the agent's
turn, under the same ``tool-result:{call_id}`` ids, in one atomic batch.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, FunctionTool, TextResultContent, ToolResult, ToolSchema, Workbench

from chatledger.store import ChatledgerError, LeaseLost, Store
from chatledger.store.tools.executor import Executor, ToolOutcome, current_idempotency_key
from chatledger.store.tools.ledger import final_draft, load_call, record_outcome
from chatledger.store.tools.registry import ToolRegistry

__all__ = ["ExecutorWorkbench", "WorkbenchToolError", "carry_context"]


def carry_context(tool: BaseTool[Any, Any]) -> BaseTool[Any, Any]:
    """Make a ``FunctionTool`` over a plain ``def`` run in a thread *with* the caller's context.

    ``FunctionTool.run`` hands a sync function to ``run_in_executor``, which drops
    context variables (the idempotency key among them). The function is swapped for
    an async wrapper around ``asyncio.to_thread`` (which copies them); its schema,
    built from the original signature, is unchanged. Other tools are returned as they are.
    """
    func = getattr(tool, "_func", None)
    if not isinstance(tool, FunctionTool) or func is None or inspect.iscoroutinefunction(func):
        return tool

    @functools.wraps(func)
    async def in_thread(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(func, *args, **kwargs)

    tool._func = in_thread
    return tool


class WorkbenchToolError(Exception):
    """Raised inside the executor when the wrapped workbench reports an error result (recorded as failed)."""


class ExecutorWorkbench(Workbench):
    """Route an agent's tool calls through the canonical executor, exactly once per call id.

    Args:
        inner: the workbench whose tools actually run.
        store: the log holding the conversation and the tool-call ledger.
        conversation_id: the conversation the calls belong to.
        idempotent: names of tools that may be re-run after a worker crash (they
            receive a stable idempotency key: ``current_idempotency_key()``).
        replay: never run a tool; recorded outcomes only.
        executor_options: passed to :class:`~chatledger.store.tools.executor.Executor`
            (``worker_id``, ``lease_seconds``, ``max_attempts``, ...).
    """

    def __init__(
        self,
        inner: Workbench,
        store: Store,
        conversation_id: str,
        *,
        idempotent: Collection[str] = (),
        replay: bool = False,
        **executor_options: Any,
    ) -> None:
        self.inner = inner
        self.store = store
        self.conversation_id = conversation_id
        self.idempotent = frozenset(idempotent)
        self.replay = replay
        self.problems: list[BaseException] = []
        self._executor_options = executor_options
        self._executor: Executor | None = None
        self._token: CancellationToken | None = None

    async def _executor_for(self) -> Executor:
        if self._executor is None:
            registry = ToolRegistry()
            for schema in await self.inner.list_tools():
                name = schema["name"]
                registry.register(self._runner(name), name=name, idempotent=name in self.idempotent)
            self._executor = Executor(self.store, registry, replay=self.replay, **self._executor_options)
        return self._executor

    def _runner(self, name: str) -> Callable[..., Any]:
        prefix = f"{self.conversation_id}/"

        async def run(**arguments: Any) -> str:
            key = current_idempotency_key() or ""
            call_id = key[len(prefix) :] if key.startswith(prefix) else key
            result = await self.inner.call_tool(name, arguments, self._token, call_id=call_id or None)
            text = result.to_text()
            if result.is_error:
                raise WorkbenchToolError(text)
            return text

        run.__name__ = name
        return run

    async def list_tools(self) -> list[ToolSchema]:
        """The wrapped workbench's tools."""
        return await self.inner.list_tools()

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Run (or recall) one call through the executor; errors become ``is_error`` results."""
        args = json.dumps(dict(arguments or {}), ensure_ascii=False, sort_keys=True)
        if not call_id:
            # Legacy calls without an id: derive one from the call, stable across retries.
            call_id = "noid-" + hashlib.sha256(f"{name}\x00{args}".encode()).hexdigest()[:24]
        executor: Executor | None = None
        try:
            executor = await self._executor_for()
            self._token = cancellation_token
            outcome = await self._execute(executor, call_id, name, args)
            return ToolResult(name=name, result=[TextResultContent(content=outcome.content)], is_error=outcome.is_error)
        except asyncio.CancelledError:
            # Swallowed on purpose: re-raising here makes AssistantAgent.run() hang (upstream #7956).
            text = "cancelled: the tool call was interrupted; its outcome is in the ledger"
            if executor is not None:
                try:
                    text = self._settle_cancelled(executor, call_id) or text
                except ChatledgerError as exc:
                    self.problems.append(exc)
            return self._error(name, text)
        except ChatledgerError as exc:
            self.problems.append(exc)
            return self._error(name, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            self.problems.append(exc)
            return self._error(name, f"{type(exc).__name__}: {exc}")

    async def _execute(self, executor: Executor, call_id: str, name: str, args: str) -> ToolOutcome:
        # The executor settles two workers racing to request the same new call itself.
        return await executor.aexecute_call(self.conversation_id, call_id, name, args, append_result=False)

    def _settle_cancelled(self, executor: Executor, call_id: str) -> str | None:
        """Record a call this worker was running when it was cancelled as outcome unknown (final).

        Returns the recorded text (what a retried request will get too), or None when
        the call is not this worker's to settle (final already, or someone else's).
        """
        state = load_call(self.store, self.conversation_id, call_id)
        if state is None or state.status != "claimed" or state.worker_id != executor.worker_id:
            return None
        reason = "it was cancelled while it ran"
        content = (
            f"Error: the outcome of tool call {call_id} ({state.name}) is unknown: {reason}. "
            "It was not run again; check its effect before calling it again."
        )
        payload = {"tool_call_id": call_id, "attempt": state.attempt, "reason": reason}
        try:
            with self.store.transaction() as w:
                record_outcome(
                    w,
                    state,
                    final_draft("outcome_unknown", payload),
                    "outcome_unknown",
                    expected_version=state.version,
                    content=content,
                    append_result=False,
                )
        except LeaseLost:
            return None
        return content

    @staticmethod
    def _error(name: str, text: str) -> ToolResult:
        return ToolResult(name=name, result=[TextResultContent(content=text)], is_error=True)

    async def start(self) -> None:
        """Start the wrapped workbench."""
        await self.inner.start()

    async def stop(self) -> None:
        """Stop the wrapped workbench."""
        await self.inner.stop()

    async def reset(self) -> None:
        """Reset the wrapped workbench (the ledger is never reset)."""
        await self.inner.reset()

    async def save_state(self) -> Mapping[str, Any]:
        """The wrapped workbench's state."""
        return await self.inner.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Load the wrapped workbench's state."""
        await self.inner.load_state(state)
