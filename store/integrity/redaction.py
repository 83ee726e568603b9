"""Redacting secrets from payloads before they are stored.

A :class:`Redactor` sees every event payload (chat messages, tool arguments
and results, recorded model responses, conversation metadata) just before it
is serialized, in one place (:meth:`Store._encode_payload`), and returns what
should be stored instead. Once redacted, the secret is never written: not to
the log, not to read models built from it, not to backups.

Redaction must be deterministic (the same input gives the same output), since
idempotent retries compare the stored payload with the retried one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["DEFAULT_PATTERNS", "REDACTED", "DefaultRedactor", "Redactor"]

REDACTED = "[REDACTED]"


class Redactor(Protocol):
    """Replaces secrets in a JSON-ready value; plugged in with ``open_store(..., redactor=...)``."""

    def redact(self, value: Any) -> Any:
        """The value with secrets replaced (a new value; the argument is not modified)."""


# Each pattern keeps its group 1 and replaces the rest of the match. None of them
# matches a quote or a backslash, so redacting JSON text (tool arguments) keeps it JSON.
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("openai/anthropic key", r"()\bsk-[A-Za-z0-9_\-]{16,}"),
    ("github token", r"()\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ("slack token", r"()\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("google api key", r"()\bAIza[0-9A-Za-z_\-]{35}"),
    ("aws access key id", r"()\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("bearer token", r"(?i)(\bbearer\s+)[A-Za-z0-9_\-.=+/~]{8,}"),
    ("basic auth", r"(?i)(\bbasic\s+)[A-Za-z0-9+/]{8,}={0,2}"),
    ("password in url", r"([a-z][a-z0-9+.\-]*://[^\s:/@\"'\\]+:)[^\s@/\"'\\]+(?=@)"),
    (
        "secret assignment",
        r"(?i)((?:aws_secret_access_key|password|passwd|pwd|secret|api[_-]?key|access[_-]?token|"
        r"auth[_-]?token|client[_-]?secret)\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\s\"'\\,;&}]{4,}",
    ),
    (
        "private key",
        r"(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    ),
)

_SECRET_KEYS = re.compile(
    r"(?i)^(?:password|passwd|secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|"
    r"refresh[_-]?token|client[_-]?secret|authorization|aws_secret_access_key|private[_-]?key)$"
)


class DefaultRedactor:
    """Redacts common secrets: API keys (``sk-...``, GitHub, Slack, Google, AWS access key ids),
    bearer and basic auth tokens, passwords in URLs, ``password=...``-style assignments, PEM
    private keys, and the values of object keys named like secrets (``password``, ``api_key``).

    Strings under keys listed in ``keep_keys`` (ids) are left alone so idempotency keys and
    tool call ids stay intact.
    """

    def __init__(
        self,
        patterns: Iterable[tuple[str, str]] = DEFAULT_PATTERNS,
        *,
        replacement: str = REDACTED,
        keep_keys: Iterable[str] = ("message_id", "tool_call_id", "id", "idempotency_key", "worker_id"),
    ) -> None:
        self.replacement = replacement
        self.keep_keys = frozenset(keep_keys)
        self._patterns = [re.compile(p) for _, p in patterns]

    def redact_text(self, text: str) -> str:
        """One string with every matching secret replaced."""
        for pattern in self._patterns:
            text = pattern.sub(lambda m: m.group(1) + self.replacement, text)
        return text

    def redact(self, value: Any) -> Any:
        """Redact every string in a JSON-ready value, recursively (iteratively: no depth limit)."""
        return self._walk(value, None)

    def _walk(self, value: Any, key: str | None) -> Any:
        root: list[Any] = [None]
        stack: list[tuple[Any, str | None, list[Any] | dict[str, Any], Any]] = [(value, key, root, 0)]
        while stack:
            item, item_key, parent, slot = stack.pop()
            if isinstance(item, str):
                if item_key is not None and item_key in self.keep_keys:
                    out: Any = item
                elif item_key is not None and _SECRET_KEYS.match(item_key) and item:
                    out = self.replacement
                else:
                    out = self.redact_text(item)
            elif isinstance(item, dict):
                out = {}
                for k, v in item.items():
                    out[k] = None
                    stack.append((v, k if isinstance(k, str) else None, out, k))
            elif isinstance(item, list | tuple):
                out = [None] * len(item)
                for i, v in enumerate(item):
                    stack.append((v, item_key, out, i))
            else:
                out = item
            parent[slot] = out
        return root[0]
