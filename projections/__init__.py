"""chatledger.projections: read models folded from the log (chat history, tool audit, index, search)."""

from chatledger.projections.builtin.audit import AuditRow, audit_key, fold_audit, tool_audit
from chatledger.projections.builtin.history import chat_history, fold_history, history_from_events
from chatledger.projections.builtin.index import ConversationIndex, IndexEntry, conversation_index
from chatledger.projections.builtin.search import MessageSearch, SearchHit, search
from chatledger.projections.runner import ProjectionRunner, default_projections, projection_states, register_projection
from chatledger.projections.tables import Projection, Table, Tables
from chatledger.projections.tracking import ProjectionState
from chatledger.store.subscriptions import Subscription, SubscriptionState, SubscriptionStopped, subscribe

__all__ = [
    "AuditRow",
    "ConversationIndex",
    "IndexEntry",
    "MessageSearch",
    "Projection",
    "ProjectionRunner",
    "ProjectionState",
    "SearchHit",
    "Subscription",
    "SubscriptionState",
    "SubscriptionStopped",
    "Table",
    "Tables",
    "audit_key",
    "chat_history",
    "conversation_index",
    "default_projections",
    "fold_audit",
    "fold_history",
    "history_from_events",
    "projection_states",
    "register_projection",
    "search",
    "subscribe",
    "tool_audit",
]
