"""Redacting secrets from payloads before they are stored.

A :class:`Redactor` sees every event payload (chat messages, tool arguments
and results, tool errors, recorded model responses, conversation and fork
metadata) just before it is serialized, in one place
(:meth:`Store._encode_payload`, and :meth:`Store.metadata_text` for the
metadata copy kept on a conversation's row), plus the text the store keeps
outside events (a subscription's error), and returns what should be stored
instead. Once redacted, the secret is never written: not to the log, not to
read models built from it, not to backups.

:class:`DefaultRedactor` works in three layers:

1. **Key names.** The value of an object key named like a secret (``password``,
   ``db_password``, ``X-Api-Key``, ``accessToken``, ``token``, ``Authorization``,
   ``client_secret``, ``credentials``, ...) is replaced whole, with everything
   nested under it.
2. **JSON inside strings.** A string that is a JSON object or array (tool
   arguments, a tool's JSON result) is parsed and redacted as a value, so
   ``\\u``-escaped secrets and secret-named keys inside it are found; when anything
   was replaced it is written back as JSON, so it stays valid JSON.
3. **Text patterns** (:data:`DEFAULT_PATTERNS`) over every other string: the
   token formats secret scanners (gitleaks, detect-secrets, trufflehog) detect by
   prefix, JWTs, PEM private key blocks, ``Bearer``/``Basic`` credentials,
   passwords in URLs, and ``key=value`` / ``key: value`` assignments whose key is
   named like a secret (the whole value up to whitespace, a quote or ``&``).

Redaction must be deterministic (the same input gives the same output), since
idempotent retries compare the stored payload with the retried one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["DEFAULT_PATTERNS", "REDACTED", "DefaultRedactor", "Redactor", "is_secret_key"]

REDACTED = "[REDACTED]"


class Redactor(Protocol):
    """Replaces secrets in a JSON-ready value; plugged in with ``open_store(..., redactor=...)``."""

    def redact(self, value: Any) -> Any:
        """The value with secrets replaced (a new value; the argument is not modified)."""


# A key named like a secret, inside text (``db_password=``, ``X-Api-Key:``, ``?token=``).
_KEY_WORDS = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|account[_-]?key|"
    r"private[_-]?key|signing[_-]?key|encryption[_-]?key|master[_-]?key|credentials?|authorization|"
    r"auth|signature|sig|session[_-]?id|cookie"
)
# A secret value after ``key=``: an optional auth scheme, then a quoted string (JSON-escaped or
# not) or everything up to whitespace, a quote or ``&`` (``password=ab;Secret`` is one value).
_VALUE = (
    r"(?:(?:bearer|basic|token|digest)\s+)?"
    r"(?:\\\"(?:[^\"\\]|\\[^\"])*\\\"|\"[^\"\n]*\"|'[^'\n]*'|(?:\\u[0-9a-fA-F]{4}|[^\s\"'\\&])+)"
)

# Each pattern keeps its group 1 and replaces the rest of the match.
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private key",
        r"(-----BEGIN[A-Z0-9 _-]*PRIVATE KEY(?: BLOCK)?-----)[\s\S]*?"
        r"(?:-----END[A-Z0-9 _-]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    ("jwt", r"()\beyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"),
    ("openai/anthropic key", r"()\bsk-[A-Za-z0-9_\-]{16,}"),
    ("stripe key", r"()\b(?:(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,}|whsec_[0-9A-Za-z]{20,})"),
    ("github token", r"()\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ("gitlab token", r"()\bgl(?:pat|ptt|dt|rt|oas|cbt|imt|agent|ft)-[0-9A-Za-z_\-]{20,}"),
    ("slack token", r"()\b(?:xox[abposre]-[A-Za-z0-9\-]{10,}|xapp-\d-[A-Za-z0-9\-]{10,})"),
    ("slack or discord webhook", r"(?i)(\bhttps?://(?:hooks\.slack\.com|discord(?:app)?\.com/api/webhooks)/)\S+"),
    ("google api key", r"()\bAIza[0-9A-Za-z_\-]{35}"),
    ("google oauth token", r"()\bya29\.[0-9A-Za-z_\-]{20,}"),
    ("aws access key id", r"()\b(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[0-9A-Z]{16}\b"),
    ("sendgrid key", r"()\bSG\.[\w-]{16,32}\.[\w-]{16,64}"),
    ("npm token", r"()\bnpm_[A-Za-z0-9]{36}"),
    ("pypi token", r"()\bpypi-AgE[A-Za-z0-9_\-]{20,}"),
    ("hugging face token", r"()\bhf_[A-Za-z0-9]{30,}"),
    ("digitalocean token", r"()\bdo[opr]_v1_[a-f0-9]{64}"),
    ("shopify token", r"()\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    ("twilio key", r"()\bSK[0-9a-fA-F]{32}\b"),
    ("mailgun key", r"()\bkey-[0-9a-zA-Z]{32}\b"),
    ("mailchimp key", r"()\b[0-9a-f]{32}-us\d{1,2}\b"),
    ("square token", r"()\bsq0(?:atp|csp)-[0-9A-Za-z_\-]{22,}"),
    ("databricks token", r"()\bdapi[a-f0-9]{32}"),
    ("vault token", r"()\bhv[sb]\.[A-Za-z0-9_\-]{24,}"),
    ("age secret key", r"()\bAGE-SECRET-KEY-1[0-9A-Z]{58}"),
    ("telegram bot token", r"()\b\d{8,10}:AA[0-9A-Za-z_\-]{33}"),
    ("bearer or basic credentials", r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9_\-.=+/~]{8,}"),
    (
        "password in url",
        r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s:/?#@\"'\\]*:)[^\s/\"'\\]+?(?=@[^\s@/?#\"'\\]*(?:[/?#\s\"'\\]|$))",
    ),
    (
        "secret assignment",
        rf"(?i)((?<![A-Za-z0-9])(?:[\w.\-]{{0,40}}?(?:{_KEY_WORDS})(?:[_-]?(?:key|id|value|token))?|pass)"
        rf"\\?[\"']?\s*(?::=|=>|[:=])\s*)({_VALUE})",
    ),
)

# Text that none of DEFAULT_PATTERNS can match lacks all of these (a superset of their triggers:
# every pattern needs one of these substrings), so most prose skips the ~30 pattern scans.
_DEFAULT_TRIGGERS = re.compile(
    r"(?i)[:=]|-----BEGIN|eyJ|sk-|sk_|rk_|whsec_|gh[pousr]_|github_pat_|gl[a-z]+-|xox|xapp-|aiza|ya29\.|"
    r"a3t|akia|asia|agpa|aida|aroa|aipa|anpa|anva|sg\.|npm_|pypi-|hf_|_v1_|shp|sk[0-9a-f]|key-|-us\d|sq0|"
    r"dapi|hv[sb]\.|age-secret|bearer|basic"
)

_SECRET_KEY = re.compile(
    r"(?:password|passwd|passphrase|secrets?|token|apikey|accesskey|accountkey|privatekey|secretkey|"
    r"signingkey|encryptionkey|masterkey|credentials?|authorization|cookies?|signature|sessionid|clientsecret)$"
    r"|^(?:pwd|pass|auth|sig)$"
)
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def is_secret_key(key: str) -> bool:
    """Whether an object key is named like a secret (``db_password``, ``X-Api-Key``, ``accessToken``).

    Case, ``-``, ``_`` and ``.`` are ignored; the key must end with a secret word
    (``max_tokens`` and ``token_type`` are not secret, ``refresh_token`` is).
    """
    return _SECRET_KEY.search(_NOT_ALNUM.sub("", key.lower())) is not None


class DefaultRedactor:
    """Redacts secret-named keys, secrets inside JSON strings and the formats of :data:`DEFAULT_PATTERNS`.

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
        patterns = tuple(patterns)
        self._patterns = [re.compile(p) for _, p in patterns]
        # Only the default patterns have a known set of triggers to look for first.
        self._triggers = _DEFAULT_TRIGGERS if patterns == DEFAULT_PATTERNS else None

    def redact_text(self, text: str) -> str:
        """One string with every matching secret replaced (a JSON object or array is redacted as a value)."""
        stripped = text.lstrip()
        if stripped[:1] in ("{", "["):
            parsed = self._json(text)
            if parsed is not None:
                return parsed
        if self._triggers is not None and self._triggers.search(text) is None:
            return text
        for pattern in self._patterns:
            text = pattern.sub(self._replace, text)
        return text

    def _replace(self, match: re.Match[str]) -> str:
        if match.lastindex and match.lastindex >= 2:
            value = match.group(2)
            # A quoted value keeps its quotes, so JSON-like text stays JSON-like.
            quote = '\\"' if value.startswith('\\"') else value[0] if value[:1] in ("'", '"') else ""
            return match.group(1) + quote + self.replacement + quote
        return match.group(1) + self.replacement

    def _json(self, text: str) -> str | None:
        """``text`` redacted as the JSON value it holds, or None when it is not a JSON object or array."""
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, dict | list):
            return None
        redacted = self.redact(value)
        if redacted == value:
            return text
        spaced = ": " in text or ", " in text
        return json.dumps(redacted, ensure_ascii=False, separators=(", ", ": ") if spaced else (",", ":"))

    def redact(self, value: Any) -> Any:
        """Redact every string in a JSON-ready value, recursively (iteratively: no depth limit)."""
        return self._walk(value, None)

    def _walk(self, value: Any, key: str | None) -> Any:
        root: list[Any] = [None]
        # (item, its key, parent, slot in parent, under a secret-named key)
        stack: list[tuple[Any, str | None, list[Any] | dict[str, Any], Any, bool]] = [(value, key, root, 0, False)]
        while stack:
            item, item_key, parent, slot, secret = stack.pop()
            if item_key is not None and not secret and item_key not in self.keep_keys and is_secret_key(item_key):
                secret = True
            if isinstance(item, str):
                if item_key is not None and item_key in self.keep_keys and not secret:
                    out: Any = item
                elif secret and item:
                    out = self.replacement
                else:
                    out = self.redact_text(item)
            elif isinstance(item, dict):
                out = {}
                for k, v in item.items():
                    out[k] = None
                    stack.append((v, k if isinstance(k, str) else None, out, k, secret))
            elif isinstance(item, list | tuple):
                out = [None] * len(item)
                for i, v in enumerate(item):
                    stack.append((v, item_key, out, i, secret))
            else:
                out = item
            parent[slot] = out
        return root[0]
