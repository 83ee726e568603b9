"""The guessed-head append: a lone append sent as one statement, written once for every SQL backend.

A lone ``Store.append`` reads one head, probes the idempotency keys and inserts.
A backend that remembers the last head it saw of each stream can skip the reads:
it builds the append against that remembered head and sends it as **one
autocommit statement**, which the database's unique indexes refuse, writing
nothing, when the guess was wrong (another writer moved the stream, or a key is
stored already). The append is then redone in an ordinary write transaction on
the locked head. :class:`GuessedAppend` is the write transaction that answers
from the remembered head; a backend supplies only how to send the statement
(:meth:`GuessedAppend.send`) and where heads are remembered.
:func:`append_alone` runs an append body on a guess first and on a real
transaction when the guess misses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from chatledger.store.backends.recorder import NewRecord, Record, StreamHead, WriteTransaction, moved_only_by
from chatledger.store.errors import BackendUnavailable, ChatledgerError
from chatledger.store.integrity.chain import with_position

__all__ = ["GuessedAppend", "Miss", "append_alone"]

T = TypeVar("T")


class Miss(Exception):
    """A guessed head was not the stream's current one, or the write needs a real transaction."""


class GuessedAppend(ABC):
    """A write transaction holding one append to one stream, built against a remembered head.

    ``head`` answers from what the backend remembers, ``records_by_keys`` assumes no key is
    stored (a stored key fails the statement on the unique ``(stream, key)`` index), and
    ``insert`` sends one statement. Anything else raises :class:`Miss`: nothing was written.
    """

    # Class defaults, set per instance once known (no __init__ to call: a lone append makes one of these).
    _head: StreamHead | None = None
    _written: NewRecord | None = None
    finishes_hash = False
    """Whether :meth:`send` stores a lone record's hash as ``with_position(record.hash, position)``."""

    @abstractmethod
    def remembered(self, stream_id: str) -> StreamHead | None:
        """The head the backend last saw of a stream (the same object until it changes), or None."""

    @abstractmethod
    def send(self, head: StreamHead, records: Sequence[NewRecord]) -> list[int]:
        """Write ``records`` (all of ``head``'s stream) in one statement valid only if ``head`` is current.

        Returns:
            The records' global positions, in order.

        Raises:
            Miss: the head had moved or a key is stored; nothing was written.
        """

    @abstractmethod
    def remember(self, head: StreamHead) -> None:
        """Remember ``head`` (the guessed one moved by the statement) as the stream's last seen head."""

    def head(self, stream_id: str) -> StreamHead | None:
        head = self.remembered(stream_id)
        if head is None or (self._head is not None and self._head is not head):
            raise Miss
        self._head = head
        return head

    def create_stream(self, head: StreamHead) -> None:
        raise Miss

    def records_by_keys(self, stream_id: str, keys: Sequence[str]) -> dict[str, Record]:
        return {}

    def records_at(self, stream_id: str, versions: Sequence[int]) -> list[Record]:
        raise Miss

    def positions(self, count: int) -> Sequence[int] | None:
        """The positions the statement will give (a backend that can guess them says so), or None when the
        statement finishes one record's hash with its position (:attr:`finishes_hash`); else :class:`Miss`."""
        if self.finishes_hash and count == 1:
            return None
        raise Miss

    def insert(self, records: Sequence[NewRecord]) -> list[int]:
        head = self._head
        if head is None or self._written is not None or not records or (self.finishes_hash and len(records) > 1):
            raise Miss
        stream_id = head.stream_id
        for r in records:
            if r.stream_id != stream_id:
                raise Miss
        positions = self.send(head, records)
        last = records[-1]
        self._written = last._replace(hash=with_position(last.hash, positions[-1])) if self.finishes_hash else last
        return positions

    def update_head(self, head: StreamHead) -> None:
        guessed, last = self._head, self._written
        # The statement moved the head already; status and lease are left as they were.
        if guessed is None or last is None or not moved_only_by(head, guessed, last):
            raise RuntimeError("append_alone: the body may only move the head it inserted after to its last event")
        self.remember(head)


def append_alone(
    body: Callable[[WriteTransaction], T],
    guess: GuessedAppend | None,
    write: Callable[[], AbstractContextManager[WriteTransaction]],
) -> T:
    """Run ``body`` (one append to one stream) on ``guess``, and in a ``write()`` transaction if it misses.

    ``guess`` is None when no guess may be made (inside a write transaction of this thread).
    An error the body decided on the guessed head (a ConcurrencyError, a ConflictError) is
    decided again on the locked head; a BackendUnavailable is final.
    """
    if guess is not None:
        try:
            return body(guess)
        except Miss:
            pass
        except BackendUnavailable:
            raise
        except ChatledgerError:
            pass  # decided on a guessed head: decide again on the locked one
    with write() as tx:
        return body(tx)
