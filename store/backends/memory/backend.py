"""The in-memory backend: a recorder, subscription rows and data keys in process memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatledger.store.backends.backend import BackendBase
from chatledger.store.backends.memory.recorder import MemoryRecorder

if TYPE_CHECKING:
    from chatledger.store.integrity.keystore import KeyStore
    from chatledger.store.subscriptions import SubscriptionTracking

__all__ = ["MemoryBackend"]


class MemoryBackend(BackendBase[MemoryRecorder]):
    """Everything in one process's memory; every store opened on one backend object shares it.

    Each ``memory://`` URL opens a fresh, private log.
    """

    read_model_kind = "memory"

    def __init__(self, recorder: MemoryRecorder | None = None) -> None:
        super().__init__(recorder if recorder is not None else MemoryRecorder())

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        """A fresh, empty log (``memory://``; options are ignored)."""
        return cls()

    def _make_tracking(self) -> SubscriptionTracking:
        from chatledger.store.subscriptions import MemoryTracking

        return MemoryTracking()

    def _make_key_store(self) -> KeyStore:
        from chatledger.store.integrity.keystore import MemoryKeyStore

        return MemoryKeyStore()
