"""Classic AutoGen tool execution through the chatledger executor.

``ConversableAgent.execute_function`` and ``a_execute_function`` are the
documented override points for how an agent runs function and tool calls; both
receive the call's name, its JSON arguments and the model's ``call_id``.
:class:`ExecutorMixin` overrides them to hand every call to
:class:`chatledger.store.Executor`, which runs it at most once per
``(conversation, call id)`` and returns the recorded outcome to any later ask:
a retry, a duplicate delivery, the same assistant message processed twice, a
replay. Everything else of classic AutoGen keeps working: the safeguard hooks,
``tool_responses`` formatting and async dispatch in sync chats.

The tool-result messages are not appended by the executor
(``append_result=False``): the executing agent sends them, and the send hook
records them with the rest of the conversation.

Legacy ``function_call`` messages carry no id; their calls are keyed
``noid:<hash of name and arguments>``, so two legitimately identical legacy
calls in one conversation share one outcome (a documented limitation).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, cast

from chatledger.store import Executor, Store, ToolOutcome

__all__ = ["ExecutorMixin", "ToolBinding", "aexecute_through", "call_id_for", "execute_through"]


def call_id_for(name: str, arguments: str, call_id: str | None) -> str:
    """The ledger id of a call: the model's id, or a stable one derived for id-less legacy calls."""
    if call_id:
        return call_id
    digest = hashlib.sha256(f"{name}\x1f{arguments}".encode()).hexdigest()[:24]
    return f"noid:{digest}"


@dataclass
class ToolBinding:
    """Where an agent's tool calls go: one store, one conversation, one executor per agent.

    Args:
        store: the store holding the conversation and its tool ledger.
        conversation_id: the conversation the calls belong to.
        replay: never run a tool; answer from the record (ReplayDivergence otherwise).
        executor_options: passed to :class:`Executor` (``lease_seconds``, ``max_attempts``...).
    """

    store: Store
    conversation_id: str
    replay: bool = False
    executor_options: dict[str, Any] = field(default_factory=dict)
    _executors: dict[int, tuple[frozenset[str], Executor]] = field(default_factory=dict, repr=False)

    def executor_for(self, agent: Any) -> Executor:
        """The executor over the agent's current ``function_map`` (rebuilt when tools change)."""
        tools = dict(agent.function_map)
        names = frozenset(tools)
        cached = self._executors.get(id(agent))
        if cached is None or cached[0] != names:
            executor = Executor(self.store, tools, replay=self.replay, **self.executor_options)
            cached = (names, executor)
            self._executors[id(agent)] = cached
        return cached[1]


def _parts(func_call: dict[str, Any], call_id: str | None) -> tuple[str, str, str]:
    name = str(func_call.get("name", ""))
    arguments = func_call.get("arguments", "{}")
    if not isinstance(arguments, str):
        import json

        arguments = json.dumps(arguments)
    return name, arguments, call_id_for(name, arguments, call_id)


def _result(outcome: ToolOutcome) -> tuple[bool, dict[str, Any]]:
    return not outcome.is_error, {"name": outcome.name, "role": "function", "content": outcome.content}


def execute_through(
    agent: Any, binding: ToolBinding, func_call: dict[str, Any], call_id: str | None
) -> tuple[bool, dict[str, Any]]:
    """Run one call of ``agent`` through the executor; return AutoGen's ``(success, result)`` pair."""
    name, arguments, cid = _parts(func_call, call_id)
    executor = binding.executor_for(agent)
    return _result(executor.execute_call(binding.conversation_id, cid, name, arguments, append_result=False))


async def aexecute_through(
    agent: Any, binding: ToolBinding, func_call: dict[str, Any], call_id: str | None
) -> tuple[bool, dict[str, Any]]:
    """The async form of :func:`execute_through` (async tools are awaited, sync ones run in a thread)."""
    name, arguments, cid = _parts(func_call, call_id)
    executor = binding.executor_for(agent)
    outcome = await executor.aexecute_call(binding.conversation_id, cid, name, arguments, append_result=False)
    return _result(outcome)


class ExecutorMixin:
    """Overrides ``execute_function`` / ``a_execute_function`` of a ``ConversableAgent`` subclass.

    Put it before the agent class (``class MyAgent(ExecutorMixin, UserProxyAgent)``)
    and set ``agent.chatledger_tools = ToolBinding(...)``. Without a binding the
    agent executes tools as stock AutoGen does.
    """

    chatledger_tools: ToolBinding | None = None

    def execute_function(
        self, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """Run one call through the executor (once per call id) and return AutoGen's result pair."""
        binding = self.chatledger_tools
        if binding is None:
            result: tuple[bool, dict[str, Any]] = cast(Any, super()).execute_function(
                func_call, call_id=call_id, verbose=verbose
            )
            return result
        return execute_through(self, binding, func_call, call_id)

    async def a_execute_function(
        self, func_call: dict[str, Any], call_id: str | None = None, verbose: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """The async form of :meth:`execute_function`."""
        binding = self.chatledger_tools
        if binding is None:
            result: tuple[bool, dict[str, Any]] = await cast(Any, super()).a_execute_function(
                func_call, call_id=call_id, verbose=verbose
            )
            return result
        return await aexecute_through(self, binding, func_call, call_id)
