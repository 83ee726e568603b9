"""chatledger.projections: read models folded from the log (chat history, tool audit, index, search)."""

from .audit import AuditRow, audit_key, fold_audit, tool_audit
from .history import chat_history, fold_history, history_from_events

__all__ = [
    "AuditRow",
    "audit_key",
    "chat_history",
    "fold_audit",
    "fold_history",
    "history_from_events",
    "tool_audit",
]
