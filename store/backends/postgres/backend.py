"""The PostgreSQL backend: the log, subscription rows, data keys and read models in one database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from chatledger.store.backends.backend import BackendBase
from chatledger.store.backends.postgres.recorder import PostgresRecorder
from chatledger.store.backends.recorder import WriteTransaction

if TYPE_CHECKING:
    from chatledger.store.integrity.keystore import KeyStore
    from chatledger.store.subscriptions import SubscriptionTracking

__all__ = ["PostgresBackend"]

T = TypeVar("T")
Run = Callable[[str, tuple[Any, ...]], list[Any]]


class PostgresBackend(BackendBase[PostgresRecorder]):
    """A PostgreSQL database (its tables in the URL's ``search_path``), through the recorder's pool.

    Subscription rows and data keys are written in short transactions on pooled connections
    (:meth:`PostgresRecorder.connection`), and so are the read models.
    """

    read_model_kind = "postgres"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        """Open ``postgresql://...`` (see :class:`PostgresRecorder` for the query options it reads)."""
        return cls(PostgresRecorder(url, **options))

    def append_alone(self, body: Callable[[WriteTransaction], T]) -> T:
        """One statement against the head last seen (see :meth:`PostgresRecorder.append_alone`)."""
        return self.recorder.append_alone(body)

    def _make_tracking(self) -> SubscriptionTracking:
        from chatledger.store.subscriptions import SQLTracking

        connection = self.recorder.connection

        @contextmanager
        def transaction() -> Iterator[Run]:
            with connection() as conn:

                def run(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
                    cur = conn.execute(sql, params)
                    return list(cur.fetchall()) if cur.description else []

                yield run

        return SQLTracking(transaction, "%s", transaction)

    def _make_key_store(self) -> KeyStore:
        from chatledger.store.integrity.keystore import PostgresKeyStore

        return PostgresKeyStore(self.recorder)
