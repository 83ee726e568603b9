"""The backend seam: one object per backend gives everything the layers above need of it.

A backend package (``chatledger.store.backends.memory``, ``.sqlite``, ``.postgres``,
or one written outside this repository) exposes one class implementing
:class:`Backend`, registered by URL scheme in :mod:`chatledger.store.backends.registry`.
An opened backend hands out:

- its :class:`~chatledger.store.backends.recorder.Recorder`: the log itself;
- :meth:`~Backend.append_alone`: a lone append in as few round trips as the backend
  allows (one statement on SQLite and PostgreSQL, see :mod:`~chatledger.store.backends.guess`);
- :meth:`~Backend.subscription_tracking`: where durable subscriptions keep their rows;
- :meth:`~Backend.key_store`: where wrapped data keys live for encryption at rest;
- :attr:`~Backend.read_model_kind`: the name projections look their read-model store up by
  (``chatledger.projections`` keeps that registry: ``store`` never imports it);
- :meth:`~Backend.log_scan`: an optional raw reader of the log for projection rebuilds;
- :meth:`~Backend.missing_streams` and :meth:`~Backend.missing_positions`: streams and events deleted
  behind the store's back, for ``verify``.

No module outside a backend package asks which backend it has: it asks the backend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from chatledger.store.backends.recorder import Record, Recorder, WriteTransaction

if TYPE_CHECKING:
    from chatledger.store.integrity.keystore import KeyStore
    from chatledger.store.subscriptions import SubscriptionTracking

__all__ = ["Backend", "BackendBase", "LogScan"]

T = TypeVar("T")
R = TypeVar("R", bound=Recorder)


class LogScan(Protocol):
    """A raw reader of the whole log for rebuilds: event rows with streams and types as integer codes.

    A rebuild reads every event once and needs little of each, so a backend that stores
    codes can hand its rows out as stored and let the reader resolve the codes through
    small caches (see :mod:`chatledger.projections.pages`).
    """

    def rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` events after position ``after``, in log order, as ``(position, stream code,
        version, type code, schema version, key, stored time, payload bytes)``; the rows between two
        positions read now are the rows there forever."""

    def streams_from(self, sid: int, limit: int) -> list[tuple[int, str, str, str]]:
        """``(stream code, stream id, conversation id, tenant)`` of up to ``limit`` streams from ``sid`` on."""

    def streams(self, sids: Sequence[int]) -> list[tuple[int, str, str, str]]:
        """``(stream code, stream id, conversation id, tenant)`` of the given streams."""

    def type_names(self) -> dict[int, str]:
        """Every event type code and its name."""

    def event_ids(self, after: int, last: int) -> list[str]:
        """The event ids of positions ``(after, last]``, in log order, as text."""

    def records(self, after: int, last: int, types: Sequence[int] | None = None) -> list[Record]:
        """The full records of positions ``(after, last]`` (of the given type codes only, when given)."""

    def time_text(self, stored: int | str) -> str:
        """A stored time's ISO-8601 text (what :class:`~chatledger.store.backends.recorder.Record` holds)."""


class Backend(Protocol):
    """One opened backend: its log and every capability the layers above ask of it."""

    @property
    def recorder(self) -> Recorder:
        """The log: atomic writes and the reads every layer needs."""

    @property
    def read_model_kind(self) -> str:
        """The key under which ``chatledger.projections`` finds this backend's read-model store."""

    def append_alone(self, body: Callable[[WriteTransaction], T]) -> T:
        """Run ``body``, a transaction holding one append to one stream, as cheaply as the backend can.

        ``body`` must not change the stream's status or lease, and may run twice (the first
        run's decisions are discarded when it ran on a guessed head that turned out stale).
        """

    def subscription_tracking(self) -> SubscriptionTracking:
        """Where durable subscriptions keep their rows (one object per opened backend).

        Raises:
            ValidationError: the backend does not support durable subscriptions.
        """

    def key_store(self) -> KeyStore:
        """Where wrapped data keys live beside the log (one object per opened backend).

        Raises:
            BackendUnavailable: the backend has no key store.
        """

    def log_scan(self) -> LogScan | None:
        """A raw reader of the log for rebuilds, or None to read pages through ``recorder.read_all``."""

    def missing_streams(self) -> list[tuple[int, int]]:
        """Ranges ``(first, last)`` of stream numbers the storage issued whose stream is gone
        (found by ``verify``); empty where the storage numbers no streams."""

    def missing_positions(self) -> list[tuple[int, int]]:
        """Ranges ``(first, last)`` of global positions missing below the log's last one (found by
        ``verify``); empty where positions may be skipped (a sequence that aborted writers drew from)."""

    def close(self) -> None:
        """Release the backend's connections."""


class BackendBase(ABC, Generic[R]):
    """What most backends share: the recorder, a plain-transaction ``append_alone``, and the
    subscription tracking and key store made once, on first use."""

    read_model_kind: ClassVar[str]

    def __init__(self, recorder: R) -> None:
        self._recorder = recorder
        self._lock = threading.Lock()
        self._tracking: SubscriptionTracking | None = None
        self._keys: KeyStore | None = None

    @property
    def recorder(self) -> R:
        """The log."""
        return self._recorder

    def append_alone(self, body: Callable[[WriteTransaction], T]) -> T:
        """Run ``body`` in an ordinary write transaction (backends with a faster way override this)."""
        with self._recorder.write() as tx:
            return body(tx)

    def subscription_tracking(self) -> SubscriptionTracking:
        """The subscription rows' storage, made on first use."""
        with self._lock:
            if self._tracking is None:
                self._tracking = self._make_tracking()
            return self._tracking

    def key_store(self) -> KeyStore:
        """The data keys' storage, made on first use."""
        with self._lock:
            if self._keys is None:
                self._keys = self._make_key_store()
            return self._keys

    def log_scan(self) -> LogScan | None:
        """None: rebuilds read pages through ``recorder.read_all``."""
        return None

    def missing_streams(self) -> list[tuple[int, int]]:
        """None found: the storage does not number its streams."""
        return []

    def missing_positions(self) -> list[tuple[int, int]]:
        """None found: the storage may skip positions."""
        return []

    def close(self) -> None:
        """Release the recorder's connections."""
        self._recorder.close()

    @abstractmethod
    def _make_tracking(self) -> SubscriptionTracking:
        """Build the subscription rows' storage (called once)."""

    @abstractmethod
    def _make_key_store(self) -> KeyStore:
        """Build the data keys' storage (called once)."""
