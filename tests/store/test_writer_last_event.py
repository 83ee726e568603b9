"""Writer.last_event: an append conditioned on a stream's last event, inside the transaction that appends."""

from __future__ import annotations

from collections.abc import Callable

from chatledger.store import PositionTracked, Store
from chatledger.store.writer import Draft


def test_last_event_sees_the_transactions_own_appends(make_store: Callable[..., Store]) -> None:
    """Within one transaction the newest event is the one just appended; an empty or unknown stream has none;
    another tenant's stream is not visible."""
    store, other = make_store(), make_store(tenant="other")
    with store.transaction() as w:
        assert w.last_event("tracking-a") is None
        w.create_stream("tracking-a", "tracking-a", "tracking")
        assert w.last_event("tracking-a") is None
        w.append("tracking-a", [Draft(PositionTracked, {"name": "up", "position": 3})])
        last = w.last_event("tracking-a")
        assert isinstance(last, PositionTracked) and last.position == 3 and last.version == 1
    with store.transaction() as w:
        w.append("tracking-a", [Draft(PositionTracked, {"name": "up", "position": 7})])
        last = w.last_event("tracking-a")
        assert isinstance(last, PositionTracked) and (last.position, last.version) == (7, 2)
    with other.transaction() as w:
        assert w.last_event("tracking-a") is None
