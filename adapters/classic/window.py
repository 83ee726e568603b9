"""History windows for classic AutoGen agents: what a ``ConversableAgent`` sends its model, bounded and valid.

Classic agents keep their whole preloaded history (``_oai_messages``) and send all of it.
:func:`install_window` registers a ``process_all_messages_before_reply`` hook (AutoGen's
own extension point, the one its TransformMessages capability uses) that hands the reply
functions a window of that history: the head and the newest whole turn units within a
token and/or message budget, by chatledger's one selection rule
(:func:`chatledger.store.window.window_messages`). The agent's stored history and the
log are never changed; a tool call is never separated from its results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatledger.store.window import TokenCounter, estimate_tokens, window_messages

__all__ = ["install_window"]


def install_window(
    agent: Any,
    *,
    max_tokens: int | None = None,
    max_messages: int | None = None,
    keep_first_user: bool = False,
    counter: TokenCounter = estimate_tokens,
) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Make ``agent`` reply from a window of its history; returns the hook it registered.

    Args:
        agent: a classic ``ConversableAgent``.
        max_tokens: at most this many tokens of history (by ``counter``).
        max_messages: at most this many messages of history.
        keep_first_user: keep the first user message in front.
        counter: tokens per message (chatledger's estimate by default: downloads nothing).

    Raises:
        ValidationError: a bound is not a positive integer.
    """
    window_messages([], max_tokens=max_tokens, max_messages=max_messages)  # validates the bounds now

    def hook(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        plain = [m for m in messages if isinstance(m, Mapping)]
        if len(plain) != len(messages):
            return messages  # not a chat history this hook understands: leave it to AutoGen
        return window_messages(
            plain, max_tokens=max_tokens, max_messages=max_messages, keep_first_user=keep_first_user, counter=counter
        )

    agent.register_hook("process_all_messages_before_reply", hook)
    return hook
