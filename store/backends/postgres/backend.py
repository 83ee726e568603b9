"""The PostgreSQL backend: the log, subscription rows, data keys and read models in one database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from chatledger.store.backends.backend import BackendBase
from chatledger.store.backends.postgres.recorder import PostgresRecorder, split_url
from chatledger.store.backends.recorder import WriteTransaction
from chatledger.store.errors import ValidationError

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
        """Open ``postgresql://...`` (see :class:`PostgresRecorder` for the query options it reads).

        Raises:
            ValidationError: naming the option: an unknown keyword option, or a pool size or
                timeout (in the URL or as a keyword) that is not a number.
        """
        _check_options(split_url(url)[1], options)
        return cls(PostgresRecorder(url, **options))

    def append_alone(self, body: Callable[[WriteTransaction], T]) -> T:
        """One statement against the head last seen (see :meth:`PostgresRecorder.append_alone`)."""
        return self._recorder.append_alone(body)

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


_OPTIONS: dict[str, type] = {"pool_min": int, "pool_max": int, "timeout": float, "read_wait": float}


def _check_options(query: dict[str, str], options: dict[str, Any]) -> None:
    """Refuse unknown keyword options and non-numeric pool sizes and timeouts, naming the option."""
    for name, value in [*query.items(), *options.items()]:
        kind = _OPTIONS.get(name)
        if kind is None:
            raise ValidationError(name, f"is not an option of postgresql stores (they take {sorted(_OPTIONS)})")
        if isinstance(value, bool):
            raise ValidationError(name, "must be a number")
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ValidationError(name, "must be a number") from None
        if not 0 <= number < 2**31 or number != number:
            raise ValidationError(name, f"must be a number from 0 to 2**31, got {number}")
