"""Opening a store from a URL: ``sqlite:///path.db``, ``memory://``, ``postgresql://...``.

The URL's scheme picks the backend (see :mod:`chatledger.store.backends.registry`); this
module adds what every backend shares: the tenant, the signing key, encryption and redaction.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from chatledger.store.backends.registry import open_backend
from chatledger.store.errors import ValidationError
from chatledger.store.handle import DEFAULT_MAX_EVENT_BYTES, PayloadCodec, Store
from chatledger.store.integrity.redaction import DefaultRedactor, Redactor

if TYPE_CHECKING:
    from chatledger.store.backends.backend import Backend

__all__ = ["DEFAULT_URL", "SIGNING_KEY_ENV", "open_store", "resolve_url"]

SIGNING_KEY_ENV = "CHATLEDGER_SIGNING_KEY"

DEFAULT_URL = "sqlite:///chatledger.db"


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$CHATLEDGER_URL``, else ``sqlite:///chatledger.db``."""
    return url or os.environ.get("CHATLEDGER_URL") or DEFAULT_URL


def open_store(
    url: str | None = None,
    *,
    tenant: str = "default",
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    codec: PayloadCodec | None = None,
    signing_key: bytes | None = None,
    encryption: bool | bytes | str | None = None,
    redactor: Redactor | bool | None = None,
    **options: Any,
) -> Store:
    """Open (creating if needed) the store at ``url`` for one tenant.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``memory://`` or
            ``postgresql://user@host/db``. SQLite takes ``?synchronous=NORMAL`` (default FULL).
        tenant: every read and write of the returned store is scoped to this tenant.
        max_event_bytes: events larger than this are rejected with ValidationError.
        codec: transforms stored payloads (encryption at rest).
        signing_key: makes the hash chain an HMAC under this key (default: the UTF-8 bytes of
            ``$CHATLEDGER_SIGNING_KEY`` when set). Use the same key from the first write on.
        encryption: encrypt payloads at rest (see :mod:`chatledger.store.integrity.crypto`): a master key
            (32 bytes, or base64 of them), True (the key from ``$CHATLEDGER_MASTER_KEY``, which
            must be set), False (off), or None (on exactly when ``$CHATLEDGER_MASTER_KEY`` is set).
        redactor: replaces secrets in payloads before they are stored; True for
            :class:`~chatledger.store.integrity.redaction.DefaultRedactor`.
        options: backend options (for example ``synchronous`` or ``busy_timeout_ms`` for SQLite).

    Raises:
        ValidationError: no backend serves the URL's scheme, or a key is malformed or missing.
    """
    url = resolve_url(url)
    if not isinstance(url, str):
        raise ValidationError("url", f"must be a string, got {type(url).__name__}")
    _check_store_options(max_event_bytes, signing_key, redactor, encryption)
    backend = open_backend(url, **options)
    if signing_key is None and os.environ.get(SIGNING_KEY_ENV):
        signing_key = os.environ[SIGNING_KEY_ENV].encode("utf-8")
    if codec is None:
        codec = _encrypting_codec(backend, encryption)
    if redactor is True:
        redactor = DefaultRedactor()
    return Store(
        backend,
        tenant=tenant,
        max_event_bytes=max_event_bytes,
        codec=codec,
        signing_key=signing_key,
        url=url,
        redactor=redactor or None,
    )


def _check_store_options(max_event_bytes: Any, signing_key: Any, redactor: Any, encryption: Any) -> None:
    """Refuse option values of the wrong type with a ValidationError naming the option."""
    if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int) or max_event_bytes < 1:
        raise ValidationError("max_event_bytes", f"must be a positive integer, got {_shown(max_event_bytes)}")
    if signing_key is not None and not isinstance(signing_key, bytes):
        raise ValidationError("signing_key", f"must be bytes, got {type(signing_key).__name__}")
    if not (redactor is None or isinstance(redactor, bool) or callable(getattr(redactor, "redact", None))):
        raise ValidationError("redactor", "must be True, False, None or an object with redact(value)")
    if not (encryption is None or isinstance(encryption, bool | bytes | str)):
        raise ValidationError("encryption", "must be a master key (bytes or base64 text), True, False or None")


def _shown(value: Any) -> str:
    """A value as an error message shows it: short, and never the repr of a deep structure."""
    if isinstance(value, str | int | float | bytes | None):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"a {type(value).__name__}"


def _encrypting_codec(backend: Backend, encryption: bool | bytes | str | None) -> PayloadCodec | None:
    """The codec for ``open_store(encryption=...)``, or None when encryption is off."""
    if encryption is False or (encryption is None and not os.environ.get("CHATLEDGER_MASTER_KEY", "").strip()):
        return None  # without importing the cryptography stack
    from chatledger.store.integrity.crypto import MASTER_KEY_ENV, EncryptingCodec, master_key_from_env, parse_master_key

    if encryption is None or encryption is True:
        master = master_key_from_env()
        if master is None:
            raise ValidationError("encryption", f"needs a master key: set {MASTER_KEY_ENV}")
    else:
        master = parse_master_key(encryption, "encryption")
    return EncryptingCodec(master, backend.key_store())
