"""Encryption at rest and erasure by key destruction (crypto-shredding).

:class:`EncryptingCodec` is a :class:`~chatledger.store.handle.PayloadCodec`: each
event payload is encrypted with AES-256-GCM under its conversation's own data
key before it is stored (and hashed into the chain). Data keys are random,
created on a conversation's first write, and stored only wrapped (encrypted)
under the master key, in the backend's key table (:mod:`chatledger.store.integrity.keystore`).
The master key comes from ``CHATLEDGER_MASTER_KEY`` (base64 of 32 bytes) or
from ``open_store(..., encryption=key)``.

What stays clear: every column (ids, versions, positions, types, times,
tenant, idempotency keys such as message ids) and the conversation metadata
kept on the stream's head row for listings; the payload copy of that metadata
is encrypted. Read models built from the log (search indexes) hold plaintext.

:func:`erase` destroys a conversation's data key. Its events stay in place,
still verifiable (the chain covers the ciphertext), but reading them raises
:class:`~chatledger.store.errors.ErasedError`, and so does appending to it.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatledger.store.errors import ErasedError, ErasureNotCertain, IntegrityError, ValidationError
from chatledger.store.integrity.keystore import KeyStore
from chatledger.store.writer import ERASED

if TYPE_CHECKING:
    from chatledger.store.handle import Store

__all__ = [
    "MASTER_KEY_ENV",
    "PREFIX",
    "EncryptingCodec",
    "erase",
    "erase_tenant",
    "generate_master_key",
    "is_erased",
    "master_key_from_env",
    "parse_master_key",
    "purge",
]

MASTER_KEY_ENV = "CHATLEDGER_MASTER_KEY"
DEFAULT_WAIT = 5.0
"""Seconds an erasure waits for other connections that still see a destroyed key."""
PREFIX = "enc:v1:"
_NONCE = 12


def generate_master_key() -> str:
    """A new random master key, base64-encoded (the form ``CHATLEDGER_MASTER_KEY`` takes)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def parse_master_key(value: str | bytes, where: str = MASTER_KEY_ENV) -> bytes:
    """A 32-byte master key from raw bytes or base64 text.

    Raises:
        ValidationError: the value is not 32 bytes (raw, or once base64-decoded).
    """
    if isinstance(value, bytes) and len(value) == 32:
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(where, "must be base64 of 32 random bytes") from None
    if len(raw) != 32:
        raise ValidationError(where, f"decodes to {len(raw)} bytes; a master key is 32 bytes")
    return raw


def master_key_from_env() -> bytes | None:
    """The master key from ``CHATLEDGER_MASTER_KEY``, or None when it is unset or empty."""
    value = os.environ.get(MASTER_KEY_ENV)
    return parse_master_key(value.strip()) if value and value.strip() else None


class EncryptingCodec:
    """Encrypts payloads with AES-256-GCM under per-conversation data keys wrapped by a master key.

    Stored form: ``enc:v1:`` + base64(nonce ‖ ciphertext ‖ tag), with the conversation id as
    associated data, so a payload copied into another conversation does not decrypt. Payloads
    without the prefix (written before encryption was turned on) are read as they are.

    Unwrapped data keys are cached for ``cache_seconds``; :func:`erase` clears this handle's
    cache at once, other open handles stop reading the conversation when their cache expires.
    """

    encrypts = True
    """Read by the writer: conversations this codec starts are marked encrypted on their head."""

    def __init__(self, master_key: bytes, keys: KeyStore, *, cache_seconds: float = 30.0) -> None:
        self._master = AESGCM(parse_master_key(master_key, "master_key"))
        self.keys = keys
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[AESGCM, float]] = {}
        self._lock = threading.Lock()

    def _aad(self, conversation_id: str) -> bytes:
        return conversation_id.encode("utf-8", "surrogatepass")

    def _unwrap(self, conversation_id: str, wrapped: bytes) -> AESGCM:
        try:
            raw = self._master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"dk:" + self._aad(conversation_id))
        except InvalidTag:
            raise IntegrityError(
                f"the data key of conversation {conversation_id!r} does not open with this master key "
                "(a different CHATLEDGER_MASTER_KEY, or a tampered key table)"
            ) from None
        return AESGCM(raw)

    def _data_key(self, conversation_id: str, *, create: bool) -> AESGCM:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(conversation_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        wrapped = self.keys.get(conversation_id)
        if wrapped is None:
            if self.keys.was_erased(conversation_id):
                raise ErasedError(conversation_id)
            if not create:
                raise IntegrityError(f"conversation {conversation_id!r} has encrypted events but no data key")
            nonce = os.urandom(_NONCE)
            fresh = nonce + self._master.encrypt(
                nonce, AESGCM.generate_key(bit_length=256), b"dk:" + self._aad(conversation_id)
            )
            wrapped = self.keys.add(conversation_id, fresh)
        key = self._unwrap(conversation_id, wrapped)
        with self._lock:
            self._cache[conversation_id] = (key, now + self.cache_seconds)
        return key

    def forget(self, conversation_id: str) -> None:
        """Drop a conversation's data key from this handle's cache."""
        with self._lock:
            self._cache.pop(conversation_id, None)

    def encode(self, conversation_id: str, text: str) -> str:
        """Encrypt one payload under its conversation's data key (created on first use)."""
        key = self._data_key(conversation_id, create=True)
        nonce = os.urandom(_NONCE)
        sealed = key.encrypt(nonce, text.encode("utf-8"), self._aad(conversation_id))
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decode(self, conversation_id: str, stored: str) -> str:
        """Decrypt one stored payload (payloads stored before encryption pass through).

        Raises:
            ErasedError: the conversation's key was destroyed.
            IntegrityError: the ciphertext or the key was altered, or the master key is wrong.
        """
        if not stored.startswith(PREFIX):
            return stored
        key = self._data_key(conversation_id, create=False)
        try:
            blob = base64.b64decode(stored[len(PREFIX) :], validate=True)
            return key.decrypt(blob[:_NONCE], blob[_NONCE:], self._aad(conversation_id)).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise IntegrityError(f"an encrypted payload of conversation {conversation_id!r} was altered") from None


def _codec(store: Store) -> EncryptingCodec:
    codec = store.codec
    if not isinstance(codec, EncryptingCodec):
        raise ValidationError("encryption", "erasure needs encryption at rest: open the store with a master key")
    return codec


def erase(store: Store, conversation_id: str, *, wait: float = DEFAULT_WAIT) -> bool:
    """Destroy a conversation's data key: its events stay (and verify) but can never be read again.

    The conversation is marked erased first (no writer adds to it from then on), then its
    wrapped key is destroyed and every copy of the key's bytes is purged from the store's
    files (see :func:`purge`); ``wait`` bounds how long the purge waits for other
    connections that still see the key.

    Returns:
        True when a key was destroyed; False when there was none (already erased, or the
        conversation was never written encrypted — its events are plaintext and stay readable).

    Raises:
        NotFoundError: no such conversation for this store's tenant.
        ValidationError: the store is not encrypted.
        ErasureNotCertain: the key is destroyed, but a copy of its bytes may remain in a file
            until another connection lets go of it; call :func:`purge` later.
    """
    codec = _codec(store)
    store.conversation(conversation_id)
    destroyed = _destroy(store, codec, conversation_id)
    _purge(codec, conversation_id, wait)
    return destroyed


def _destroy(store: Store, codec: EncryptingCodec, conversation_id: str) -> bool:
    with store.transaction() as w:
        w.mark(conversation_id, ERASED)  # first: from now on no writer adds to it
    destroyed = codec.keys.delete(conversation_id)
    codec.forget(conversation_id)
    return destroyed


def _purge(codec: EncryptingCodec, conversation_id: str, wait: float) -> None:
    reason = codec.keys.purge(wait)
    if reason is not None:
        raise ErasureNotCertain(conversation_id, reason)


def purge(store: Store, *, wait: float = DEFAULT_WAIT) -> None:
    """Finish erasures: remove every copy of destroyed keys' bytes from the files the store writes.

    SQLite: checkpoint the WAL into the database file and truncate it (the key's row was
    overwritten with ``secure_delete``). PostgreSQL: once no transaction's snapshot predates
    the erasure, rewrite the key table (``VACUUM FULL``), so no dead tuple keeps the key.

    Raises:
        ErasureNotCertain: another connection still holds what it needs within ``wait`` seconds.
    """
    reason = _codec(store).keys.purge(wait)
    if reason is not None:
        raise ErasureNotCertain("(every erased conversation)", reason)


def erase_tenant(store: Store, *, wait: float = DEFAULT_WAIT) -> int:
    """Erase every conversation of the store's tenant (one purge at the end); returns how many keys were destroyed.

    Raises:
        ErasureNotCertain: as :func:`erase`, once for all of them.
    """
    codec = _codec(store)
    destroyed = sum(_destroy(store, codec, info.conversation_id) for info in store.conversations())
    _purge(codec, f"(every conversation of tenant {store.tenant})", wait)
    return destroyed


def is_erased(store: Store, conversation_id: str) -> bool:
    """True when the conversation's data key was destroyed."""
    codec = _codec(store)
    store.conversation(conversation_id)
    return codec.keys.was_erased(conversation_id)
