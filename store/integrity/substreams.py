"""A conversation's record of the streams that belong to it, and what ``verify`` learns from it.

A conversation owns more than its own chain: one stream per tool call the executor ran,
and side streams (recorded model responses, turn leases, request records, summaries). Each
of those has its own hash chain, which shows any edit inside it but not its deletion
whole. So the conversation's head keeps a record of them (``StreamHead.substreams``): the
XOR of one mark per stream (:func:`~chatledger.store.integrity.chain.substream_mark`, an
HMAC with a signing key), updated in the transaction that creates the stream, under the
conversation head's lock. XOR makes it a set: streams of one conversation may be created
by concurrent transactions in any order.

``verify`` recomputes the record from the streams it finds and names a conversation whose
record disagrees. The difference is the mark of what is missing; when it is the mark of
one stream the conversation's messages name (a tool call's stream) or of a side stream
every conversation may have, that stream is named too. Without the signing key nobody can
take a stream out of the record (that needs its mark); unsigned, the record stops
accidents and careless deletes, like the unsigned chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from chatledger.store.backends.recorder import call_stream_id, side_stream_id
from chatledger.store.errors import ChatledgerError
from chatledger.store.events import MessageAppended
from chatledger.store.integrity.chain import NO_SUBSTREAMS, substream_mark, with_substream

if TYPE_CHECKING:
    from chatledger.store.handle import Store

__all__ = ["named_missing", "record_of"]

_SIDE_NAMES = ("model", "turns", "summary")
"""Side streams any conversation may have (recorded model responses, the turn lease, window summaries)."""


def record_of(stream_ids: Iterable[str], signing_key: bytes | None) -> str:
    """The record a conversation's head keeps when exactly ``stream_ids`` belong to it."""
    record = NO_SUBSTREAMS
    for stream_id in stream_ids:
        record = with_substream(record, stream_id, signing_key)
    return record


def named_missing(store: Store, conversation_id: str, missing: str) -> str | None:
    """The stream whose mark is ``missing``, among the tool calls the conversation's messages name and
    the side streams every conversation may have; None when it is none of them (or several are gone)."""
    candidates = [side_stream_id(conversation_id, name) for name in _SIDE_NAMES]
    try:
        events = store.events(conversation_id)
    except ChatledgerError:  # erased, or encrypted without the key: only the side streams are tried
        events = []
    for event in events:
        if not isinstance(event, MessageAppended):
            continue
        message = event.message
        ids = [message.get("tool_call_id")]
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            ids += [call.get("id") for call in calls if isinstance(call, dict)]
        candidates += [call_stream_id(conversation_id, i) for i in ids if isinstance(i, str)]
    for stream_id in dict.fromkeys(candidates):
        if substream_mark(stream_id, store.signing_key) == missing:
            return stream_id
    return None
