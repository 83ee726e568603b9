"""chatledger.store: the write side — event schemas, the log and its backends, errors.

Open a store by URL and append chat messages::

    from chatledger.store import open_store
    store = open_store("sqlite:///chat.db")
    conv = store.start_conversation(metadata={"user": "u1"})
    store.append(conv, [{"role": "user", "content": "Weather in Rome?"}])
"""

from .errors import (
    BackendUnavailable,
    ChatledgerError,
    ConcurrencyError,
    ConflictError,
    IntegrityError,
    LeaseLost,
    NotFoundError,
    PendingToolCallsError,
    ReplayDivergence,
    ValidationError,
)
from .events import (
    ConversationStarted,
    Event,
    MessageAppended,
    ModelResponseRecorded,
    ToolCallClaimed,
    ToolCallFailed,
    ToolCallOutcomeUnknown,
    ToolCallRequested,
    ToolCallSucceeded,
)
from .log import ConversationInfo, Draft, Store, Writer
from .url import open_store

__all__ = [
    "BackendUnavailable",
    "ChatledgerError",
    "ConcurrencyError",
    "ConflictError",
    "ConversationInfo",
    "ConversationStarted",
    "Draft",
    "Event",
    "IntegrityError",
    "LeaseLost",
    "MessageAppended",
    "ModelResponseRecorded",
    "NotFoundError",
    "PendingToolCallsError",
    "ReplayDivergence",
    "Store",
    "ToolCallClaimed",
    "ToolCallFailed",
    "ToolCallOutcomeUnknown",
    "ToolCallRequested",
    "ToolCallSucceeded",
    "ValidationError",
    "Writer",
    "open_store",
]
