"""The events an append returns, built from what it stored without validating it twice.

An append validates each payload on the way in (the event class's checks, then JSON).
What it hands back is the event as a later read would give it, and building that by
pydantic's validating path again cost a fifth of a single-message append
(bench/append.py). These helpers build it directly: :func:`read_back` gives the payload's
values as ``json.loads`` of the stored text would, :func:`spec_of` what an event class
needs to be built (computed once per class), :func:`built` the frozen event.
tests/store/conformance/test_log.py checks that such an event equals, dumps and stays
frozen like the one read back.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple, get_args

from pydantic.fields import FieldInfo

from chatledger.store.events import Event

__all__ = ["SPECS", "Spec", "built", "read_back", "spec_of"]


_FLAT = frozenset({str, int, float, bool, type(None)})


def read_back(into: dict[str, Any], payload: dict[str, Any] | None, text: str) -> None:
    """Add to ``into`` what reading the stored ``text`` back gives: fresh values equal to ``json.loads(text)``'s.

    When ``payload`` (the dict ``text`` was made from, None when it was changed on the
    way in) holds only strings, numbers, booleans and nulls, at most one dict deep (most
    chat messages), copying its dicts gives the same and costs half of parsing.
    Floats qualify because the encoder refuses NaN and infinities and ``repr`` round-trips.
    """
    if payload is not None:
        out = {}
        for name, value in payload.items():
            kind = type(value)
            if type(name) is not str:
                break
            if kind is dict:
                for k, v in value.items():
                    if type(k) is not str or type(v) not in _FLAT:
                        break
                else:
                    out[name] = value.copy()
                    continue
                break
            if kind not in _FLAT:
                break
            out[name] = value
        else:
            into.update(out)
            return
    into.update(json.loads(text))


class Spec(NamedTuple):
    """What appending and building an event of one class needs to know of it (computed once).

    Class attributes of a pydantic model cost several dictionary lookups each (its
    metaclass, a deep MRO): an append reads them from here instead.
    """

    type_name: str
    schema_version: int
    key_field: str | None
    names: frozenset[str]
    defaults: tuple[tuple[str, Any], ...]
    """(name, default) of optional fields: the value itself when immutable, else its FieldInfo."""
    datetimes: tuple[str, ...]


SPECS: dict[type[Event], Spec] = {}
_set = object.__setattr__
_new_object = object.__new__


def spec_of(cls: type[Event]) -> Spec:
    spec = SPECS.get(cls)
    if spec is None:
        fields = cls.model_fields
        spec = SPECS[cls] = Spec(
            cls.TYPE,
            cls.SCHEMA_VERSION,
            cls.KEY_FIELD,
            frozenset(fields),
            tuple((name, _default(f)) for name, f in fields.items() if not f.is_required()),
            tuple(
                name
                for name, f in fields.items()
                if name != "recorded_at" and (f.annotation is datetime or datetime in get_args(f.annotation))
            ),
        )
    return spec


def _default(f: FieldInfo) -> Any:
    """A field's default when it can be shared between events (None, a number, a string), else the field."""
    if f.default_factory is None and type(f.default) in _FLAT:
        return f.default
    return f


def built(cls: type[Event], spec: Spec, values: dict[str, Any]) -> Event:
    """The event just written, built without validating again what was validated and stored.

    ``values`` is the envelope followed by the payload. The payload went through the
    event's own checks and JSON on the way in; only
    datetime fields need turning back from their ISO text. A payload that lacks a
    required field or has an unknown one (an adapter's own event type, say) takes
    the validating path instead. Building sets what ``model_construct`` sets, minus
    its per-call walk over the fields: ``model_construct`` cost ~5 µs more per event,
    about a fifth of a single-message append at ``synchronous=NORMAL`` (bench/append.py).
    tests/store/conformance/test_log.py checks that such an event equals, dumps and stays
    frozen like the one read back.
    """
    given = len(values)
    for name, default in spec.defaults:
        if name not in values:
            values[name] = default.get_default(call_default_factory=True) if type(default) is FieldInfo else default
    if values.keys() != spec.names:
        return cls.model_validate(dict(list(values.items())[:given]))
    if spec.datetimes:
        for name in spec.datetimes:
            value = values[name]
            if isinstance(value, str):
                values[name] = datetime.fromisoformat(value)
    event = _new_object(cls)  # what pydantic does (models define no __new__), without the class lookup
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(values))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event
