"""The canonical executor: the one place a tool runs, once per recorded call.

The executor takes final assembled assistant messages (never streaming
chunks), records each tool call in the ledger (:mod:`chatledger.store.tools.ledger`),
claims it, runs its tool, and records the outcome together with the
tool-result message in one transaction. Whatever asks for the same call again
(a retry, a duplicate delivery, the same assistant message re-sent, a replay)
gets the recorded outcome back and nothing runs.

Crashes: a call whose holder died keeps its claim until the lease expires.
An idempotent tool is then claimed and run again with the same idempotency
key (:func:`current_idempotency_key`); any other tool is recorded as
``outcome_unknown`` and the model is told so. Exactly-once *recording* always
holds; exactly-once *side effects* hold for idempotent tools and for every run
without a crash.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chatledger.store.backends.recorder import CALL_SEPARATOR, call_stream_id
from chatledger.store.errors import ConflictError, LeaseLost, PendingToolCallsError, ReplayDivergence, ValidationError
from chatledger.store.events import MessageAppended, ToolCallFailed, ToolCallRequested
from chatledger.store.handle import Store
from chatledger.store.messages import pending_tool_calls, validate_message
from chatledger.store.tools.ledger import (
    CallState,
    Claim,
    claim_call,
    final_draft,
    fold_call,
    load_call,
    open_call,
    record_outcome,
    renew_lease,
    result_message,
    tool_result_message_id,
)
from chatledger.store.tools.registry import Tool, ToolRegistry, as_registry, render_result
from chatledger.store.writer import Draft, check_id

__all__ = [
    "Executor",
    "ToolOutcome",
    "current_idempotency_key",
    "final_tool_calls",
    "run_worker",
    "tool_result_message_id",
]

_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("chatledger_idempotency_key", default=None)

Tools = ToolRegistry | Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]]


def current_idempotency_key() -> str | None:
    """The running call's idempotency key, ``f"{conversation_id}/{tool_call_id}"`` (None outside a tool).

    It is the same on every attempt of one call, so a tool can hand it to an
    API that deduplicates (a payment provider, an upsert) and stay exactly-once
    even when it is re-run after a crash.
    """
    return _KEY.get()


@dataclass(frozen=True)
class ToolOutcome:
    """The outcome of one tool call, as recorded and as the model sees it."""

    tool_call_id: str
    name: str
    status: str
    content: str
    is_error: bool
    from_record: bool


@dataclass(frozen=True)
class _Run:
    state: CallState
    claim: Claim
    tool: Tool
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class _Wait:
    seconds: float


_CHUNK_KEYS = ("delta", "choices")
_CREATE_RETRIES = 5
_PARTIAL_FLAGS = ("partial", "is_partial", "streaming")


def final_tool_calls(message: Any, where: str = "assistant_message") -> list[tuple[str, str, str]]:
    """The ``(id, name, arguments)`` of a final assembled assistant message's tool calls.

    Streaming deltas are refused: a message carrying ``delta``/``choices``, an
    ``object`` of ``*.chunk``, a truthy ``partial`` flag, or a tool call still
    being assembled (an ``index`` with empty ``arguments``) never executes.

    Raises:
        ValidationError: the message is not a final assistant message, or repeats a call id.
    """
    if isinstance(message, Mapping):
        if any(k in message for k in _CHUNK_KEYS) or str(message.get("object", "")).endswith("chunk"):
            raise ValidationError(where, "is a streaming chunk; only the final assembled message executes")
        if any(message.get(flag) for flag in _PARTIAL_FLAGS):
            raise ValidationError(where, "is marked partial; only the final assembled message executes")
    msg = validate_message(message, where)
    if msg.get("role") != "assistant":
        raise ValidationError(f"{where}.role", f"must be 'assistant', got {msg.get('role')!r}")
    calls = msg.get("tool_calls") or []
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for i, call in enumerate(calls):
        call_id = check_id(call["id"], f"{where}.tool_calls[{i}].id")
        fn = call["function"]
        if "index" in call and fn["arguments"] == "":
            raise ValidationError(f"{where}.tool_calls[{i}]", "is a streaming fragment (index, no arguments yet)")
        if call_id in seen:
            raise ValidationError(f"{where}.tool_calls[{i}].id", f"{call_id!r} appears twice")
        seen.add(call_id)
        out.append((call_id, fn["name"], fn["arguments"]))
    return out


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, inside or outside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ctx.run, asyncio.run, coro).result()


class _Renewer:
    """One background thread per executor that renews the leases of the calls it is running.

    A thread per call would cost a start and a join on every tool call; this one
    starts on first use and sleeps until the earliest lease is a third used up.
    """

    def __init__(self, store: Store, lease_seconds: float) -> None:
        self._store, self._lease = store, lease_seconds
        self._due: dict[int, tuple[float, Claim]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Keep ``claim``'s lease alive while the block runs."""
        key = id(claim)
        with self._cond:
            self._due[key] = (time.monotonic() + self._lease / 3, claim)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="chatledger-lease", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._due.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due:
                    # Exit only after a minute with nothing held; a wake-up whose claim was
                    # already released again (a fast tool) keeps the thread for the next one.
                    if not self._cond.wait(60) and not self._due:
                        self._thread = None
                        return
                    continue
                key, (due, claim) = min(self._due.items(), key=lambda item: item[1][0])
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._due[key] = (time.monotonic() + self._lease / 3, claim)
            try:
                renew_lease(self._store, claim, self._lease, time.time())
            except Exception:
                # Lost or unreachable: the completion append will tell (LeaseLost) and discard.
                with self._cond:
                    self._due.pop(key, None)


class Executor:
    """Runs tool calls exactly once per ``(conversation_id, tool_call_id)`` and records them.

    Args:
        store: the store the ledger and conversations live in.
        tools: a :class:`ToolRegistry`, a list of callables or a ``{name: callable}`` mapping.
        worker_id: recorded on claims and outcomes (default: host, pid and a random suffix).
        lease_seconds: how long a claim is held before others may take it over; it is
            renewed while the tool runs.
        max_attempts: runs of a tool that raises before its error is recorded as final.
        backoff_seconds: wait before attempt n+1 is ``backoff_seconds * 2 ** (n - 1)``.
        replay: never run a tool; return recorded outcomes, raise ReplayDivergence otherwise.
        poll_seconds: how often to look again while another worker holds a call.
    """

    def __init__(
        self,
        store: Store,
        tools: Tools,
        *,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        max_attempts: int = 1,
        backoff_seconds: float = 0.0,
        replay: bool = False,
        poll_seconds: float = 0.05,
    ) -> None:
        if lease_seconds <= 0:
            raise ValidationError("lease_seconds", "must be positive")
        if max_attempts < 1:
            raise ValidationError("max_attempts", "must be at least 1")
        self.store = store
        self.registry = as_registry(tools)
        self.worker_id = check_id(
            worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}", "worker_id"
        )
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.replay = replay
        self.poll_seconds = poll_seconds
        self._renewer = _Renewer(store, lease_seconds)

    # -- intake -------------------------------------------------------------------------------

    def submit(self, conversation_id: str, assistant_message: dict[str, Any]) -> list[ToolCallRequested]:
        """Record every tool call of a final assistant message as requested (idempotently).

        The assistant message itself is appended to the conversation unless an
        assistant message carrying its first call id is there already, all in one
        transaction, so the tool results that follow always have their call before them.

        Raises:
            ValidationError: a streaming chunk or otherwise malformed message; nothing is written.
            ConflictError: a call id was already requested with a different name or arguments.
            PendingToolCallsError: the message is new and earlier tool calls still lack results.
            NotFoundError: the conversation does not exist for this tenant.
        """
        calls = final_tool_calls(assistant_message)
        if not calls:
            return []
        if self.replay:
            return [self._replay_state(conversation_id, *c)[1] for c in calls]
        return self._intake(conversation_id, assistant_message, calls)

    def _exists(self, conv: str, call_id: str) -> bool:
        return self.store.recorder.get_head(call_stream_id(conv, call_id)) is not None

    def _intake(
        self, conv: str, message: Mapping[str, Any], calls: list[tuple[str, str, str]]
    ) -> list[ToolCallRequested]:
        # Where a missing head takes no lock (PostgreSQL), two intakes may both create a call's
        # stream; the loser gets ConflictError and, on the next try, finds the winner's record.
        for attempt in range(_CREATE_RETRIES):
            try:
                return self._intake_once(conv, message, calls)
            except ConflictError:
                if attempt == _CREATE_RETRIES - 1 or not any(self._exists(conv, c[0]) for c in calls):
                    raise
        raise AssertionError("unreachable")

    def _intake_once(
        self, conv: str, message: Mapping[str, Any], calls: list[tuple[str, str, str]]
    ) -> list[ToolCallRequested]:
        store = self.store
        mid = f"assistant:{calls[0][0]}"
        messages = store.messages(conv)
        present = any(
            m.get("role") == "assistant" and any(c.get("id") == calls[0][0] for c in m.get("tool_calls") or [])
            for m in messages
        )
        if not present:
            # A new assistant turn after unanswered calls would hand models an invalid history.
            waiting = pending_tool_calls(messages)
            if waiting:
                raise PendingToolCallsError(conv, waiting)
        events: list[ToolCallRequested] = []
        with store.transaction() as w:
            if not present:
                payload = {"message_id": mid, "message": dict(message)}
                w.append(conv, [Draft(MessageAppended, payload, key=mid)])
            for call_id, name, arguments in calls:
                if w.head(call_stream_id(conv, call_id)) is None:
                    tool = self.registry.get(name)
                    idempotent = tool.idempotent if tool is not None else False
                    events.append(open_call(w, conv, call_id, name, arguments, idempotent=idempotent, message_id=mid))
                    continue
                first = store.stream_events(call_stream_id(conv, call_id), 0, 1)[0]
                assert isinstance(first, ToolCallRequested)
                _check_same(conv, first.name, first.arguments, call_id, name, arguments)
                events.append(first)
        return events

    # -- execution ----------------------------------------------------------------------------

    def execute(self, conversation_id: str, assistant_message: dict[str, Any]) -> list[dict[str, Any]]:
        """Run (or return the recorded outcome of) every call of a final assistant message.

        Returns:
            The tool-result messages in call order (OpenAI ``role="tool"`` dicts); each is
            appended to the conversation exactly once.

        Raises:
            ValidationError, ConflictError, NotFoundError: as :meth:`submit`.
            ReplayDivergence: in replay mode, a call has no recorded outcome.
        """
        calls = final_tool_calls(assistant_message)
        if calls and not self.replay:
            self._intake(conversation_id, assistant_message, calls)
        return [
            result_message(call_id, self.execute_call(conversation_id, call_id, name, arguments).content)
            for call_id, name, arguments in calls
        ]

    async def aexecute(self, conversation_id: str, assistant_message: dict[str, Any]) -> list[dict[str, Any]]:
        """The async form of :meth:`execute` (async tools are awaited, sync ones run in a thread)."""
        calls = final_tool_calls(assistant_message)
        if calls and not self.replay:
            self._intake(conversation_id, assistant_message, calls)
        out = []
        for call_id, name, arguments in calls:
            outcome = await self.aexecute_call(conversation_id, call_id, name, arguments)
            out.append(result_message(call_id, outcome.content))
        return out

    def execute_call(
        self,
        conversation_id: str,
        tool_call_id: str,
        name: str,
        arguments: str,
        *,
        append_result: bool = True,
    ) -> ToolOutcome:
        """Run one call once, or return its recorded outcome.

        Requests the call if needed, claims it, runs its tool and records the
        outcome (with the tool-result message when ``append_result``). While
        another worker holds it, waits for its outcome or its lease to expire.

        Raises:
            ConflictError: the call id was recorded with a different name or arguments.
            ReplayDivergence: in replay mode, the call has no recorded outcome.
            NotFoundError: the conversation does not exist for this tenant.
        """
        while True:
            step = self._step(conversation_id, tool_call_id, name, arguments, append_result)
            if isinstance(step, ToolOutcome):
                return step
            if isinstance(step, _Wait):
                time.sleep(max(step.seconds, 0.0))
                continue
            with self._renewer.holding(step.claim):
                ok, text, ms = self._invoke(step)
            outcome = self._finish(step, ok, text, ms, append_result)
            if outcome is not None:
                return outcome

    async def aexecute_call(
        self,
        conversation_id: str,
        tool_call_id: str,
        name: str,
        arguments: str,
        *,
        append_result: bool = True,
    ) -> ToolOutcome:
        """The async form of :meth:`execute_call`."""
        while True:
            step = self._step(conversation_id, tool_call_id, name, arguments, append_result)
            if isinstance(step, ToolOutcome):
                return step
            if isinstance(step, _Wait):
                await asyncio.sleep(max(step.seconds, 0.0))
                continue
            beat = asyncio.create_task(self._abeat(step.claim))
            try:
                ok, text, ms = await self._ainvoke(step)
            finally:
                beat.cancel()
            outcome = self._finish(step, ok, text, ms, append_result)
            if outcome is not None:
                return outcome

    async def _abeat(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                renew_lease(self.store, claim, self.lease_seconds, time.time())
            except Exception:
                return

    def work_on(self, conversation_id: str, tool_call_id: str) -> ToolOutcome | None:
        """Advance one call by one step if it can be advanced now (what a worker does).

        Returns the outcome this executor recorded, or None when the call was
        final already, held by someone else, waiting for a retry, or lost in a race.
        """
        state = load_call(self.store, conversation_id, tool_call_id)
        if state is None or state.final or self.replay:
            return None
        step = self._advance(state, time.time(), True)
        if not isinstance(step, _Run):
            return step if isinstance(step, ToolOutcome) else None
        with self._renewer.holding(step.claim):
            ok, text, ms = self._invoke(step)
        return self._finish(step, ok, text, ms, True)

    def work_through(self, calls: Sequence[tuple[str, str]], stop: Callable[[], bool] = lambda: False) -> int:
        """Advance each ``(conversation_id, tool_call_id)`` in turn; return how many outcomes it recorded.

        Like :meth:`work_on` for each call, except that while a call runs the next
        claimable one is read, and its claim is committed together with the running
        call's outcome (one commit per call instead of two).
        """
        finished = 0
        queue = list(calls)
        ready: _Run | None = None
        while queue or ready is not None:
            if ready is None:
                conv, call_id = queue.pop(0)
                state = load_call(self.store, conv, call_id)
                if state is None or state.final or self.replay:
                    continue
                step = self._advance(state, time.time(), True)
                if isinstance(step, ToolOutcome):
                    finished += 1
                if not isinstance(step, _Run):
                    continue
                ready = step
            run, ready = ready, None
            then = None if stop() else self._next_claimable(queue)
            with self._renewer.holding(run.claim):
                ok, text, ms = self._invoke(run)
            outcome, ready = self._finish_and_claim(run, ok, text, ms, True, then)
            finished += outcome is not None
        return finished

    def _next_claimable(self, queue: list[tuple[str, str]]) -> _Run | None:
        """Pop the queue up to the next call this worker may simply claim (its claim not taken yet).

        Calls that need another move (an expired lease to mark, a refusal, a retry not due)
        stay at the head of the queue for :meth:`work_through` to handle on its own.
        """
        while queue:
            state = load_call(self.store, *queue[0])
            if state is None or state.final:
                queue.pop(0)
                continue
            if state.status != "requested":
                return None
            tool = self.registry.get(state.name)
            kwargs = self._problem(tool, state)
            if tool is None or isinstance(kwargs, str):
                return None
            queue.pop(0)
            placeholder = Claim(state.conversation_id, state.tool_call_id, state.name, "", 0, 0, 0, 0.0, "")
            return _Run(state, placeholder, tool, kwargs)
        return None

    # -- the steps ----------------------------------------------------------------------------

    def _step(
        self, conv: str, call_id: str, name: str, arguments: str, append_result: bool
    ) -> ToolOutcome | _Wait | _Run:
        if self.replay:
            recorded, _ = self._replay_state(conv, call_id, name, arguments)
            return self._recorded(recorded, append_result)
        check_id(call_id, "tool_call_id")
        state = load_call(self.store, conv, call_id)
        if state is None:
            return self._open_and_claim(conv, call_id, name, arguments, append_result)
        _check_same(conv, state.name, state.arguments, call_id, name, arguments)
        if state.final:
            return self._recorded(state, append_result)
        return self._advance(state, time.time(), append_result)

    def _open_and_claim(
        self, conv: str, call_id: str, name: str, arguments: str, append_result: bool
    ) -> ToolOutcome | _Wait | _Run:
        """Request and claim a new call in one transaction (two commits per inline call in all)."""
        tool = self.registry.get(name)
        now = time.time()
        try:
            with self.store.transaction() as w:
                if w.head(call_stream_id(conv, call_id)) is not None:
                    return _Wait(0)  # another requester was faster: read its record
                requested = open_call(w, conv, call_id, name, arguments, idempotent=bool(tool and tool.idempotent))
                state = fold_call(None, requested)
                assert state is not None
                problem = self._problem(tool, state)
                if isinstance(problem, str):
                    return self._refuse(state, problem, append_result, writer=w)
                claim = claim_call(self.store, state, self.worker_id, self.lease_seconds, now, writer=w)
        except ConflictError:
            if self._exists(conv, call_id):
                return _Wait(0)  # PostgreSQL: a concurrent requester created the stream first
            raise
        assert claim is not None and tool is not None and isinstance(problem, dict)
        return _Run(state, claim, tool, problem)

    def _advance(self, state: CallState, now: float, append_result: bool) -> ToolOutcome | _Wait | _Run:
        """The next move on a call that is not final: claim, mark unknown, or wait."""
        lease = state.lease_until or 0.0
        if state.status == "claimed" and lease > now:
            return _Wait(min(self.poll_seconds, lease - now))
        if state.status == "retry" and lease > now:
            return _Wait(lease - now)
        if state.status == "claimed" and not state.idempotent:
            return self._mark_unknown(
                state, f"the lease of worker {state.worker_id} expired while it ran", append_result
            )
        tool = self.registry.get(state.name)
        problem = self._problem(tool, state)
        if isinstance(problem, str):
            return self._refuse(state, problem, append_result)
        claim = claim_call(self.store, state, self.worker_id, self.lease_seconds, now)
        if claim is None:
            return _Wait(0)
        assert tool is not None
        return _Run(state, claim, tool, problem)

    def _problem(self, tool: Tool | None, state: CallState) -> str | dict[str, Any]:
        """The tool's keyword arguments, or the error that keeps the call from running."""
        if tool is None:
            known = ", ".join(self.registry.names()) or "none"
            return f"unknown tool {state.name!r} (available: {known})"
        try:
            return tool.parse_arguments(state.arguments)
        except ValidationError as exc:
            return f"invalid arguments for {state.name}: {exc}"

    def _refuse(self, state: CallState, error: str, append_result: bool, *, writer: Any = None) -> ToolOutcome | _Wait:
        """Record a call that cannot run (unknown tool, invalid arguments) as failed, final."""
        payload = {
            "tool_call_id": state.tool_call_id,
            "worker_id": self.worker_id,
            "attempt": state.attempt,
            "error": error,
            "final": True,
        }
        return self._write_final(state, "failed", payload, f"Error: {error}", append_result, writer)

    def _mark_unknown(self, state: CallState, reason: str, append_result: bool) -> ToolOutcome | _Wait:
        payload = {"tool_call_id": state.tool_call_id, "attempt": state.attempt, "reason": reason}
        content = (
            f"Error: the outcome of tool call {state.tool_call_id} ({state.name}) is unknown: {reason}. "
            "It was not run again; check its effect before calling it again."
        )
        return self._write_final(state, "outcome_unknown", payload, content, append_result, None)

    def _write_final(
        self,
        state: CallState,
        status: str,
        payload: dict[str, Any],
        content: str,
        append_result: bool,
        writer: Any,
    ) -> ToolOutcome | _Wait:
        draft = final_draft(status, payload)
        try:
            if writer is not None:
                record_outcome(
                    writer,
                    state,
                    draft,
                    status,
                    expected_version=state.version,
                    content=content,
                    append_result=append_result,
                )
            else:
                with self.store.transaction() as w:
                    record_outcome(
                        w,
                        state,
                        draft,
                        status,
                        expected_version=state.version,
                        content=content,
                        append_result=append_result,
                    )
        except LeaseLost:
            return _Wait(0)
        return ToolOutcome(state.tool_call_id, state.name, status, content, True, False)

    def _invoke(self, run: _Run) -> tuple[bool, str, float]:
        token = _KEY.set(run.claim.idempotency_key)
        start = time.perf_counter()
        try:
            value = run.tool.fn(**run.kwargs)
            if inspect.isawaitable(value):
                value = _run_coroutine(value)
            return True, render_result(value), (time.perf_counter() - start) * 1000
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}", (time.perf_counter() - start) * 1000
        finally:
            _KEY.reset(token)

    async def _ainvoke(self, run: _Run) -> tuple[bool, str, float]:
        token = _KEY.set(run.claim.idempotency_key)
        start = time.perf_counter()
        try:
            if run.tool.is_async:
                value = await run.tool.fn(**run.kwargs)
            else:
                value = await asyncio.to_thread(run.tool.fn, **run.kwargs)
                if inspect.isawaitable(value):
                    value = await value
            return True, render_result(value), (time.perf_counter() - start) * 1000
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}", (time.perf_counter() - start) * 1000
        finally:
            _KEY.reset(token)

    def _finish(self, run: _Run, ok: bool, text: str, ms: float, append_result: bool) -> ToolOutcome | None:
        """Record a run's outcome under its fencing token; None when a retry follows or the lease was lost."""
        return self._finish_and_claim(run, ok, text, ms, append_result, None)[0]

    def _finish_and_claim(
        self,
        run: _Run,
        ok: bool,
        text: str,
        ms: float,
        append_result: bool,
        then: _Run | None,
    ) -> tuple[ToolOutcome | None, _Run | None]:
        """Record a run's outcome and, in the same commit, claim the next call ``then`` was read for.

        A worker draining a queue thus pays one durable commit per call instead of two: the
        next call's claim is durable before its tool runs, exactly as a claim of its own
        would be. ``then`` holds the next call's state and tool (its claim is not taken
        yet); the returned run is None when another worker claimed that call first.
        """
        claim = run.claim
        base = {"tool_call_id": claim.tool_call_id, "worker_id": claim.worker_id, "attempt": claim.attempt}
        status, lease_until = "succeeded", None
        if ok:
            draft, content = final_draft("succeeded", {**base, "result": text, "duration_ms": ms}), text
        elif claim.attempt >= self.max_attempts:
            status, content = "failed", f"Error: {text}"
            draft = final_draft("failed", {**base, "error": text, "final": True, "duration_ms": ms})
        else:
            status, content = "retry", f"Error: {text}"
            lease_until = time.time() + self.backoff_seconds * 2 ** (claim.attempt - 1)
            payload = {**base, "error": text, "final": False, "duration_ms": ms}
            draft = Draft(ToolCallFailed, payload, key=f"failed:{claim.attempt}")
        following: _Run | None = None
        try:
            with self.store.transaction() as w:
                record_outcome(
                    w,
                    claim,
                    draft,
                    status,
                    expected_version=claim.version,
                    content=content,
                    append_result=append_result,
                    lease_until=lease_until,
                )
                if then is not None:
                    taken = claim_call(
                        self.store, then.state, self.worker_id, self.lease_seconds, time.time(), writer=w
                    )
                    if taken is not None:
                        following = _Run(then.state, taken, then.tool, then.kwargs)
        except LeaseLost:
            return None, None
        if status == "retry":
            return None, following
        return ToolOutcome(claim.tool_call_id, claim.name, status, content, status != "succeeded", False), following

    # -- recorded outcomes, replay, closing ---------------------------------------------------

    def _recorded(self, state: CallState, append_result: bool) -> ToolOutcome:
        """A final call's outcome; its tool-result message is appended if the conversation lacks it."""
        assert state.content is not None
        if append_result:
            conv = state.conversation_id
            if state.tool_call_id in pending_tool_calls(self.store.messages(conv)):
                mid = tool_result_message_id(state.tool_call_id)
                payload = {
                    "message_id": mid,
                    "message": result_message(state.tool_call_id, state.content),
                    "meta": {"executor": {"status": state.status}},
                }
                with self.store.transaction() as w:
                    w.append(conv, [Draft(MessageAppended, payload, key=mid)])
        return ToolOutcome(state.tool_call_id, state.name, state.status, state.content, state.is_error, True)

    def _replay_state(self, conv: str, call_id: str, name: str, arguments: str) -> tuple[CallState, ToolCallRequested]:
        """The recorded final call, or ReplayDivergence naming the position and both sides."""
        state = load_call(self.store, conv, call_id)
        actual = {"tool_call_id": call_id, "name": name, "arguments": arguments}
        position = self.store.version(conv)
        if state is None or not state.final:
            expected = None if state is None else {"tool_call_id": call_id, "status": state.status}
            raise ReplayDivergence(conv, position, expected, actual)
        if not same_call(state.name, state.arguments, name, arguments):
            expected = {"tool_call_id": call_id, "name": state.name, "arguments": state.arguments}
            raise ReplayDivergence(conv, position, expected, actual)
        first = self.store.stream_events(state.stream_id, 0, 1)[0]
        assert isinstance(first, ToolCallRequested)
        return state, first

    def close_pending(self, conversation_id: str, reason: str = "interrupted") -> list[dict[str, Any]]:
        """Answer every assistant tool call that has no result, so the history is valid again.

        A call never claimed is recorded as failed ("not run"); a claimed one as
        outcome-unknown (its holder's late result is then discarded); a call with a
        recorded outcome gets that outcome. Returns the tool-result messages appended.
        """
        messages = self.store.messages(conversation_id)
        pending = pending_tool_calls(messages)
        calls = {str(c.get("id")): c.get("function", {}) for m in messages for c in (m.get("tool_calls") or [])}
        out = []
        for call_id in pending:
            fn = calls.get(call_id, {})
            name, arguments = str(fn.get("name", "")), str(fn.get("arguments", ""))
            while True:
                state = load_call(self.store, conversation_id, call_id)
                if state is None:
                    try:
                        with self.store.transaction() as w:
                            if w.head(call_stream_id(conversation_id, call_id)) is not None:
                                continue
                            requested = open_call(w, conversation_id, call_id, name, arguments, idempotent=False)
                            fresh = fold_call(None, requested)
                            assert fresh is not None
                            done = self._refuse(fresh, f"not run ({reason})", True, writer=w)
                    except ConflictError:
                        if self._exists(conversation_id, call_id):
                            continue
                        raise
                elif state.final:
                    done = self._recorded(state, True)
                elif state.status == "claimed":
                    done = self._mark_unknown(state, f"{reason} while worker {state.worker_id} held it", True)
                elif state.status == "requested":
                    done = self._refuse(state, f"not run ({reason})", True)
                else:
                    last = f"; last error: {state.last_error}" if state.last_error else ""
                    done = self._refuse(state, f"not completed ({reason}){last}", True)
                if isinstance(done, ToolOutcome):
                    out.append(result_message(call_id, done.content))
                    break
        return out


def same_call(name: str, arguments: str, other_name: str, other_arguments: str) -> bool:
    """Whether two requests are the same call: same tool, and arguments equal as text or as JSON.

    Adapters may re-serialize the arguments a model produced (AutoGen parses them, then
    dumps them with sorted keys), so ``{"a": 1, "b": 2}`` and ``{"b":2,"a":1}`` are one call.
    """
    if name != other_name:
        return False
    if arguments == other_arguments:
        return True
    try:
        return bool(json.loads(arguments) == json.loads(other_arguments))
    except (ValueError, TypeError):
        return False


def _check_same(conv: str, name: str, arguments: str, call_id: str, new_name: str, new_arguments: str) -> None:
    if not same_call(name, arguments, new_name, new_arguments):
        raise ConflictError(
            f"tool call {call_id!r} in conversation {conv!r} was recorded as {name}({arguments}), "
            f"not {new_name}({new_arguments})"
        )


def _call_id_of(stream_id: str) -> str:
    return stream_id.split(CALL_SEPARATOR, 2)[2]


def run_worker(
    store: Store,
    tools: Tools,
    *,
    worker_id: str | None = None,
    poll_seconds: float = 0.2,
    stop: threading.Event | None = None,
    max_calls: int | None = None,
    idle_exit_seconds: float | None = None,
    lease_seconds: float = 30.0,
    max_attempts: int = 1,
    backoff_seconds: float = 0.0,
) -> int:
    """Execute pending tool calls of this store's tenant until stopped; return how many it finished.

    Any number of workers, in any number of processes, may run on one store:
    each call is claimed by exactly one of them at a time. A worker also takes
    over calls whose lease expired (re-running idempotent tools, marking the
    others outcome-unknown).

    Args:
        stop: set it to make the worker return after its current call.
        max_calls: return after finishing this many calls.
        idle_exit_seconds: return after this long without any claimable call.
    """
    executor = Executor(
        store,
        tools,
        worker_id=worker_id,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        backoff_seconds=backoff_seconds,
    )
    rng = random.Random()
    finished = 0
    idle_since = time.monotonic()

    def done() -> bool:
        return (stop is not None and stop.is_set()) or (max_calls is not None and finished >= max_calls)

    while not done():
        now = time.time()
        heads = store.recorder.list_heads("tool_call", store.tenant, 128, ["requested", "retry"])
        heads += store.recorder.list_heads("tool_call", store.tenant, 128, ["claimed"])
        ready = [h for h in heads if h.status == "requested" or (h.lease_until or 0.0) <= now]
        if not ready:
            if idle_exit_seconds is not None and time.monotonic() - idle_since >= idle_exit_seconds:
                break
            if stop is not None:
                stop.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)
            continue
        # Workers listing the same heads start at different places, so they rarely collide.
        rng.shuffle(ready)
        if max_calls is not None:
            ready = ready[: max_calls - finished]
        finished += executor.work_through([(h.conversation_id, _call_id_of(h.stream_id)) for h in ready], done)
        idle_since = time.monotonic()
    return finished
