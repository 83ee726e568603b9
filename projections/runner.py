"""The projection runner: folds the global log into read models, exactly once, resumably.

The runner reads the log a page at a time after the last position seen (see
:mod:`chatledger.projections.pages`; positions increase in log order on every
backend), folds each
page into every projection that stands at the same position, and commits the
table changes together with the new
position in one transaction of the read-model backend (see
:mod:`chatledger.projections.tracking`). A crash before the commit leaves
neither; a restart continues from the stored position. Two runners on the same
projection serialize on the tracking rows and the loser of a race sees that the
position moved and re-reads it, so no event is ever applied twice.

Where the read models live is decided by the backend's read-model kind
(:mod:`chatledger.projections.backends`): a ``.views.db`` file beside a SQLite log
(see :mod:`chatledger.projections.backends.sqlite` for why), the same database on
PostgreSQL, dicts for the in-memory backend.
A projection whose ``version`` changed, or that is new on an existing log, starts
from zero and catches up on its first run.

Projections standing at the same position share one read of the log per batch.
Those offering ``apply_batch`` (the built-in ones, see
:class:`~chatledger.projections.tables.BatchFold`) get the page's columns and its
JSON payloads, decoded once for all of them and only for the types they name; the
others get validated events through ``apply``, built from full records of only
the types they fold. When a catch-up ends, the backend settles
what a bulk load deferred (the FTS5 index on SQLite, the GIN index on PostgreSQL).
"""

from __future__ import annotations

import gc
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from chatledger.projections.backends import open_read_models
from chatledger.projections.pages import Page, RecordPage, log_reader
from chatledger.projections.tables import BatchFold, Payload, Projection, Tables
from chatledger.projections.tracking import ProjectionState, ReadModels
from chatledger.store import NotFoundError, Store, ValidationError
from chatledger.store.backends.recorder import Record
from chatledger.store.errors import EncryptedPayloadError, ErasedError
from chatledger.store.events import event_class
from chatledger.store.payloads import PlainCodec

__all__ = [
    "ProjectionRunner",
    "decode_payloads",
    "default_projections",
    "projection_states",
    "read_models",
    "register_projection",
]

_fast_loads: Callable[[str | bytes], Any]
try:
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the fast extra is not installed
    _fast_loads = json.loads

ProjectionFactory = Callable[[], Projection]
_FACTORIES: dict[str, ProjectionFactory] = {}
_MODELS: weakref.WeakKeyDictionary[Any, ReadModels] = weakref.WeakKeyDictionary()
_PREPARED: weakref.WeakKeyDictionary[Any, set[tuple[str, int]]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def register_projection(name: str, factory: ProjectionFactory) -> None:
    """Make a projection part of :func:`default_projections` (and of ``chatledger rebuild``)."""
    _FACTORIES[name] = factory


def default_projections() -> list[Projection]:
    """A fresh instance of every built-in projection, then of every registered one."""
    from chatledger.projections.builtin.audit_view import ToolAuditProjection
    from chatledger.projections.builtin.index import ConversationIndex
    from chatledger.projections.builtin.search import MessageSearch

    builtin: dict[str, ProjectionFactory] = {
        ToolAuditProjection.name: ToolAuditProjection,
        ConversationIndex.name: ConversationIndex,
        MessageSearch.name: MessageSearch,
    }
    return [factory() for factory in {**builtin, **_FACTORIES}.values()]


def read_models(store: Store) -> ReadModels:
    """The read-model store that belongs to ``store``'s backend (one per backend, shared)."""
    backend = store.backend
    with _LOCK:
        models = _MODELS.get(backend)
        if models is None:
            models = _MODELS[backend] = open_read_models(backend)
        return models


def projection_states(store: Store) -> list[ProjectionState]:
    """Every projection's tracking row: name, version, position, events read, last update."""
    return read_models(store).states()


class ProjectionRunner:
    """Keeps projections up to date with the log of ``store``'s backend (every tenant).

    Args:
        store: the log to read. Projections hold every tenant's rows; reads filter by tenant.
        projections: what to run (default: :func:`default_projections`).
        batch_size: events per transaction.
        models: where the read models live (default: :func:`read_models` of the store).
    """

    def __init__(
        self,
        store: Store,
        projections: Sequence[Projection] | None = None,
        *,
        batch_size: int = 1000,
        models: ReadModels | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValidationError("batch_size", "must be at least 1")
        self.store = store
        self.projections = list(projections) if projections is not None else default_projections()
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ValidationError("projections", f"names must be unique, got {names}")
        self.batch_size = batch_size
        self.models = models if models is not None else read_models(store)
        self._log = log_reader(store.backend)

    def _select(self, names: Iterable[str] | None) -> list[Projection]:
        if names is None:
            return self.projections
        by_name = {p.name: p for p in self.projections}
        chosen = []
        for name in names:
            if name not in by_name:
                raise NotFoundError(f"no projection named {name!r}; known: {', '.join(sorted(by_name))}")
            chosen.append(by_name[name])
        return chosen

    def _prepare(self, projections: Sequence[Projection]) -> None:
        with _LOCK:
            done = _PREPARED.setdefault(self.models, set())
        for p in projections:
            if (p.name, p.version) not in done:
                self.models.prepare(p.name, p.version, p.tables)
                done.add((p.name, p.version))

    def catch_up(self, names: Iterable[str] | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Fold every event not yet applied into the projections; return how many events were read.

        Args:
            names: only these projections (default: all of the runner's).
            progress: called after each committed batch with the events read so far.
        """
        selected = self._select(names)
        self._prepare(selected)
        total = 0
        while True:
            states = {s.name: s.position for s in self.models.states()}
            groups: dict[int, list[Projection]] = {}
            for p in selected:
                groups.setdefault(states[p.name], []).append(p)
            moved = False
            for position, group in groups.items():
                read = self._batch(group, position)
                if read is None or read > 0:
                    moved = True
                    total += read or 0
                    if progress is not None and read:
                        progress(total)
            if not moved:
                self.models.settle([t for p in selected for t in p.tables])
                return total

    def _batch(self, group: Sequence[Projection], position: int) -> int | None:
        """Apply one batch to projections standing at ``position``; None when another runner moved them."""
        with _collection_postponed():
            return self._apply(group, position)  # its records are freed before the collector is back

    def _apply(self, group: Sequence[Projection], position: int) -> int | None:
        # Read before the transaction opens: on PostgreSQL a reader waits for older open
        # transactions, and the batch's own (which holds the tracking rows) must not be one.
        page = self._log.read(position, self.batch_size)
        if not len(page):
            return 0
        with self.models.batch([p.name for p in group], position) as batch:
            if batch is None:
                return None
            tables = [Tables(batch, p.tables) for p in group]
            _fold(self.store, page, group, tables)
            for t in tables:
                t.flush()
            batch.advance(page.position[-1], len(page))
            return len(page)

    def rebuild(self, names: Iterable[str] | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Drop the projections' tables and replay the whole log into them; return the events read."""
        selected = self._select(names)
        for p in selected:
            self.models.prepare(p.name, p.version, p.tables, reset=True)
        self._prepare(selected)
        return self.catch_up([p.name for p in selected], progress)

    def run_forever(self, stop_event: threading.Event, poll_interval: float = 0.5) -> None:
        """Catch up, then keep following the log until ``stop_event`` is set."""
        while not stop_event.is_set():
            if self.catch_up() == 0:
                stop_event.wait(poll_interval)

    def states(self) -> list[ProjectionState]:
        """The tracking rows of this runner's projections."""
        mine = {p.name for p in self.projections}
        return [s for s in self.models.states() if s.name in mine]


def _fold(store: Store, page: Page, group: Sequence[Projection], tables: Sequence[Tables]) -> None:
    """Fold a page into each projection: batch folds on shared payloads, the others event by event."""
    fast: list[tuple[BatchFold, Tables]] = []
    slow: list[tuple[Projection, Tables]] = []
    for p, t in zip(group, tables, strict=True):
        if isinstance(p, BatchFold):
            fast.append((p, t))
        else:
            slow.append((p, t))
    if fast:
        wanted = frozenset().union(*(p.payload_types for p, _ in fast))
        payloads = decode_payloads(store, page, wanted, keys=False)
        for p, t in fast:
            p.apply_batch(t, page, payloads)
    if slow:
        kinds = [p.types for p, _ in slow]
        types = None if None in kinds else frozenset().union(*(k for k in kinds if k is not None))
        _fold_events(store, page.records(types), slow)


@contextmanager
def _collection_postponed() -> Iterator[None]:
    """Hold off the cyclic garbage collector for a whole batch: read, decode, fold, commit.

    Reading builds a tuple per event and decoding a few dicts, and the collector's passes
    over them cost ~0.6 µs per event (7% of a rebuild, measured) plus ~0.2 s per 1M events
    read; neither holds cycles, so nothing is lost by collecting afterwards. Reference
    counting frees them when the batch ends, before the collector is back, so it never
    walks them at all (re-enabling it between reading and folding cost ~0.3 s per 1M).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _fold_events(store: Store, records: Sequence[Record], wants: Sequence[tuple[Projection, Tables]]) -> None:
    """The pure-fold path: decode each record at most once, and only if a projection wants its type."""
    decode = store.decode
    for record in records:
        event = None
        for p, t in wants:
            if p.types is None or record.type in p.types:
                if event is None:
                    try:
                        event = decode(record)
                    except (ErasedError, EncryptedPayloadError):  # unreadable here: nothing to fold
                        break
                p.apply(t, event)


def decode_payloads(
    store: Store, page: Page | Sequence[Record], types: frozenset[str], *, keys: bool = True
) -> list[Payload | None]:
    """The JSON payload of each event of a page (or of records) whose type is in ``types`` (None for
    the rest and for erased conversations' events), upcast to the current schema: what
    :meth:`Store.decode` reads, without building and validating an event.

    Parsing uses orjson when it is installed (the ``fast`` extra: 3-4x faster on chat payloads)
    and falls back to :func:`json.loads` for what orjson refuses (integers beyond 64 bits).
    Events are decoded a type at a time, so that a page of plain-text payloads is parsed by
    one ``map`` with no Python step per event.

    Args:
        keys: fill in a keyed type's key field (a message's id) from the key column, or the
            event id, when the payload lacks it, as :meth:`Store.decode` does. The runner's
            batch folds read ids from the page when they need them, and pass False.
    """
    if isinstance(page, Sequence):
        page = RecordPage(page)
    kinds = page.type
    out: list[Payload | None] = [None] * len(page)
    for kind in types.intersection(kinds):
        at = [i for i, k in enumerate(kinds) if k == kind]
        parsed = _parse(store, page, at)
        cls = event_class(kind)
        stored, schema, key_field = page.schema_version, cls.SCHEMA_VERSION, cls.KEY_FIELD if keys else None
        if key_field is None and min(map(stored.__getitem__, at)) >= schema:
            for i, payload in zip(at, parsed, strict=True):
                out[i] = payload
            continue
        for i, payload in zip(at, parsed, strict=True):
            if payload is None:  # an erased conversation is folded as if its events had no payload
                continue
            if stored[i] < schema:
                payload = cls.upcast(payload, stored[i])
            if key_field is not None and key_field not in payload:
                key = page.key[i]
                payload[key_field] = key if key is not None else page.event_id[i]
            out[i] = payload
    return out


def _parse(store: Store, page: Page, at: Sequence[int]) -> list[Payload | None]:
    """The parsed payloads of a page's events at ``at`` (None for an erased conversation's)."""
    texts = list(map(page.payload.__getitem__, at))
    # The plain codec returns stored text as is (and raises on an encrypted payload, which is
    # not JSON and so falls to the loop below): no call of it per event.
    if isinstance(store.codec, PlainCodec):
        try:
            return list(map(_fast_loads, texts))
        except ValueError:
            pass
    decode = store.codec.decode
    conversations = page.conversation_id
    out: list[Payload | None] = []
    for i, stored in zip(at, texts, strict=True):
        try:
            text = decode(conversations[i], stored.decode() if isinstance(stored, bytes) else stored)
        except (ErasedError, EncryptedPayloadError):  # erased, or encrypted and this process has no key
            out.append(None)
            continue
        try:
            out.append(_fast_loads(text))
        except ValueError:
            out.append(json.loads(text))
    return out
