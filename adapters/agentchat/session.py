"""One request against one conversation: what the AgentChat adapter's pieces share.

A :class:`Session` is built per request (``request_id`` = the client's message
id, so a retried or duplicated request is *the same* request). It

* stores every AgentChat message and event of the request, with its AutoGen id
  and ``meta``; events are buffered and stored together with the chat message
  that ends the agent's turn, as one atomic batch, so the conversation is a valid
  OpenAI history at every instant (a tool call is never stored without its result,
  and concurrent requests never interleave inside a turn);
* makes retries converge: the n-th item of a request takes the slot
  ``{request_id}/{n}`` (first writer wins, in the ``"agentchat"`` side stream); a
  later run of the same request reuses the winner's id, so storing its items again
  is a no-op, and the messages it yields carry the stored ids;
* knows the request's *cut*: the history before the request's first stored
  message, which is what every agent of the request sees before its own turns;
* in replay mode writes nothing and compares each item with the record instead;
* runs the request under the conversation's turn (:mod:`chatledger.store.turns`):
  :meth:`Session.turn` claims it before anything is stored, so a duplicate delivery
  waits for the first and is answered with its recorded result (no model call, no
  tool run), and a different request on the conversation waits and then runs on the
  first one's result (or gets ``ConversationBusy`` after ``wait_seconds``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, ModelClientStreamingChunkEvent
from autogen_core.models import LLMMessage

from chatledger.adapters.agentchat.context import Record, model_view, to_records
from chatledger.adapters.agentchat.history import HISTORY_CACHE, Snapshot
from chatledger.store import ConflictError, MessageAppended, NotFoundError, ReplayDivergence, Store, ValidationError
from chatledger.store.responses import record_response, recorded_responses
from chatledger.store.turns import DEFAULT_LEASE_SECONDS, DEFAULT_WAIT_SECONDS, Turn, TurnGate

__all__ = ["SLOT_STREAM", "Session", "TurnScope"]

SLOT_STREAM = "agentchat"
Item = TypeVar("Item", bound=BaseAgentEvent | BaseChatMessage)


@dataclass
class TurnScope:
    """One entry into a request's turn: ``recorded`` is the finished request's outcome (a duplicate), else None.

    The body sets ``outcome`` (a JSON object) when the request finished; it is recorded
    as the answer to every later delivery.
    """

    recorded: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None


class Session:
    """The shared state of one request: slots, the pending turn, the cut, replay checks.

    Args:
        store: the log.
        conversation_id: the conversation (created if missing, unless replaying).
        request_id: identifies the request across retries (default: a new id).
        replay: compare with the record instead of writing.
        lease_seconds: the lease on the request's turn and on each tool call (default 30):
            how long a retry waits at most after the worker running the request died.
        wait_seconds: how long the request waits behind another request on the same
            conversation before ``ConversationBusy`` (default 60).
        executor_options: passed to each agent's executor (``worker_id``, ``max_attempts``, ...).
    """

    def __init__(
        self,
        store: Store,
        conversation_id: str,
        *,
        request_id: str | None = None,
        replay: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        **executor_options: Any,
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.request_id = request_id or uuid.uuid4().hex
        self.replay = replay
        self.gate = TurnGate(store, lease_seconds=lease_seconds, wait_seconds=wait_seconds)
        self.executor_options = {"lease_seconds": lease_seconds, **executor_options}
        self._turn: Turn | None = None
        self._depth = 0
        self.agents: set[str] = set()
        self.team_managed = False
        self.workbenches: list[Any] = []
        self.models: list[Any] = []
        self.produced: list[Record] = []
        self._seq = 0
        self._ids: dict[str, str] = {}
        self._pending: list[BaseAgentEvent | BaseChatMessage] = []
        self._slots: dict[str, dict[str, Any]] | None = None
        self._prefix: list[tuple[dict[str, Any], dict[str, Any] | None]] | None = None
        self._views: dict[str, list[LLMMessage]] = {}
        self._snapshot: Snapshot | None = None
        self._recorded: list[MessageAppended] | None = None
        if not replay:
            try:
                store.version(conversation_id)  # a read: most requests continue a conversation
            except NotFoundError:
                store.start_conversation(conversation_id, exist_ok=True)

    # -- the turn --------------------------------------------------------------------------------

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[TurnScope]:
        """Hold the conversation's turn for this request while the block runs (re-entrant).

        The outermost entry claims the turn (waiting behind another request, bounded);
        a request that finished already gets ``scope.recorded`` and holds nothing. On a
        normal exit the body's ``scope.outcome`` is recorded; on an exception, or
        without an outcome, the turn is released for a retry. Replay holds no turn.

        Raises:
            ConversationBusy: another request kept the turn for all of ``wait_seconds``.
        """
        scope = TurnScope()
        self._depth += 1
        outer = self._depth == 1 and not self.replay
        halt = None
        try:
            if outer:
                admission = await self.gate.aenter(self.conversation_id, self.request_id)
                scope.recorded = admission.recorded
                self._turn = admission.turn
                if self._turn is not None:
                    halt = self._turn.keep_alive()
            yield scope
        except BaseException:
            if outer and self._turn is not None:
                self._release(halt)
            raise
        finally:
            self._depth -= 1
        if outer and self._turn is not None:
            if scope.outcome is None:
                self._release(halt)
                return
            turn, self._turn = self._turn, None
            if halt is not None:
                halt()
            try:
                turn.complete(scope.outcome)
            except ValidationError:  # too large to keep: later deliveries re-run from the record
                turn.complete({"rerun": True})

    def _release(self, halt: Any) -> None:
        turn, self._turn = self._turn, None
        if halt is not None:
            halt()
        if turn is not None:
            turn.release()

    # -- slots ----------------------------------------------------------------------------------

    def _slot_table(self) -> dict[str, dict[str, Any]]:
        if self._slots is None:
            prefix = f"{self.request_id}/"
            self._slots = {
                key: value
                for key, value in recorded_responses(self.store, self.conversation_id, stream=SLOT_STREAM)
                if key.startswith(prefix)
            }
        return self._slots

    def _claim(self, item: BaseAgentEvent | BaseChatMessage) -> tuple[str, bool]:
        """The stored id of an item and whether this session sees it for the first time."""
        known = self._ids.get(item.id)
        if known is not None:
            return known, False
        key = f"{self.request_id}/{self._seq}"
        self._seq += 1
        proposal = {"message_id": item.id, "type": type(item).__name__}
        winner = self._slot_table().get(key)
        if winner is None:
            if self.replay:
                raise ReplayDivergence(
                    self.conversation_id, self.position(), "the end of the recorded request", _summary(item)
                )
            winner = record_response(self.store, self.conversation_id, key, proposal, stream=SLOT_STREAM)
            self._slot_table()[key] = winner
        if winner["type"] != proposal["type"]:
            expected = f"a {winner['type']} at step {key}"
            if self.replay:
                raise ReplayDivergence(self.conversation_id, self.position(), expected, _summary(item))
            raise ConflictError(
                f"request {self.request_id!r} of {self.conversation_id!r} recorded {expected}, "
                f"this run produced a {proposal['type']}"
            )
        stored = str(winner["message_id"])
        self._ids[item.id] = stored
        self._ids[stored] = stored
        return stored, True

    def observe(self, item: Item) -> Item:
        """Take one item of the run: store it (with its turn) and return it under its stored id."""
        if isinstance(item, ModelClientStreamingChunkEvent):
            return item
        stored, fresh = self._claim(item)
        copy = item if item.id == stored else cast(Item, item.model_copy(update={"id": stored}))
        if fresh:
            self._pending.append(copy)
        if isinstance(item, BaseChatMessage):
            self.flush()
        return copy

    def flush(self) -> None:
        """Store the pending turn as one atomic batch (in replay: compare it with the record)."""
        items, self._pending = self._pending, []
        records = [r for it in items for r in to_records(it, it.id, agents=frozenset(self.agents))]
        if not records:
            return
        for _, _, meta in records:
            meta["request"] = self.request_id
        if self.replay:
            self._compare(records)
        else:
            try:
                self.store.append(
                    self.conversation_id,
                    [m for _, m, _ in records],
                    message_ids=[i for i, _, _ in records],
                    meta=[meta for _, _, meta in records],
                )
            except ConflictError:
                kinds = ", ".join(f"a {meta.get('autogen_type')} from {meta.get('source')!r}" for _, _, meta in records)
                raise ConflictError(
                    f"request {self.request_id!r} of conversation {self.conversation_id!r} was stored before with "
                    f"different content ({kinds} differs from the stored one): a request id (the client's "
                    "message id) may be reused only for the same request"
                ) from None
        self.produced.extend(records)

    # -- the cut ----------------------------------------------------------------------------------

    def _messages(self) -> list[MessageAppended]:
        if self._recorded is None or not self.replay:
            events = self.store.events(self.conversation_id)
            self._recorded = [e for e in events if isinstance(e, MessageAppended)]
        return self._recorded

    def prefix(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """The stored ``(message, meta)`` pairs before this request's first stored message.

        Read through the process's history cache (:mod:`chatledger.adapters.agentchat.history`):
        a conversation this process read before costs the messages appended since.
        """
        if self._prefix is not None:
            return self._prefix
        out: list[tuple[dict[str, Any], dict[str, Any] | None]]
        if self.replay:
            out = []
            started = False
            for event in self._messages():
                if (event.meta or {}).get("request") == self.request_id:
                    started = True
                    break
                out.append((event.message, event.meta))
        else:
            self._snapshot = HISTORY_CACHE.read(self.store, self.conversation_id)
            out, started = self._snapshot.prefix(self.request_id)
        if started:
            self._prefix = out
        return out

    def prefix_view(self, agent: str) -> list[LLMMessage]:
        """The history before this request from ``agent``'s point of view (read once per request)."""
        view = self._views.get(agent)
        if view is None:
            prefix = self.prefix()
            snapshot = self._snapshot
            view = model_view(prefix, agent) if snapshot is None else snapshot.view(agent, len(prefix))
            if self._prefix is not None:
                self._views[agent] = view
        return list(view)

    # -- replay -----------------------------------------------------------------------------------

    def request_records(self) -> list[tuple[int, MessageAppended]]:
        """This request's stored messages with their index in the conversation's messages."""
        return [(i, e) for i, e in enumerate(self._messages()) if (e.meta or {}).get("request") == self.request_id]

    def position(self) -> int:
        """The index (in the conversation's messages) of the first message this run has not matched."""
        matched = {mid for mid, _, _ in self.produced}
        for i, event in self.request_records():
            if event.message_id not in matched:
                return i
        return len(self._messages())

    def _compare(self, records: list[Record]) -> None:
        by_id = {e.message_id: (i, e) for i, e in self.request_records()}
        for mid, message, _ in records:
            found = by_id.get(mid)
            if found is None:
                raise ReplayDivergence(
                    self.conversation_id, self.position(), "the end of the recorded request", message
                )
            if found[1].message != message:
                raise ReplayDivergence(self.conversation_id, found[0], found[1].message, message)

    def check_complete(self) -> None:
        """In replay: raise ``ReplayDivergence`` if the record holds messages this run did not produce."""
        matched = {mid for mid, _, _ in self.produced}
        for i, event in self.request_records():
            if event.message_id not in matched:
                raise ReplayDivergence(self.conversation_id, i, event.message, "the run ended")


def _summary(item: BaseAgentEvent | BaseChatMessage) -> str:
    return f"{type(item).__name__} from {item.source}: {item.to_text()[:200]}"
