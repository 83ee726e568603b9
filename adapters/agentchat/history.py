"""A per-process cache of conversations' stored messages and model views, read incrementally.

Every request builds fresh agents and reads the conversation before it; without a cache
each request reads, decodes and converts the whole history again, so its cost grows with
the conversation. The log is append-only (the messages up to a version never change), so
a process that read a conversation before keeps what it decoded, ``(message, meta)`` per
message, with the version it read, and on the next request reads the head and only the
messages after that version (:meth:`chatledger.store.Store.message_tail`), including those
other processes appended in between. The model view of each agent is kept the same way:
the :class:`~chatledger.adapters.agentchat.context.ViewFold` state where the last view
ended, extended by the new messages, which are checked against the provider rule first
(a break falls back to the full build, which names the position as it always did).

What keeps it safe:

* **Erasure**: every request reads the conversation's head; a conversation marked erased is
  dropped from the cache and read whole, as without a cache (with the handle's data key
  dropped first, so an erasure in another process stops the read at once).
* **Tenants and keys**: an entry belongs to one log (the store's recorder), one payload codec
  (so a handle without the master key never sees what a keyed handle decoded) and one
  tenant; a lookup checks all three by identity.
* **A log rolled back under the process** (a restored backup, events deleted) and maybe
  written again, or a conversation started again under the same id: each read checks that
  the event at the version kept still has the chain hash read with it (the hash covers every
  event before it); if not, the entry is dropped and the conversation read afresh.
* **Memory**: least recently used conversations are dropped while the cache holds more than
  ``max_messages`` messages (stored entries plus view messages); the default is
  :data:`DEFAULT_MAX_MESSAGES`, set by ``CHATLEDGER_HISTORY_CACHE_MESSAGES`` (0 turns the
  cache off) or at run time with ``HISTORY_CACHE.max_messages``.

Replay and ``as_of`` reads do not use it (they read the log as they always did). Cached
lists are never handed out: readers get copies, and AgentChat messages are shared read-only
(as :func:`~chatledger.adapters.agentchat.models.request_key` already assumes).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autogen_core.models import LLMMessage

from chatledger.adapters.agentchat.context import ViewFold, model_fold, model_view
from chatledger.store import Store
from chatledger.store.validity import provider_violations

__all__ = ["DEFAULT_MAX_MESSAGES", "HISTORY_CACHE", "HistoryCache", "Snapshot"]

DEFAULT_MAX_MESSAGES = 100_000
"""Messages the process keeps at most (about 1-2 KB each for short chat messages)."""

Entry = tuple[dict[str, Any], dict[str, Any] | None]


@dataclass(frozen=True)
class _View:
    """An agent's model view of ``entries[:upto]`` and the fold state where it ends (never changed)."""

    upto: int
    out: tuple[LLMMessage, ...]
    own_calls: Mapping[str, str]
    thought: str | None


@dataclass
class _Conversation:
    """What the process keeps of one conversation; ``entries`` only grows (under the cache's lock)."""

    recorder: weakref.ref[Any]
    codec: weakref.ref[Any]
    version: int
    created_at: str
    head_hash: str = ""
    """The chain hash at ``version`` when it was read: the log still holds what is kept while it is there."""
    entries: list[Entry] = field(default_factory=list)
    first_of: dict[str, int] = field(default_factory=dict)
    """The index of each request's first message (the request's cut)."""
    views: dict[str, _View] = field(default_factory=dict)

    def size(self) -> int:
        return len(self.entries) + sum(len(v.out) for v in self.views.values())

    def extend(self, entries: list[Entry]) -> None:
        start = len(self.entries)
        for i, (_, meta) in enumerate(entries, start):
            request = meta.get("request") if meta else None
            if isinstance(request, str):
                self.first_of.setdefault(request, i)
        self.entries.extend(entries)


class Snapshot:
    """One request's read of a conversation: its messages up to the version read."""

    def __init__(self, cache: HistoryCache | None, key: Any, conv: _Conversation | None, entries: list[Entry]) -> None:
        self._cache = cache
        self._key = key
        self._conv = conv
        self._entries = entries

    def prefix(self, request_id: str) -> tuple[list[Entry], bool]:
        """The messages before ``request_id``'s first message (a copy), and whether it has one."""
        if self._conv is None:
            for i, (_, meta) in enumerate(self._entries):
                if (meta or {}).get("request") == request_id:
                    return self._entries[:i], True
            return list(self._entries), False
        cut = self._conv.first_of.get(request_id)
        if cut is not None and cut < len(self._entries):
            return self._entries[:cut], True
        return list(self._entries), False

    def view(self, agent: str, upto: int) -> list[LLMMessage]:
        """``agent``'s model view of the first ``upto`` messages (a new list), extending a kept one.

        Raises:
            InvalidHistoryError: those messages break the provider rule (the position is named).
        """
        conv, cache = self._conv, self._cache
        if conv is None or cache is None:
            return model_view(self._entries[:upto], agent)
        kept = conv.views.get(agent)
        if kept is not None and kept.upto == upto:
            return list(kept.out)
        if kept is None or kept.upto > upto:
            fold = model_fold(self._entries[:upto], agent)
        else:
            tail = self._entries[kept.upto : upto]
            if provider_violations([message for message, _ in tail]):
                return model_view(self._entries[:upto], agent)  # raises, naming the position in the whole history
            fold = ViewFold(agent, kept.out, kept.own_calls, kept.thought)
            fold.feed(tail)
        out = fold.finish()
        cache.keep_view(self._key, conv, agent, _View(upto, tuple(out), fold.own_calls, fold.thought))
        return list(out)


class HistoryCache:
    """The process's conversations as read before: decoded entries and model views, LRU-bounded.

    Args:
        max_messages: messages kept at most over all conversations (0: no cache).
    """

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._conversations: OrderedDict[tuple[int, int, str, str], _Conversation] = OrderedDict()
        self._size = 0

    def clear(self) -> None:
        """Forget every conversation."""
        with self._lock:
            self._conversations.clear()
            self._size = 0

    def cached_messages(self) -> int:
        """How many messages the cache holds (stored entries plus view messages)."""
        return self._size

    def read(self, store: Store, conversation_id: str) -> Snapshot:
        """The conversation's messages as of now: the kept ones plus those appended since.

        Raises:
            NotFoundError, ErasedError, EncryptedPayloadError: as ``store.message_entries``.
        """
        if self.max_messages <= 0:
            return Snapshot(None, None, None, store.message_entries(conversation_id))
        key = (id(store.recorder), id(store.codec), store.tenant, conversation_id)
        for _ in range(2):
            with self._lock:
                conv = self._conversations.get(key)
                if conv is not None and (conv.recorder() is not store.recorder or conv.codec() is not store.codec):
                    self._drop(key)  # a dead handle's id reused by a new one
                    conv = None
                after = conv.version if conv is not None else 0
                kept_hash = conv.head_hash if conv is not None else None
            tail = store.message_tail(conversation_id, after)
            with self._lock:
                current = self._conversations.get(key)
                if tail.erased:
                    if current is not None:
                        self._drop(key)
                    return Snapshot(None, None, None, tail.entries)
                if conv is None:
                    if current is not None:  # another thread kept it meanwhile; this read is whole
                        return Snapshot(None, None, None, tail.entries)
                    conv = _Conversation(weakref.ref(store.recorder), weakref.ref(store.codec), 0, tail.created_at)
                    self._conversations[key] = conv
                elif current is not conv or tail.created_at != conv.created_at or tail.anchor != kept_hash:
                    # Started again, or rolled back under this process (a restore, deleted events) and maybe
                    # written again: the log no longer holds what was kept.
                    if current is conv:
                        self._drop(key)
                    continue
                if tail.version > conv.version:
                    # Another thread may have kept more than ``after`` meanwhile: skip what it added.
                    fresh = [e for v, e in zip(tail.versions, tail.entries, strict=True) if v > conv.version]
                    conv.extend(fresh)
                    conv.version = tail.version
                    conv.head_hash = tail.head_hash
                    self._size += len(fresh)
                self._conversations.move_to_end(key)
                entries = conv.entries[:]
                self._evict()
                if self._conversations.get(key) is not conv:
                    return Snapshot(None, None, None, entries)
                return Snapshot(self, key, conv, entries)
        return Snapshot(None, None, None, store.message_entries(conversation_id))

    def keep_view(self, key: Any, conv: _Conversation, agent: str, view: _View) -> None:
        """Keep an agent's view of a conversation (if the entry is still the kept one and it is newer)."""
        with self._lock:
            if self._conversations.get(key) is not conv:
                return
            old = conv.views.get(agent)
            if old is not None and old.upto >= view.upto:
                return
            self._size += len(view.out) - (len(old.out) if old is not None else 0)
            conv.views[agent] = view
            self._evict()

    def _drop(self, key: tuple[int, int, str, str]) -> None:
        conv = self._conversations.pop(key)
        self._size -= conv.size()

    def _evict(self) -> None:
        while self._size > self.max_messages and self._conversations:
            self._drop(next(iter(self._conversations)))


def _limit() -> int:
    try:
        return max(0, int(os.environ.get("CHATLEDGER_HISTORY_CACHE_MESSAGES", DEFAULT_MAX_MESSAGES)))
    except ValueError:
        return DEFAULT_MAX_MESSAGES


HISTORY_CACHE = HistoryCache(_limit())
"""The process's cache, shared by every request of every store handle."""
