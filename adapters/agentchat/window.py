"""History windows for AgentChat model contexts: AutoGen's Buffered, HeadAndTail and TokenLimited, but valid.

AutoGen's own contexts cut a list of ``LLMMessage`` by count or tokens, and can leave a
``FunctionExecutionResultMessage`` without the ``AssistantMessage`` that called it (or the
reverse), which providers refuse. Here the cut follows chatledger's one selection rule,
:func:`chatledger.store.window.fit_units`: the messages are grouped into turn units (an
assistant message calling tools together with the result messages answering it, or one
message), and only whole units are kept, newest first, the newest always. The head (the
leading system messages and, with ``keep_first_user``, the first user message) is kept in
front, as in AutoGen's HeadAndTailChatCompletionContext.

Tokens are counted by the model client's own ``count_tokens`` when one is given (what
AutoGen's TokenLimitedChatCompletionContext uses), otherwise by chatledger's documented
estimate, so nothing downloads tokenizer files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from chatledger.store.errors import ValidationError
from chatledger.store.window import estimate_tokens, fit_units

__all__ = ["WindowOptions", "window_view"]


@dataclass(frozen=True)
class WindowOptions:
    """How much of the history an agent sends its model.

    Args:
        max_messages: at most this many messages (AutoGen's ``buffer_size``).
        max_tokens: at most this many tokens (AutoGen's ``token_limit``).
        keep_first_user: keep the first user message in front (AutoGen's head-and-tail).
        model_client: counts tokens with its ``count_tokens`` (else an estimate).
    """

    max_messages: int | None = None
    max_tokens: int | None = None
    keep_first_user: bool = False
    model_client: ChatCompletionClient | None = None

    def __post_init__(self) -> None:
        for name in ("max_messages", "max_tokens"):
            bound = getattr(self, name)
            if bound is not None and (type(bound) is not int or bound < 1):
                raise ValidationError(name, f"must be a positive integer, got {bound!r}")

    @property
    def bounded(self) -> bool:
        """Whether any bound is set (else the view is the whole history)."""
        return self.max_messages is not None or self.max_tokens is not None

    def counter(self) -> Callable[[LLMMessage], int]:
        """Tokens of one message: the model client's count, else chatledger's estimate."""
        client = self.model_client
        if client is not None:
            return lambda message: client.count_tokens([message])
        return lambda message: estimate_tokens(message.model_dump(mode="json"))


def _calls_tools(message: LLMMessage) -> bool:
    return isinstance(message, AssistantMessage) and isinstance(message.content, list)


def window_view(messages: Sequence[LLMMessage], options: WindowOptions) -> list[LLMMessage]:
    """The messages an agent sends within ``options``: head, then the newest whole turn units."""
    if not options.bounded:
        return list(messages)
    start = 0
    while start < len(messages) and isinstance(messages[start], SystemMessage):
        start += 1
    if options.keep_first_user and start < len(messages) and isinstance(messages[start], UserMessage):
        start += 1
    head, rest = list(messages[:start]), messages[start:]
    units: list[list[LLMMessage]] = []
    for message in rest:
        if isinstance(message, FunctionExecutionResultMessage) and units and _calls_tools(units[-1][0]):
            units[-1].append(message)  # results stay with the call that asked for them
        elif isinstance(message, FunctionExecutionResultMessage):
            continue  # results whose call is not in view: a provider refuses them, so they are not sent
        else:
            units.append([message])
    counter = options.counter() if options.max_tokens is not None else None
    head_tokens = sum(counter(m) for m in head) if counter is not None else 0
    kept, _ = fit_units(
        units,
        counter,
        None if options.max_tokens is None else options.max_tokens - head_tokens,
        None if options.max_messages is None else options.max_messages - len(head),
    )
    return head + [m for unit in units[len(units) - kept :] for m in unit]
