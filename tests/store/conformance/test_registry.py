"""Backends are chosen by URL scheme in one registry; a backend added from outside passes the same contract."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatledger.store import ValidationError, open_store, testing
from chatledger.store.backends import open_backend, register_backend, schemes
from chatledger.store.backends.memory import MemoryBackend, MemoryRecorder

_LOGS: dict[str, MemoryRecorder] = {}


class NamedMemoryBackend(MemoryBackend):
    """A backend defined outside chatledger's packages: in-memory logs shared by name (``named-memory://name``)."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NamedMemoryBackend:
        name = url.split("://", 1)[1]
        return cls(_LOGS.setdefault(name, MemoryRecorder()))


register_backend("named-memory", NamedMemoryBackend.from_url)


class TestRegisteredBackend(testing.BackendTestCase):
    """A backend registered by scheme passes the contract, two objects sharing one log included."""

    def create_backend(self) -> NamedMemoryBackend:
        self._url = f"named-memory://{uuid.uuid4().hex}"
        backend = open_backend(self._url)
        assert isinstance(backend, NamedMemoryBackend)
        return backend

    def open_again(self) -> NamedMemoryBackend:
        backend = open_backend(self._url)
        assert isinstance(backend, NamedMemoryBackend)
        return backend


def test_open_store_opens_the_backend_registered_for_the_scheme() -> None:
    """open_store hands a registered scheme's URL to that backend: stores on one name share its log."""
    url = f"NAMED-MEMORY://{uuid.uuid4().hex}"
    with open_store(url) as a, open_store(url, tenant="default") as b:
        conv = a.start_conversation()
        a.append(conv, [{"role": "user", "content": "hi"}])
        assert b.history(conv) == [{"role": "user", "content": "hi"}]
        assert isinstance(a.backend, NamedMemoryBackend)


def test_an_unknown_scheme_is_a_validation_error_naming_the_url() -> None:
    """A URL no backend serves raises ValidationError on the url field, listing the schemes there are."""
    with pytest.raises(ValidationError) as raised:
        open_store("nosuchdb://host/db")
    assert raised.value.field == "url"
    assert "sqlite://" in str(raised.value) and "named-memory://" in str(raised.value)
    assert {"memory", "sqlite", "postgresql", "postgres"} <= set(schemes())
