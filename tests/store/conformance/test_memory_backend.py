"""The shipped backend contract (chatledger.store.testing) on the in-memory backend."""

from __future__ import annotations

from chatledger.store import testing
from chatledger.store.backends.memory import MemoryBackend


class TestMemoryBackend(testing.BackendTestCase):
    """The in-memory backend passes the backend contract."""

    def create_backend(self) -> MemoryBackend:
        return MemoryBackend()
