"""What an eventsourcing application gains from chatledger's log, through eventsourcing's public API."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import DataError, IntegrityError, StoredEvent, Tracking

from chatledger.adapters.eventsourcing import ChatledgerApplicationRecorder, ChatledgerProcessRecorder
from chatledger.store import DomainEventRecorded, PositionTracked, open_store
from tests.adapters.eventsourcing.shared_writer import Counter

MODULE = "chatledger.adapters.eventsourcing"


def _app(url: str, **env: str) -> Application[UUID]:
    return Application[UUID](env={"PERSISTENCE_MODULE": MODULE, "CHATLEDGER_URL": url, **env})


def test_events_are_encrypted_at_rest_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the store's master key set, an application's stored events are ciphertext in the file, and the
    application and chatledger's own readers get them back."""
    monkeypatch.setenv("CHATLEDGER_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    url = f"sqlite:///{tmp_path / 'enc.db'}"
    app = _app(url)
    counter = Counter("secret-name")
    counter.move(by=5)
    app.save(counter)
    assert app.repository.get(counter.id).name == "secret-name"
    app.close()
    with sqlite3.connect(tmp_path / "enc.db") as conn:
        payloads = [p for (p,) in conn.execute("SELECT payload FROM events")]
    assert len(payloads) == 2 and all(p.startswith("enc:") and "secret-name" not in p for p in payloads)
    store = open_store(url)
    events = [e for e in store.read_all() if isinstance(e, DomainEventRecorded)]
    assert "secret-name" in events[0].state
    assert store.verify().ok
    store.close()


def test_compressed_and_ciphered_states_round_trip(tmp_path: Path) -> None:
    """States the application compresses and encrypts itself (not UTF-8) are stored and read back exactly."""
    from eventsourcing.cipher import AESCipher

    app = _app(
        f"sqlite:///{tmp_path / 'bytes.db'}",
        COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor",
        CIPHER_KEY=AESCipher.create_key(16),
    )
    counter = Counter("zipped")
    counter.move(by=7)
    app.save(counter)
    assert app.repository.get(counter.id).value == 7
    app.close()


def test_tenants_do_not_see_each_others_aggregates(tmp_path: Path) -> None:
    """An application scoped to one tenant neither reads nor lists another tenant's events in the same store."""
    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    app_a, app_b = _app(url, CHATLEDGER_TENANT="a"), _app(url, CHATLEDGER_TENANT="b")
    aggregate = Aggregate()
    app_a.save(aggregate)
    assert app_a.repository.get(aggregate.id).id == aggregate.id
    assert app_b.recorder.select_events(aggregate.id) == []
    assert app_b.recorder.select_notifications(None, 10) == []
    with pytest.raises(IntegrityError):  # the stream exists, for another tenant: never adopted
        app_b.recorder.insert_events([StoredEvent(aggregate.id, 2, "t", b"{}")])
    assert len(app_a.recorder.select_events(aggregate.id)) == 1
    app_a.close()
    app_b.close()


def test_bad_originator_id_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """An originator id with a control character is a DataError naming the field, and no event is stored."""
    store = open_store(f"sqlite:///{tmp_path / 'bad.db'}")
    recorder = ChatledgerApplicationRecorder(store, "App", originator_id_type="text")
    good = StoredEvent("order-1", 1, "t", b"{}")
    with pytest.raises(DataError, match="originator_id"):
        recorder.insert_events([good, StoredEvent("order\x00", 1, "t", b"{}")])
    assert recorder.select_notifications(None, 10) == [] and store.last_position() == 0
    store.close()


def test_tracking_commits_with_the_events_it_tracks(tmp_path: Path) -> None:
    """A process recorder's events and its tracking record are one transaction: a refused event leaves the
    tracked position where it was, and both are chatledger events that verify."""
    store = open_store(f"sqlite:///{tmp_path / 'track.db'}")
    recorder = ChatledgerProcessRecorder(store, "Process")
    oid = uuid4()
    recorder.insert_events([StoredEvent(oid, 1, "t", b"{}")], tracking=Tracking("Up", 5))
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(oid, 1, "t", b"{}")], tracking=Tracking("Up", 6))
    assert recorder.max_tracking_id("Up") == 5
    assert len(recorder.select_events(oid)) == 1
    kinds = [type(e) for e in store.read_all()]
    assert kinds == [PositionTracked, DomainEventRecorded]
    assert store.verify().ok
    store.close()


def test_versions_may_start_anywhere_but_not_leave_gaps(tmp_path: Path) -> None:
    """A stream may start at any version; a later insert that skips a version is refused, writing nothing."""
    store = open_store(f"sqlite:///{tmp_path / 'versions.db'}")
    recorder = ChatledgerApplicationRecorder(store, "App")
    oid = uuid4()
    recorder.insert_events([StoredEvent(oid, 10, "a", b"1"), StoredEvent(oid, 11, "b", b"2")])
    with pytest.raises(IntegrityError, match="gap"):
        recorder.insert_events([StoredEvent(oid, 13, "c", b"3")])
    recorder.insert_events([StoredEvent(oid, 12, "c", b"3")])
    assert [e.originator_version for e in recorder.select_events(oid, gt=10, lte=12)] == [11, 12]
    assert [e.originator_version for e in recorder.select_events(oid, desc=True, limit=2)] == [12, 11]
    store.close()


def test_chatledger_subscriptions_and_the_log_see_application_events(tmp_path: Path) -> None:
    """A chatledger durable subscription delivers an application's events, in log order, beside conversations';
    the application's newest notification id stays its own when other events follow it."""
    url = f"sqlite:///{tmp_path / 'subscribed.db'}"
    app = _app(url)
    first = app.save(Aggregate())
    store = open_store(url)
    conversation = store.start_conversation(messages=[{"role": "user", "content": "hi"}])
    assert app.recorder.max_notification_id() == first[-1].notification.id
    second = app.save(Aggregate())
    assert app.recorder.max_notification_id() == second[-1].notification.id
    seen: list[str] = []
    subscription = store.subscribe("audit", lambda event: seen.append(event.TYPE))
    subscription.run_once()
    assert seen == [DomainEventRecorded.TYPE, "conversation.started", "message.appended", DomainEventRecorded.TYPE]
    assert [c.conversation_id for c in store.conversations()] == [conversation]
    app.close()
    store.close()


def test_the_application_prefix_chooses_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``APPNAME_CHATLEDGER_URL`` points one application at its own store, before ``CHATLEDGER_URL``."""

    class Ledger(Application[UUID]):
        pass

    monkeypatch.setenv("PERSISTENCE_MODULE", MODULE)
    monkeypatch.setenv("CHATLEDGER_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    monkeypatch.setenv("LEDGER_CHATLEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger, other = Ledger(), Application[UUID]()
    ledger.save(Aggregate())
    other.save(Aggregate())
    ledger.close()
    other.close()
    for name in ("ledger.db", "shared.db"):
        store = open_store(f"sqlite:///{tmp_path / name}")
        assert len([e for e in store.read_all() if isinstance(e, DomainEventRecorded)]) == 1
        store.close()
