"""chatledger.projections: read models folded from the log (chat history, tool audit, index, search)."""

from .history import chat_history, fold_history, history_from_events

__all__ = ["chat_history", "fold_history", "history_from_events"]
