"""The backend contract, shipped: test cases any backend (in this repository or outside it) must pass.

Subclass :class:`BackendTestCase` in a test module and say how to open your backend
over empty storage; every ``test_*`` method then runs against it, under pytest or
``unittest``::

    from chatledger.store import testing
    from mydb_chatledger import MyBackend

    class TestMyBackend(testing.BackendTestCase):
        def create_backend(self):
            return MyBackend.from_url("mydb://localhost/test_db")

Import the module rather than the class (``from chatledger.store import testing``), so
that the test runner does not collect the abstract class itself. A backend is done when
these cases pass (chatledger runs them on memory, SQLite and PostgreSQL in
``tests/store/conformance/``), and then the Store-level suite runs on it unchanged.

The cases speak the recorder's language (:mod:`chatledger.store.backends.recorder`):
streams and their heads, records with versions, keys and global positions, write
transactions that are all or nothing. The rules above that seam (idempotency by
content, hash chains, tenants, leases) are the Writer's and the store's, and are the
same for every backend.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from unittest import TestCase

from chatledger.store.backends.backend import Backend
from chatledger.store.backends.recorder import NewRecord, Record, StreamHead, WriteTransaction
from chatledger.store.errors import ChatledgerError, ConflictError, ErasedError
from chatledger.store.integrity.chain import GENESIS, with_position
from chatledger.store.writer import event_id_for

__all__ = ["BackendTestCase", "append", "create_stream", "new_records"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MESSAGE = "message.appended"


def create_stream(
    tx: WriteTransaction, stream_id: str, *, tenant: str = "t1", kind: str = "conversation", conversation: str = ""
) -> StreamHead:
    """Create an empty stream in ``tx`` as the Writer does (version 0, the genesis hash) and return its head."""
    now = datetime.now(UTC).isoformat()
    head = StreamHead(stream_id, conversation or stream_id, tenant, kind, 0, GENESIS, now, now)
    tx.create_stream(head)
    return head


def new_records(
    head: StreamHead, count: int, *, keys: Sequence[str | None] = (), type_name: str = MESSAGE
) -> list[NewRecord]:
    """``count`` records following ``head`` (versions ``head.version + 1``...), with payloads naming their version."""
    at = datetime.now(UTC)
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    out = []
    for i in range(count):
        version = head.version + 1 + i
        key = keys[i] if i < len(keys) else None
        payload = f'{{"n":{version},"stream":"{head.stream_id}"}}'
        out.append(
            NewRecord(
                stream_id=head.stream_id,
                version=version,
                conversation_id=head.conversation_id,
                tenant=head.tenant,
                event_id=event_id_for(version),
                type=type_name,
                schema_version=1,
                key=key,
                recorded_at=at.isoformat(),
                payload=payload,
                hash=os.urandom(32).hex(),
                recorded_us=micros,
            )
        )
    return out


def append(
    tx: WriteTransaction, stream_id: str, count: int = 1, *, keys: Sequence[str | None] = (), type_name: str = MESSAGE
) -> tuple[list[int], list[NewRecord]]:
    """Append ``count`` records to an existing stream after its head, and move the head: what an append does.

    Returns:
        The positions the backend gave the records, and the records.

    Raises:
        ConflictError: the stream does not exist, or a version or key is stored already.
    """
    head = tx.head(stream_id)
    if head is None:
        raise ConflictError(f"stream {stream_id!r} does not exist")
    told = tx.positions(count)
    records = new_records(head, count, keys=keys, type_name=type_name)
    positions = tx.insert(records)
    if told is None:  # the backend finished the hash with the position (chain rule 3): as stored
        records = [r._replace(hash=with_position(r.hash, p)) for r, p in zip(records, positions, strict=True)]
    last = records[-1]
    tx.update_head(head._replace(version=last.version, head_hash=last.hash, updated_at=last.recorded_at))
    return positions, records


def _fields(record: Record) -> tuple[object, ...]:
    """A stored record's fields without its position: what was inserted."""
    return tuple(record)[1:]


def _inserted(record: NewRecord) -> tuple[object, ...]:
    return tuple(record)[:-1]  # recorded_us is how a backend may store the time, not a field read back


class BackendTestCase(TestCase, ABC):
    """The contract of a backend: its recorder's writes and reads, its fast append and its capabilities."""

    @abstractmethod
    def create_backend(self) -> Backend:
        """A backend opened over new, empty storage (closed by the test case)."""

    def open_again(self) -> Backend | None:
        """A second backend object over the storage of the one :meth:`create_backend` made, or None
        when objects cannot share storage (then the cases that need two are skipped)."""
        return None

    def setUp(self) -> None:
        self.backend = self.create_backend()
        self.recorder = self.backend.recorder
        self._opened = [self.backend]

    def tearDown(self) -> None:
        for backend in self._opened:
            backend.close()

    def _another(self) -> Backend:
        other = self.open_again()
        if other is None:
            self.skipTest("the backend cannot open its storage twice")
        self._opened.append(other)
        return other

    def _stream(self, stream_id: str, count: int = 0, **options: str) -> list[NewRecord]:
        with self.recorder.write() as tx:
            create_stream(tx, stream_id, **options)
            return append(tx, stream_id, count)[1] if count else []

    # -- writes --------------------------------------------------------------------------------

    def test_appended_records_read_back_exactly_in_version_order(self) -> None:
        """A stream's records read back field for field as inserted, in version order, each with a position."""
        written = self._stream("s1", 3)
        with self.recorder.write() as tx:
            written += append(tx, "s1", 2)[1]
        read = self.recorder.read_stream("s1")
        self.assertEqual([_fields(r) for r in read], [_inserted(r) for r in written])
        self.assertEqual([r.version for r in read], [1, 2, 3, 4, 5])
        self.assertEqual(len({r.position for r in read}), 5)
        self.assertEqual([r.version for r in self.recorder.read_stream("s1", after=2, limit=2)], [3, 4])
        self.assertEqual(self.recorder.read_stream("missing"), [])

    def test_insert_returns_the_positions_read_back(self) -> None:
        """The positions ``insert`` returns are the records' positions in the log, in order."""
        with self.recorder.write() as tx:
            create_stream(tx, "s1")
            positions, _ = append(tx, "s1", 3)
        self.assertEqual([r.position for r in self.recorder.read_stream("s1")], positions)

    def test_head_follows_the_last_record(self) -> None:
        """A stream's head has the version, hash and time of its last record, and keeps status and lease."""
        self.assertIsNone(self.recorder.get_head("s1"))
        with self.recorder.write() as tx:
            created = create_stream(tx, "s1", kind="tool_call", conversation="c1")
            tx.update_head(created._replace(status="claimed", lease_until=123.5))
        (last,) = self._append("s1", 1)
        head = self.recorder.get_head("s1")
        assert head is not None
        self.assertEqual(
            (head.stream_id, head.conversation_id, head.tenant, head.kind), ("s1", "c1", "t1", "tool_call")
        )
        self.assertEqual((head.version, head.head_hash, head.updated_at), (1, last.hash, last.recorded_at))
        self.assertEqual((head.status, head.lease_until), ("claimed", 123.5))

    def _append(self, stream_id: str, count: int, keys: Sequence[str | None] = ()) -> list[NewRecord]:
        with self.recorder.write() as tx:
            return append(tx, stream_id, count, keys=keys)[1]

    def test_a_stream_is_created_once(self) -> None:
        """Creating a stream that exists raises ConflictError and changes nothing."""
        self._stream("s1", 1)
        with self.assertRaises(ConflictError), self.recorder.write() as tx:
            create_stream(tx, "s1", tenant="t2")
        head = self.recorder.get_head("s1")
        self.assertEqual((head.tenant, head.version) if head else None, ("t1", 1))

    def test_a_version_is_written_once(self) -> None:
        """Two writers appending after the same head: the second's records are refused and nothing of it is written."""
        self._stream("s1", 1)
        head = self.recorder.get_head("s1")
        assert head is not None
        self._append("s1", 1)
        with self.assertRaises(ChatledgerError), self.recorder.write() as tx:
            tx.head("s1")
            tx.insert(new_records(head, 2))
        self.assertEqual([r.version for r in self.recorder.read_stream("s1")], [1, 2])

    def test_a_key_is_stored_once_per_stream(self) -> None:
        """A key already stored in a stream is refused there (ConflictError) and free in another stream."""
        self._stream("s1")
        self._stream("s2")
        self._append("s1", 1, keys=["k"])
        with self.assertRaises(ConflictError):
            self._append("s1", 1, keys=["k"])
        self._append("s2", 1, keys=["k"])
        self.assertEqual([r.key for r in self.recorder.read_stream("s1")], ["k"])

    def test_a_failed_transaction_writes_nothing(self) -> None:
        """An error inside a write transaction leaves no stream, record or head change behind."""
        self._stream("s1", 1)
        before = self.recorder.last_position()
        with self.assertRaises(RuntimeError), self.recorder.write() as tx:
            create_stream(tx, "s2")
            append(tx, "s2", 2)
            append(tx, "s1", 1)
            raise RuntimeError("the caller changed its mind")
        self.assertIsNone(self.recorder.get_head("s2"))
        self.assertEqual(self.recorder.read_stream("s2"), [])
        self.assertEqual([r.version for r in self.recorder.read_stream("s1")], [1])
        self.assertEqual(self.recorder.last_position(), before)

    def test_lookups_by_key_and_version_inside_a_transaction(self) -> None:
        """``records_by_keys`` and ``records_at`` find stored records, and ignore what is not stored."""
        self._stream("s1")
        written = self._append("s1", 3, keys=["a", None, "c"])
        with self.recorder.write() as tx:
            found = tx.records_by_keys("s1", ["a", "c", "zz"])
            at = tx.records_at("s1", [2, 3, 9])
        self.assertEqual(
            {k: _fields(r) for k, r in found.items()}, {"a": _inserted(written[0]), "c": _inserted(written[2])}
        )
        self.assertEqual(sorted(_fields(r) for r in at), sorted(_inserted(r) for r in written[1:]))

    def test_transactions_can_span_streams(self) -> None:
        """One transaction appends to several streams; all of it becomes visible together."""
        with self.recorder.write() as tx:
            create_stream(tx, "s1")
            create_stream(tx, "s2", kind="tool_call", conversation="s1")
            append(tx, "s1", 1)
            append(tx, "s2", 2)
        self.assertEqual(len(self.recorder.read_all()), 3)

    # -- reads ---------------------------------------------------------------------------------

    def test_global_log_pages_by_last_position_seen(self) -> None:
        """``read_all(after=last position seen)`` pages the whole log, each record once, and filters by tenant."""
        self._stream("a", 3)
        self._stream("b", 2, tenant="t2")
        self._append("a", 2)
        every = self.recorder.read_all()
        self.assertEqual(len(every), 7)
        self.assertEqual(len({r.position for r in every}), 7)
        pages, after = [], 0
        while page := self.recorder.read_all(after, 2):
            pages += page
            after = page[-1].position
        self.assertEqual(pages, every)
        self.assertEqual(list(self.recorder.iter_all(0, 3)), every)
        self.assertEqual({r.stream_id for r in self.recorder.read_all(0, None, "t2")}, {"b"})
        self.assertEqual(list(self.recorder.iter_all(0, 1, "t1")), self.recorder.read_all(0, None, "t1"))
        self.assertEqual(self.recorder.last_position(), every[-1].position)

    def test_global_log_keeps_each_stream_in_version_order(self) -> None:
        """In the global log, every stream's records appear in version order."""
        self._stream("a", 2)
        self._stream("b", 1)
        self._append("a", 1)
        self._append("b", 2)
        for stream in ("a", "b"):
            versions = [r.version for r in self.recorder.read_all() if r.stream_id == stream]
            self.assertEqual(versions, sorted(versions))

    def test_an_empty_log(self) -> None:
        """An empty log has last position 0 and reads nothing."""
        self.assertEqual(self.recorder.last_position(), 0)
        self.assertEqual(self.recorder.read_all(), [])
        self.assertEqual(list(self.recorder.iter_all()), [])

    def test_payloads_of_one_type_up_to_a_version(self) -> None:
        """``read_payloads`` returns one type's raw payloads in version order, up to a version."""
        self._stream("s1")
        first = self._append("s1", 2)
        with self.recorder.write() as tx:
            append(tx, "s1", 1, type_name="other.type")
        last = self._append("s1", 1)
        self.assertEqual(self.recorder.read_payloads("s1", MESSAGE), [r.payload for r in first + last])
        self.assertEqual(self.recorder.read_payloads("s1", MESSAGE, 3), [r.payload for r in first])

    def test_heads_are_listed_by_kind_tenant_status_and_conversation(self) -> None:
        """``list_heads`` filters by kind, tenant, status and conversation, oldest first, up to a limit."""
        with self.recorder.write() as tx:
            create_stream(tx, "c1")
            call = create_stream(tx, "c1/x", kind="tool_call", conversation="c1")
            tx.update_head(call._replace(status="claimed"))
            create_stream(tx, "c1/y", kind="tool_call", conversation="c1")
            create_stream(tx, "c2", tenant="t2")
        self.assertEqual([h.stream_id for h in self.recorder.list_heads("conversation", None)], ["c1", "c2"])
        self.assertEqual([h.stream_id for h in self.recorder.list_heads("conversation", "t2")], ["c2"])
        self.assertEqual([h.stream_id for h in self.recorder.list_heads("conversation", None, 1)], ["c1"])
        calls = self.recorder.list_heads("tool_call", "t1", status=["claimed"], conversation_id="c1")
        self.assertEqual([h.stream_id for h in calls], ["c1/x"])
        self.assertEqual(len(self.recorder.list_heads("tool_call", "t1", conversation_id="c1")), 2)

    # -- the fast append -----------------------------------------------------------------------

    def test_append_alone_writes_like_a_transaction(self) -> None:
        """``append_alone`` appends as a write transaction would, again and again on the same stream."""
        self._stream("s1", 1)
        for _ in range(3):
            self.backend.append_alone(lambda tx: append(tx, "s1", 1))
        self.backend.append_alone(lambda tx: append(tx, "s1", 2))
        self.assertEqual([r.version for r in self.recorder.read_stream("s1")], [1, 2, 3, 4, 5, 6])
        head = self.recorder.get_head("s1")
        self.assertEqual(head.version if head else None, 6)

    def test_append_alone_refuses_a_stored_key(self) -> None:
        """``append_alone`` with a key already stored raises ConflictError and writes nothing."""
        self._stream("s1")
        self.backend.append_alone(lambda tx: append(tx, "s1", 1, keys=["k"]))
        with self.assertRaises(ConflictError):
            self.backend.append_alone(lambda tx: append(tx, "s1", 1, keys=["k"]))
        self.assertEqual(len(self.recorder.read_stream("s1")), 1)

    def test_append_alone_after_another_writer_moved_the_stream(self) -> None:
        """An append after another backend object moved the stream lands after that writer's records."""
        other = self._another()
        self._stream("s1", 1)
        self.backend.append_alone(lambda tx: append(tx, "s1", 1))
        other.append_alone(lambda tx: append(tx, "s1", 2))
        self.backend.append_alone(lambda tx: append(tx, "s1", 1))
        self.assertEqual([r.version for r in self.recorder.read_stream("s1")], [1, 2, 3, 4, 5])

    def test_concurrent_writers_never_write_a_version_twice(self) -> None:
        """Threads racing to append to one stream each land whole or not at all: versions stay 1, 2, 3..."""
        self._stream("s1")
        errors: list[BaseException] = []

        def write() -> None:
            for _ in range(10):
                try:
                    self.backend.append_alone(lambda tx: append(tx, "s1", 1))
                except ChatledgerError:
                    pass  # lost a race: nothing was written
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        versions = [r.version for r in self.recorder.read_stream("s1")]
        self.assertEqual(versions, list(range(1, len(versions) + 1)))
        self.assertGreater(len(versions), 0)

    # -- capabilities --------------------------------------------------------------------------

    def test_read_model_kind_names_the_backend(self) -> None:
        """A backend names its read-model kind (what projections look their read-model store up by)."""
        self.assertIsInstance(self.backend.read_model_kind, str)
        self.assertTrue(self.backend.read_model_kind)

    def test_subscription_rows_take_one_owner_at_a_time(self) -> None:
        """The backend's subscription rows: one owner holds a lease, and the position moves by compare-and-set."""
        tracking = self.backend.subscription_tracking()
        self.assertIs(self.backend.subscription_tracking(), tracking)
        state = tracking.acquire("t1", "sub", "w1", 100.0, 130.0)
        self.assertEqual((state.position, state.owner) if state else None, (0, "w1"))
        self.assertIsNone(tracking.acquire("t1", "sub", "w2", 110.0, 140.0))
        self.assertTrue(tracking.advance("t1", "sub", "w1", 0, 7, 150.0))
        self.assertFalse(tracking.advance("t1", "sub", "w1", 0, 9, 150.0))
        tracking.release("t1", "sub", "w1")
        state = tracking.acquire("t1", "sub", "w2", 120.0, 160.0)
        self.assertEqual((state.position, state.owner) if state else None, (7, "w2"))
        self.assertEqual([s.name for s in tracking.states("t1")], ["sub"])
        self.assertEqual(tracking.states("t2"), [])

    def test_data_keys_are_kept_once_and_destroyed_for_good(self) -> None:
        """The backend's key store keeps the first wrapped key of a conversation; after deletion none can come back."""
        keys = self.backend.key_store()
        self.assertIs(self.backend.key_store(), keys)
        self.assertIsNone(keys.get("c1"))
        self.assertEqual(keys.add("c1", b"first"), b"first")
        self.assertEqual(keys.add("c1", b"second"), b"first")
        self.assertTrue(keys.delete("c1"))
        self.assertIsNone(keys.get("c1"))
        self.assertTrue(keys.was_erased("c1"))
        with self.assertRaises(ErasedError):
            keys.add("c1", b"third")
        self.assertFalse(keys.was_erased("c2"))

    def test_an_intact_log_misses_no_streams(self) -> None:
        """A log whose streams were all created through the recorder reports no missing streams."""
        self._stream("a", 1)
        self._stream("b", 2)
        self.assertEqual(self.backend.missing_streams(), [])

    def test_reserved_positions_are_the_positions_inserted(self) -> None:
        """What a transaction says the next insert's positions are (when it can tell) is what they are,
        across streams and appends in one transaction and across transactions, each after the log's last."""
        for count in (1, 3, 2):
            with self.backend.recorder.write() as tx:
                create_stream(tx, f"s{count}")
                for _ in range(2):
                    told = tx.positions(count)
                    self.assertEqual(tx.positions(count), told, "asking again gives the same answer")
                    positions, _ = append(tx, f"s{count}", count)
                    if told is not None:
                        self.assertEqual(list(told), positions)
            self.assertEqual(self.backend.recorder.last_position(), max(positions))

    def test_an_intact_log_misses_no_positions(self) -> None:
        """A log written through the recorder, with refused inserts between, reports no missing positions."""
        self._stream("a", 2)
        with self.assertRaises(ConflictError), self.backend.recorder.write() as tx:
            append(tx, "a", 1, keys=["k"])
            append(tx, "a", 1, keys=["k"])
        self._stream("b", 2)
        self.assertEqual(self.backend.missing_positions(), [])

    def test_log_scan_reads_what_the_log_holds(self) -> None:
        """A backend's raw log scan, when it has one, reads every record's position, version and payload."""
        scan = self.backend.log_scan()
        if scan is None:
            self.skipTest("the backend has no raw log scan: rebuilds read pages through read_all")
        self._stream("a", 2)
        self._stream("b", 1, tenant="t2")
        every = self.recorder.read_all()
        rows = scan.rows(0, 100)
        self.assertEqual([(r[0], r[2]) for r in rows], [(r.position, r.version) for r in every])
        payloads = [bytes(r[7]).decode() if isinstance(r[7], bytes | bytearray | memoryview) else r[7] for r in rows]
        self.assertEqual(payloads, [r.payload for r in every])
        self.assertEqual(scan.records(0, every[-1].position), every)
        self.assertEqual(scan.event_ids(0, every[-1].position), [r.event_id for r in every])
