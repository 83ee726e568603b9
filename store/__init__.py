"""chatledger.store: the write side — event schemas, the log and its backends, errors.

Open a store by URL and append chat messages::

    from chatledger.store import open_store
    store = open_store("sqlite:///chat.db")
    conv = store.start_conversation(metadata={"user": "u1"})
    store.append(conv, [{"role": "user", "content": "Weather in Rome?"}])
"""

from chatledger.store.errors import (
    BackendUnavailable,
    ChatledgerError,
    ConcurrencyError,
    ConflictError,
    ConversationBusy,
    EncryptedPayloadError,
    ErasedError,
    ErasureNotCertain,
    IntegrityError,
    InvalidHistoryError,
    LeaseLost,
    NotFoundError,
    PendingToolCallsError,
    ReplayDivergence,
    ValidationError,
)
from chatledger.store.events import (
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
from chatledger.store.external import DomainEventRecorded, PositionTracked
from chatledger.store.fork import fork
from chatledger.store.handle import ConversationInfo, Store
from chatledger.store.tools.executor import Executor, ToolOutcome, current_idempotency_key, tool_result_message_id
from chatledger.store.tools.registry import ToolRegistry, tool
from chatledger.store.tools.worker import run_worker
from chatledger.store.turns import Admission, Turn, TurnGate
from chatledger.store.url import open_store
from chatledger.store.writer import Draft, Writer

__all__ = [
    "Admission",
    "BackendUnavailable",
    "ChatledgerError",
    "ConcurrencyError",
    "ConflictError",
    "ConversationBusy",
    "ConversationInfo",
    "ConversationStarted",
    "DomainEventRecorded",
    "Draft",
    "EncryptedPayloadError",
    "ErasedError",
    "ErasureNotCertain",
    "Event",
    "Executor",
    "IntegrityError",
    "InvalidHistoryError",
    "LeaseLost",
    "MessageAppended",
    "ModelResponseRecorded",
    "NotFoundError",
    "PendingToolCallsError",
    "PositionTracked",
    "ReplayDivergence",
    "Store",
    "ToolCallClaimed",
    "ToolCallFailed",
    "ToolCallOutcomeUnknown",
    "ToolCallRequested",
    "ToolCallSucceeded",
    "ToolOutcome",
    "ToolRegistry",
    "Turn",
    "TurnGate",
    "ValidationError",
    "Writer",
    "current_idempotency_key",
    "fork",
    "open_store",
    "run_worker",
    "tool",
    "tool_result_message_id",
]
