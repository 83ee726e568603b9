"""How a payload becomes what is stored: compact JSON, bounded nesting, a codec (where encryption plugs in).

Every payload the store writes goes through here: encoded once by a C JSON encoder built
once, checked against the nesting limit, and turned into its stored form by a
:class:`PayloadCodec` (plain text, or :mod:`chatledger.store.integrity.crypto`'s cipher).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json import encoder as json_encoder
from typing import Any, Protocol

from chatledger.store.errors import EncryptedPayloadError, ValidationError
from chatledger.store.writer import Draft

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "JSON_PARTS",
    "MAX_NESTING",
    "PayloadCodec",
    "PlainCodec",
    "check_nesting",
    "not_json",
    "payload_label",
]

DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
MAX_NESTING = 100
"""How deeply a message, its ``meta`` or conversation metadata may nest objects and lists.

Well below Python's recursion limit (1000), so that whatever is stored can be encoded,
decoded and folded from a request handler's stack, however deep (tests read at 200
frames and in a thread with a 256 KiB stack). Deeper input is a ValidationError.
"""
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json_parts() -> Callable[[Any, int], Sequence[str]]:
    """``_ENCODER``'s encoding without its per-call setup: the C encoder, built once.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs as much
    as encoding a chat message. This one has no circular-reference bookkeeping (no
    state shared between calls or threads): a payload that contains itself fails as
    too deeply nested. Called as ``parts(payload, 0)``; the text is the parts joined.
    """
    make: Any = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return lambda payload, _: (_ENCODER.encode(payload),)
    parts: Callable[[Any, int], Sequence[str]] = make(
        None,
        _ENCODER.default,
        json_encoder.encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,
        False,
        False,
    )
    return parts


JSON_PARTS = _json_parts()


class PayloadCodec(Protocol):
    """Turns a payload's JSON text into what is stored, and back (encryption plugs in here)."""

    def encode(self, conversation_id: str, text: str) -> str:
        """The stored form of a payload."""

    def decode(self, conversation_id: str, stored: str) -> str:
        """The payload's JSON text from its stored form."""


class PlainCodec:
    """Payloads stored as their JSON text; an encrypted payload is refused with a typed error."""

    def encode(self, conversation_id: str, text: str) -> str:
        return text

    def decode(self, conversation_id: str, stored: str) -> str:
        if stored.startswith("enc:"):
            raise EncryptedPayloadError(conversation_id)
        return stored


def check_nesting(value: Any, text: str, where: str | Draft, envelope: int) -> None:
    """Refuse ``value`` (encoded as ``text``) when it nests deeper than MAX_NESTING (plus ``envelope``).

    Counting brackets in the text bounds the depth from above, at C speed; only a
    payload with more brackets than the limit is walked (iteratively).
    """
    limit = MAX_NESTING + envelope
    if text.count("[") + text.count("{") <= limit:
        return
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            raise ValidationError(payload_label(where), f"nests objects and lists deeper than {MAX_NESTING} levels")
        stack.extend((child, depth) for child in children)


def payload_label(what: str | Draft) -> str:
    """The name an error gives a payload: the caller's label, or the event type."""
    if isinstance(what, str):
        return what
    return what.label or what.cls.TYPE


def not_json(what: str | Draft, exc: Exception) -> ValidationError:
    """The error for a payload the JSON encoder refused."""
    if isinstance(exc, RecursionError):
        return ValidationError(payload_label(what), "is nested too deeply (or contains itself) to store")
    return ValidationError(payload_label(what), f"is not JSON: {exc}")
