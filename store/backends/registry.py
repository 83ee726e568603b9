"""Which backend serves a URL: one registry from URL scheme to backend, and nothing else knows schemes.

A scheme maps to an opener, ``opener(url, **options) -> Backend``: for the built-in
backends the ``from_url`` of the class their package exposes, named here as
``"module:Class.from_url"`` and imported only when a URL uses it (so PostgreSQL's driver
is not imported by a SQLite user). A backend written outside this repository is added
with :func:`register_backend`, or by its distribution declaring an entry point in the
``chatledger.backends`` group, named by the scheme::

    [project.entry-points."chatledger.backends"]
    mydb = "mydb_chatledger:MyBackend.from_url"
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any, Protocol
from urllib.parse import urlsplit

from chatledger.store.backends.backend import Backend
from chatledger.store.errors import ValidationError

__all__ = ["ENTRY_POINT_GROUP", "BackendOpener", "open_backend", "register_backend", "schemes"]

ENTRY_POINT_GROUP = "chatledger.backends"


class BackendOpener(Protocol):
    """Opens a backend for a URL of its scheme (creating its storage if needed)."""

    def __call__(self, url: str, **options: Any) -> Backend:
        """The opened backend.

        Raises:
            ValidationError: the URL or an option is malformed.
            BackendUnavailable: the storage cannot be reached or opened.
        """


_BUILTIN: dict[str, str] = {
    "memory": "chatledger.store.backends.memory:MemoryBackend.from_url",
    "sqlite": "chatledger.store.backends.sqlite:SQLiteBackend.from_url",
    "postgresql": "chatledger.store.backends.postgres:PostgresBackend.from_url",
    "postgres": "chatledger.store.backends.postgres:PostgresBackend.from_url",
}
_REGISTERED: dict[str, BackendOpener | str] = dict(_BUILTIN)
_LOCK = threading.Lock()
_loaded_entry_points = False


def register_backend(scheme: str, opener: BackendOpener | str) -> None:
    """Serve URLs of ``scheme`` (case-insensitive) with ``opener``, or with the ``"module:attr"`` it names."""
    with _LOCK:
        _REGISTERED[scheme.lower()] = opener


def schemes() -> list[str]:
    """Every URL scheme a backend is registered for, entry points included."""
    _load_entry_points()
    with _LOCK:
        return sorted(_REGISTERED)


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend that serves ``url``'s scheme.

    Raises:
        ValidationError: no backend serves the scheme (the field is ``url``).
    """
    scheme = urlsplit(url).scheme.lower()
    opener = _opener(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in schemes())
        raise ValidationError("url", f"unknown scheme {scheme!r}: use one of {known}")
    return opener(url, **options)


def _opener(scheme: str) -> BackendOpener | None:
    with _LOCK:
        found = _REGISTERED.get(scheme)
    if found is None:
        _load_entry_points()
        with _LOCK:
            found = _REGISTERED.get(scheme)
    if found is None or not isinstance(found, str):
        return found
    opener = _resolve(found)
    with _LOCK:
        _REGISTERED[scheme] = opener
    return opener


def _resolve(target: str) -> BackendOpener:
    """The object a ``"module:attr.attr"`` string names."""
    module, _, attrs = target.partition(":")
    found: Any = importlib.import_module(module)
    for attr in attrs.split("."):
        found = getattr(found, attr)
    opener: BackendOpener = found
    return opener


def _load_entry_points() -> None:
    """Register the backends other distributions declare (once; a scheme registered in code wins)."""
    global _loaded_entry_points
    with _LOCK:
        if _loaded_entry_points:
            return
        _loaded_entry_points = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            _REGISTERED.setdefault(point.name.lower(), point.value)
