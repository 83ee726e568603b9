"""An offline, scripted AgentChat model client for tests, demos and examples.

:class:`ScriptedChatCompletionClient` answers from a script instead of a model.
Unlike AutoGen's ``ReplayChatCompletionClient`` (which hands out responses by a
per-instance counter) it picks the reply from the *messages it is sent*: the
current request is the last user message, and the step is how many assistant
turns follow it. So the same script gives the same answer in any process, on a
retry or for a fresh agent that loaded the history from chatledger — exactly
what a deterministic fake model should do. Tool call ids are minted fresh on
each sample (as a real model does) unless the script fixes them, which is how
the tests prove that recorded responses, not luck, keep ids stable.

Script entries: a string (a text answer), :func:`call` specs or a list of them
(a tool-call turn; several calls = parallel tool calls), a ``CreateResult``, or
an exception instance (raised, to simulate a model error)::

    client = ScriptedChatCompletionClient({
        "Weather in Rome?": [call("get_weather", city="Rome"), "It is sunny in Rome."],
    })
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

__all__ = [
    "FUNCTION_CALLING_MODEL_INFO",
    "CallSpec",
    "ScriptedChatCompletionClient",
    "call",
    "current_prompt",
]

FUNCTION_CALLING_MODEL_INFO: ModelInfo = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": ModelFamily.UNKNOWN,
    "structured_output": False,
}


@dataclass(frozen=True)
class CallSpec:
    """A tool call the scripted model will make; ``id=None`` mints a new id on every sample."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def sample(self) -> FunctionCall:
        """This call as the model would return it now."""
        call_id = self.id or f"call_{uuid.uuid4().hex[:16]}"
        return FunctionCall(id=call_id, name=self.name, arguments=json.dumps(self.arguments))


def call(name: str, *, id: str | None = None, **arguments: Any) -> CallSpec:
    """A scripted tool call: ``call("get_weather", city="Rome")``."""
    return CallSpec(name, dict(arguments), id)


Reply = str | CallSpec | Sequence[CallSpec] | CreateResult | BaseException
Script = Mapping[str, Sequence[Reply]] | Sequence[Reply] | Callable[[Sequence[LLMMessage]], Reply]


def current_prompt(messages: Sequence[LLMMessage]) -> tuple[str, int]:
    """The current request's prompt (the last user message's text) and how many turns answered it."""
    prompt, step = "", 0
    for message in messages:
        if isinstance(message, UserMessage):
            prompt = message.content if isinstance(message.content, str) else str(message.content)
            step = 0
        elif isinstance(message, AssistantMessage):
            step += 1
    return prompt, step


class ScriptedChatCompletionClient(ChatCompletionClient):
    """A fake ``ChatCompletionClient`` that answers from a script; never touches a network.

    Args:
        script: replies per prompt (a mapping; the key ``"*"`` matches any prompt), one
            list of replies for whatever the prompt is, or a function of the messages.
        delay: seconds to sleep before each answer (to widen races in tests).
        model_info: defaults to a function-calling model.
    """

    def __init__(self, script: Script, *, delay: float = 0.0, model_info: ModelInfo | None = None) -> None:
        self._script = script
        self._delay = delay
        self._model_info: ModelInfo = model_info or dict(FUNCTION_CALLING_MODEL_INFO)  # type: ignore[assignment]
        self.create_calls: list[dict[str, Any]] = []
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def _reply(self, messages: Sequence[LLMMessage]) -> Reply:
        if callable(self._script):
            return self._script(messages)
        prompt, step = current_prompt(messages)
        if isinstance(self._script, Mapping):
            replies = self._script.get(prompt, self._script.get("*"))
            if replies is None:
                raise ValueError(f"the script has no replies for the prompt {prompt!r}")
        else:
            replies = self._script
        if step >= len(replies):
            raise ValueError(f"the script has no reply {step} for the prompt {prompt!r}")
        return replies[step]

    async def _answer(self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]) -> CreateResult:
        self.create_calls.append({"messages": list(messages), "tools": list(tools)})
        if self._delay:
            await asyncio.sleep(self._delay)
        reply = self._reply(messages)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, CreateResult):
            return reply
        usage = RequestUsage(prompt_tokens=len(messages), completion_tokens=1)
        self._usage = usage
        if isinstance(reply, str):
            return CreateResult(finish_reason="stop", content=reply, usage=usage, cached=False)
        specs = [reply] if isinstance(reply, CallSpec) else list(reply)
        return CreateResult(
            finish_reason="function_calls", content=[s.sample() for s in specs], usage=usage, cached=False
        )

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
        """Answer from the script."""
        return await self._answer(messages, tools)

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
        """Answer from the script, text word by word, then the assembled result."""
        result = await self._answer(messages, tools)
        if isinstance(result.content, str):
            words = result.content.split(" ")
            for i, word in enumerate(words):
                yield word if i == len(words) - 1 else word + " "
        yield result

    async def close(self) -> None:
        """Nothing to release."""

    def actual_usage(self) -> RequestUsage:
        """The usage of the last answer."""
        return self._usage

    def total_usage(self) -> RequestUsage:
        """The usage of the last answer (the fake does not accumulate)."""
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """One token per message: enough for a fake."""
        return len(messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """A large budget minus the messages."""
        return 100_000 - len(messages)

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated AutoGen alias of ``model_info``."""
        return self._model_info

    @property
    def model_info(self) -> ModelInfo:
        """A function-calling model unless told otherwise."""
        return self._model_info
