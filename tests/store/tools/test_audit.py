"""The tool audit projection: one row per call, folded from the tool-call streams."""

from __future__ import annotations

import time

from chatledger.projections import AuditRow, audit_key, fold_audit, tool_audit
from chatledger.store import Executor, Store
from chatledger.store.tools.ledger import claim_call, load_call

from .checks import assistant, call


def test_audit_rows_describe_every_call(store: Store) -> None:
    """Rows carry tool, arguments, status, attempts, worker, times, duration and result or error."""
    tries = {"n": 0}

    def flaky() -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ValueError("first try fails")
        return "ok"

    def echo(text: str) -> str:
        return text

    conv = store.start_conversation(messages=[{"role": "user", "content": "audit me"}])
    other = store.start_conversation(messages=[{"role": "user", "content": "elsewhere"}])
    ex = Executor(store, [flaky, echo], worker_id="w-audit", max_attempts=2)
    ex.execute(conv, assistant(call("c1", "echo", {"text": "hi"}), call("c2", "flaky", {}), call("c3", "gone", {})))
    ex.submit(other, assistant(call("d1", "echo", {"text": "x"})))
    state = load_call(store, other, "d1")
    assert state is not None and claim_call(store, state, "w-dead", 0.01, time.time()) is not None

    rows = {r.tool_call_id: r for r in tool_audit(store)}
    assert set(rows) == {"c1", "c2", "c3", "d1"}
    c1 = rows["c1"]
    assert (c1.conversation_id, c1.tool, c1.arguments, c1.status) == (conv, "echo", '{"text": "hi"}', "succeeded")
    assert c1.attempts == 1 and c1.worker_id == "w-audit" and c1.result == "hi" and c1.error is None
    assert c1.requested_at and c1.started_at and c1.finished_at and c1.duration_ms is not None
    assert c1.started_at <= c1.finished_at
    assert rows["c2"].status == "succeeded" and rows["c2"].attempts == 2 and rows["c2"].result == "ok"
    assert rows["c3"].status == "failed" and rows["c3"].attempts == 0 and "unknown tool" in str(rows["c3"].error)
    assert rows["d1"].status == "claimed" and rows["d1"].worker_id == "w-dead" and rows["d1"].finished_at is None

    assert [r.tool_call_id for r in tool_audit(store, conversation_id=other)] == ["d1"]
    assert {r.tool_call_id for r in tool_audit(store, tool="echo")} == {"c1", "d1"}
    assert [r.tool_call_id for r in tool_audit(store, status="failed")] == ["c3"]
    assert tool_audit(store, conversation_id=conv, status="claimed") == []


def test_fold_is_pure_and_ignores_other_events(store: Store) -> None:
    """Folding never changes its input row, and message events have no audit key."""
    conv = store.start_conversation(messages=[{"role": "user", "content": "x"}])
    Executor(store, {"echo": lambda text: text}).execute(conv, assistant(call("c1", "echo", {"text": "a"})))
    events = store.read_all()
    assert all(audit_key(e) is None for e in events if e.stream_id == conv)
    row: AuditRow | None = None
    seen: list[AuditRow] = []
    for event in events:
        if audit_key(event) is None:
            continue
        before = row
        row = fold_audit(row, event)
        if before is not None:
            assert before == seen[-1]
        assert row is not None
        seen.append(row)
    assert [r.status for r in seen] == ["requested", "claimed", "succeeded"]
    assert seen[0].attempts == 0 and seen[-1].attempts == 1
