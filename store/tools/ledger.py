"""The tool-call ledger: one stream per tool call, and the claim protocol over it.

A call's stream (``call_stream_id(conversation_id, tool_call_id)``, kind
``"tool_call"``) holds its lifecycle::

    tool_call.requested -> tool_call.claimed [-> tool_call.lease_renewed ...]
        -> tool_call.succeeded | tool_call.failed (final, or not: a retry follows)
        | tool_call.outcome_unknown

Every write here is an append with ``expected_version`` inside one
:meth:`Store.transaction`, so the database decides races: of two claimers that
read the same version exactly one appends, the other gets ConcurrencyError.
A holder records its outcome with ``expected_version`` = the version of its own
last event (the fencing token moves forward with each renewal); if anyone else
appended meanwhile (a re-claim after expiry, an outcome-unknown mark) the holder
gets :class:`LeaseLost` and its result is discarded. The final outcome is stored
under the idempotency key ``"outcome"``, so the unique ``(stream_id, key)`` index
makes a second final outcome impossible even in principle.

The stream head's ``status`` and ``lease_until`` (epoch seconds) are updated on
every append, so workers find claimable calls by listing heads, without
reading streams: ``requested``, ``retry`` (``lease_until`` = not before),
``claimed`` (``lease_until`` = lease expiry), and the final ``succeeded``,
``failed``, ``outcome_unknown``.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.errors import ConcurrencyError, ConflictError, LeaseLost, NotFoundError
from chatledger.store.events import (
    Event,
    MessageAppended,
    ToolCallClaimed,
    ToolCallFailed,
    ToolCallOutcomeUnknown,
    ToolCallRequested,
    ToolCallSucceeded,
    register_event,
)
from chatledger.store.handle import Store
from chatledger.store.messages import RESULT_ID_PREFIX
from chatledger.store.tools.compare import as_recorded
from chatledger.store.writer import Draft, Writer

__all__ = [
    "CLAIMABLE_STATUSES",
    "FINAL_STATUSES",
    "OUTCOME_KEY",
    "CallState",
    "Claim",
    "ToolCallLeaseRenewed",
    "claim_call",
    "final_draft",
    "fold_call",
    "idempotency_key",
    "load_call",
    "open_call",
    "outcome_content",
    "record_outcome",
    "renew_lease",
    "result_message",
    "tool_result_message_id",
]

FINAL_STATUSES = frozenset({"succeeded", "failed", "outcome_unknown"})
CLAIMABLE_STATUSES = ("requested", "retry", "claimed")
OUTCOME_KEY = "outcome"


@register_event
class ToolCallLeaseRenewed(Event):
    """The holder of a tool call's lease extended it while its tool was still running."""

    TYPE: ClassVar[str] = "tool_call.lease_renewed"

    tool_call_id: str
    worker_id: str
    lease_expires_at: datetime
    fencing_token: int


def tool_result_message_id(tool_call_id: str) -> str:
    """The message id of the tool-result message answering ``tool_call_id``.

    The id is reserved: a client may store a message under it only if that message is
    a tool result answering this very call (see :func:`chatledger.store.messages.check_reserved_id`).
    """
    return f"{RESULT_ID_PREFIX}{tool_call_id}"


def idempotency_key(conversation_id: str, tool_call_id: str) -> str:
    """The stable key a tool receives on every attempt of one call."""
    return f"{conversation_id}/{tool_call_id}"


def result_message(tool_call_id: str, content: str) -> dict[str, Any]:
    """The OpenAI tool-result message for a call."""
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


@dataclass(frozen=True)
class CallState:
    """A tool call as folded from its stream: where it stands and, when final, what the model sees."""

    conversation_id: str
    tool_call_id: str
    name: str
    arguments: str
    idempotent: bool
    message_id: str | None = None
    version: int = 0
    redacted: bool = False
    status: str = "requested"
    attempt: int = 0
    worker_id: str | None = None
    lease_until: float | None = None
    fencing_token: int | None = None
    last_error: str | None = None
    content: str | None = None
    is_error: bool = False

    @property
    def stream_id(self) -> str:
        """The call's stream."""
        return call_stream_id(self.conversation_id, self.tool_call_id)

    @property
    def final(self) -> bool:
        """Whether an outcome is recorded (it is then returned forever, never re-run)."""
        return self.status in FINAL_STATUSES


def outcome_content(event: Event, name: str) -> tuple[str, bool]:
    """What the model sees for a final outcome event, and whether it is an error."""
    if isinstance(event, ToolCallSucceeded):
        return event.result, False
    if isinstance(event, ToolCallFailed):
        return f"Error: {event.error}", True
    if isinstance(event, ToolCallOutcomeUnknown):
        return (
            f"Error: the outcome of tool call {event.tool_call_id} ({name}) is unknown: {event.reason}. "
            "It was not run again; check its effect before calling it again.",
            True,
        )
    raise TypeError(f"{type(event).__name__} is not a final outcome")


def _epoch(value: datetime) -> float:
    return value.timestamp()


def fold_call(state: CallState | None, event: Event) -> CallState | None:
    """Fold one event of a call stream into its state (a pure function; other events leave it)."""
    if isinstance(event, ToolCallRequested):
        return CallState(
            event.conversation_id,
            event.tool_call_id,
            event.name,
            event.arguments,
            event.idempotent,
            event.message_id,
            version=event.version,
            redacted=event.redacted,
        )
    if state is None:
        return None
    if isinstance(event, ToolCallClaimed):
        return replace(
            state,
            version=event.version,
            status="claimed",
            attempt=event.attempt,
            worker_id=event.worker_id,
            lease_until=_epoch(event.lease_expires_at),
            fencing_token=event.fencing_token,
        )
    if isinstance(event, ToolCallLeaseRenewed):
        return replace(state, version=event.version, lease_until=_epoch(event.lease_expires_at))
    if isinstance(event, ToolCallFailed) and not event.final:
        return replace(state, version=event.version, status="retry", last_error=event.error, lease_until=None)
    if isinstance(event, ToolCallSucceeded | ToolCallFailed | ToolCallOutcomeUnknown):
        content, is_error = outcome_content(event, state.name)
        status = {
            ToolCallSucceeded: "succeeded",
            ToolCallFailed: "failed",
            ToolCallOutcomeUnknown: "outcome_unknown",
        }[type(event)]
        return replace(
            state,
            version=event.version,
            status=status,
            attempt=max(state.attempt, getattr(event, "attempt", 0)),
            lease_until=None,
            content=content,
            is_error=is_error,
            last_error=getattr(event, "error", state.last_error),
        )
    return replace(state, version=event.version)


def load_call(store: Store, conversation_id: str, tool_call_id: str) -> CallState | None:
    """The call's current state, or None when it was never requested."""
    state: CallState | None = None
    for event in store.stream_events(call_stream_id(conversation_id, tool_call_id)):
        state = fold_call(state, event)
    if state is not None and state.status == "retry":
        # The not-before time of a retry is the executor's backoff, kept on the head only.
        head = store.recorder.get_head(state.stream_id)
        if head is not None and head.status == "retry":
            state = replace(state, lease_until=head.lease_until)
    return state


@dataclass
class Claim:
    """A held lease: who holds it, until when, and the version its next append must expect."""

    conversation_id: str
    tool_call_id: str
    name: str
    worker_id: str
    attempt: int
    fencing_token: int
    version: int
    lease_until: float
    idempotency_key: str

    @property
    def stream_id(self) -> str:
        """The call's stream."""
        return call_stream_id(self.conversation_id, self.tool_call_id)


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def open_call(
    w: Writer,
    conversation_id: str,
    tool_call_id: str,
    name: str,
    arguments: str,
    *,
    idempotent: bool,
    message_id: str | None = None,
) -> ToolCallRequested:
    """Create a call's stream with its ``tool_call.requested`` event, inside a transaction.

    Raises:
        NotFoundError: the conversation does not exist for this tenant.
        ConflictError: the call exists already (the caller re-reads it).
    """
    conv = w.head(conversation_id)
    if conv is None or conv.kind != "conversation":
        raise NotFoundError(f"conversation {conversation_id!r} does not exist")
    stream = call_stream_id(conversation_id, tool_call_id)
    w.create_stream(stream, conversation_id, "tool_call", status="requested")
    payload: dict[str, Any] = {
        "tool_call_id": tool_call_id,
        "name": name,
        "arguments": arguments,
        "message_id": message_id,
        "idempotent": idempotent,
    }
    if as_recorded(w.store, tool_call_id, name, arguments) != arguments:
        payload["redacted"] = True  # the log keeps no copy of the secret: only this requester can run it
    (event,) = w.append(stream, [Draft(ToolCallRequested, payload, key="requested")], status="requested")
    assert isinstance(event, ToolCallRequested)
    return event


def claim_call(
    store: Store,
    state: CallState,
    worker_id: str,
    lease_seconds: float,
    now: float,
    *,
    writer: Writer | None = None,
) -> Claim | None:
    """Try to take the lease on a call read at ``state.version``; None when another writer won.

    Only one claimer of a given version can append: the others see a moved head
    (ConcurrencyError) or a taken claim key (ConflictError) and get None.
    """
    attempt = state.attempt + 1
    version = state.version + 1
    until = now + lease_seconds
    key = idempotency_key(state.conversation_id, state.tool_call_id)
    draft = Draft(
        ToolCallClaimed,
        {
            "tool_call_id": state.tool_call_id,
            "worker_id": worker_id,
            "lease_expires_at": _at(until),
            "fencing_token": version,
            "attempt": attempt,
            "idempotency_key": key,
        },
        key=f"claim:{version}",
    )
    try:
        if writer is not None:
            writer.append(state.stream_id, [draft], expected_version=state.version, status="claimed", lease_until=until)
        else:
            with store.transaction() as w:
                w.append(
                    state.stream_id,
                    [draft],
                    expected_version=state.version,
                    status="claimed",
                    lease_until=until,
                )
    except (ConcurrencyError, ConflictError):
        return None
    return Claim(
        state.conversation_id,
        state.tool_call_id,
        state.name,
        worker_id,
        attempt,
        version,
        version,
        until,
        key,
    )


def renew_lease(store: Store, claim: Claim, lease_seconds: float, now: float) -> None:
    """Extend a held lease; the claim's version moves forward with it.

    Raises:
        LeaseLost: someone else appended to the call since (the lease was taken over or closed).
    """
    until = now + lease_seconds
    draft = Draft(
        ToolCallLeaseRenewed,
        {
            "tool_call_id": claim.tool_call_id,
            "worker_id": claim.worker_id,
            "lease_expires_at": _at(until),
            "fencing_token": claim.fencing_token,
        },
        key=f"renew:{claim.version + 1}",
    )
    try:
        with store.transaction() as w:
            w.append(claim.stream_id, [draft], expected_version=claim.version, lease_until=until)
    except (ConcurrencyError, ConflictError):
        raise LeaseLost(f"tool call {claim.tool_call_id!r}: the lease of {claim.worker_id!r} was taken over") from None
    claim.version += 1
    claim.lease_until = until


def record_outcome(
    w: Writer,
    state_or_claim: CallState | Claim,
    draft: Draft,
    status: str,
    *,
    expected_version: int,
    content: str,
    append_result: bool,
    lease_until: float | None = None,
) -> None:
    """Append an outcome to a call (and, when final and asked, its tool-result message), in ``w``.

    A final outcome and its tool-result message are written in the same
    transaction, so a history never holds one without the other.

    Raises:
        LeaseLost: the call moved past ``expected_version`` (another holder, or a final outcome).
    """
    conv, call_id = state_or_claim.conversation_id, state_or_claim.tool_call_id
    final_message = append_result and status in FINAL_STATUSES
    if final_message:
        # Lock order everywhere is conversation head, then call head: on PostgreSQL the
        # reverse order here would deadlock against an intake appending to the conversation.
        w.head(conv)
    try:
        w.append(
            call_stream_id(conv, call_id),
            [draft],
            expected_version=expected_version,
            status=status,
            lease_until=lease_until,
        )
    except (ConcurrencyError, ConflictError):
        raise LeaseLost(f"tool call {call_id!r} moved on; this outcome is discarded") from None
    if final_message:
        mid = tool_result_message_id(call_id)
        message = result_message(call_id, content)
        payload = {"message_id": mid, "message": message, "meta": {"executor": {"status": status}}}
        # A ConflictError here means the client answered the call itself under this id (a tool
        # message for this call, the only kind the id admits): the conversation keeps that
        # answer, the ledger the real outcome. The refusal comes before anything is written.
        with suppress(ConflictError):
            w.append(conv, [Draft(MessageAppended, payload, key=mid)])


def final_draft(kind: str, payload: dict[str, Any]) -> Draft:
    """The draft of a final outcome, stored under the call's one outcome key."""
    classes: dict[str, type[Event]] = {
        "succeeded": ToolCallSucceeded,
        "failed": ToolCallFailed,
        "outcome_unknown": ToolCallOutcomeUnknown,
    }
    return Draft(classes[kind], payload, key=OUTCOME_KEY)
