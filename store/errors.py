"""The one error hierarchy of chatledger.

Every error a user can see derives from :class:`ChatledgerError`. Driver errors
(``sqlite3``, ``psycopg``) are translated at the backend boundary and never
escape. Each error says what happened and, where it helps, what to do next.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailable",
    "ChatledgerError",
    "ConcurrencyError",
    "ConflictError",
    "ConversationBusy",
    "EncryptedPayloadError",
    "ErasedError",
    "ErasureNotCertain",
    "IntegrityError",
    "InvalidHistoryError",
    "LeaseLost",
    "NotFoundError",
    "PendingToolCallsError",
    "ReplayDivergence",
    "ValidationError",
]


class ChatledgerError(Exception):
    """Base class of every error chatledger raises on purpose."""


class ValidationError(ChatledgerError, ValueError):
    """Raised when input is malformed; ``field`` names the offending field. Nothing was written."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class EncryptedPayloadError(ValidationError):
    """Raised when a store without the master key meets an encrypted payload or conversation (read or append)."""

    def __init__(self, conversation_id: str, doing: str = "reading") -> None:
        self.conversation_id = conversation_id
        super().__init__(
            "encryption",
            f"conversation {conversation_id!r} is encrypted: {doing} it needs the store opened with its "
            "master key (CHATLEDGER_MASTER_KEY); nothing was written",
        )


class ConflictError(ChatledgerError):
    """Raised when an id is reused for different content (a message, a tool call, a conversation)."""


class ConcurrencyError(ChatledgerError):
    """Raised when ``expected_version`` is stale: another writer appended first. Reload and retry."""

    def __init__(self, conversation_id: str, expected: int, actual: int) -> None:
        self.conversation_id = conversation_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"conversation {conversation_id!r} is at version {actual}, not {expected}: "
            "another writer appended first; reload and retry"
        )


class ConversationBusy(ChatledgerError):
    """Raised when a request waited its bounded time while another request held the conversation's turn.

    Nothing of the request was stored; retry it (with the same request id) after
    ``retry_after`` seconds. An HTTP app answers 409 Conflict with ``Retry-After``.
    """

    def __init__(
        self, conversation_id: str, request_id: str, holder: str | None, retry_after: float | None = None
    ) -> None:
        self.conversation_id = conversation_id
        self.request_id = request_id
        self.holder = holder
        self.retry_after = retry_after
        what = "another delivery of this request" if holder == request_id else f"request {holder!r}"
        when = "" if retry_after is None else f"; its lease ends in {retry_after:.1f} s"
        super().__init__(
            f"conversation {conversation_id!r} is busy: {what} holds its turn{when}; "
            f"request {request_id!r} was not run: retry it later with the same id"
        )


class NotFoundError(ChatledgerError, LookupError):
    """Raised when a conversation (or other record) does not exist for this store's tenant."""


class PendingToolCallsError(ChatledgerError):
    """Raised when a history would hand a model an assistant tool call that has no result yet."""

    def __init__(self, conversation_id: str, tool_call_ids: list[str]) -> None:
        self.conversation_id = conversation_id
        self.tool_call_ids = tool_call_ids
        super().__init__(
            f"conversation {conversation_id!r} has tool calls without a result: {tool_call_ids}; "
            "run them through the executor, close them, or pass allow_pending=True"
        )


class LeaseLost(ChatledgerError):
    """Raised when a worker tries to record an outcome for a tool call whose lease it no longer holds."""


class ReplayDivergence(ChatledgerError):
    """Raised when a replayed run asks for something the record does not have, at ``position``."""

    def __init__(self, conversation_id: str, position: int, expected: Any, actual: Any) -> None:
        self.conversation_id = conversation_id
        self.position = position
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"replay of {conversation_id!r} diverged at position {position}: recorded {expected!r}, new run {actual!r}"
        )


class ErasureNotCertain(ChatledgerError):
    """Raised when a data key is destroyed (the conversation is unreadable through chatledger) but copies
    of the key's bytes may still be in the store's files, because another connection still needs them."""

    def __init__(self, conversation_id: str, reason: str) -> None:
        self.conversation_id = conversation_id
        self.reason = reason
        super().__init__(
            f"conversation {conversation_id!r} is erased (its data key is destroyed and it reads as erased), "
            f"but the key's bytes may still be recoverable from the store's files: {reason}; "
            "call chatledger.store.integrity.crypto.purge(store) (or erase again) once that is over"
        )


class IntegrityError(ChatledgerError):
    """Raised when stored events fail verification (a hash chain is broken)."""


class InvalidHistoryError(ChatledgerError):
    """Raised when a history would break the provider rule: every assistant tool call answered
    by exactly one tool message, immediately after it, before any other message."""

    def __init__(self, where: str, violations: list[Any]) -> None:
        self.where = where
        self.violations = violations
        first = violations[0] if violations else "no violation given"
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{where} is not a history a model API accepts: {first}{more}")


class ErasedError(ChatledgerError):
    """Raised when reading or writing the payloads of a conversation whose data key was erased."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} was erased: its data key is destroyed and its events "
            "are unreadable (they stay in the log and still verify)"
        )


class BackendUnavailable(ChatledgerError):
    """Raised when the database cannot be reached or stays locked; the operation did not complete."""
