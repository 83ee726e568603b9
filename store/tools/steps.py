"""The step machine: one move at a time on one tool call, each move one append.

A call that is not final is advanced by exactly one of: open and claim it (a
new call), claim it (requested, retry due, or an idempotent call whose lease
expired), mark it ``outcome_unknown`` (a non-idempotent call whose lease
expired), refuse it (unknown tool, arguments that do not parse), or wait
(another holder's lease is live, a retry is not due). A claimed call is run
(:meth:`StepMachine._invoke`) and its outcome recorded under its fencing token.
Every move is an append that expects the version it read, so a move that lost a
race writes nothing and the caller reads again.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.clock import Clock
from chatledger.store.errors import ConflictError, LeaseLost, ReplayDivergence, ValidationError
from chatledger.store.events import MessageAppended, ToolCallFailed, ToolCallRequested
from chatledger.store.handle import Store
from chatledger.store.messages import pending_tool_calls
from chatledger.store.tools.compare import check_same
from chatledger.store.tools.intake import call_exists
from chatledger.store.tools.ledger import (
    CallState,
    Claim,
    claim_call,
    final_draft,
    fold_call,
    load_call,
    open_call,
    record_outcome,
    result_message,
    tool_result_message_id,
)
from chatledger.store.tools.registry import Tool, ToolRegistry, render_result
from chatledger.store.tools.renewal import LeaseRenewer
from chatledger.store.writer import Draft, Writer, check_id

__all__ = ["Run", "StepMachine", "ToolOutcome", "Wait", "current_idempotency_key"]

_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("chatledger_idempotency_key", default=None)


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
class Run:
    """A claimed call ready to run: its state, the claim, the tool and its keyword arguments."""

    state: CallState
    claim: Claim
    tool: Tool
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Wait:
    """Nothing to do on the call for now: look again after ``seconds``."""

    seconds: float


Step = ToolOutcome | Wait | Run


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, inside or outside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ctx.run, asyncio.run, coro).result()


class StepMachine:
    """The moves of the executor on one call; :class:`~chatledger.store.tools.executor.Executor` drives them."""

    store: Store
    registry: ToolRegistry
    worker_id: str
    lease_seconds: float
    max_attempts: int
    backoff_seconds: float
    replay: bool
    poll_seconds: float
    clock: Clock
    _renewer: LeaseRenewer

    def _step(self, conv: str, call_id: str, name: str, arguments: str, append_result: bool) -> Step:
        if self.replay:
            recorded, _ = self._replay_state(conv, call_id, name, arguments)
            return self._recorded(recorded, append_result)
        check_id(call_id, "tool_call_id")
        state = load_call(self.store, conv, call_id)
        if state is None:
            return self._open_and_claim(conv, call_id, name, arguments, append_result)
        check_same(self.store, conv, state.name, state.arguments, (call_id, name, arguments))
        if state.final:
            return self._recorded(state, append_result)
        return self._advance(state, self.clock.now(), append_result, arguments)

    def _open_and_claim(self, conv: str, call_id: str, name: str, arguments: str, append_result: bool) -> Step:
        """Request and claim a new call in one transaction (two commits per inline call in all)."""
        tool = self.registry.get(name)
        now = self.clock.now()
        try:
            with self.store.transaction() as w:
                if w.head(call_stream_id(conv, call_id)) is not None:
                    return Wait(0)  # another requester was faster: read its record
                requested = open_call(w, conv, call_id, name, arguments, idempotent=bool(tool and tool.idempotent))
                state = fold_call(None, requested)
                assert state is not None
                problem = self._problem(tool, state, arguments)
                if isinstance(problem, str):
                    return self._refuse(state, problem, append_result, writer=w)
                claim = claim_call(self.store, state, self.worker_id, self.lease_seconds, now, writer=w)
        except ConflictError:
            if call_exists(self.store, conv, call_id):
                return Wait(0)  # PostgreSQL: a concurrent requester created the stream first
            raise
        assert claim is not None and tool is not None and isinstance(problem, dict)
        return Run(state, claim, tool, problem)

    def _advance(self, state: CallState, now: float, append_result: bool, arguments: str | None = None) -> Step:
        """The next move on a call that is not final: claim, mark unknown, refuse, or wait.

        ``arguments`` are the requester's own (unredacted) ones when it has them; a worker
        only has the recorded ones.
        """
        lease = state.lease_until or 0.0
        if state.status == "claimed" and lease > now:
            return Wait(min(self.poll_seconds, lease - now))
        if state.status == "retry" and lease > now:
            return Wait(lease - now)
        if state.status == "claimed" and not state.idempotent:
            return self._mark_unknown(
                state, f"the lease of worker {state.worker_id} expired while it ran", append_result
            )
        tool = self.registry.get(state.name)
        problem = self._problem(tool, state, arguments)
        if isinstance(problem, str):
            return self._refuse(state, problem, append_result)
        claim = claim_call(self.store, state, self.worker_id, self.lease_seconds, now)
        if claim is None:
            return Wait(0)
        assert tool is not None
        return Run(state, claim, tool, problem)

    def _problem(self, tool: Tool | None, state: CallState, arguments: str | None = None) -> str | dict[str, Any]:
        """The tool's keyword arguments, or the error that keeps the call from running."""
        if tool is None:
            known = ", ".join(self.registry.names()) or "none"
            return f"unknown tool {state.name!r} (available: {known})"
        if arguments is None and state.redacted:
            return (
                f"the arguments of {state.name} held a secret, which the log keeps redacted: only the process "
                "that received the call (an inline execute) can run it, and it is not run on the redacted values"
            )
        try:
            return tool.parse_arguments(state.arguments if arguments is None else arguments)
        except ValidationError as exc:
            return f"invalid arguments for {state.name}: {exc}"

    def _refuse(self, state: CallState, error: str, append_result: bool, *, writer: Writer | None = None) -> Step:
        """Record a call that cannot run (unknown tool, invalid arguments) as failed, final."""
        payload = {
            "tool_call_id": state.tool_call_id,
            "worker_id": self.worker_id,
            "attempt": state.attempt,
            "error": error,
            "final": True,
        }
        return self._write_final(state, "failed", payload, f"Error: {error}", append_result, writer)

    def _mark_unknown(self, state: CallState, reason: str, append_result: bool) -> Step:
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
        writer: Writer | None,
    ) -> Step:
        draft = final_draft(status, payload)
        options: dict[str, Any] = {
            "expected_version": state.version,
            "content": content,
            "append_result": append_result,
        }
        try:
            if writer is not None:
                record_outcome(writer, state, draft, status, **options)
            else:
                with self.store.transaction() as w:
                    record_outcome(w, state, draft, status, **options)
        except LeaseLost:
            return Wait(0)
        return ToolOutcome(state.tool_call_id, state.name, status, content, True, False)

    def _invoke(self, run: Run) -> tuple[bool, str, float]:
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

    async def _ainvoke(self, run: Run) -> tuple[bool, str, float]:
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

    def _finish(self, run: Run, ok: bool, text: str, ms: float, append_result: bool) -> ToolOutcome | None:
        """Record a run's outcome under its fencing token; None when a retry follows or the lease was lost."""
        return self._finish_and_claim(run, ok, text, ms, append_result, None)[0]

    def _finish_and_claim(
        self, run: Run, ok: bool, text: str, ms: float, append_result: bool, then: Run | None
    ) -> tuple[ToolOutcome | None, Run | None]:
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
            lease_until = self.clock.now() + self.backoff_seconds * 2 ** (claim.attempt - 1)
            payload = {**base, "error": text, "final": False, "duration_ms": ms}
            draft = Draft(ToolCallFailed, payload, key=f"failed:{claim.attempt}")
        following: Run | None = None
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
                    now = self.clock.now()
                    taken = claim_call(self.store, then.state, self.worker_id, self.lease_seconds, now, writer=w)
                    if taken is not None:
                        following = Run(then.state, taken, then.tool, then.kwargs)
        except LeaseLost:
            return None, None
        if status == "retry":
            return None, following
        return ToolOutcome(claim.tool_call_id, claim.name, status, content, status != "succeeded", False), following

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
        try:
            check_same(self.store, conv, state.name, state.arguments, (call_id, name, arguments))
        except ConflictError:
            expected = {"tool_call_id": call_id, "name": state.name, "arguments": state.arguments}
            raise ReplayDivergence(conv, position, expected, actual) from None
        first = self.store.stream_events(state.stream_id, 0, 1)[0]
        assert isinstance(first, ToolCallRequested)
        return state, first
