"""A store-backed classic AutoGen ``AbstractCache``: model responses recorded in the log.

``OpenAIWrapper.create`` looks a request up in the cache passed to
``initiate_chat(cache=...)`` and stores each live response there. Backing that
cache with the conversation's log makes a retried or duplicated request that
sends the model the same history get the same response, with the same tool
call ids, so the executor returns the recorded tool outcomes instead of
running the tools again.

Responses are recorded with :mod:`chatledger.store.responses` (the
conversation's ``model`` side stream); the first writer wins. Inside a turn
(:mod:`.turn`) a response is keyed by its *position*: the request, the turn and
the model call's number in it. A request run again (redelivered after its worker
died, retried after an error) thus gets its recorded responses even when other
requests' turns were stored in between and its history differs; its tool calls
keep their ids and the executor returns their recorded outcomes. Outside a turn
the key is a hash of the model request.
``OpenAIWrapper`` returns the object it just cached, so when another worker
recorded first, :meth:`LedgerCache.set` rewrites that object in place into the
recorded response: both workers then continue with the same reply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

from chatledger.adapters.classic.recording import autogen_module
from chatledger.store import Store
from chatledger.store.responses import record_response, recorded_response

__all__ = ["LedgerCache", "cache_key"]

_EXCLUDE = {"message_retrieval_function"}


def cache_key(key: Any) -> str:
    """A stable text key for what ``autogen.oai.openai_utils.get_key`` returns (a JSON-able dict)."""
    text = key if isinstance(key, str) else json.dumps(key, sort_keys=True, default=str)
    return "classic:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dump(value: Any) -> dict[str, Any] | None:
    dump = getattr(value, "model_dump", None)
    if dump is None:
        return None
    data: dict[str, Any] = dump(mode="json", exclude=_EXCLUDE)
    return data


def _load(data: dict[str, Any]) -> Any:
    ChatCompletion = autogen_module().oai.oai_models.ChatCompletion

    return ChatCompletion.model_validate(data)


class LedgerCache:
    """An ``autogen.cache.AbstractCache`` over one conversation's recorded model responses.

    Pass it as ``initiate_chat(cache=...)`` (the chatledger agents do this by
    default). Closing it does nothing: the store outlives the chat.
    """

    def __init__(self, store: Store, conversation_id: str, positions: Callable[[], str | None] | None = None) -> None:
        """``positions`` names the next model call's position in the running turn (None outside a turn)."""
        self.store = store
        self.conversation_id = conversation_id
        self._positions = positions
        self._keys: dict[str, str] = {}

    def _key(self, key: Any) -> str:
        """The recorded key of a model request: its position in the running turn, else its hash."""
        hashed = cache_key(key)
        if hashed not in self._keys:
            position = self._positions() if self._positions is not None else None
            if position is None:
                return hashed
            self._keys[hashed] = "classic-turn:" + hashlib.sha256(position.encode("utf-8")).hexdigest()
        return self._keys[hashed]

    def get(self, key: Any, default: Any | None = None) -> Any | None:
        """The recorded response for a model request, or ``default``."""
        data = recorded_response(self.store, self.conversation_id, self._key(key))
        return default if data is None else _load(data)

    def set(self, key: Any, value: Any) -> None:
        """Record a live response; if another writer was first, turn ``value`` into the recorded one."""
        data = _dump(value)
        if data is None:
            return
        stored = record_response(self.store, self.conversation_id, self._key(key), data)
        if stored != data:
            recorded = _load(stored)
            for name in type(recorded).model_fields:
                if name not in _EXCLUDE and hasattr(value, name):
                    setattr(value, name, getattr(recorded, name))

    def close(self) -> None:
        """Nothing to release: the store is closed by its owner."""

    def __enter__(self) -> LedgerCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None
