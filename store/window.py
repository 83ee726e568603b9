"""History windows: the part of a long conversation an agent sends to its model, always provider-valid.

A conversation that lives for weeks outgrows a model's context, and trimming is where
histories break: a buffer that drops an assistant tool-call message but keeps its
results (or the reverse) is refused by the provider. chatledger keeps the whole log,
so a window is only a *view*: the log is never changed, and every window obeys the
provider rule of :mod:`chatledger.store.validity`.

A window is, in order:

1. the *head*: the conversation's leading system (and developer) messages, and, with
   ``keep_first_user``, its first user message;
2. optionally a *summary* of what falls between the head and the tail, written by a
   summarizer the application supplies (a model call), recorded once in the log
   (first writer wins, like model responses) and reused by every later request and by
   replay, which therefore still makes no model call;
3. the *tail*: the longest suffix of whole *turn units* that fits the budget. A unit is
   one message, or an assistant message with ``tool_calls`` together with the tool
   results that answer it; units are never split, so a window never separates a call
   from its results and never starts with a tool result. The newest unit is always
   kept, even when it alone exceeds the budget (a model call without the newest
   message is useless); :attr:`Window.tokens` says what the window costs.

The tail is read from the end of the conversation in growing chunks
(:meth:`Store.versioned_messages`), so a window costs what its messages cost, not
what the conversation costs.

Token counts come from a pluggable counter: an adapter passes its model client's own
(AutoGen's ``count_tokens``); otherwise :func:`estimate_tokens`, a documented estimate
that needs no tokenizer files.

Healing on the way out: a stored tool call whose ``arguments`` are not valid JSON (a
stream cut by a token limit) is sent as a JSON object holding the raw text, so the
provider accepts it; the call's recorded outcome (the tool result) tells the model it
was not executed. The stored event stays as it was.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chatledger.store.errors import PendingToolCallsError, ValidationError
from chatledger.store.handle import Store
from chatledger.store.responses import record_response, recorded_response, recorded_responses
from chatledger.store.validity import check_provider_valid

__all__ = [
    "SUMMARY_STREAM",
    "Summarizer",
    "TokenCounter",
    "Window",
    "estimate_tokens",
    "fit_units",
    "heal",
    "turn_units",
    "window",
    "window_messages",
]

TokenCounter = Callable[[Mapping[str, Any]], int]
"""Tokens one message costs in the model's prompt."""

Summarizer = Callable[[list[dict[str, Any]]], str]
"""Condenses messages (OpenAI format; a previous summary first, as a system message) into text."""

Versioned = tuple[int, dict[str, Any]]
"""A message with its version in the conversation."""

SUMMARY_STREAM = "summary"
"""The side stream summaries are recorded in (see :mod:`chatledger.store.responses`)."""

_HEAD_ROLES = frozenset({"system", "developer"})
_HEAD_PROBE = 8  # versions read for the head at first (more only when all of them are system messages)
# A conversation's head never changes once a message follows it (the log is append-only), so it is
# kept per store handle: (head with the first user message, head without it, version it is final at).
_HEADS: weakref.WeakKeyDictionary[
    Store, dict[str, tuple[tuple[list[Versioned], int], tuple[list[Versioned], int], int]]
]
_HEADS = weakref.WeakKeyDictionary()
_HEADS_PER_STORE = 1024
_SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


def estimate_tokens(message: Mapping[str, Any]) -> int:
    """About one token per four characters of the message's JSON, plus four for its framing.

    OpenAI's tokenizers average close to four characters of English per token, and each
    message costs a few tokens of framing. The estimate errs high on JSON punctuation,
    which keeps windows inside a real budget; pass the model client's counter for exact
    numbers.
    """
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str)
    return 4 + (len(text) + 3) // 4


def heal(message: dict[str, Any]) -> dict[str, Any]:
    """The message as a provider accepts it: tool-call arguments that are not JSON become a JSON object.

    A tool call cut mid-JSON is stored verbatim; on the way out its ``arguments`` become
    ``{"invalid_json_arguments": "<the raw text>"}``. Any other message is returned as is.
    """
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    if not isinstance(calls, list):
        return message
    healed: list[Any] = []
    changed = False
    for call in calls:
        fn = call.get("function") if isinstance(call, Mapping) else None
        args = fn.get("arguments") if isinstance(fn, Mapping) else None
        if isinstance(fn, Mapping) and (args is None or not _is_json_object(args)):
            raw = "" if args is None else str(args)
            fixed = json.dumps({"invalid_json_arguments": raw}, ensure_ascii=False) if raw else "{}"
            healed.append({**call, "function": {**fn, "arguments": fixed}})
            changed = True
        else:
            healed.append(call)
    return {**message, "tool_calls": healed} if changed else message


def _is_json_object(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def turn_units(
    messages: Sequence[Versioned],
) -> tuple[list[Versioned], list[list[Versioned]]]:
    """Split versioned messages into leading tool results (a unit begun earlier) and whole units.

    Returns:
        ``(orphans, units)``: the tool messages before the first other message, then each
        unit: a non-tool message followed by the tool messages after it.
    """
    orphans: list[Versioned] = []
    units: list[list[Versioned]] = []
    for item in messages:
        if item[1].get("role") == "tool":
            (units[-1] if units else orphans).append(item)
        else:
            units.append([item])
    return orphans, units


@dataclass(frozen=True)
class Window:
    """A provider-valid view of a conversation within a budget."""

    messages: list[dict[str, Any]]
    """What to send to the model: head, summary (as a system message), tail."""
    tokens: int | None
    """The window's cost by the counter used (counted only when a token budget was given)."""
    head: int
    """How many of :attr:`messages` are the kept head."""
    first_version: int
    """The version of the tail's first message (0 when the tail is empty); the messages between the
    head and this version are left out (and covered by :attr:`summary` when there is one)."""
    summary: dict[str, Any] | None = field(default=None)
    """The recorded summary used: ``{"summary", "covers": [first, last], "model", "made_at"}``."""


def window(
    store: Store,
    conversation_id: str,
    *,
    max_tokens: int | None = None,
    max_messages: int | None = None,
    keep_first_user: bool = False,
    counter: TokenCounter = estimate_tokens,
    summarizer: Summarizer | None = None,
    summary_model: str = "",
    as_of: int | None = None,
    allow_pending: bool = False,
    chunk: int = 64,
) -> Window:
    """The conversation's window within ``max_tokens`` and/or ``max_messages`` (no bound: all of it).

    Args:
        store: the log (a tenant's handle).
        conversation_id: the conversation.
        max_tokens: the budget for the whole window, by ``counter``.
        max_messages: the most messages in the whole window.
        keep_first_user: keep the first user message in the head (head-and-tail windows).
        counter: tokens per message; the model client's own counter where it has one.
        summarizer: condenses what falls out of the window; its summary is recorded once and reused.
        summary_model: recorded with the summary (which model wrote it).
        as_of: the conversation as of this version (time travel, replay).
        allow_pending: let the newest unit be an assistant tool call still waiting for results.
        chunk: how many versions the first tail read takes (doubled while more are needed).

    Raises:
        ValidationError: a bound is not a positive integer.
        PendingToolCallsError: the newest tool calls have no results yet (unless ``allow_pending``).
        InvalidHistoryError: the stored messages inside the window break the provider rule.
        NotFoundError: no such conversation for this tenant.
    """
    for name, bound in (("max_tokens", max_tokens), ("max_messages", max_messages), ("chunk", chunk)):
        if bound is not None and (type(bound) is not int or bound < 1):
            raise ValidationError(name, f"must be a positive integer, got {bound!r}")
    # Reading the newest ``max_messages`` rows is enough for a message bound: a unit that does not
    # lie wholly inside them could not fit in the window anyway.
    wanted = max_messages or chunk
    cached = _HEADS.get(store, {}).get(conversation_id)
    probe = 0 if cached is not None else _HEAD_PROBE
    top, first_rows, newest = store.message_ends(conversation_id, probe, wanted, as_of)
    if cached is not None and cached[2] <= top:
        head_items, head_end = cached[0] if keep_first_user else cached[1]
    else:
        head_items, head_end = _head(store, conversation_id, top, keep_first_user, first_rows, probe)
    head = [heal(m) for _, m in head_items]
    budget = _Budget(max_tokens, max_messages, counter)
    budget.take(head)
    initial = (newest, len(newest) < wanted)

    summary = _latest_summary(store, conversation_id, head_end, top) if summarizer is not None else None
    floor = summary["covers"][1] if summary is not None else head_end
    summary_cost = _Budget.cost_of(counter, [_summary_message(summary)]) if summary is not None else 0
    room = budget.after(summary_cost, 1 if summary else 0)
    tail, complete = _tail(store, conversation_id, floor, top, room, chunk, initial)
    if summarizer is not None and not complete:
        # The tail does not reach the last summary (or the head): summarize up to a cut that leaves
        # room to grow, so the next requests reuse this summary instead of writing a new one each time.
        kept, _ = _tail(store, conversation_id, floor, top, budget.scaled(0.5), chunk, initial)
        cut = kept[0][0] if kept else top + 1
        summary = _summarize(store, conversation_id, summarizer, summary_model, summary, head_end, cut - 1, top)
        summary_cost = _Budget.cost_of(counter, [_summary_message(summary)])
        tail, _ = _tail(store, conversation_id, cut - 1, top, budget.after(summary_cost, 1), chunk, initial)

    messages = list(head)
    if summary is not None:
        messages.append(_summary_message(summary))
    messages.extend(heal(m) if "tool_calls" in m else m for _, m in tail)
    if tail and not allow_pending:
        last = tail[-1][1]
        calls = last.get("tool_calls") if last.get("role") == "assistant" else None
        if calls:
            pending = [str(c.get("id")) for c in calls if isinstance(c, Mapping)]
            raise PendingToolCallsError(conversation_id, pending)
    if any("tool_calls" in m or m.get("role") == "tool" for m in messages):  # else valid by construction
        check_provider_valid(messages, f"the window of {conversation_id!r}", allow_pending_tail=allow_pending)
    tokens = sum(counter(m) for m in messages) if max_tokens is not None else None
    return Window(messages, tokens, len(head), tail[0][0] if tail else 0, summary)


@dataclass
class _Budget:
    """What is left of the token and message bounds."""

    tokens: int | None
    messages: int | None
    counter: TokenCounter

    @staticmethod
    def cost_of(counter: TokenCounter, messages: Sequence[Mapping[str, Any]]) -> int:
        return sum(counter(m) for m in messages)

    def take(self, messages: Sequence[Mapping[str, Any]]) -> None:
        if self.tokens is not None:
            self.tokens -= self.cost_of(self.counter, messages)
        if self.messages is not None:
            self.messages -= len(messages)

    def after(self, tokens: int, messages: int) -> _Budget:
        return _Budget(
            None if self.tokens is None else self.tokens - tokens,
            None if self.messages is None else self.messages - messages,
            self.counter,
        )

    def scaled(self, factor: float) -> _Budget:
        return _Budget(
            None if self.tokens is None else int(self.tokens * factor),
            None if self.messages is None else int(self.messages * factor),
            self.counter,
        )


def _head(
    store: Store,
    conversation_id: str,
    top: int,
    keep_first_user: bool,
    first_rows: list[Versioned],
    probed: int,
) -> tuple[list[Versioned], int]:
    """The leading system messages (and the first user message), and the version the head ends at."""
    system: list[Versioned] = []
    rows, after, step = first_rows, min(probed, top), max(probed, 1)
    while True:
        for version, message in rows:
            role = message.get("role")
            if role in _HEAD_ROLES:
                system.append((version, message))
                continue
            end = system[-1][0] if system else 0
            plain = (system, end)
            with_user = ([*system, (version, message)], version) if role == "user" else plain
            heads = _HEADS.setdefault(store, {})
            if len(heads) >= _HEADS_PER_STORE:
                heads.clear()
            heads[conversation_id] = (with_user, plain, version)
            return with_user if keep_first_user else plain
        if after >= top:
            return system, system[-1][0] if system else 0
        step *= 2
        rows = store.versioned_messages(conversation_id, after, min(top, after + step))
        after = min(top, after + step)


def _tail(
    store: Store,
    conversation_id: str,
    floor: int,
    top: int,
    budget: _Budget,
    chunk: int,
    initial: tuple[list[Versioned], bool],
) -> tuple[list[Versioned], bool]:
    """The longest suffix of whole units after version ``floor`` within ``budget`` (the newest unit always).

    ``initial`` is the newest messages already read, and whether they are all there are.

    Returns:
        ``(messages, complete)``: ``complete`` when every message after ``floor`` is in it.
    """
    rows, everything = initial
    read = [item for item in rows if item[0] > floor]
    after = floor if everything or not rows else max(floor, rows[0][0] - 1)
    counter = budget.counter if budget.tokens is not None else None
    while True:
        reached_floor = after <= floor
        if counter is None and budget.messages is not None:
            # A message bound over messages with no tool results: every message is its own unit,
            # so the window is the newest ``messages`` of them (the common case, without grouping).
            n = max(budget.messages, 1)
            if (len(read) >= n or reached_floor) and not any(m.get("role") == "tool" for _, m in read[-n:]):
                full = len(read) > n or (len(read) == n and not reached_floor)
                return read[-n:], not full
        orphans, units = turn_units(read)
        if reached_floor and orphans:
            units.insert(0, orphans)  # results with no call after the floor: the rule check names them
        cost = None if counter is None else (lambda item: counter(item[1]))
        kept, full = fit_units(units, cost, budget.tokens, budget.messages)
        # The message bound is used up: nothing older could join, so there is no need to read it.
        used = sum(len(unit) for unit in units[len(units) - kept :])
        full = full or (budget.messages is not None and used >= budget.messages and not reached_floor)
        if full or reached_floor:
            return [item for unit in units[len(units) - kept :] for item in unit], not full
        start = max(floor, after - chunk)
        read = store.versioned_messages(conversation_id, start, after) + read
        after, chunk = start, chunk * 2


T = TypeVar("T")


def fit_units(
    units: Sequence[Sequence[T]],
    cost: Callable[[T], int] | None,
    max_tokens: int | None,
    max_messages: int | None,
) -> tuple[int, bool]:
    """How many of the newest ``units`` fit the bounds, and whether an older one was left out.

    The one selection rule of every window, shared by the store's windows and the adapters'
    model contexts (which group their own message types into units): whole units, newest
    first, while both bounds hold; the newest unit always.

    Args:
        units: oldest first; each a call with its results, or one message.
        cost: tokens of one message (None: tokens are not bounded).
        max_tokens: the token bound for the units (None: no bound).
        max_messages: the message bound for the units (None: no bound).
    """
    kept = tokens = messages = 0
    for unit in reversed(units):
        unit_tokens = sum(cost(m) for m in unit) if cost is not None and max_tokens is not None else 0
        over_tokens = max_tokens is not None and tokens + unit_tokens > max_tokens
        over_messages = max_messages is not None and messages + len(unit) > max_messages
        if kept and (over_tokens or over_messages):
            return kept, True
        kept, tokens, messages = kept + 1, tokens + unit_tokens, messages + len(unit)
    return kept, False


def _summary_message(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """A recorded summary as the system message the model reads."""
    assert summary is not None
    return {"role": "system", "content": _SUMMARY_PREFIX + str(summary["summary"])}


def _recorded_summaries(store: Store, conversation_id: str) -> list[dict[str, Any]]:
    found = []
    for _key, response in recorded_responses(store, conversation_id, stream=SUMMARY_STREAM):
        covers = response.get("covers")
        if isinstance(response.get("summary"), str) and isinstance(covers, list) and len(covers) == 2:
            found.append(response)
    return found


def _latest_summary(store: Store, conversation_id: str, head_end: int, top: int) -> dict[str, Any] | None:
    """The recorded summary reaching furthest, that starts right after the head and was made by ``top``."""
    usable = [
        s
        for s in _recorded_summaries(store, conversation_id)
        if s["covers"][0] == head_end + 1 and s["covers"][1] < top and int(s.get("made_at", 0)) <= top
    ]
    return max(usable, key=lambda s: int(s["covers"][1]), default=None)


def _summarize(
    store: Store,
    conversation_id: str,
    summarizer: Summarizer,
    model: str,
    previous: Mapping[str, Any] | None,
    head_end: int,
    to: int,
    top: int,
) -> dict[str, Any]:
    """The summary of versions ``head_end + 1 .. to``: the recorded one, else a new one, recorded once."""
    key = f"summary:{head_end + 1}:{to}"
    recorded = recorded_response(store, conversation_id, key, stream=SUMMARY_STREAM)
    if recorded is not None:
        return recorded  # by an earlier request, a concurrent one, or the run being replayed
    since = int(previous["covers"][1]) if previous is not None else head_end
    inputs = [_summary_message(previous)] if previous is not None else []
    inputs += [heal(m) for _, m in store.versioned_messages(conversation_id, since, to)]
    text = summarizer(inputs)
    if not isinstance(text, str):
        raise ValidationError("summarizer", f"must return the summary as a string, got {type(text).__name__}")
    summary = {"summary": text, "covers": [head_end + 1, to], "model": model, "made_at": top}
    return record_response(store, conversation_id, key, summary, stream=SUMMARY_STREAM)


def window_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int | None = None,
    max_messages: int | None = None,
    keep_first_user: bool = False,
    counter: TokenCounter = estimate_tokens,
) -> list[dict[str, Any]]:
    """The window of a history already in memory (OpenAI format): the same head, units and rule as
    :func:`window`, for adapters that hold a history themselves (classic AutoGen's agents do).

    No summary (summaries need the log) and no rule check: the caller's history is what it is;
    tool calls cut mid-JSON are healed as :func:`window` heals them.
    """
    for name, bound in (("max_tokens", max_tokens), ("max_messages", max_messages)):
        if bound is not None and (type(bound) is not int or bound < 1):
            raise ValidationError(name, f"must be a positive integer, got {bound!r}")
    items = [dict(m) for m in messages]
    if max_tokens is None and max_messages is None:
        return [heal(m) for m in items]
    start = 0
    while start < len(items) and items[start].get("role") in _HEAD_ROLES:
        start += 1
    if keep_first_user and start < len(items) and items[start].get("role") == "user":
        start += 1
    head = items[:start]
    orphans, units = turn_units(list(enumerate(items[start:])))
    if orphans:
        units.insert(0, orphans)  # results of a call not in this history: left to the caller's rule
    cost = None if max_tokens is None else (lambda item: counter(item[1]))
    kept, _ = fit_units(
        units,
        cost,
        None if max_tokens is None else max_tokens - sum(counter(m) for m in head),
        None if max_messages is None else max_messages - len(head),
    )
    tail = [m for unit in units[len(units) - kept :] for _, m in unit]
    return [heal(m) for m in head + tail]
