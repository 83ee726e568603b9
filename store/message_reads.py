"""The message reads of a :class:`~chatledger.store.handle.Store`: messages, histories, tails.

These are the reads an agent makes on every request, so they decode stored payloads
straight from JSON, with no event objects: the whole conversation (``messages``,
``history``), its messages with their adapters' metadata (``message_entries``), and
versioned tails for history windows (``versioned_messages``, ``message_ends``).
``history`` hands out only histories that obey the provider rule.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from chatledger.store.backends.recorder import Recorder, StreamHead
from chatledger.store.errors import InvalidHistoryError, PendingToolCallsError
from chatledger.store.events import MessageAppended
from chatledger.store.messages import pending_tool_calls
from chatledger.store.payloads import PayloadCodec, PlainCodec
from chatledger.store.validity import provider_violations
from chatledger.store.writer import ERASED, check_count

__all__ = ["MessageReads", "MessageTail"]

Entry = tuple[dict[str, Any], dict[str, Any] | None]


class MessageTail(NamedTuple):
    """What :meth:`MessageReads.message_tail` read: the head it read at, and the entries after ``after``."""

    version: int
    """The conversation's version when it was read: every message up to it is in the read."""
    created_at: str
    """When the conversation was started (a conversation started again under the same id differs)."""
    erased: bool
    """The conversation is marked erased: ``entries`` were read whole (``after`` ignored), as
    :meth:`MessageReads.message_entries` reads them, and must not be kept."""
    entries: list[Entry]
    versions: list[int]
    """The version of each entry (a reader that kept more than ``after`` in the meantime skips the overlap)."""
    head_hash: str
    """The chain hash at ``version``: it covers every event up to it."""
    anchor: str | None
    """The chain hash of the event at version ``after`` as stored now (None when ``after`` is 0 or no event
    is there): a reader that kept the hash it read at ``after`` knows the log still holds what it kept."""


class MessageReads:
    """The message reads, mixed into ``Store`` (which provides the recorder, codec, tenant and head check)."""

    recorder: Recorder
    codec: PayloadCodec
    tenant: str

    def _head(self, conversation_id: str) -> StreamHead:
        """The conversation's head, for this tenant only (``Store`` implements it)."""
        raise NotImplementedError

    def messages(self, conversation_id: str, as_of: int | None = None) -> list[dict[str, Any]]:
        """The conversation's messages exactly as appended, up to version ``as_of``."""
        check_count(as_of, "as_of")
        self._head(conversation_id)
        payloads = self.recorder.read_payloads(conversation_id, MessageAppended.TYPE, as_of)
        loads = json.loads
        if isinstance(self.codec, PlainCodec):
            try:
                return [loads(p)["message"] for p in payloads]
            except ValueError:
                pass  # an encrypted payload: the codec below names the problem
        decode = self.codec.decode
        return [loads(decode(conversation_id, p))["message"] for p in payloads]

    def message_entries(self, conversation_id: str, as_of: int | None = None) -> list[Entry]:
        """``(message, meta)`` of each message up to version ``as_of``, as appended.

        ``meta`` is the adapter's metadata (never sent to a model). One payload read, no
        event objects: what an adapter's model view is built from on every request.
        """
        self._head(conversation_id)
        return self._entries(conversation_id, self.recorder.read_payloads(conversation_id, MessageAppended.TYPE, as_of))

    def message_tail(self, conversation_id: str, after: int = 0) -> MessageTail:
        """The conversation's head version and the ``(message, meta)`` of its messages after version ``after``.

        For a reader that keeps the messages it read (the log is append-only: messages up to a
        version it read never change) and reads only what came after on its next request.
        The entries are the messages with ``after < version <= MessageTail.version``, decoded as
        :meth:`message_entries` decodes them (a store without the key gets the same error).

        An erased conversation is read whole, with this handle's cached data key dropped first
        (an erasure in another process stops this read at once, not when the key's cache
        expires), and flagged ``erased``: the caller drops what it kept.

        Raises:
            NotFoundError: no such conversation for this tenant.
            ErasedError: the conversation was erased (its payloads are encrypted and the key is gone).
        """
        check_count(after, "after")
        head = self._head(conversation_id)
        erased = head.status == ERASED
        if erased:
            forget = getattr(self.codec, "forget", None)
            if forget is not None:
                forget(conversation_id)
            after = 0
        anchor = None
        if after > 0:
            # A log rolled back (a restore, events deleted) and written again reuses versions: the hash differs.
            at = self.recorder.read_stream(conversation_id, after - 1, 1)
            anchor = at[0].hash if at and at[0].version == after else None
        rows = self.recorder.read_versioned_payloads(conversation_id, MessageAppended.TYPE, after, head.version)
        entries = self._entries(conversation_id, [payload for _, payload in rows])
        versions = [version for version, _ in rows]
        return MessageTail(head.version, head.created_at, erased, entries, versions, head.head_hash, anchor)

    def _entries(self, conversation_id: str, payloads: list[str]) -> list[Entry]:
        loads = json.loads
        if not isinstance(self.codec, PlainCodec) or (payloads and not payloads[0].startswith("{")):
            decode = self.codec.decode
            payloads = [decode(conversation_id, p) for p in payloads]
        entries: list[Entry] = []
        for text in payloads:
            payload = loads(text)
            entries.append((payload["message"], payload.get("meta")))
        return entries

    def versioned_messages(
        self, conversation_id: str, after: int = 0, as_of: int | None = None, *, newest: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(version, message)`` for the messages with ``after < version <= as_of``, in order;
        with ``newest``, only the newest that many of them.

        A tail read costs what its rows cost: history windows read a long conversation from
        its end with it.
        """
        self._head(conversation_id)
        return self._versioned(conversation_id, after, as_of, newest)

    def message_ends(
        self, conversation_id: str, first: int, newest: int, as_of: int | None = None
    ) -> tuple[int, list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
        """A version at least that of the newest message, the messages among versions ``1..first``,
        and the newest ``newest`` messages.

        What a history window needs first, in one indexed read that also checks ownership
        (plus the head's read when ``first`` asks for it).

        Raises:
            NotFoundError: no such conversation for this tenant.
        """
        rows = self.recorder.read_versioned_payloads(
            conversation_id, MessageAppended.TYPE, 0, as_of, newest, conversation_of=self.tenant
        )
        if rows and as_of is None:
            top = rows[-1][0]  # the newest message: what a window needs of the version, without a read
        else:
            top = self._head(conversation_id).version  # also the ownership check when nothing was read
            top = top if as_of is None else min(top, as_of)
        head = self._versioned(conversation_id, 0, min(first, top)) if first > 0 else []
        return top, head, self._decoded(conversation_id, rows)

    def _versioned(
        self, conversation_id: str, after: int, as_of: int | None, newest: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = self.recorder.read_versioned_payloads(conversation_id, MessageAppended.TYPE, after, as_of, newest)
        return self._decoded(conversation_id, rows)

    def _decoded(self, conversation_id: str, rows: list[tuple[int, str]]) -> list[tuple[int, dict[str, Any]]]:
        loads = json.loads
        if isinstance(self.codec, PlainCodec):
            try:
                return [(version, loads(payload)["message"]) for version, payload in rows]
            except ValueError:
                pass  # an encrypted payload: the codec below names the problem
        decode = self.codec.decode
        return [(version, loads(decode(conversation_id, payload))["message"]) for version, payload in rows]

    def history(
        self, conversation_id: str, as_of: int | None = None, *, allow_pending: bool = False
    ) -> list[dict[str, Any]]:
        """The conversation as OpenAI chat messages, ready to send to a model.

        Only histories that obey the provider rule (:mod:`chatledger.store.validity`:
        every assistant tool call answered by one tool message per call id,
        immediately after it) are handed out. A stored history that breaks it (one
        written by an older adapter, or imported) is refused, never repaired: the
        log stays as stored, and the error names the first offending position, so
        ``as_of`` (or a fork) before it gives a valid history again.

        Raises:
            PendingToolCallsError: the last assistant message's tool calls are not all
                answered yet (a turn in progress; allowed with ``allow_pending``).
            InvalidHistoryError: the history breaks the provider rule anywhere else,
                naming each violation's message index and call id.
            NotFoundError: no such conversation for this tenant.
        """
        msgs = self.messages(conversation_id, as_of)
        found = provider_violations(msgs, allow_pending_tail=True)
        if found:
            raise InvalidHistoryError(f"the history of conversation {conversation_id!r}", found)
        if not allow_pending:
            pending = pending_tool_calls(msgs)
            if pending:
                raise PendingToolCallsError(conversation_id, pending)
        return msgs
