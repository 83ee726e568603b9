"""Recorded model responses: first writer wins, so retries and replays reuse one answer.

A model call is identified by a *key* the adapter computes (for AgentChat, a
hash of the agent, the messages and the tools it sends). The response is stored
as a :class:`~chatledger.store.events.ModelResponseRecorded` event in the
conversation's side stream ``side_stream_id(conversation_id, "model")`` with
``Draft.key = key``. The log's per-stream key uniqueness makes the first
recorded response the only one: a second writer with a different response
(another worker that raced on the same request, a retry that re-sampled) gets
the stored response back instead of its own. That is what keeps tool call ids
stable across retried and duplicated requests, so the executor dedupes them.

The same first-writer-wins register is reused for other per-conversation
decisions under a different ``stream`` name (the AgentChat adapter records which
AutoGen message id won each transcript slot in the ``"agentchat"`` stream).

Nothing here imports AutoGen: responses are plain JSON objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatledger.store.backends.recorder import side_stream_id
from chatledger.store.errors import ConcurrencyError, ConflictError, NotFoundError, ValidationError
from chatledger.store.events import ModelResponseRecorded
from chatledger.store.handle import Store
from chatledger.store.writer import Draft, check_id

__all__ = ["MODEL_STREAM", "record_response", "recorded_response", "recorded_responses"]

MODEL_STREAM = "model"
_ATTEMPTS = 5


def _stream(conversation_id: str, stream: str) -> str:
    check_id(conversation_id, "conversation_id")
    check_id(stream, "stream")
    return side_stream_id(conversation_id, stream)


def record_response(
    store: Store,
    conversation_id: str,
    key: str,
    response: Mapping[str, Any],
    *,
    stream: str = MODEL_STREAM,
) -> dict[str, Any]:
    """Record a response under ``key`` unless one is recorded already; return the stored one.

    Args:
        store: the log.
        conversation_id: the conversation the response belongs to (it must exist).
        key: what identifies the request (the same request computes the same key).
        response: a JSON object.
        stream: the side stream to record in (``"model"`` for model responses).

    Returns:
        The response stored under ``key``: this one if it was first, else the earlier one.

    Raises:
        NotFoundError: the conversation does not exist for this store's tenant.
        ValidationError: the key or the response cannot be stored; nothing is written.
    """
    check_id(key, "key")
    if not isinstance(response, Mapping):
        raise ValidationError("response", "must be a JSON object")
    sid = _stream(conversation_id, stream)
    draft = Draft(ModelResponseRecorded, {"key": key, "response": dict(response)}, key=key, label="response")
    for _ in range(_ATTEMPTS):
        try:
            with store.transaction() as w:
                if w.head(conversation_id) is None:
                    raise NotFoundError(f"conversation {conversation_id!r} does not exist")
                if w.head(sid) is None:
                    w.create_stream(sid, conversation_id, stream)
                (event,) = w.append(sid, [draft])
        except (ConflictError, ConcurrencyError):
            # Another writer recorded first (or created the stream concurrently): read the winner.
            stored = recorded_response(store, conversation_id, key, stream=stream)
            if stored is not None:
                return stored
            continue
        assert isinstance(event, ModelResponseRecorded)
        return dict(event.response)
    raise ConflictError(f"could not record the response {key!r} in {conversation_id!r}: writers kept racing")


def recorded_response(
    store: Store, conversation_id: str, key: str, *, stream: str = MODEL_STREAM
) -> dict[str, Any] | None:
    """The response recorded under ``key``, or None when there is none."""
    for stored_key, response in recorded_responses(store, conversation_id, stream=stream):
        if stored_key == key:
            return response
    return None


def recorded_responses(
    store: Store, conversation_id: str, *, stream: str = MODEL_STREAM
) -> list[tuple[str, dict[str, Any]]]:
    """Every recorded ``(key, response)`` of a conversation, in the order they were recorded."""
    return [
        (e.key, dict(e.response))
        for e in store.stream_events(_stream(conversation_id, stream))
        if isinstance(e, ModelResponseRecorded)
    ]
