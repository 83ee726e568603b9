"""Where read models are materialized, by the backend's read-model kind: one registry.

A store backend names its read-model kind (:attr:`chatledger.store.backends.Backend.read_model_kind`);
this registry maps the kind to the read-model store built for it: dicts for ``memory``, a
``.views.db`` file beside the log for ``sqlite`` (:mod:`.sqlite`), tables in the same
database for ``postgres`` (:mod:`.postgres`). A backend written outside this repository
adds its own with :func:`register_read_models`. ``chatledger.store`` never imports this
package: dependencies point from projections to the store.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from chatledger.projections.tracking import ReadModels
from chatledger.store import ValidationError
from chatledger.store.backends import Backend

__all__ = ["ReadModelsFactory", "open_read_models", "register_read_models"]

ReadModelsFactory = Callable[[Backend], ReadModels]
"""Builds the read-model store of an opened backend (called once per backend)."""


def _memory(backend: Backend) -> ReadModels:
    from chatledger.projections.backends.memory import MemoryReadModels

    return MemoryReadModels()


def _sqlite(backend: Backend) -> ReadModels:
    from chatledger.projections.backends.sqlite import SQLiteReadModels, views_path
    from chatledger.store.backends.sqlite import SQLiteRecorder

    recorder = backend.recorder
    if not isinstance(recorder, SQLiteRecorder):
        raise ValidationError("store", "the sqlite read models need a SQLite log")
    if recorder.path == ":memory:":
        raise ValidationError("url", "read models need a SQLite file, not :memory:")

    def erasable() -> bool:
        """Whether the log has ever encrypted a conversation (so it can be erased): a row in
        ``data_keys`` (an erased conversation keeps its row); when unsure, True."""
        with recorder.connected() as conn:
            try:
                return conn.execute("SELECT 1 FROM data_keys LIMIT 1").fetchone() is not None
            except sqlite3.OperationalError as exc:
                return "no such table" not in str(exc)

    return SQLiteReadModels(views_path(recorder.path), erasable=erasable)


def _postgres(backend: Backend) -> ReadModels:
    from chatledger.projections.backends.postgres import PostgresReadModels

    return PostgresReadModels(backend.recorder)


_FACTORIES: dict[str, ReadModelsFactory] = {"memory": _memory, "sqlite": _sqlite, "postgres": _postgres}
_LOCK = threading.Lock()


def register_read_models(kind: str, factory: ReadModelsFactory) -> None:
    """Build the read models of backends whose ``read_model_kind`` is ``kind`` with ``factory``."""
    with _LOCK:
        _FACTORIES[kind] = factory


def open_read_models(backend: Backend) -> ReadModels:
    """The read-model store of an opened backend, by its read-model kind.

    Raises:
        ValidationError: no read-model store is registered for the backend's kind.
    """
    with _LOCK:
        factory = _FACTORIES.get(backend.read_model_kind)
    if factory is None:
        raise ValidationError("store", f"no read-model store for backends of kind {backend.read_model_kind!r}")
    return factory(backend)
