"""Recording classic AutoGen sends in the log, and reading them back as sends.

Classic ``ConversableAgent`` messages have no ids and their roles are relative
to the agent looking at them, so the log stores each *send* neutrally: the
message in OpenAI chat format (the role it has for the model that answers it),
with ``meta`` naming the sender, the recipient, the request and the send's
step in that request. A classic tool reply (one message carrying several
``tool_responses``) becomes one ``role="tool"`` message per call.

Ids are positions: the ``seq``-th send of request ``r`` is stored as
``classic:{r}:{seq}`` (tool results as ``tool-result:{call_id}``, one per call
in the whole conversation). A request that is retried or delivered twice
re-sends the same positions: an equal message is a no-op, a different one
(another model sample) loses to the first writer and the
``process_message_before_send`` hook hands the agents the recorded message
instead, so every copy of the request continues with the same tool call ids.
Inside a turn (:mod:`.turn`) the sends are buffered and stored as one batch.
Preloading fresh agents from the stored sends is :mod:`.preload`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatledger.store import (
    ConflictError,
    MessageAppended,
    ReplayDivergence,
    Store,
    TurnGate,
    tool_result_message_id,
)

__all__ = [
    "ADAPTER",
    "SendRecorder",
    "StoredSend",
    "autogen_module",
    "canonical_message",
    "ends_turn",
    "load_sends",
    "send_message_ids",
    "to_openai",
]

ADAPTER = "autogen-classic"


def autogen_module() -> Any:
    """The ``autogen`` package, imported on first use (the ``classic`` extra is optional).

    Typed as Any so that this package type-checks the same with or without the extra.
    """
    import importlib

    return importlib.import_module("autogen")


@dataclass(frozen=True)
class StoredSend:
    """One classic send read back from the log: who sent which message to whom, and where."""

    message: dict[str, Any]
    role: str
    sender: str | None = None
    recipient: str | None = None
    request: str | None = None
    seq: int | None = None
    version: int = 0
    message_ids: tuple[str, ...] = field(default=())
    turn: tuple[int, int] | None = None
    """``(first seq, number of sends)`` of the turn this send was stored with (None: stored alone)."""


def _text(content: Any) -> Any:
    if content is None or isinstance(content, str | list):
        return content
    return str(content)


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON-only copy (model replies may hold pydantic leftovers); unknown objects become text."""
    copied: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return copied


def canonical_message(message: Mapping[str, Any] | str, sender: str) -> dict[str, Any]:
    """The form of a classic message that is stored and that agents actually send.

    Only the keys classic AutoGen keeps (``normilize_message_to_oai``) survive, so
    an agent's live history and a history preloaded from the log are identical,
    which keeps model-cache keys equal between a request and its retry.
    """
    msg: dict[str, Any] = {"content": message} if isinstance(message, str) else dict(message)
    if msg.get("tool_responses"):
        responses = [
            {"tool_call_id": r.get("tool_call_id"), "role": "tool", "content": _text(r.get("content"))}
            for r in msg["tool_responses"]
        ]
        joined = "\n\n".join(str(r["content"] if r["content"] is not None else "") for r in responses)
        return _plain({"role": "tool", "tool_responses": responses, "content": joined})
    if msg.get("role") == "tool":
        return _plain({"role": "tool", "tool_call_id": msg.get("tool_call_id"), "content": _text(msg.get("content"))})
    if msg.get("role") == "function":
        return _plain({"role": "function", "name": msg.get("name"), "content": _text(msg.get("content"))})
    out: dict[str, Any] = {"content": _text(msg.get("content"))}
    if msg.get("tool_calls"):
        out["tool_calls"] = list(msg["tool_calls"])
    if msg.get("function_call"):
        out["function_call"] = msg["function_call"]
    name = msg.get("name") or sender
    if name:
        out["name"] = name
    return _plain(out)


def to_openai(message: Mapping[str, Any], sender_role: str) -> list[dict[str, Any]]:
    """A canonical classic message as OpenAI chat messages (several for a multi-call tool reply).

    ``sender_role`` is the role of the sender's messages for the model that reads
    them: ``"assistant"`` for an agent with an LLM, ``"user"`` for a user proxy.
    """
    if message.get("tool_responses"):
        return [
            {"role": "tool", "tool_call_id": r["tool_call_id"], "content": r["content"]}
            for r in message["tool_responses"]
        ]
    if message.get("role") in ("tool", "function"):
        return [dict(message)]
    role = "assistant" if message.get("tool_calls") or message.get("function_call") else sender_role
    return [{"role": role, **message}]


def send_message_ids(message: Mapping[str, Any], request: str, seq: int) -> list[str]:
    """The stored ids of one send's messages: its position, or one id per tool result."""
    if message.get("tool_responses"):
        return [tool_result_message_id(str(r["tool_call_id"])) for r in message["tool_responses"]]
    if message.get("role") == "tool" and message.get("tool_call_id"):
        return [tool_result_message_id(str(message["tool_call_id"]))]
    return [f"classic:{request}:{seq}"]


def _from_openai(messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The canonical classic message of one send's stored OpenAI messages."""
    if messages[0].get("role") == "tool":
        responses = [
            {"tool_call_id": m.get("tool_call_id"), "role": "tool", "content": m.get("content")} for m in messages
        ]
        return canonical_message({"tool_responses": responses}, "")
    msg = dict(messages[0])
    role = msg.pop("role")
    if role == "function":
        msg["role"] = "function"
    return canonical_message(msg, "")


def _sends(events: Iterable[Any]) -> list[StoredSend]:
    sends: list[StoredSend] = []
    group: list[MessageAppended] = []

    def flush() -> None:
        if not group:
            return
        first = group[0]
        meta = first.meta or {}
        classic = meta.get("adapter") == ADAPTER
        messages = [e.message for e in group]
        turn = meta.get("turn") if classic else None
        sends.append(
            StoredSend(
                message=_from_openai(messages),
                role=str(messages[0].get("role")),
                sender=meta.get("sender") if classic else None,
                recipient=meta.get("recipient") if classic else None,
                request=meta.get("request") if classic else None,
                seq=meta.get("seq") if classic else None,
                version=first.version,
                message_ids=tuple(e.message_id for e in group),
                turn=(int(turn[0]), int(turn[1])) if isinstance(turn, list) and len(turn) == 2 else None,
            )
        )
        group.clear()

    for event in events:
        if not isinstance(event, MessageAppended) or event.message.get("role") in ("system", "developer"):
            continue
        if group and _same_send(group[-1], event):
            group.append(event)
            continue
        flush()
        group.append(event)
    flush()
    return sends


def _same_send(prev: MessageAppended, event: MessageAppended) -> bool:
    """Tool results of one classic reply (or consecutive foreign tool results) form one send."""
    if prev.message.get("role") != "tool" or event.message.get("role") != "tool":
        return False
    a, b = prev.meta or {}, event.meta or {}
    if a.get("adapter") == ADAPTER or b.get("adapter") == ADAPTER:
        return (a.get("request"), a.get("seq")) == (b.get("request"), b.get("seq"))
    return True


def load_sends(store: Store, conversation_id: str) -> list[StoredSend]:
    """The conversation's messages grouped into classic sends, in order (system messages left out).

    Messages appended by other writers (an import, the executor closing a
    dangling call) have no sender; preloading assigns them by role.
    """
    return _sends(store.events(conversation_id))


def _sender_role(agent: Any) -> str:
    return "assistant" if getattr(agent, "llm_config", False) else "user"


class SendRecorder:
    """The ``process_message_before_send`` hook that records every send of one request exactly once.

    Inside a turn (:meth:`begin_turn` .. :meth:`commit_turn`, what the chatledger
    agents' ``initiate_chat`` runs) sends are buffered and stored together as one
    batch, so no other request's messages can land between a tool call and its
    results. Outside a turn each send is stored on its own.

    In replay mode it writes nothing: each send is compared with the recorded one
    at the same position and a difference raises ``ReplayDivergence``.
    """

    def __init__(
        self,
        store: Store,
        conversation_id: str,
        request_id: str,
        *,
        skip: Callable[[Any], bool] = lambda agent: False,
        replay: Sequence[StoredSend] | None = None,
        named: bool = True,
        gate: TurnGate | None = None,
    ) -> None:
        self.store = store
        self.gate = gate or TurnGate(store)
        """Serialises the conversation's turns, records each request's outcome (:mod:`chatledger.store.turns`)."""
        self.conversation_id = conversation_id
        self.request_id = request_id
        self.reload: Callable[[], None] | None = None
        """Brings the agents' histories up to date with the log (set by whoever preloaded them)."""
        self._named = named
        self.seq = 0
        self._skip = skip
        self._replay = {(s.request, s.seq): s for s in replay} if replay is not None else None
        self._turn: list[tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]] | None = None
        self._turn_start = 0
        self._model_calls = 0

    @property
    def replaying(self) -> bool:
        """True when this recorder checks sends against a record instead of storing them."""
        return self._replay is not None

    @property
    def turn_start(self) -> int:
        """The step the current (or last) turn started at."""
        return self._turn_start

    def name_request(self, digest: str | None) -> None:
        """Make a default request id specific to the request's opening message (once, at the first turn).

        A request id given by the caller is kept as it is.
        """
        if not self._named and digest is not None:
            self.request_id = f"{self.request_id}-{digest}"
        self._named = True

    def refresh(self) -> None:
        """Bring the agents' histories up to date before a turn (turns stored since they were built)."""
        if self.reload is not None:
            self.reload()

    def begin_turn(self) -> None:
        """Buffer the following sends until :meth:`commit_turn` stores them as one batch."""
        self._turn = []
        self._turn_start = self.seq
        self._model_calls = 0

    def next_model_position(self) -> str | None:
        """The position of the turn's next model call (request, turn, number), or None outside a turn.

        The model cache records responses under it, so the same request run again
        gets the same responses whatever was stored in between.
        """
        if self._turn is None:
            return None
        n, self._model_calls = self._model_calls, self._model_calls + 1
        return json.dumps([self.request_id, self._turn_start, n])

    def abort_turn(self) -> None:
        """Drop the buffered sends (the turn failed): nothing of it is stored, a retry runs it again."""
        self._turn = None
        self.seq = self._turn_start

    def commit_turn(self) -> int:
        """Store the buffered sends as one atomic batch after whatever the log holds now; return their number.

        Each message's meta carries ``turn = [first seq, number of sends]``, which
        tells a duplicate of the request that the whole turn is stored.

        Raises:
            ConflictError: a duplicate of this request stored a different turn first.
        """
        turn, self._turn = self._turn, None
        if not turn:
            return 0
        span = [self._turn_start, len(turn)]
        messages = [m for msgs, _, _ in turn for m in msgs]
        ids = [i for _, send_ids, _ in turn for i in send_ids]
        metas = [meta | {"turn": span} for _, _, send_metas in turn for meta in send_metas]
        self.store.append(self.conversation_id, messages, message_ids=ids, meta=metas)
        return len(turn)

    def attach(self, agent: Any) -> None:
        """Register the hook on an agent (every agent whose sends are part of the conversation)."""
        agent.register_hook("process_message_before_send", self)

    def start_request(self, request_id: str) -> None:
        """Number the following sends as the steps of another request (replay drives several)."""
        self.request_id = request_id
        self.seq = 0

    def __call__(
        self, sender: Any, message: dict[str, Any] | str, recipient: Any, silent: bool
    ) -> dict[str, Any] | str:
        """Record one send (or check it, in replay) and return the message the agents must use."""
        if self._skip(sender):
            return message
        seq = self.seq
        self.seq += 1
        msg = canonical_message(message, sender.name)
        if self._replay is not None:
            return self._check_replay(msg, sender, seq)
        messages = to_openai(msg, _sender_role(sender))
        ids = send_message_ids(msg, self.request_id, seq)
        base = {"adapter": ADAPTER, "sender": sender.name, "recipient": recipient.name}
        base |= {"request": self.request_id, "seq": seq}
        metas = [base | ({"part": i, "parts": len(ids)} if len(ids) > 1 else {}) for i in range(len(ids))]
        if self._turn is not None:
            self._turn.append((messages, ids, metas))
            return msg
        try:
            self.store.append(self.conversation_id, messages, message_ids=ids, meta=metas)
        except ConflictError:
            stored = self._stored(ids)
            if stored is None or seq == 0:
                # The request's own input may not be swapped for another one: that
                # would silently drop what this caller asked.
                raise
            return stored.message
        return msg

    def _stored(self, ids: Sequence[str]) -> StoredSend | None:
        wanted = set(ids)
        events = [
            e
            for e in self.store.events(self.conversation_id)
            if isinstance(e, MessageAppended) and e.message_id in wanted
        ]
        if len(events) != len(wanted):
            return None
        return _sends(events)[0]

    def _check_replay(self, msg: dict[str, Any], sender: Any, seq: int) -> dict[str, Any]:
        assert self._replay is not None
        recorded = self._replay.get((self.request_id, seq))
        if recorded is None:
            raise ReplayDivergence(self.conversation_id, -1, None, {"sender": sender.name, "message": msg})
        if recorded.sender not in (None, sender.name) or recorded.message != msg:
            raise ReplayDivergence(
                self.conversation_id,
                recorded.version,
                {"sender": recorded.sender, "message": recorded.message},
                {"sender": sender.name, "message": msg},
            )
        return recorded.message


def ends_turn(message: Mapping[str, Any]) -> bool:
    """The default end of a request: the assistant answered without calling a tool."""
    return not message.get("tool_calls") and message.get("role") != "tool"
