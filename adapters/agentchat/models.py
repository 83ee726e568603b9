"""Model responses recorded in the log: a retried or duplicated request reuses the recorded turn.

:class:`RecordedChatCompletionClient` wraps any AgentChat ``ChatCompletionClient``.
Each model call gets a key, ``request_key(agent, messages, tools, ...)``; the
first response recorded under that key (see :mod:`chatledger.store.responses`)
is the one every caller gets, including the caller that sampled a different one
in a race. A retried request therefore replays the recorded tool-call turn with
the same call ids instead of re-sampling new ones, and the executor dedupes
those ids: the tool runs once.

Why a wrapper and not ``ChatCompletionCache`` + a ``CacheStore`` over the log:
the stock cache's ``create`` returns its own fresh result after ``store.set``
(first writer does *not* win), it keys on the messages only (two agents of a
team with equal views would share answers) and it cannot raise a
``ReplayDivergence``. The wrapper keeps all three rules in one small class.

Streaming: live chunks from the inner client are passed through for display;
the assembled ``CreateResult`` is recorded and the *stored* one is yielded
last, which is the only thing AgentChat acts on. A recorded answer is served as
the result alone, with no chunks (chunks are never canonical).

Replay (``replay=True``): the inner client is never called for an answer the
record has; a call whose key the record lacks raises ``ReplayDivergence``. With
a ``candidate`` client (a new model under evaluation) each call is also sent to
the candidate and a different answer (text, or tool names and arguments) is a
``ReplayDivergence`` naming both sides.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from chatledger.adapters.scripted import FUNCTION_CALLING_MODEL_INFO
from chatledger.store import ReplayDivergence, Store
from chatledger.store.responses import record_response, recorded_response, recorded_responses

__all__ = ["RecordedChatCompletionClient", "answer_summary", "request_key"]


def _tool_schema(tool: Tool | ToolSchema) -> Any:
    return dict(tool.schema) if isinstance(tool, Tool) else dict(tool)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


_TEXTS: dict[int, tuple[weakref.ref[LLMMessage], str]] = {}


def _text(message: LLMMessage) -> str:
    """``message.model_dump(mode="json")`` as key JSON, computed once per message object.

    A request sends its stored history (the same message objects, kept by the history cache
    across requests) with every model call; dumping and encoding 5,000 of them for each
    call's key cost more than the rest of the call. Keyed by identity while the object
    lives (a weak reference drops the text with it); LLM messages are not changed after
    they are built.
    """
    key = id(message)
    hit = _TEXTS.get(key)
    if hit is not None and hit[0]() is message:
        return hit[1]
    text = _dumps(message.model_dump(mode="json"))
    _TEXTS[key] = (weakref.ref(message, lambda _, key=key: _TEXTS.pop(key, None)), text)  # type: ignore[misc]
    return text


_STATES: OrderedDict[tuple[str, int], tuple[tuple[LLMMessage, ...], hashlib._Hash]] = OrderedDict()
"""Per head text (agent, extra, json_output) and first message (a conversation's, as the history cache
keeps it): the last such call's messages and the SHA-256 state after them (least recent dropped)."""
_STATES_MAX = 128


def request_key(
    agent: str,
    messages: Sequence[LLMMessage],
    tools: Sequence[Tool | ToolSchema] = (),
    json_output: bool | type[BaseModel] | None = None,
    extra_create_args: Mapping[str, Any] | None = None,
) -> str:
    """The key of one model call: a SHA-256 of who asks, what it sends and with which tools.

    The hashed text is ``json.dumps`` of ``{"agent", "messages", "tools", "json_output",
    "extra"}`` (sorted keys, compact, unicode kept), built from each message's own text (cached
    per message object) joined in the order ``json.dumps`` writes: the same bytes, so keys
    recorded before stay valid (``tests/adapters/agentchat/test_history_cache.py`` pins it).

    A call usually sends the messages of the call before it (the same objects: the history
    cache keeps them across requests) and a few more, so the hash's state after the last
    call's messages is kept (per head text and first message) and continued when they are
    this call's first ones: the whole history is not hashed again on every call.
    """
    if isinstance(json_output, type):
        output: Any = json_output.__name__
    else:
        output = json_output
    head = "".join(('{"agent":', _dumps(agent), ',"extra":', _dumps(dict(extra_create_args or {})), ',"json_output":'))
    head += _dumps(output) + ',"messages":['
    slot = (head, id(messages[0]) if messages else 0)
    kept = _STATES.get(slot)
    done = 0
    if kept is not None and len(kept[0]) <= len(messages) and all(map(operator.is_, kept[0], messages)):
        state, done = kept[1].copy(), len(kept[0])
    else:
        state = hashlib.sha256(head.encode("utf-8"))
    if done < len(messages):
        get = _TEXTS.get
        rest = [hit[1] if (hit := get(id(m))) is not None and hit[0]() is m else _text(m) for m in messages[done:]]
        state.update((("," if done else "") + ",".join(rest)).encode("utf-8"))
    _STATES[slot] = (tuple(messages), state.copy())
    _STATES.move_to_end(slot)
    if len(_STATES) > _STATES_MAX:
        _STATES.popitem(last=False)
    state.update(('],"tools":' + _dumps([_tool_schema(t) for t in tools]) + "}").encode("utf-8"))
    return "llm:" + state.hexdigest()


def answer_summary(result: CreateResult | Mapping[str, Any]) -> Any:
    """What a model answered, without call ids: the text, or ``[(tool name, arguments), ...]``."""
    content = result.content if isinstance(result, CreateResult) else result.get("content")
    if isinstance(content, str):
        return content
    summary = []
    for fc in content or []:
        raw: Any = fc if isinstance(fc, Mapping) else {"name": fc.name, "arguments": fc.arguments}
        args = raw.get("arguments")
        with contextlib.suppress(TypeError, ValueError):
            args = json.loads(args)
        summary.append((raw.get("name"), args))
    return summary


class RecordedChatCompletionClient(ChatCompletionClient):
    """A ``ChatCompletionClient`` whose answers are recorded in, and served from, the log.

    Args:
        inner: the real client (may be None in replay mode).
        store: the log.
        conversation_id: the conversation whose model side stream holds the answers.
        agent: the name of the agent this client serves (part of every key).
        replay: serve recorded answers only; a missing one is a ``ReplayDivergence``.
        candidate: in replay mode, a client whose answers are compared with the record.
    """

    def __init__(
        self,
        inner: ChatCompletionClient | None,
        store: Store,
        conversation_id: str,
        *,
        agent: str,
        replay: bool = False,
        candidate: ChatCompletionClient | None = None,
    ) -> None:
        if inner is None and not replay:
            raise ValueError("a live RecordedChatCompletionClient needs an inner model client")
        self.inner = inner
        self.store = store
        self.conversation_id = conversation_id
        self.agent = agent
        self.replay = replay
        self.candidate = candidate
        self.calls = 0
        self.served_from_record = 0

    # -- the recording rule ---------------------------------------------------------------------

    def _recorded(self, key: str) -> CreateResult | None:
        stored = recorded_response(self.store, self.conversation_id, key)
        return None if stored is None else CreateResult.model_validate(stored)

    def _record(self, key: str, result: CreateResult) -> CreateResult:
        stored = record_response(self.store, self.conversation_id, key, result.model_dump(mode="json"))
        return CreateResult.model_validate(stored)

    def _divergence(self, messages: Sequence[LLMMessage], expected: Any, actual: Any) -> ReplayDivergence:
        return ReplayDivergence(self.conversation_id, self.calls, expected, actual)

    def _missing(self, messages: Sequence[LLMMessage]) -> ReplayDivergence:
        recorded = recorded_responses(self.store, self.conversation_id)
        expected: Any = "no recorded model response for this request"
        last = messages[-1].model_dump(mode="json") if messages else None
        if self.calls < len(recorded):
            expected = answer_summary(recorded[self.calls][1])
        return self._divergence(messages, expected, {"agent": self.agent, "last_message": last})

    async def _compare(self, recorded: CreateResult, messages: Sequence[LLMMessage], **kwargs: Any) -> None:
        if self.candidate is None:
            return
        fresh = await self.candidate.create(messages, **kwargs)
        if answer_summary(fresh) != answer_summary(recorded):
            raise self._divergence(messages, answer_summary(recorded), answer_summary(fresh))

    # -- ChatCompletionClient -------------------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """The recorded answer for this call, or the inner client's (recorded first-writer-wins)."""
        key = request_key(self.agent, messages, tools, json_output, extra_create_args)
        recorded = self._recorded(key)
        try:
            if recorded is not None:
                self.served_from_record += 1
                await self._compare(recorded, messages, tools=tools, json_output=json_output)
                return recorded
            if self.replay:
                raise self._missing(messages)
            assert self.inner is not None
            result = await self.inner.create(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            )
            return self._record(key, result)
        finally:
            self.calls += 1

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Pass live chunks through; end with the recorded (first-writer) result."""
        key = request_key(self.agent, messages, tools, json_output, extra_create_args)
        recorded = self._recorded(key)
        try:
            if recorded is not None:
                self.served_from_record += 1
                await self._compare(recorded, messages, tools=tools, json_output=json_output)
                yield recorded
                return
            if self.replay:
                raise self._missing(messages)
            assert self.inner is not None
            result: CreateResult | None = None
            async for chunk in self.inner.create_stream(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            ):
                if isinstance(chunk, CreateResult):
                    result = chunk
                else:
                    yield chunk
            if result is None:
                raise RuntimeError("the model stream ended without a CreateResult")
            yield self._record(key, result)
        finally:
            self.calls += 1

    async def close(self) -> None:
        """Close the inner client."""
        if self.inner is not None:
            await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        """The inner client's usage of its last call."""
        return self.inner.actual_usage() if self.inner else RequestUsage(prompt_tokens=0, completion_tokens=0)

    def total_usage(self) -> RequestUsage:
        """The inner client's total usage (recorded answers cost nothing)."""
        return self.inner.total_usage() if self.inner else RequestUsage(prompt_tokens=0, completion_tokens=0)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Delegated to the inner client."""
        return self.inner.count_tokens(messages, tools=tools) if self.inner else len(messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Delegated to the inner client."""
        return self.inner.remaining_tokens(messages, tools=tools) if self.inner else 100_000

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated AutoGen alias of ``model_info``."""
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        """The inner client's model info (a function-calling model when replaying without one)."""
        if self.inner is not None:
            return self.inner.model_info
        return FUNCTION_CALLING_MODEL_INFO
