"""Durable subscriptions: named consumers of the global log that resume where they stopped.

A subscription delivers every event of its tenant to a handler, once, in global
order, in whichever process runs it. Its state is a row in the store itself
(``subscriptions``: position, status, error, owner, lease) on the same backend
as the log: the store's own file on SQLite (written through the recorder's
write lock), the recorder's connection on PostgreSQL, a dict on the in-memory
backend.

How "once" is kept:

* **One consumer at a time.** ``run_once`` first takes a lease on the row (a
  conditional ``UPDATE`` that only succeeds when the row is free, expired or
  already ours). A second process running the same subscription finds it held
  and delivers nothing, so two processes never hand the same event to their
  handlers concurrently. The holder renews the lease from a background thread
  every third of its length while it delivers, handlers included, so a handler
  slower than the lease keeps it; a holder that finds its lease taken over stops
  before its next event (``LeaseLost``).
* **Position after each event.** The position moves with a compare-and-set
  (``WHERE owner = me AND position = <the one I read>``) right after the
  handler returns; the next read is ``read_all(after=<last position seen>)``
  (positions increase in log order on every backend).
* **A failing handler stops the subscription at that event**: the row records
  ``status='stopped'``, the error and the failed event's position; the
  position stays on the last event handled. Nothing is skipped until an
  operator calls :meth:`Subscription.resume` (retry, or ``skip=True``).

Honest limit: a handler's own side effects are outside the store's
transaction. If the process dies after a handler returned but before its
position was stored, that one event is delivered again on restart
(at-least-once for the last event, exactly-once for every other). Handlers
that must be exactly-once dedupe on ``event.event_id``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from chatledger.store.clock import SYSTEM_CLOCK, Clock
from chatledger.store.errors import ChatledgerError, ConflictError, LeaseLost, ValidationError

if TYPE_CHECKING:
    from chatledger.store.events import Event
    from chatledger.store.handle import Store

__all__ = [
    "Handler",
    "MemoryTracking",
    "SQLTracking",
    "Subscription",
    "SubscriptionState",
    "SubscriptionStopped",
    "SubscriptionTracking",
    "subscribe",
    "subscription_states",
]

Handler = Callable[["Event"], object]

_COLUMNS = "tenant, name, position, status, error, failed_position, owner, lease_until, delivered, updated_at"

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    position BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active',
    error TEXT,
    failed_position BIGINT,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    delivered BIGINT NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
)
"""


class SubscriptionStopped(ChatledgerError):
    """Raised when a subscription's handler failed on an event: it waits there until resumed."""

    def __init__(self, state: SubscriptionState) -> None:
        self.state = state
        super().__init__(
            f"subscription {state.name!r} stopped at position {state.failed_position}: {state.error}. "
            "Fix the handler, then call resume() (or resume(skip=True) to pass over that event)."
        )


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription as stored: where it stands, whether it is stopped and why, who holds it."""

    tenant: str
    name: str
    position: int
    status: str
    error: str | None
    failed_position: int | None
    owner: str | None
    lease_until: float | None
    delivered: int
    updated_at: str


class SubscriptionTracking(Protocol):
    """Where subscription rows live: each backend hands one out (:meth:`Backend.subscription_tracking`)."""

    def get(self, tenant: str, name: str) -> SubscriptionState | None: ...

    def states(self, tenant: str | None) -> list[SubscriptionState]: ...

    def acquire(self, tenant: str, name: str, owner: str, now: float, until: float) -> SubscriptionState | None: ...

    def advance(self, tenant: str, name: str, owner: str, old: int, new: int, until: float) -> bool: ...

    def renew(self, tenant: str, name: str, owner: str, until: float) -> bool: ...

    def stop(self, tenant: str, name: str, owner: str, failed: int, error: str) -> None: ...

    def release(self, tenant: str, name: str, owner: str) -> None: ...

    def resume(self, tenant: str, name: str, skip: bool) -> bool: ...


def _now_iso() -> str:
    from chatledger.store.writer import now_iso

    return now_iso()


class SQLTracking:
    """Subscription rows in a SQL table, written in the backend's own write transactions.

    Args:
        transaction: a write transaction of the backend yielding ``run(sql, params) -> rows``.
        placeholder: the driver's parameter mark (``?`` or ``%s``).
        read: like ``transaction``, for reads.
    """

    def __init__(self, transaction: Callable[[], Any], placeholder: str, read: Callable[[], Any]) -> None:
        self._transaction = transaction
        self._read = read
        self._ph = placeholder
        for attempt in range(3):
            try:
                with self._transaction() as run:
                    run(SCHEMA)
                return
            except ConflictError:
                # PostgreSQL: processes creating the table at once collide on its catalog row
                # even with IF NOT EXISTS; the winner's table stands, so look again.
                if attempt == 2:
                    raise

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self._ph)

    def _one(self, sql: str, params: tuple[Any, ...]) -> SubscriptionState | None:
        with self._transaction() as run:
            rows = run(self._sql(sql), params)
        return SubscriptionState(*rows[0]) if rows else None

    def get(self, tenant: str, name: str) -> SubscriptionState | None:
        with self._read() as run:
            rows = run(
                self._sql(f"SELECT {_COLUMNS} FROM subscriptions WHERE tenant = %s AND name = %s"), (tenant, name)
            )
        return SubscriptionState(*rows[0]) if rows else None

    def states(self, tenant: str | None) -> list[SubscriptionState]:
        with self._read() as run:
            if tenant is None:
                rows = run(f"SELECT {_COLUMNS} FROM subscriptions ORDER BY tenant, name", ())
            else:
                rows = run(
                    self._sql(f"SELECT {_COLUMNS} FROM subscriptions WHERE tenant = %s ORDER BY name"), (tenant,)
                )
        return [SubscriptionState(*row) for row in rows]

    def acquire(self, tenant: str, name: str, owner: str, now: float, until: float) -> SubscriptionState | None:
        stamp = _now_iso()
        with self._transaction() as run:
            # The write comes first, so a SQLite transaction never reads before it holds the lock.
            run(
                self._sql(
                    "INSERT INTO subscriptions (tenant, name, position, status, delivered, updated_at) "
                    "VALUES (%s, %s, 0, 'active', 0, %s) ON CONFLICT (tenant, name) DO NOTHING"
                ),
                (tenant, name, stamp),
            )
            rows = run(
                self._sql(
                    "UPDATE subscriptions SET owner = %s, lease_until = %s WHERE tenant = %s AND name = %s "
                    "AND (owner IS NULL OR owner = %s OR lease_until < %s) "
                    f"RETURNING {_COLUMNS}"
                ),
                (owner, until, tenant, name, owner, now),
            )
        return SubscriptionState(*rows[0]) if rows else None

    def advance(self, tenant: str, name: str, owner: str, old: int, new: int, until: float) -> bool:
        rows = self._one(
            "UPDATE subscriptions SET position = %s, delivered = delivered + 1, lease_until = %s, "
            "updated_at = %s WHERE tenant = %s AND name = %s AND owner = %s AND position = %s "
            f"RETURNING {_COLUMNS}",
            (new, until, _now_iso(), tenant, name, owner, old),
        )
        return rows is not None

    def renew(self, tenant: str, name: str, owner: str, until: float) -> bool:
        row = self._one(
            f"UPDATE subscriptions SET lease_until = %s WHERE tenant = %s AND name = %s AND owner = %s "
            f"RETURNING {_COLUMNS}",
            (until, tenant, name, owner),
        )
        return row is not None

    def stop(self, tenant: str, name: str, owner: str, failed: int, error: str) -> None:
        self._one(
            "UPDATE subscriptions SET status = 'stopped', error = %s, failed_position = %s, updated_at = %s "
            f"WHERE tenant = %s AND name = %s AND owner = %s RETURNING {_COLUMNS}",
            (error, failed, _now_iso(), tenant, name, owner),
        )

    def release(self, tenant: str, name: str, owner: str) -> None:
        self._one(
            "UPDATE subscriptions SET owner = NULL, lease_until = NULL "
            f"WHERE tenant = %s AND name = %s AND owner = %s RETURNING {_COLUMNS}",
            (tenant, name, owner),
        )

    def resume(self, tenant: str, name: str, skip: bool) -> bool:
        move = "position = failed_position, delivered = delivered + 1, " if skip else ""
        row = self._one(
            f"UPDATE subscriptions SET {move}status = 'active', error = NULL, failed_position = NULL, "
            f"updated_at = %s WHERE tenant = %s AND name = %s AND status = 'stopped' RETURNING {_COLUMNS}",
            (_now_iso(), tenant, name),
        )
        return row is not None


class MemoryTracking:
    """Subscription rows in a dict, for the in-memory backend (one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], SubscriptionState] = {}

    def get(self, tenant: str, name: str) -> SubscriptionState | None:
        with self._lock:
            return self._rows.get((tenant, name))

    def states(self, tenant: str | None) -> list[SubscriptionState]:
        with self._lock:
            rows = [s for s in self._rows.values() if tenant is None or s.tenant == tenant]
        return sorted(rows, key=lambda s: (s.tenant, s.name))

    def acquire(self, tenant: str, name: str, owner: str, now: float, until: float) -> SubscriptionState | None:
        with self._lock:
            row = self._rows.get((tenant, name))
            if row is None:
                row = SubscriptionState(tenant, name, 0, "active", None, None, None, None, 0, _now_iso())
            if row.owner not in (None, owner) and (row.lease_until or 0) >= now:
                return None
            row = self._rows[(tenant, name)] = replace(row, owner=owner, lease_until=until)
            return row

    def _update(self, tenant: str, name: str, check: Callable[[SubscriptionState], bool], **changes: Any) -> bool:
        with self._lock:
            row = self._rows.get((tenant, name))
            if row is None or not check(row):
                return False
            self._rows[(tenant, name)] = replace(row, **changes)
            return True

    def advance(self, tenant: str, name: str, owner: str, old: int, new: int, until: float) -> bool:
        row = self.get(tenant, name)
        delivered = (row.delivered if row else 0) + 1
        return self._update(
            tenant,
            name,
            lambda r: r.owner == owner and r.position == old,
            position=new,
            lease_until=until,
            delivered=delivered,
            updated_at=_now_iso(),
        )

    def renew(self, tenant: str, name: str, owner: str, until: float) -> bool:
        return self._update(tenant, name, lambda r: r.owner == owner, lease_until=until)

    def stop(self, tenant: str, name: str, owner: str, failed: int, error: str) -> None:
        self._update(
            tenant,
            name,
            lambda r: r.owner == owner,
            status="stopped",
            error=error,
            failed_position=failed,
            updated_at=_now_iso(),
        )

    def release(self, tenant: str, name: str, owner: str) -> None:
        self._update(tenant, name, lambda r: r.owner == owner, owner=None, lease_until=None)

    def resume(self, tenant: str, name: str, skip: bool) -> bool:
        row = self.get(tenant, name)
        if row is None or row.status != "stopped":
            return False
        changes: dict[str, Any] = {"status": "active", "error": None, "failed_position": None}
        if skip and row.failed_position is not None:
            changes.update(position=row.failed_position, delivered=row.delivered + 1)
        return self._update(tenant, name, lambda r: r.status == "stopped", updated_at=_now_iso(), **changes)


def _tracking(store: Store) -> SubscriptionTracking:
    """The subscription rows of the store's backend."""
    return store.backend.subscription_tracking()


class _LeaseKeeper:
    """Keeps a subscription's lease alive from a background thread while its consumer delivers.

    The lease is renewed every third of its length, also while a handler runs, so a
    handler slower than the lease does not let a second consumer take the
    subscription over and deliver the same event again. When a renewal finds the
    subscription taken over, :attr:`lost` is set and the consumer stops before its
    next event.
    """

    def __init__(self, renew: Callable[[float], bool], lease_seconds: float, clock: Clock) -> None:
        self._renew, self._lease, self._clock = renew, lease_seconds, clock
        self._cond = threading.Condition()
        self._stopped = False
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="chatledger-subscription-lease", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        due = self._clock.now() + self._lease / 3
        while True:
            with self._cond:
                while not self._stopped and self._clock.now() < due:
                    self._clock.wait(self._cond, due - self._clock.now())
                if self._stopped:
                    return
            due = self._clock.now() + self._lease / 3
            try:
                kept = self._renew(self._clock.now() + self._lease)
            except Exception:
                continue  # the store is unreachable for now: the next third of the lease tries again
            if not kept:
                self.lost = True
                return


class Subscription:
    """A named, durable consumer of one tenant's log, delivering each event to ``handler`` once.

    Build it with :func:`subscribe` or :meth:`chatledger.store.Store.subscribe`; nothing runs
    until :meth:`run_once` or :meth:`run_forever` is called, in whichever process should consume.
    The consumer holds a lease on the subscription (``lease_seconds``), renewed in the
    background while it delivers, handlers included; another consumer takes over only when
    the holder stopped renewing (it died), after the lease expired.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        handler: Handler,
        *,
        batch: int = 100,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.25,
        worker_id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        from chatledger.store.writer import check_id

        self.store = store
        self.name = check_id(name, "name")
        self.handler = handler
        if batch < 1:
            raise ValidationError("batch", "must be at least 1")
        if not lease_seconds > 0:
            raise ValidationError("lease_seconds", "must be positive")
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.worker_id = worker_id or uuid.uuid4().hex
        self.clock = clock

    def state(self) -> SubscriptionState | None:
        """The stored state (None before the first run)."""
        return _tracking(self.store).get(self.store.tenant, self.name)

    def run_once(self) -> int:
        """Deliver every event not yet delivered, in global order; return how many were delivered.

        Returns 0 without delivering when another process holds the subscription.

        Raises:
            SubscriptionStopped: the handler raised (now, or on an earlier run and it was not resumed).
            LeaseLost: another consumer took over (this one stopped renewing its lease in time);
                this consumer delivered nothing after it noticed.
        """
        tracking, tenant, me, clock = _tracking(self.store), self.store.tenant, self.worker_id, self.clock
        peek = tracking.get(tenant, self.name)
        if peek is not None and peek.status == "active" and not self.store.recorder.read_all(peek.position, 1, tenant):
            return 0  # nothing new: an idle poll takes no lock and writes nothing
        now = clock.now()
        state = tracking.acquire(tenant, self.name, me, now, now + self.lease_seconds)
        if state is None:
            return 0
        delivered = 0

        def renew(until: float) -> bool:
            return tracking.renew(tenant, self.name, me, until)

        lost = LeaseLost(f"subscription {self.name!r} was taken over by another consumer")
        try:
            with _LeaseKeeper(renew, self.lease_seconds, clock) as keeper:
                if state.status == "stopped":
                    raise SubscriptionStopped(state)
                position = state.position
                while True:
                    records = self.store.recorder.read_all(position, self.batch, tenant)
                    for record in records:
                        if keeper.lost:
                            raise lost
                        try:
                            self.handler(self.store.decode(record, erased_marker=True))
                        except Exception as exc:
                            error = self.store.redacted(f"{type(exc).__name__}: {exc}")
                            tracking.stop(tenant, self.name, me, record.position, error)
                            stopped = tracking.get(tenant, self.name)
                            assert stopped is not None
                            raise SubscriptionStopped(stopped) from exc
                        until = clock.now() + self.lease_seconds
                        if not tracking.advance(tenant, self.name, me, position, record.position, until):
                            raise lost
                        position = record.position
                        delivered += 1
                    if len(records) < self.batch:
                        return delivered
        finally:
            tracking.release(tenant, self.name, me)

    def run_forever(self, stop_event: threading.Event) -> None:
        """Deliver events as they arrive (polling every ``poll_interval`` s) until ``stop_event`` is set.

        Raises:
            SubscriptionStopped: the handler raised; the subscription waits at that event.
        """
        while not stop_event.is_set():
            if self.run_once() == 0:
                stop_event.wait(self.poll_interval)

    def resume(self, *, skip: bool = False) -> bool:
        """Restart a stopped subscription: retry the failed event, or pass over it with ``skip``.

        Returns False when the subscription was not stopped.
        """
        return _tracking(self.store).resume(self.store.tenant, self.name, skip)


def subscribe(store: Store, name: str, handler: Handler, **options: Any) -> Subscription:
    """A durable subscription named ``name`` over ``store``'s tenant (see :class:`Subscription`)."""
    return Subscription(store, name, handler, **options)


def subscription_states(store: Store) -> list[SubscriptionState]:
    """Every subscription of the store's tenant, with its position, status and error."""
    return _tracking(store).states(store.tenant)
