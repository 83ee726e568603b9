"""chatledger as a persistence module for eventsourcing applications.

Point an application at a chatledger store::

    PERSISTENCE_MODULE=chatledger.adapters.eventsourcing
    CHATLEDGER_URL=sqlite:///app.db

Its events, snapshots and tracking records become ordinary chatledger events
(hash-chained, verifiable, tenant-scoped, encrypted when the store encrypts), in
streams that are never conversations. See docs/eventsourcing.md.
"""

from chatledger.adapters.eventsourcing.factory import ChatledgerFactory
from chatledger.adapters.eventsourcing.recorders import (
    ChatledgerAggregateRecorder,
    ChatledgerApplicationRecorder,
    ChatledgerProcessRecorder,
    ChatledgerSubscription,
    ChatledgerTrackingRecorder,
)

Factory = ChatledgerFactory

__all__ = [
    "ChatledgerAggregateRecorder",
    "ChatledgerApplicationRecorder",
    "ChatledgerFactory",
    "ChatledgerProcessRecorder",
    "ChatledgerSubscription",
    "ChatledgerTrackingRecorder",
    "Factory",
]
