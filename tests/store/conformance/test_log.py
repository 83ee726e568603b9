"""The log's contract, run on every backend (memory, SQLite file, PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from chatledger.store import (
    ConcurrencyError,
    ConflictError,
    ConversationStarted,
    MessageAppended,
    NotFoundError,
    PendingToolCallsError,
    Store,
    ValidationError,
)

USER = {"role": "user", "content": "Weather in Rome?"}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"}
ANSWER = {"role": "assistant", "content": "It is sunny in Rome."}


def test_history_returns_messages_exactly_as_appended(store: Store) -> None:
    """A conversation's history is the appended messages, in order, byte-for-byte equal."""
    conv = store.start_conversation(metadata={"user": "u1"})
    store.append(conv, [USER])
    store.append(conv, [CALL], expected_version=2)
    store.append(conv, [RESULT, ANSWER], expected_version=3)
    assert store.history(conv) == [USER, CALL, RESULT, ANSWER]
    assert store.version(conv) == 5
    assert store.conversation(conv).metadata == {"user": "u1"}


def test_events_have_envelope_and_increasing_versions(store: Store) -> None:
    """Every event carries a unique id, its conversation, version, global position, UTC time and tenant."""
    conv = store.start_conversation()
    store.append(conv, [USER, ANSWER])
    events = store.events(conv)
    assert isinstance(events[0], ConversationStarted)
    assert all(isinstance(e, MessageAppended) for e in events[1:])
    assert [e.version for e in events] == [1, 2, 3]
    assert len({e.event_id for e in events}) == 3
    assert all(e.conversation_id == conv and e.tenant == "default" for e in events)
    assert all(e.recorded_at.utcoffset() is not None and e.recorded_at.utcoffset().total_seconds() == 0 for e in events)
    positions = [e.position for e in store.read_all()]
    assert len(set(positions)) == len(positions) == 3


def test_history_as_of_an_earlier_version(store: Store) -> None:
    """The history as of version N contains only the messages appended up to N."""
    conv = store.start_conversation()
    store.append(conv, [USER])
    store.append(conv, [ANSWER])
    assert store.history(conv, as_of=2) == [USER]
    assert store.history(conv, as_of=1) == []
    assert store.history(conv) == [USER, ANSWER]


def test_stale_expected_version_writes_nothing(store: Store) -> None:
    """A writer with a stale expected_version gets ConcurrencyError and the log is unchanged."""
    conv = store.start_conversation()
    store.append(conv, [USER], expected_version=1)
    before = store.read_all()
    with pytest.raises(ConcurrencyError) as err:
        store.append(conv, [ANSWER], expected_version=1)
    assert err.value.expected == 1 and err.value.actual == 2
    assert store.read_all() == before


def test_append_is_idempotent_by_message_id(store: Store) -> None:
    """Appending a message id again with the same content is a no-op returning the stored event."""
    conv = store.start_conversation()
    first = store.append(conv, [USER], message_ids=["m1"])
    again = store.append(conv, [USER], message_ids=["m1"], expected_version=1)
    assert again == first
    assert store.version(conv) == 2
    assert store.history(conv) == [USER]


def test_same_message_id_with_other_content_conflicts(store: Store) -> None:
    """A message id reused for different content is a ConflictError and nothing is written."""
    conv = store.start_conversation()
    store.append(conv, [USER], message_ids=["m1"])
    before = store.read_all()
    with pytest.raises(ConflictError):
        store.append(conv, [ANSWER], message_ids=["m1"])
    assert store.read_all() == before


def test_partially_duplicated_batch_appends_only_new_messages(store: Store) -> None:
    """A retried batch that grew appends only the messages not stored yet."""
    conv = store.start_conversation()
    store.append(conv, [USER], message_ids=["m1"])
    events = store.append(conv, [USER, ANSWER], message_ids=["m1", "m2"])
    assert [e.message_id for e in events] == ["m1", "m2"]
    assert store.history(conv) == [USER, ANSWER]


def test_batch_is_atomic(store: Store) -> None:
    """A batch with one bad message stores none of its messages."""
    conv = store.start_conversation()
    before = store.read_all()
    with pytest.raises(ValidationError) as err:
        store.append(conv, [USER, {"role": "tool", "content": "x"}])
    assert err.value.field == "messages[1].tool_call_id"
    assert store.read_all() == before


def test_unknown_conversation_is_not_found(store: Store) -> None:
    """Appending to or reading an unknown conversation raises NotFoundError."""
    with pytest.raises(NotFoundError):
        store.append("nope", [USER])
    with pytest.raises(NotFoundError):
        store.history("nope")
    with pytest.raises(NotFoundError):
        store.events("nope")


def test_duplicate_conversation_id_conflicts(store: Store) -> None:
    """Starting a conversation with an existing id is a ConflictError unless exist_ok."""
    store.start_conversation("c1", metadata={"a": 1})
    with pytest.raises(ConflictError):
        store.start_conversation("c1")
    assert store.start_conversation("c1", exist_ok=True) == "c1"
    assert store.version("c1") == 1


def test_pending_tool_call_is_reported_not_sent(store: Store) -> None:
    """A history with an unanswered tool call raises unless the caller allows it explicitly."""
    conv = store.start_conversation()
    store.append(conv, [USER, CALL])
    with pytest.raises(PendingToolCallsError) as err:
        store.history(conv)
    assert err.value.tool_call_ids == ["call_1"]
    assert store.history(conv, allow_pending=True) == [USER, CALL]
    store.append(conv, [RESULT])
    assert store.history(conv) == [USER, CALL, RESULT]


def test_read_all_pages_through_the_global_log(store: Store) -> None:
    """Reading the global log after the last position seen continues without gaps or repeats."""
    convs = [store.start_conversation() for _ in range(3)]
    for i in range(5):
        for conv in convs:
            store.append(conv, [{"role": "user", "content": f"m{i}"}])
    seen: list[Any] = []
    after = 0
    while True:
        page = store.read_all(after=after, limit=4)
        if not page:
            break
        seen.extend(page)
        after = page[-1].position
    assert len(seen) == 18
    assert len({e.event_id for e in seen}) == 18
    assert [e.event_id for e in seen] == [e.event_id for e in store.iter_all(batch=7)]


def test_conversations_are_listed(store: Store) -> None:
    """Listing shows every conversation with its version and metadata."""
    a = store.start_conversation(metadata={"user": "u1"})
    b = store.start_conversation(messages=[USER])
    listed = {c.conversation_id: c for c in store.conversations()}
    assert set(listed) == {a, b}
    assert listed[b].version == 2 and listed[a].metadata == {"user": "u1"}


def test_start_with_messages_is_atomic(store: Store) -> None:
    """A conversation started with a bad first message is not created at all."""
    with pytest.raises(ValidationError):
        store.start_conversation("c2", messages=[USER, {"role": "robot"}])
    with pytest.raises(NotFoundError):
        store.version("c2")
    assert store.read_all() == []


def test_concurrent_appenders_never_lose_or_duplicate(make_store: Callable[..., Store]) -> None:
    """Threads appending with optimistic concurrency and retries store every message exactly once."""
    store = make_store()
    conv = store.start_conversation()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        s = make_store()
        try:
            for i in range(10):
                while True:
                    version = s.version(conv)
                    try:
                        s.append(
                            conv,
                            [{"role": "user", "content": f"{n}-{i}"}],
                            expected_version=version,
                            message_ids=[f"{n}-{i}"],
                        )
                        break
                    except ConcurrencyError:
                        continue
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    contents = sorted(m["content"] for m in store.history(conv))
    assert contents == sorted(f"{n}-{i}" for n in range(4) for i in range(10))
    assert store.version(conv) == 41


def test_racing_starts_with_exist_ok_all_succeed(make_store: Callable[..., Store]) -> None:
    """Writers racing to start the same conversation with exist_ok all get it; it is created once."""
    barrier = threading.Barrier(4)
    results: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        s = make_store()
        barrier.wait()
        try:
            results.append(s.start_conversation("shared-start", exist_ok=True))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == ["shared-start"] * 4
    assert make_store().version("shared-start") == 1


def test_events_returned_by_an_append_equal_the_stored_ones(store: Store) -> None:
    """What an append returns is exactly what reading the events back gives, datetime fields included."""
    from datetime import UTC, datetime

    from chatledger.store import Draft, ToolCallClaimed
    from chatledger.store.backends.recorder import side_stream_id

    conv = store.start_conversation(metadata={"k": "v"})
    appended = store.append(conv, [USER], message_ids=["u1"], meta=[{"source": "user"}])
    plain = store.append(conv, [ANSWER])
    assert store.events(conv)[1:] == [*appended, *plain]
    for returned_event, stored in zip([*appended, *plain], store.events(conv)[1:], strict=True):
        assert returned_event.model_dump() == stored.model_dump()
        assert returned_event.position == stored.position > 0
        with pytest.raises(PydanticValidationError):
            returned_event.version = 99  # frozen like a validated event
    claim = {
        "tool_call_id": "c1",
        "worker_id": "w1",
        "lease_expires_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),
        "fencing_token": 1,
        "attempt": 1,
        "idempotency_key": "k",
    }
    side = side_stream_id(conv, "test")
    with store.transaction() as w:
        w.create_stream(side, conv, "side")
        returned = w.append(side, [Draft(ToolCallClaimed, claim, key="claim")])
    assert returned == store.stream_events(side)
    assert isinstance(returned[0], ToolCallClaimed) and returned[0].lease_expires_at.year == 2030


def test_a_message_without_an_id_is_known_by_its_event_id(store: Store) -> None:
    """An id-less message's id is its event id; sending that id back is a no-op, on every backend."""
    conv = store.start_conversation()
    (first,) = store.append(conv, [{"role": "user", "content": "no id given"}])
    assert first.message_id == first.event_id
    again = store.append(conv, [{"role": "user", "content": "no id given"}], message_ids=[first.message_id])
    assert [e.event_id for e in again] == [first.event_id]
    assert store.version(conv) == 2
    with pytest.raises(ConflictError):
        store.append(conv, [{"role": "user", "content": "other text"}], message_ids=[first.message_id])
    # An id of our shape that names no stored message is an ordinary new client id.
    lookalike = first.event_id[:24] + "00000007"
    (other,) = store.append(conv, [{"role": "user", "content": "look-alike id"}], message_ids=[lookalike])
    assert other.message_id == lookalike and store.version(conv) == 3
    assert [e.message_id for e in store.events(conv)[1:]] == [first.event_id, lookalike]
    assert store.verify().ok


def test_stale_cached_heads_never_fork_a_conversation(make_store: Callable[..., Store]) -> None:
    """Two stores on one database append in turn: each one's remembered head is stale every time.

    The one-statement append is refused by the database and redone in a transaction:
    versions stay contiguous, nothing is lost or doubled, expected_version is judged on the
    real head, and every chain verifies.
    """
    a, b = make_store(), make_store()
    conv = a.start_conversation()
    for i in range(20):
        writer = a if i % 2 == 0 else b
        (event,) = writer.append(conv, [{"role": "user", "content": f"m{i}"}])
        assert event.version == i + 2
    assert [m["content"] for m in a.history(conv)] == [f"m{i}" for i in range(20)]
    stale = b.version(conv)  # b's own view is current; a's remembered head is one behind b's last append
    b.append(conv, [{"role": "user", "content": "b moves on"}])
    with pytest.raises(ConcurrencyError):
        a.append(conv, [{"role": "user", "content": "late"}], expected_version=stale)
    a.append(conv, [{"role": "user", "content": "in time"}], expected_version=stale + 1)
    assert a.version(conv) == stale + 2 and a.verify().ok and b.verify().ok


def test_returned_events_are_copies_equal_to_the_stored_ones(store: Store) -> None:
    """Whatever a message holds, the returned event equals the stored one and shares nothing with the input."""
    conv = store.start_conversation()
    plain = {"role": "user", "content": "plain", "score": 0.1, "big": 2**70, "flag": True, "none": None}
    shapes: list[dict[str, Any]] = [
        plain,
        {"role": "user", "content": "a tuple field", "extra": (1, 2)},  # JSON makes the tuple a list
        CALL,
        {"role": "user", "content": [{"type": "text", "text": "parts"}]},
    ]
    metas: list[dict[Any, Any] | None] = [{1: "an int key"}, None, {"nested": {"a": [1]}}, {"f": 1.5}]
    appended = store.append(conv, shapes, meta=metas)
    plain["content"] = "changed after the append"
    assert store.events(conv)[1:] == appended
    assert appended[0].message["content"] == "plain"
    assert appended[1].message["extra"] == [1, 2]
    assert appended[0].meta == {"1": "an int key"}
    assert store.verify().ok


def test_an_event_recorded_on_an_exact_second_reads_back_and_verifies(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time with no fraction of a second is stored and hashed as the same text it is read back as."""
    import chatledger.store.writer as writer

    conv = store.start_conversation()
    for ns in (1_900_000_000_000_000_000, 1_900_000_000_000_001_000, 1_900_000_001_000_000_000):
        monkeypatch.setattr(writer.time, "time_ns", lambda ns=ns: ns)
        (event,) = store.append(conv, [USER])
        assert event.recorded_at.timestamp() * 1e9 == pytest.approx(ns, abs=1000)
        assert store.events(conv)[-1] == event
    assert store.verify().ok
