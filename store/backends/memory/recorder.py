"""In-memory backend: the reference implementation, for tests and notebooks.

It keeps the same guarantees as the database backends within one process:
a write transaction holds a lock for its whole duration and stages its
changes, which become visible all at once on commit or vanish on error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from chatledger.store.backends.recorder import NewRecord, PagedLog, Record, StreamHead
from chatledger.store.errors import ConflictError

__all__ = ["MemoryRecorder"]


class _Tx:
    def __init__(self, rec: MemoryRecorder) -> None:
        self._rec = rec
        self.heads: dict[str, StreamHead] = {}
        self.records: list[Record] = []
        self.next_position = rec._next_position
        self.event_ids: set[str] = set()
        self.keys: set[tuple[str, str]] = set()  # (stream, key) of the records inserted here
        self.versions: dict[str, int] = {}  # the last version each stream reached in this transaction

    def head(self, stream_id: str) -> StreamHead | None:
        return self.heads.get(stream_id) or self._rec._heads.get(stream_id)

    def create_stream(self, head: StreamHead) -> None:
        if self.head(head.stream_id) is not None:
            raise ConflictError(f"stream {head.stream_id!r} exists already")
        self.heads[head.stream_id] = head

    def records_by_keys(self, stream_id: str, keys: Sequence[str]) -> dict[str, Record]:
        by_key = self._rec._by_key
        found = {key: by_key[stream_id, key] for key in keys if (stream_id, key) in by_key}
        wanted = set(keys)
        for rec in self.records:
            if rec.stream_id == stream_id and rec.key in wanted:
                found[str(rec.key)] = rec
        return found

    def records_at(self, stream_id: str, versions: Sequence[int]) -> list[Record]:
        stream = self._rec._streams.get(stream_id, [])
        wanted = set(versions)
        # Versions are 1, 2, 3, ... so version v is at index v - 1.
        found = [stream[v - 1] for v in sorted(wanted) if 0 < v <= len(stream) and stream[v - 1].version == v]
        return found + [r for r in self.records if r.stream_id == stream_id and r.version in wanted]

    def positions(self, count: int) -> list[int]:
        return list(range(self.next_position, self.next_position + count))

    def insert(self, records: Sequence[NewRecord]) -> list[int]:
        positions = []
        for new in records:
            if new.event_id in self._rec._event_ids or new.event_id in self.event_ids:
                raise ConflictError(f"event id {new.event_id!r} exists already")
            last = self.versions.get(new.stream_id)
            if last is None:
                stream = self._rec._streams.get(new.stream_id)
                last = stream[-1].version if stream else 0
            if new.version <= last:
                raise ConflictError(f"stream {new.stream_id!r} has version {new.version} already")
            if new.key is not None and (
                (new.stream_id, new.key) in self._rec._by_key or (new.stream_id, new.key) in self.keys
            ):
                raise ConflictError(f"stream {new.stream_id!r} has key {new.key!r} already")
            rec = Record(self.next_position, *new[:-1])
            self.records.append(rec)
            self.event_ids.add(new.event_id)
            if new.key is not None:
                self.keys.add((new.stream_id, new.key))
            self.versions[new.stream_id] = new.version
            positions.append(self.next_position)
            self.next_position += 1
        return positions

    def update_head(self, head: StreamHead) -> None:
        self.heads[head.stream_id] = head


class MemoryRecorder(PagedLog):
    """The in-memory implementation of :class:`~chatledger.store.backends.recorder.Recorder`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._log: list[Record] = []
        self._streams: dict[str, list[Record]] = {}
        self._heads: dict[str, StreamHead] = {}
        self._event_ids: set[str] = set()
        self._by_key: dict[tuple[str, str], Record] = {}
        self._next_position = 1

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """Hold the store's lock, stage the changes, apply them only if the block succeeds."""
        with self._lock:
            tx = _Tx(self)
            yield tx
            for rec in tx.records:
                self._log.append(rec)
                self._streams.setdefault(rec.stream_id, []).append(rec)
                self._event_ids.add(rec.event_id)
                if rec.key is not None:
                    self._by_key[rec.stream_id, rec.key] = rec
            self._heads.update(tx.heads)
            self._next_position = tx.next_position

    def read_stream(self, stream_id: str, after: int = 0, limit: int | None = None) -> list[Record]:
        with self._lock:
            recs = [r for r in self._streams.get(stream_id, []) if r.version > after]
        return recs if limit is None else recs[:limit]

    def read_payloads(self, stream_id: str, type_name: str, upto: int | None = None) -> list[str]:
        with self._lock:
            return [
                r.payload
                for r in self._streams.get(stream_id, [])
                if r.type == type_name and (upto is None or r.version <= upto)
            ]

    def read_versioned_payloads(
        self,
        stream_id: str,
        type_name: str,
        after: int = 0,
        upto: int | None = None,
        newest: int | None = None,
        conversation_of: str | None = None,
    ) -> list[tuple[int, str]]:
        with self._lock:
            stream = self._streams.get(stream_id, [])
            if conversation_of is not None:
                head = self._heads.get(stream_id)
                if head is None or head.tenant != conversation_of or head.kind != "conversation":
                    return []
            rows = [
                (r.version, r.payload)
                for r in stream[max(after, 0) :]
                if r.type == type_name and (upto is None or r.version <= upto)
            ]
            return rows if newest is None else rows[max(len(rows) - newest, 0) :]

    def read_all(self, after: int = 0, limit: int | None = None, tenant: str | None = None) -> list[Record]:
        with self._lock:
            out: list[Record] = []
            for r in self._log[max(after, 0) :]:
                if tenant is None or r.tenant == tenant:
                    out.append(r)
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def get_head(self, stream_id: str) -> StreamHead | None:
        with self._lock:
            return self._heads.get(stream_id)

    def list_heads(
        self,
        kind: str | None,
        tenant: str | None,
        limit: int | None = None,
        status: Sequence[str] | None = None,
        conversation_id: str | None = None,
    ) -> list[StreamHead]:
        with self._lock:
            heads = [
                h
                for h in self._heads.values()
                if (kind is None or h.kind == kind)
                and (tenant is None or h.tenant == tenant)
                and (not status or h.status in status)
                and (conversation_id is None or h.conversation_id == conversation_id)
            ]
        heads.sort(key=lambda h: (h.created_at, h.stream_id))
        return heads if limit is None else heads[:limit]

    def last_position(self) -> int:
        with self._lock:
            return self._next_position - 1

    def close(self) -> None:
        """Nothing to release."""
