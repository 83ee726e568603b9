"""The in-memory backend of the log: the reference implementation, for tests and notebooks (``memory://``)."""

from chatledger.store.backends.memory.backend import MemoryBackend
from chatledger.store.backends.memory.recorder import MemoryRecorder

__all__ = ["MemoryBackend", "MemoryRecorder"]
