"""The SQLite backend: the log, subscription rows and data keys in one file, and a raw scan for rebuilds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from chatledger.store.backends.backend import BackendBase, LogScan
from chatledger.store.backends.recorder import WriteTransaction
from chatledger.store.backends.sqlite.recorder import SQLiteRecorder
from chatledger.store.backends.sqlite.scan import SQLiteScan
from chatledger.store.errors import ValidationError

if TYPE_CHECKING:
    from chatledger.store.integrity.keystore import KeyStore
    from chatledger.store.subscriptions import SubscriptionTracking

__all__ = ["SQLiteBackend"]

T = TypeVar("T")
Run = Callable[[str, tuple[Any, ...]], list[Any]]


class SQLiteBackend(BackendBase[SQLiteRecorder]):
    """A SQLite file: the log, the ``subscriptions`` and ``data_keys`` tables beside it.

    Subscription rows are written in the recorder's own write transactions (its write lock,
    on this thread's connection); read models live in a file of their own beside it.
    """

    read_model_kind = "sqlite"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        """Open ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.

        The URL's query may set ``synchronous`` (default FULL) and ``busy_timeout_ms``; ``options``
        (the same names) win over it.

        Raises:
            ValidationError: the URL names no file, or an option is malformed.
        """
        path = url[len("sqlite://") :].split("?", 1)[0]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValidationError("url", "sqlite URLs name a file: sqlite:///chat.db")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        return cls(SQLiteRecorder(path, **_options(query, options)))

    def append_alone(self, body: Callable[[WriteTransaction], T]) -> T:
        """One autocommit INSERT against the head last seen (see :meth:`SQLiteRecorder.append_alone`)."""
        return self._recorder.append_alone(body)

    def log_scan(self) -> LogScan:
        """The file's event rows as stored, read without joins (see :class:`SQLiteScan`)."""
        return SQLiteScan(self.recorder)

    def missing_streams(self) -> list[tuple[int, int]]:
        """Gaps in the file's stream numbers (see :meth:`SQLiteRecorder.missing_streams`)."""
        return self._recorder.missing_streams()

    def missing_positions(self) -> list[tuple[int, int]]:
        """Gaps in the file's positions (see :meth:`SQLiteRecorder.missing_positions`)."""
        return self._recorder.missing_positions()

    def _make_tracking(self) -> SubscriptionTracking:
        from chatledger.store.subscriptions import SQLTracking

        recorder = self.recorder

        @contextmanager
        def write() -> Iterator[Run]:
            # The recorder's write lock (BEGIN IMMEDIATE) on this thread's connection.
            with recorder.write():
                conn = recorder.connection

                def run(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
                    return conn.execute(sql, params).fetchall()

                yield run

        @contextmanager
        def read() -> Iterator[Run]:
            # Reads take no lock: WAL readers never wait for writers.
            with recorder.connected() as conn:

                def run(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
                    return conn.execute(sql, params).fetchall()

                yield run

        return SQLTracking(write, "?", read)

    def _make_key_store(self) -> KeyStore:
        from chatledger.store.integrity.keystore import SQLiteKeyStore

        return _ConnectedKeyStore(SQLiteKeyStore(self.recorder), self.recorder)


class _ConnectedKeyStore:
    """A key store whose every call runs inside :meth:`SQLiteRecorder.connected`, so that closing
    the store from another thread never closes the connection under it."""

    def __init__(self, keys: KeyStore, recorder: SQLiteRecorder) -> None:
        self._keys = keys
        self._recorder = recorder

    def get(self, conversation_id: str) -> bytes | None:
        with self._recorder.connected():
            return self._keys.get(conversation_id)

    def add(self, conversation_id: str, wrapped: bytes) -> bytes:
        with self._recorder.connected():
            return self._keys.add(conversation_id, wrapped)

    def was_erased(self, conversation_id: str) -> bool:
        with self._recorder.connected():
            return self._keys.was_erased(conversation_id)

    def delete(self, conversation_id: str) -> bool:
        with self._recorder.connected():
            return self._keys.delete(conversation_id)

    def purge(self, wait: float) -> str | None:
        with self._recorder.connected():
            return self._keys.purge(wait)


_OPTIONS = frozenset({"synchronous", "busy_timeout_ms"})


def _options(query: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    """The recorder's options from the URL's query and the keyword arguments (which win), checked.

    Raises:
        ValidationError: naming the option: an unknown keyword option, a ``busy_timeout_ms`` that is
            not a whole number of milliseconds, a ``synchronous`` that is not a string.
    """
    given: dict[str, Any] = {k: v for k, v in query.items() if k in _OPTIONS}
    given.update(options)
    for name, value in given.items():
        if name not in _OPTIONS:
            raise ValidationError(name, f"is not an option of sqlite stores (they take {sorted(_OPTIONS)})")
        if name == "busy_timeout_ms":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
                shown = repr(value)[:40] if isinstance(value, str | int | float) else f"a {type(value).__name__}"
                raise ValidationError(name, f"must be a whole number of milliseconds, got {shown}")
            given[name] = value
        elif not isinstance(value, str):
            raise ValidationError(name, f"must be a string such as NORMAL, got a {type(value).__name__}")
    return given
