"""One classic request as one turn: stored whole, answered from the record when it is a duplicate.

The chatledger agents' ``initiate_chat`` runs the chat as a *turn*:

1. The request gets its id: the one given to :func:`~.agents.chatledger_pair`, or
   by default the conversation's version when the agents were built plus a hash
   of the prompt (two different prompts sent at once are two requests; the same
   prompt delivered twice is one).
2. If the log already holds this request's turn, the chat is not run: the
   stored turn is handed to the agents and returned as the ``ChatResult`` (no
   model call, no tool run). A different prompt under a recorded request id is a
   ``ConflictError``.
3. Otherwise the agents' history is brought up to date (turns other requests
   stored since the agents were built), the chat runs with every send buffered,
   and the sends are stored as one batch at the end. No other request's
   messages can land inside it, so the stored history keeps the provider rule
   whatever runs at the same time. A chat that raises stores nothing; its model
   responses and tool outcomes are recorded already, so a retry reuses them.
4. If a duplicate of the request stored its turn first, that turn is the answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from chatledger.adapters.classic.preload import sender_views
from chatledger.adapters.classic.recording import (
    SendRecorder,
    StoredSend,
    autogen_module,
    canonical_message,
    load_sends,
)
from chatledger.store import ConflictError, Turn

__all__ = ["arun_turn", "prompt_digest", "recorded_turn", "run_turn"]


def prompt_digest(message: Any, sender: str) -> str | None:
    """A short stable hash of a chat's opening message (None when it is computed by a callable)."""
    if not isinstance(message, str | dict):
        return None
    text = json.dumps(canonical_message(message, sender), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def recorded_turn(recorder: SendRecorder) -> list[StoredSend] | None:
    """The stored turn of the recorder's request starting at its next step, when it is stored whole."""
    start = recorder.seq
    sends = [
        s
        for s in load_sends(recorder.store, recorder.conversation_id)
        if s.request == recorder.request_id and s.seq is not None and s.seq >= start
    ]
    first = next((s for s in sends if s.seq == start), None)
    if first is None or first.turn is None or first.turn[0] != start:
        return None
    count = first.turn[1]
    turn = [s for s in sends if s.seq is not None and s.seq < start + count]
    return turn if len({s.seq for s in turn}) == count else None


def _recorder(agent: Any) -> SendRecorder | None:
    recorder = getattr(agent, "chatledger_recorder", None)
    if not isinstance(recorder, SendRecorder) or recorder.replaying:
        return None
    return recorder


def _answer(recorder: SendRecorder, turn: list[StoredSend], initiator: Any, recipient: Any, ran: bool) -> Any:
    """The ``ChatResult`` of a stored turn, from the initiator's point of view.

    When the chat did not run here (``ran`` False) the agents get the turn in
    their histories, as if they had sent it.
    """
    recorder.seq = turn[0].seq + len(turn) if turn[0].seq is not None else recorder.seq
    history = []
    for send in turn:
        mine, theirs = sender_views(send.message, send.sender or initiator.name)
        from_initiator = send.sender == initiator.name
        history.append(mine if from_initiator else theirs)
        if not ran:
            sender, receiver = (initiator, recipient) if from_initiator else (recipient, initiator)
            sender.chat_messages[receiver].append(mine)
            receiver.chat_messages[sender].append(theirs)
    content = history[-1].get("content") if history else ""
    summary = content.replace("TERMINATE", "") if isinstance(content, str) else ""
    free = {"total_cost": 0}
    cost = {"usage_including_cached_inference": free, "usage_excluding_cached_inference": free}
    return autogen_module().ChatResult(chat_history=history, summary=summary, cost=cost, human_input=[])


def _before(recorder: SendRecorder, initiator: Any, message: Any) -> list[StoredSend] | None:
    """Name the request, and return its stored turn if there is one (checking it asked the same)."""
    recorder.name_request(prompt_digest(message, initiator.name))
    stored = recorded_turn(recorder)
    if stored is None:
        return None
    digest = prompt_digest(message, initiator.name)
    if digest is not None and prompt_digest(stored[0].message, stored[0].sender or initiator.name) != digest:
        raise ConflictError(
            f"request {recorder.request_id!r} of conversation {recorder.conversation_id!r} was recorded "
            "with a different opening message"
        )
    return stored


def _outcome(recorder: SendRecorder, sends: list[StoredSend]) -> dict[str, Any]:
    """What the turn gate records as the request's outcome: where its turn is and its summary."""
    content = sends[-1].message.get("content") if sends else ""
    summary = content.replace("TERMINATE", "") if isinstance(content, str) else ""
    return _span(recorder, len(sends), summary)


def _span(recorder: SendRecorder, count: int, summary: Any) -> dict[str, Any]:
    return {"request": recorder.request_id, "turn": [recorder.turn_start, count], "summary": str(summary or "")}


def _recorded(recorder: SendRecorder, outcome: dict[str, Any], initiator: Any, recipient: Any, message: Any) -> Any:
    """The answer to a request the gate says finished while this delivery waited."""
    stored = _before(recorder, initiator, message)
    if stored is not None:
        return _answer(recorder, stored, initiator, recipient, ran=False)
    free = {"total_cost": 0}
    cost = {"usage_including_cached_inference": free, "usage_excluding_cached_inference": free}
    summary = str(outcome.get("summary") or "")
    return autogen_module().ChatResult(chat_history=[], summary=summary, cost=cost, human_input=[])


def _open(recorder: SendRecorder, turn: Turn) -> list[StoredSend] | None:
    """Under the lease: the request's turn if a holder that died stored it already; else start buffering.

    Starting brings the agents' histories up to date first: the turns stored
    before this one (a request that waited runs on the previous one's result).
    """
    stored = recorded_turn(recorder)
    if stored is not None:
        turn.complete(_outcome(recorder, stored))
        return stored
    recorder.refresh()
    recorder.begin_turn()
    return None


def _close(recorder: SendRecorder, turn: Turn, initiator: Any, recipient: Any, result: Any) -> Any:
    """Store the buffered turn, record the request's outcome and release the lease; return the answer."""
    try:
        count = recorder.commit_turn()
    except ConflictError:
        stored = recorded_turn_at(recorder)
        if stored is None:
            raise
        turn.complete(_outcome(recorder, stored))
        return _answer(recorder, stored, initiator, recipient, ran=True)
    turn.complete(_span(recorder, count, getattr(result, "summary", "")))
    return result


def recorded_turn_at(recorder: SendRecorder) -> list[StoredSend] | None:
    """The stored turn of the recorder's request that started where the last turn started."""
    seq, recorder.seq = recorder.seq, recorder.turn_start
    stored = recorded_turn(recorder)
    recorder.seq = seq if stored is None else recorder.turn_start + len(stored)
    return stored


def run_turn(initiator: Any, recipient: Any, message: Any, chat: Callable[[], Any]) -> Any:
    """Run ``chat`` (the stock ``initiate_chat``) as one stored turn of the initiator's request."""
    recorder = _recorder(initiator)
    if recorder is None:
        return chat()
    stored = _before(recorder, initiator, message)
    if stored is not None:
        return _answer(recorder, stored, initiator, recipient, ran=False)
    admission = recorder.gate.enter(recorder.conversation_id, recorder.request_id)
    if admission.turn is None:
        return _recorded(recorder, admission.recorded or {}, initiator, recipient, message)
    turn = admission.turn
    try:
        with turn.kept_alive():
            stored = _open(recorder, turn)
            if stored is not None:
                return _answer(recorder, stored, initiator, recipient, ran=False)
            result = chat()
            return _close(recorder, turn, initiator, recipient, result)
    except BaseException:
        recorder.abort_turn()
        turn.release()
        raise


async def arun_turn(initiator: Any, recipient: Any, message: Any, chat: Callable[[], Awaitable[Any]]) -> Any:
    """The async form of :func:`run_turn`."""
    recorder = _recorder(initiator)
    if recorder is None:
        return await chat()
    stored = _before(recorder, initiator, message)
    if stored is not None:
        return _answer(recorder, stored, initiator, recipient, ran=False)
    admission = await recorder.gate.aenter(recorder.conversation_id, recorder.request_id)
    if admission.turn is None:
        return _recorded(recorder, admission.recorded or {}, initiator, recipient, message)
    turn = admission.turn
    try:
        with turn.kept_alive():
            stored = _open(recorder, turn)
            if stored is not None:
                return _answer(recorder, stored, initiator, recipient, ran=False)
            result = await chat()
            return _close(recorder, turn, initiator, recipient, result)
    except BaseException:
        recorder.abort_turn()
        turn.release()
        raise
