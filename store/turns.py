"""The turn discipline: one request at a time per conversation, each request run once.

Every adapter (AgentChat agents and teams, classic pairs and group chats) runs a
request through a :class:`TurnGate`. The rule, in the ledger's own terms:

* **A request in flight is claimed.** Claiming is an append to the
  conversation's turn stream (``{conversation}\\x1fturns``, kind ``"turns"``)
  with ``expected_version`` = the version the claimer read: of two claimers that
  read the same version exactly one appends, the database decides (the same
  discipline as tool calls; never an in-memory lock). The claim is a lease: its
  holder renews it while the turn runs (every third of ``lease_seconds``).
* **A conversation's turns are serialised by that lease.** A second request,
  a duplicate delivery of the running one or a retry finds the lease live and
  waits, polling, for at most ``wait_seconds``; then it raises
  :class:`~chatledger.store.errors.ConversationBusy` (an HTTP app answers 409
  with ``Retry-After``). Nothing it carries has been stored by then.
* **A finished request is recorded once.** Completing appends
  ``turn.completed`` (the adapter's outcome, a JSON object) to the request's own
  stream ``{conversation}\\x1frequest\\x1f{request_id}`` under the unique key
  ``"outcome"``, and releases the lease, in one transaction. A duplicate that
  finds the outcome returns it (:attr:`Admission.recorded`) without running
  anything: no model call, no tool run, however many duplicates arrive.
* **A crashed holder is taken over when its lease expires.** The next claimer
  records ``takeover_of`` (the request whose holder died). A failed request
  releases the lease at once (``turn.released``), so the next one need not wait.

A request that waited behind another runs on the other's result: its history is
read after the other's turn was stored. Since adapters store a turn's messages
only while they hold the lease, requests never interleave inside the stored
history, and the history stays provider-valid (see :mod:`chatledger.store.validity`)
after any interleaving of requests, duplicates, retries and crashes.

``lease_seconds`` (default 30) is also how long a retry waits after its worker was
killed mid-turn: the lease must expire first. Shorter leases recover sooner but
renew more often.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from chatledger.store.backends.recorder import CALL_SEPARATOR, side_stream_id
from chatledger.store.errors import (
    ConcurrencyError,
    ConflictError,
    ConversationBusy,
    LeaseLost,
    NotFoundError,
    ValidationError,
)
from chatledger.store.events import Event, register_event
from chatledger.store.handle import Store
from chatledger.store.writer import Draft, check_id, new_id

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_WAIT_SECONDS",
    "Admission",
    "Turn",
    "TurnClaimed",
    "TurnCompleted",
    "TurnGate",
    "TurnLeaseRenewed",
    "TurnReleased",
    "request_stream_id",
    "turn_stream_id",
]

DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_WAIT_SECONDS = 60.0
OUTCOME_KEY = "outcome"


@register_event
class TurnClaimed(Event):
    """A worker took a conversation's turn lease to run one request."""

    TYPE: ClassVar[str] = "turn.claimed"

    request_id: str
    worker_id: str
    lease_expires_at: datetime
    takeover_of: str | None = None


@register_event
class TurnLeaseRenewed(Event):
    """The holder of a turn lease extended it while its request was still running."""

    TYPE: ClassVar[str] = "turn.lease_renewed"

    request_id: str
    worker_id: str
    lease_expires_at: datetime


@register_event
class TurnReleased(Event):
    """The holder gave the turn lease back (``completed`` says whether its request finished)."""

    TYPE: ClassVar[str] = "turn.released"

    request_id: str
    worker_id: str
    completed: bool = False


@register_event
class TurnCompleted(Event):
    """A request finished; ``outcome`` is what every delivery of it is answered with."""

    TYPE: ClassVar[str] = "turn.completed"

    request_id: str
    outcome: dict[str, Any]


def turn_stream_id(conversation_id: str) -> str:
    """The stream that serialises a conversation's turns."""
    return side_stream_id(conversation_id, "turns")


def request_stream_id(conversation_id: str, request_id: str) -> str:
    """The stream that records one request's outcome."""
    return f"{conversation_id}{CALL_SEPARATOR}request{CALL_SEPARATOR}{request_id}"


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@dataclass
class Turn:
    """A held turn lease: the request it runs and the version its next append must expect."""

    gate: TurnGate
    conversation_id: str
    request_id: str
    version: int
    lease_until: float
    takeover_of: str | None = None
    done: bool = False

    def renew(self) -> None:
        """Extend the lease by ``lease_seconds`` from now.

        Raises:
            LeaseLost: someone else took the turn over (this holder stalled past its lease).
        """
        gate = self.gate
        until = gate.clock() + gate.lease_seconds
        payload = {"request_id": self.request_id, "worker_id": gate.worker_id, "lease_expires_at": _at(until)}
        try:
            with gate.store.transaction() as w:
                w.append(
                    turn_stream_id(self.conversation_id),
                    [Draft(TurnLeaseRenewed, payload, key=f"renew:{self.version + 1}")],
                    expected_version=self.version,
                    lease_until=until,
                )
        except (ConcurrencyError, ConflictError):
            raise LeaseLost(
                f"conversation {self.conversation_id!r}: the turn of request {self.request_id!r} was taken over"
            ) from None
        self.version += 1
        self.lease_until = until

    def complete(self, outcome: Mapping[str, Any]) -> dict[str, Any]:
        """Record the request's outcome and release the lease; return the recorded outcome.

        The first outcome recorded for a request wins: when a taker-over finished the
        same request first, its outcome is returned instead of this one.

        Raises:
            ValidationError: the outcome is not a JSON object (nothing is written).
        """
        if not isinstance(outcome, Mapping):
            raise ValidationError("outcome", "must be a JSON object")
        self.done = True
        gate, conv, rid = self.gate, self.conversation_id, self.request_id
        draft = Draft(TurnCompleted, {"request_id": rid, "outcome": dict(outcome)}, key=OUTCOME_KEY, label="outcome")
        release = self._release_draft(completed=True)
        sid = request_stream_id(conv, rid)
        for with_release in (True, False):
            try:
                with gate.store.transaction() as w:
                    if w.head(sid) is None:
                        w.create_stream(sid, conv, "request", status="completed")
                    w.append(sid, [draft])
                    if with_release:
                        w.append(
                            turn_stream_id(conv),
                            [release],
                            expected_version=self.version,
                            status="free",
                            lease_until=None,
                        )
                return dict(outcome)
            except ConcurrencyError:
                continue  # the lease was taken over: record the outcome alone (first writer wins)
            except ConflictError:
                break  # another delivery of this request recorded its outcome first
        if with_release:
            self._release_quietly()
        stored = gate.recorded(conv, rid)
        return dict(outcome) if stored is None else stored

    def release(self) -> None:
        """Give the lease back without an outcome (the request failed; a retry may run it again)."""
        if self.done:
            return
        self.done = True
        self._release_quietly()

    def _release_draft(self, *, completed: bool) -> Draft:
        payload = {"request_id": self.request_id, "worker_id": self.gate.worker_id, "completed": completed}
        return Draft(TurnReleased, payload, key=f"release:{self.version + 1}")

    def _release_quietly(self) -> None:
        try:
            with self.gate.store.transaction() as w:
                w.append(
                    turn_stream_id(self.conversation_id),
                    [self._release_draft(completed=False)],
                    expected_version=self.version,
                    status="free",
                    lease_until=None,
                )
        except (ConcurrencyError, ConflictError):
            pass  # taken over already: nothing of ours to release

    def keep_alive(self) -> Callable[[], None]:
        """Start renewing the lease from a background thread (every third of the lease); return the stop."""
        stop = threading.Event()
        interval = self.gate.lease_seconds / 3

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    self.renew()
                except Exception:
                    return  # lost or unreachable: completing will tell

        thread = threading.Thread(target=beat, name="chatledger-turn-lease", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join(timeout=5)

        return halt

    @contextmanager
    def kept_alive(self) -> Iterator[Turn]:
        """Renew the lease while the block runs (see :meth:`keep_alive`)."""
        halt = self.keep_alive()
        try:
            yield self
        finally:
            halt()


@dataclass(frozen=True)
class Admission:
    """What :meth:`TurnGate.enter` decided: run the request (``turn``) or answer it (``recorded``)."""

    turn: Turn | None
    recorded: dict[str, Any] | None


@dataclass(frozen=True)
class _Wait:
    holder: str | None
    lease_until: float | None


class TurnGate:
    """Admits requests into conversations one turn at a time (see the module docstring).

    Args:
        store: the log.
        lease_seconds: how long a turn is held without renewal; a retry after a crash
            waits this long at most before it takes over (default 30).
        wait_seconds: how long a request waits behind a live turn before
            :class:`ConversationBusy` (default 60; 0 refuses at once).
        poll_seconds: how often a waiting request looks again.
        worker_id: recorded on claims (default: a random id per gate).
        clock: epoch seconds (injectable for tests).
    """

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        poll_seconds: float = 0.05,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("lease_seconds", lease_seconds), ("wait_seconds", wait_seconds)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 10**7:
                raise ValidationError(name, f"must be a number of seconds, got {value!r}")
        if lease_seconds <= 0:
            raise ValidationError("lease_seconds", "must be positive")
        self.store = store
        self.lease_seconds = float(lease_seconds)
        self.wait_seconds = float(wait_seconds)
        self.poll_seconds = poll_seconds
        self.worker_id = worker_id or f"turns-{new_id()[:12]}"
        self.clock = clock

    # -- reading --------------------------------------------------------------------------------

    def recorded(self, conversation_id: str, request_id: str) -> dict[str, Any] | None:
        """The recorded outcome of a request, or None when it has not finished."""
        sid = request_stream_id(conversation_id, request_id)
        head = self.store.recorder.get_head(sid)
        if head is None or head.tenant != self.store.tenant:
            return None
        for event in self.store.stream_events(sid):
            if isinstance(event, TurnCompleted):
                return dict(event.outcome)
        return None

    def holder(self, conversation_id: str) -> tuple[str | None, float | None]:
        """The request holding the conversation's turn and its lease deadline ((None, None) when free)."""
        sid = turn_stream_id(conversation_id)
        head = self.store.recorder.get_head(sid)
        if head is None or head.tenant != self.store.tenant or head.status != "busy":
            return None, None
        last = self.store.stream_events(sid, after=head.version - 1)
        rid = getattr(last[-1], "request_id", None) if last else None
        return rid, head.lease_until

    # -- claiming -------------------------------------------------------------------------------

    def _step(self, conversation_id: str, request_id: str) -> Admission | _Wait | None:
        """One look: an admission, a wait (someone holds a live lease), or None (raced: look again)."""
        recorded = self.recorded(conversation_id, request_id)
        if recorded is not None:
            return Admission(None, recorded)
        store, sid = self.store, turn_stream_id(conversation_id)
        head = store.recorder.get_head(sid)
        if head is not None and head.tenant != store.tenant:
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        now = self.clock()
        takeover: str | None = None
        if head is not None and head.status == "busy":
            holder, until = self.holder(conversation_id)
            if until is not None and until > now:
                return _Wait(holder, until)
            takeover = holder
        until = now + self.lease_seconds
        payload = {
            "request_id": request_id,
            "worker_id": self.worker_id,
            "lease_expires_at": _at(until),
            "takeover_of": takeover,
        }
        version = 0 if head is None else head.version
        try:
            with store.transaction() as w:
                conv = w.head(conversation_id)
                if conv is None or conv.kind != "conversation":
                    raise NotFoundError(f"conversation {conversation_id!r} does not exist")
                if w.head(request_stream_id(conversation_id, request_id)) is not None:
                    return None  # finished meanwhile: read its outcome
                if head is None:
                    w.create_stream(sid, conversation_id, "turns", status="free")
                draft = Draft(TurnClaimed, payload, key=f"claim:{version + 1}")
                w.append(sid, [draft], expected_version=version, status="busy", lease_until=until)
        except (ConcurrencyError, ConflictError):
            return None
        return Admission(Turn(self, conversation_id, request_id, version + 1, until, takeover), None)

    def _busy(self, conversation_id: str, request_id: str, wait: _Wait) -> ConversationBusy:
        retry = None if wait.lease_until is None else max(wait.lease_until - self.clock(), 0.0)
        return ConversationBusy(conversation_id, request_id, wait.holder, retry)

    def _check(self, conversation_id: str, request_id: str) -> None:
        check_id(conversation_id, "conversation_id")
        check_id(request_id, "request_id")
        if CALL_SEPARATOR in request_id:
            raise ValidationError("request_id", "contains a control character")

    def enter(self, conversation_id: str, request_id: str, *, wait_seconds: float | None = None) -> Admission:
        """Claim the conversation's turn for ``request_id``, or return the request's recorded outcome.

        Waits (polling) while another request holds a live lease, for at most
        ``wait_seconds`` (default: the gate's).

        Raises:
            ConversationBusy: the turn stayed taken for the whole wait; nothing was written.
            NotFoundError: the conversation does not exist for this tenant.
            ValidationError: an id is malformed.
        """
        attempts = self._attempts(conversation_id, request_id, wait_seconds)
        while isinstance(step := next(attempts), float):
            time.sleep(step)
        return step

    async def aenter(self, conversation_id: str, request_id: str, *, wait_seconds: float | None = None) -> Admission:
        """The async form of :meth:`enter` (waits with ``asyncio.sleep``)."""
        attempts = self._attempts(conversation_id, request_id, wait_seconds)
        while isinstance(step := next(attempts), float):
            await asyncio.sleep(step)
        return step

    def _attempts(
        self, conversation_id: str, request_id: str, wait_seconds: float | None
    ) -> Iterator[Admission | float]:
        """Look until admitted: yields the admission, or how long to pause before looking again."""
        self._check(conversation_id, request_id)
        deadline = time.monotonic() + (self.wait_seconds if wait_seconds is None else wait_seconds)
        while True:
            step = self._step(conversation_id, request_id)
            if isinstance(step, Admission):
                yield step
                return
            if isinstance(step, _Wait):
                if time.monotonic() >= deadline:
                    raise self._busy(conversation_id, request_id, step)
                yield self._pause(step, deadline)

    def _pause(self, wait: _Wait, deadline: float) -> float:
        pause = self.poll_seconds
        if wait.lease_until is not None:
            pause = min(pause, max(wait.lease_until - self.clock(), 0.0) + 0.001)
        return max(min(pause, deadline - time.monotonic()), 0.0)
