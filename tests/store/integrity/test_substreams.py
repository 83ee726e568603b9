"""A conversation's head records the tool-call and side streams that belong to it, so that one deleted
whole is named by verify, on every backend, also when streams are created by concurrent writers."""

from __future__ import annotations

import threading

import pytest

from chatledger.store import Executor, IntegrityError, open_store
from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.integrity.substreams import record_of
from chatledger.store.integrity.verify import verify

from .scenario import tamper_postgres, tamper_sqlite


def _call(n: int) -> dict[str, object]:
    return {"id": f"call-{n}", "type": "function", "function": {"name": "echo", "arguments": f'{{"n": {n}}}'}}


def test_streams_created_by_concurrent_writers_are_all_recorded(store_url: str, backend: str) -> None:
    """Four threads running tool calls of one conversation at once: every call's stream is in the record,
    which verify recomputes from the streams it finds."""
    with open_store(store_url) as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "go"}])
        executor = Executor(store, {"echo": lambda n: f"echo {n}"})
        errors: list[BaseException] = []

        def run(start: int) -> None:
            try:
                for n in range(start, start + 5):
                    executor.execute_call("c1", f"call-{n}", "echo", f'{{"n": {n}}}')
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i * 5,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        head = store.recorder.get_head("c1")
        assert head is not None
        calls = [call_stream_id("c1", f"call-{n}") for n in range(20)]
        assert head.substreams == record_of(calls, None)
        report = verify(store)
        assert report.ok and report.untracked == 0, [p.describe() for p in report.problems]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_record_recomputed_without_the_signing_key_still_names_the_conversation(store_url: str, backend: str) -> None:
    """With a signing key, deleting a tool call's stream whole and rewriting the conversation's record
    without the key (plain SHA-256 marks) leaves a record that still disagrees: the conversation is named."""
    with open_store(store_url, signing_key=b"s3cret") as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "go"}])
        Executor(store, {"echo": lambda n: f"echo {n}"}).execute(
            "c1", {"role": "assistant", "content": None, "tool_calls": [_call(1), _call(2)]}
        )
        assert store.verify().ok
        forged = record_of([call_stream_id("c1", "call-2")], None)
        if backend == "sqlite":
            call = "'c1' || char(31) || 'call' || char(31) || 'call-1'"
            where = f"sid = (SELECT sid FROM streams WHERE stream_id = {call})"
            tamper_sqlite(
                store_url.removeprefix("sqlite:///"),
                [
                    f"DELETE FROM events WHERE {where}",
                    f"DELETE FROM streams WHERE {where}",
                    f"UPDATE streams SET substreams = '{forged}' WHERE stream_id = 'c1'",
                ],
            )
        else:
            where = "stream_id = 'c1' || chr(31) || 'call' || chr(31) || 'call-1'"
            tamper_postgres(
                store_url,
                [
                    f"DELETE FROM events WHERE {where}",
                    f"DELETE FROM streams WHERE {where}",
                    f"UPDATE streams SET substreams = '{forged}' WHERE stream_id = 'c1'",
                ],
            )
        problems = [(p.stream_id, p.kind) for p in verify(store).problems if p.conversation_id]
        assert problems == [("c1", "removed")]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("record", ["not a record", "", "0" * 65, "-" + "1" * 63])
def test_an_edited_record_that_is_not_one_is_named_and_refuses_new_streams(
    store_url: str, backend: str, record: str
) -> None:
    """A conversation's record of its streams overwritten with text that is not a record: verify names the
    conversation (it does not raise), and creating a stream in it is a typed IntegrityError, nothing written."""
    with open_store(store_url) as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "go"}])
        store.start_conversation("c2", messages=[{"role": "user", "content": "fine"}])
        update = [f"UPDATE streams SET substreams = '{record}' WHERE stream_id = 'c1'"]
        if backend == "sqlite":
            tamper_sqlite(store_url.removeprefix("sqlite:///"), update)
        else:
            tamper_postgres(store_url, update)
        assert [(p.stream_id, p.kind) for p in verify(store).problems] == [("c1", "changed")]
        before = store.recorder.read_all()
        with pytest.raises(IntegrityError, match="c1"):
            Executor(store, {"echo": lambda n: f"echo {n}"}).execute(
                "c1", {"role": "assistant", "content": None, "tool_calls": [_call(1)]}
            )
        assert store.recorder.read_all() == before
        Executor(store, {"echo": lambda n: f"echo {n}"}).execute(
            "c2", {"role": "assistant", "content": None, "tool_calls": [_call(1)]}
        )
