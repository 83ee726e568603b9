"""What an AgentChat agent's model sees, read from the log; and how AgentChat messages are stored.

**Store-backed context, not ``load_state`` hydration.** :class:`LedgerModelContext`
is a ``ChatCompletionContext`` whose ``get_messages()`` is the conversation as
stored *before the current request* (projected into the agent's point of view),
followed by the messages AgentChat adds during this request. We chose it over
building an ``AssistantAgentState`` and calling ``agent.load_state`` because:

* the cut is exact and stable: it is the position of the request's first stored
  message, so a retried or duplicated request (even in another process, even
  after other requests appended) sends the model the very same messages, which
  is what makes recorded model responses hit;
* it reads lazily, after the request's task message is stored, and once per
  request, so every agent of a team sees the same prefix;
* ``load_state`` snapshots carry no ids and no request boundaries, and the
  state of an agent loaded that way drifts from the log as soon as anything is
  appended; here the log stays the only truth (``save_state`` holds only this
  request's messages).

**Stored form.** Each AgentChat message or event becomes one or more OpenAI chat
messages (:func:`to_records`), stored with the AutoGen id and
``meta={"autogen_type", "source", ...}``; a ``ToolCallExecutionEvent`` becomes one
``role="tool"`` message per call with id ``tool-result:{call_id}`` (the id the
executor uses). Transcript-only items (``StopMessage``, selector events, ...) are
stored with ``meta["llm"] = False`` and never reach a model; a ``ThoughtEvent``
(``meta["llm"] = "thought"``) becomes the ``thought`` of the agent's next turn.

**Only provider-valid histories reach a model.** :func:`model_view` is the one place
the model's view is built, and it first checks the stored messages against the
provider rule (:func:`chatledger.store.validity.check_provider_valid`, the rule
``Store.history()`` applies): a stored history that breaks it (written by an older
adapter, imported, or cut by an old fork between a tool call and its results) raises
``InvalidHistoryError`` naming the position, before any model call, instead of the
provider's HTTP 400.

**Point of view** (:func:`model_view`): an agent sees its own turns as assistant
messages (with their tool calls and results), and other participants' chat
messages as ``UserMessage(source=name)``, never their tool calls: the same view
a long-lived AgentChat agent builds in a team. Its own ``ToolCallSummaryMessage`` and
``HandoffMessage`` are left out (they restate the tool results and the handoff call
it already sees), as AgentChat leaves them out of a long-lived agent's context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    HandoffMessage,
    StopMessage,
    ThoughtEvent,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import FunctionCall
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from chatledger.adapters.agentchat.window import WindowOptions, window_view
from chatledger.store.tools.ledger import tool_result_message_id
from chatledger.store.validity import check_provider_valid

__all__ = ["LedgerModelContext", "PrefixSource", "Record", "ViewFold", "model_fold", "model_view", "to_records"]

Record = tuple[str, dict[str, Any], dict[str, Any]]
"""One stored message: ``(message_id, OpenAI message, meta)``."""

_OWN_ECHOES = frozenset({"ToolCallSummaryMessage", "HandoffMessage"})
"""An agent's own chat messages that only restate its tool results or handoff call: a
long-lived ``AssistantAgent`` never adds them to its model context, so neither do we."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
    return "" if content is None else str(content)


def to_records(item: BaseAgentEvent | BaseChatMessage, message_id: str, *, agents: frozenset[str]) -> list[Record]:
    """The stored form of one AgentChat message or event (streaming chunks are never stored).

    Args:
        item: the message or event.
        message_id: the id to store it under (the AutoGen id that won its slot).
        agents: names of the chatledger agents: their chat messages are ``assistant``
            messages; anyone else's (the user, a user proxy) are ``user`` messages.
    """
    source = item.source
    meta: dict[str, Any] = {"autogen_type": type(item).__name__, "source": source, "autogen_id": message_id}
    if isinstance(item, ToolCallRequestEvent):
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in item.content
        ]
        return [(message_id, {"role": "assistant", "content": None, "tool_calls": calls, "name": source}, meta)]
    if isinstance(item, ToolCallExecutionEvent):
        return [
            (
                tool_result_message_id(r.call_id),
                {"role": "tool", "tool_call_id": r.call_id, "content": r.content},
                {**meta, "tool_name": r.name, "is_error": bool(r.is_error)},
            )
            for r in item.content
        ]
    if isinstance(item, ThoughtEvent):
        return [
            (message_id, {"role": "assistant", "content": item.content, "name": source}, {**meta, "llm": "thought"})
        ]
    if isinstance(item, BaseChatMessage):
        text = item.to_model_text()
        if isinstance(item, HandoffMessage):
            meta["target"] = item.target
        if isinstance(item, StopMessage):
            meta["llm"] = False
        role = "assistant" if source in agents else "user"
        message: dict[str, Any] = {"role": role, "content": text}
        if source != "user":
            message["name"] = source
        return [(message_id, message, meta)]
    # Any other event (memory query, selector, code execution, ...) is transcript only.
    return [(message_id, {"role": "assistant", "content": item.to_text(), "name": source}, {**meta, "llm": False})]


def model_view(stored: Sequence[tuple[dict[str, Any], Mapping[str, Any] | None]], agent: str) -> list[LLMMessage]:
    """The stored messages as ``agent``'s model sees them (see the module docstring).

    Args:
        stored: ``(message, meta)`` pairs in conversation order.
        agent: the agent whose point of view to take.

    Raises:
        InvalidHistoryError: the stored messages break the provider rule (the position is named).
    """
    return model_fold(stored, agent).finish()


def model_fold(stored: Sequence[tuple[dict[str, Any], Mapping[str, Any] | None]], agent: str) -> ViewFold:
    """:func:`model_view`'s fold over ``stored``, to be finished or kept and resumed.

    Raises:
        InvalidHistoryError: the stored messages break the provider rule (the position is named).
    """
    check_provider_valid([message for message, _ in stored], "the stored history before this request")
    fold = ViewFold(agent)
    fold.feed(stored)
    return fold


class ViewFold:
    """:func:`model_view` as a fold over the stored messages, resumable where a valid history ends.

    At the end of a provider-valid history no tool call is open, so the next valid message is
    not a tool result: the fold's state there (the view, the agent's own call ids, a pending
    thought) is all a later fold needs to go on with the messages appended after it. The
    history cache (:mod:`chatledger.adapters.agentchat.history`) keeps that state per agent.
    ``out`` and ``own_calls`` passed in are copied, never changed.
    """

    def __init__(
        self,
        agent: str,
        out: Sequence[LLMMessage] = (),
        own_calls: Mapping[str, str] | None = None,
        thought: str | None = None,
    ) -> None:
        self.agent = agent
        self.out: list[LLMMessage] = list(out)
        self.own_calls: dict[str, str] = dict(own_calls or {})
        self.thought = thought
        self._results: list[FunctionExecutionResult] = []

    def _flush_results(self) -> None:
        if self._results:
            self.out.append(FunctionExecutionResultMessage(content=self._results))
            self._results = []

    def finish(self) -> list[LLMMessage]:
        """The view so far (pending tool results closed into their message)."""
        self._flush_results()
        return self.out

    def feed(self, stored: Sequence[tuple[dict[str, Any], Mapping[str, Any] | None]]) -> None:
        """Fold in more stored ``(message, meta)`` pairs (already checked against the provider rule)."""
        agent, out, own_calls = self.agent, self.out, self.own_calls
        for message, meta in stored:
            meta = meta or {}
            llm = meta.get("llm", True)
            if llm is False:
                continue
            role = message.get("role")
            name = message.get("name") or meta.get("source")
            if role != "tool":
                self._flush_results()
            if llm == "thought":
                if name == agent:
                    self.thought = _text(message.get("content"))
                continue
            if role in ("system", "developer"):
                out.append(SystemMessage(content=_text(message.get("content"))))
            elif role == "user":
                out.append(UserMessage(content=_text(message.get("content")), source=str(name or "user")))
            elif role == "assistant":
                mine = name in (None, agent)
                calls = message.get("tool_calls") or []
                if calls:
                    if not mine:
                        continue
                    fcs = [
                        FunctionCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
                        for c in calls
                    ]
                    own_calls.update({fc.id: fc.name for fc in fcs})
                    out.append(AssistantMessage(content=fcs, thought=self.thought, source=agent))
                    self.thought = None
                elif mine and meta.get("autogen_type") in _OWN_ECHOES:
                    continue
                elif mine:
                    out.append(
                        AssistantMessage(content=_text(message.get("content")), thought=self.thought, source=agent)
                    )
                    self.thought = None
                else:
                    out.append(UserMessage(content=_text(message.get("content")), source=str(name)))
            elif role == "tool":
                call_id = str(message.get("tool_call_id"))
                if call_id in own_calls:
                    self._results.append(
                        FunctionExecutionResult(
                            content=_text(message.get("content")),
                            name=str(meta.get("tool_name") or own_calls[call_id]),
                            call_id=call_id,
                            is_error=bool(meta.get("is_error", False)),
                        )
                    )


class PrefixSource(Protocol):
    """Where a context reads the conversation before the current request (the adapter's session)."""

    def prefix_view(self, agent: str) -> list[LLMMessage]:
        """The stored conversation before the current request, from ``agent``'s point of view."""


class LedgerModelContext(ChatCompletionContext):
    """A ``ChatCompletionContext`` over chatledger: stored history before the request + this request.

    Args:
        source: the request's session (it knows the conversation and the request's cut).
        agent: the name of the agent this context serves.
        buffer_size: keep at most the last N messages sent to the model (None: all); the same
            as ``window=WindowOptions(max_messages=N)``.
        window: how much history the model gets (message and token bounds, the first user
            message kept): whole turn units only, so a tool call is never separated from
            its results (:mod:`chatledger.adapters.agentchat.window`).
    """

    def __init__(
        self,
        source: PrefixSource,
        agent: str,
        *,
        buffer_size: int | None = None,
        window: WindowOptions | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._agent = agent
        self._window = window if window is not None else WindowOptions(max_messages=buffer_size)

    async def get_messages(self) -> list[LLMMessage]:
        """The stored history before this request, then this request's messages, within the window."""
        return window_view([*self._source.prefix_view(self._agent), *self._messages], self._window)
