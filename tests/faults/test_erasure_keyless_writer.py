"""A process without the master key never writes plaintext into an encrypted or an erased conversation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatledger.store import open_store
from chatledger.store.errors import EncryptedPayloadError, ErasedError
from chatledger.store.integrity.crypto import erase

KEY = os.urandom(32)
_KEYLESS_APPEND = """
import sys
from chatledger.store import open_store
from chatledger.store.errors import EncryptedPayloadError, ErasedError
store = open_store(sys.argv[1])
try:
    store.append(sys.argv[2], [{"role": "user", "content": "plaintext leak"}])
except (EncryptedPayloadError, ErasedError) as exc:
    print(type(exc).__name__)
else:
    print("appended")
"""


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_keyless_process_cannot_append_to_encrypted_or_erased_conversations(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A second process without CHATLEDGER_MASTER_KEY gets a typed error and the log does not change."""
    url = _url(backend, tmp_path, request)
    with open_store(url, encryption=KEY) as keyed:
        keyed.start_conversation("sealed", messages=[{"role": "user", "content": "secret"}])
        keyed.start_conversation("gone", messages=[{"role": "user", "content": "forget me"}])
        erase(keyed, "gone")
        before = keyed.recorder.read_all()
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_MASTER_KEY"}
    for conv, error in (("sealed", "EncryptedPayloadError"), ("gone", "ErasedError")):
        out = subprocess.run(
            [sys.executable, "-c", _KEYLESS_APPEND, url, conv], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.stdout.strip() == error, out.stderr
    with open_store(url, encryption=False) as keyless:
        with pytest.raises(EncryptedPayloadError, match="sealed"):
            keyless.append("sealed", [{"role": "user", "content": "again"}])
        with pytest.raises(ErasedError):
            keyless.append("gone", [{"role": "user", "content": "again"}])
        with pytest.raises(EncryptedPayloadError), keyless.transaction() as w:
            w.create_stream("sealed\x1fnotes", "sealed", "side")
        assert keyless.recorder.read_all() == before
    with open_store(url, encryption=KEY) as keyed:
        assert keyed.messages("sealed") == [{"role": "user", "content": "secret"}]
        keyed.append("sealed", [{"role": "user", "content": "still writable with the key"}])
