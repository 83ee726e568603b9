"""What a finished AgentChat request is answered with when it is delivered again.

A request runs under its conversation's turn (:mod:`chatledger.store.turns`). When
it finishes, its outcome (the task and the ``TaskResult``'s messages, dumped as
AgentChat dumps them) is recorded once; every later delivery of the same request id
(a duplicate, a retry, one that waited behind the first) gets that ``TaskResult``
back, rebuilt with AgentChat's ``MessageFactory``, without a model call or a tool
run. A request id reused for a *different* task is a ``ConflictError`` naming the
client's id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, MessageFactory, TextMessage

from chatledger.adapters.agentchat.session import Session
from chatledger.store import ConflictError

__all__ = ["admitted", "recorded_result", "result_outcome", "task_messages"]


def task_messages(task: str | BaseChatMessage | Sequence[BaseChatMessage] | None) -> list[BaseChatMessage]:
    """A run's task as the chat messages AgentChat would make of it."""
    if task is None:
        return []
    if isinstance(task, str):
        return [TextMessage(content=task, source="user")]
    if isinstance(task, BaseChatMessage):
        return [task]
    return list(task)


def _task_texts(messages: Sequence[BaseChatMessage]) -> list[list[str]]:
    return [[m.source, m.to_model_text()] for m in messages]


def result_outcome(task: Sequence[BaseChatMessage], result: TaskResult) -> dict[str, Any]:
    """What a finished request is answered with on every later delivery: its task and its result."""
    return {
        "task": _task_texts(task),
        "stop_reason": result.stop_reason,
        "messages": [m.dump() for m in result.messages],
    }


def recorded_result(
    session: Session, recorded: Mapping[str, Any] | None, task: Sequence[BaseChatMessage]
) -> TaskResult | None:
    """The recorded result of a finished request, or None when the request must run (or re-run from the record).

    Raises:
        ConflictError: the request id was used before for a different task.
    """
    if recorded is None or not isinstance(recorded.get("messages"), list):
        return None
    if task and recorded.get("task") != _task_texts(task):
        raise ConflictError(
            f"request {session.request_id!r} of conversation {session.conversation_id!r} finished before with a "
            "different task: a request id (the client's message id) may be reused only for the same request"
        )
    factory = MessageFactory()
    try:
        messages = [factory.create(m) for m in recorded["messages"]]
    except Exception:
        return None  # a message type this process does not know: re-run from the record instead
    return TaskResult(messages=messages, stop_reason=recorded.get("stop_reason"))


def admitted(
    session: Session, recorded: Mapping[str, Any] | None, task: str | BaseChatMessage | Sequence[BaseChatMessage] | None
) -> tuple[list[BaseChatMessage], TaskResult | None]:
    """A run's task messages, and its recorded result when the request finished already (else None)."""
    messages = task_messages(task)
    return messages, recorded_result(session, recorded, messages)
