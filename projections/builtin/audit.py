"""The tool audit read model: one row per tool call, folded from the tool-call streams.

Each row says which tool ran with which arguments, for which conversation and
call, how it ended (``requested``, ``claimed``, ``retry``, ``succeeded``,
``failed``, ``outcome_unknown``), after how many attempts, on which worker,
when it started and finished, how long it took, and its result or error.

:func:`fold_audit` is the pure fold ``(row, event) -> row`` over one call's
events; rows are keyed by :func:`audit_key` (the call's stream id), so a
projection runner can materialize the table row by row. :func:`tool_audit`
folds the log directly and filters, for queries from Python and the CLI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from chatledger.store import (
    Event,
    Store,
    ToolCallClaimed,
    ToolCallFailed,
    ToolCallOutcomeUnknown,
    ToolCallRequested,
    ToolCallSucceeded,
)

__all__ = ["AuditRow", "audit_key", "fold_audit", "tool_audit"]


@dataclass(frozen=True)
class AuditRow:
    """One tool call as the audit shows it."""

    conversation_id: str
    tool_call_id: str
    tool: str
    arguments: str
    status: str = "requested"
    attempts: int = 0
    worker_id: str | None = None
    requested_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    result: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return asdict(self)


def audit_key(event: Event) -> str | None:
    """The row an event belongs to (its tool-call stream), or None for other events."""
    return event.stream_id if event.TYPE.startswith("tool_call.") else None


def _iso(value: datetime) -> str:
    return value.isoformat()


def fold_audit(row: AuditRow | None, event: Event) -> AuditRow | None:
    """Fold one event of a tool-call stream into its audit row (pure: no I/O, inputs unchanged)."""
    if isinstance(event, ToolCallRequested):
        return AuditRow(
            event.conversation_id,
            event.tool_call_id,
            event.name,
            event.arguments,
            requested_at=_iso(event.recorded_at),
        )
    if row is None:
        return None
    at = _iso(event.recorded_at)
    if isinstance(event, ToolCallClaimed):
        return replace(
            row,
            status="claimed",
            attempts=max(row.attempts, event.attempt),
            worker_id=event.worker_id,
            started_at=row.started_at or at,
        )
    if isinstance(event, ToolCallSucceeded):
        return replace(
            row,
            status="succeeded",
            worker_id=event.worker_id,
            finished_at=at,
            duration_ms=event.duration_ms,
            result=event.result,
            error=None,
        )
    if isinstance(event, ToolCallFailed):
        return replace(
            row,
            status="failed" if event.final else "retry",
            worker_id=event.worker_id,
            finished_at=at if event.final else None,
            duration_ms=event.duration_ms,
            error=event.error,
        )
    if isinstance(event, ToolCallOutcomeUnknown):
        return replace(row, status="outcome_unknown", finished_at=at, error=event.reason)
    return row


def tool_audit(
    store: Store,
    conversation_id: str | None = None,
    tool: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> list[AuditRow]:
    """The audit rows of this store's tenant, oldest call first, optionally filtered.

    With ``conversation_id`` only that conversation's call streams are read;
    otherwise the whole log is folded once, in global order. ``since`` and
    ``until`` (ISO-8601 UTC, inclusive and exclusive) select calls by the time
    they were requested.
    """
    rows: dict[str, AuditRow] = {}
    if conversation_id is not None:
        store.conversation(conversation_id)
        heads = store.recorder.list_heads("tool_call", store.tenant, conversation_id=conversation_id)
        events: Any = (e for h in heads for e in store.stream_events(h.stream_id))
    else:
        events = store.iter_all()
    for event in events:
        key = audit_key(event)
        if key is None:
            continue
        row = fold_audit(rows.get(key), event)
        if row is not None:
            rows[key] = row
    out = sorted(rows.values(), key=lambda r: r.requested_at or "")
    return [
        r
        for r in out
        if (tool is None or r.tool == tool)
        and (status is None or r.status == status)
        and (conversation_id is None or r.conversation_id == conversation_id)
        and (since is None or (r.requested_at or "") >= since)
        and (until is None or (r.requested_at or "") < until)
    ]
