"""The canonical executor: the one place a tool runs, once per recorded call.

The executor takes final assembled assistant messages (never streaming
chunks), records each tool call in the ledger (:mod:`chatledger.store.tools.ledger`)
through :mod:`.intake`, claims it, runs its tool, and records the outcome
together with the tool-result message in one transaction (the moves are in
:mod:`.steps`; lease renewal in :mod:`.renewal`). Whatever asks for the same
call again (a retry, a duplicate delivery, the same assistant message re-sent,
a replay) gets the recorded outcome back and nothing runs.

Crashes: a call whose holder died keeps its claim until the lease expires.
An idempotent tool is then claimed and run again with the same idempotency
key (:func:`current_idempotency_key`); any other tool is recorded as
``outcome_unknown`` and the model is told so. Exactly-once *recording* always
holds; exactly-once *side effects* hold for idempotent tools and for every run
without a crash.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.clock import SYSTEM_CLOCK, Clock
from chatledger.store.errors import ConflictError, ValidationError
from chatledger.store.events import ToolCallRequested
from chatledger.store.handle import Store
from chatledger.store.messages import pending_tool_calls
from chatledger.store.tools.intake import call_exists, final_tool_calls, intake
from chatledger.store.tools.ledger import Claim, fold_call, load_call, open_call, result_message, tool_result_message_id
from chatledger.store.tools.registry import ToolRegistry, as_registry
from chatledger.store.tools.renewal import LeaseRenewer
from chatledger.store.tools.steps import Run, StepMachine, ToolOutcome, Wait, current_idempotency_key
from chatledger.store.writer import check_id

__all__ = [
    "Executor",
    "ToolOutcome",
    "Tools",
    "current_idempotency_key",
    "final_tool_calls",
    "tool_result_message_id",
]

_log = logging.getLogger("chatledger.executor")

Tools = ToolRegistry | Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]]


class Executor(StepMachine):
    """Runs tool calls exactly once per ``(conversation_id, tool_call_id)`` and records them.

    Args:
        store: the store the ledger and conversations live in.
        tools: a :class:`ToolRegistry`, a list of callables or a ``{name: callable}`` mapping.
        worker_id: recorded on claims and outcomes (default: host, pid and a random suffix).
        lease_seconds: how long a claim is held before others may take it over; it is
            renewed while the tool runs, so it only matters after a crash: it is how long a
            retry waits before it may take over (or mark unknown) the dead holder's call.
        max_attempts: runs of a tool that raises before its error is recorded as final.
        backoff_seconds: wait before attempt n+1 is ``backoff_seconds * 2 ** (n - 1)``.
        replay: never run a tool; return recorded outcomes, raise ReplayDivergence otherwise.
        poll_seconds: how often to look again while another worker holds a call.
        clock: the time leases are measured by (a :class:`~chatledger.store.clock.ManualClock`
            in tests).
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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not lease_seconds > 0:
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
        self.clock = clock
        self._renewer = LeaseRenewer(store, lease_seconds, clock)
        self.passed_over = 0
        """Calls :meth:`work_through` could not advance (logged and passed over), in all."""

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
        return intake(self.store, self.registry, conversation_id, assistant_message, calls)

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
            intake(self.store, self.registry, conversation_id, assistant_message, calls)
        return [
            result_message(call_id, self.execute_call(conversation_id, call_id, name, arguments).content)
            for call_id, name, arguments in calls
        ]

    async def aexecute(self, conversation_id: str, assistant_message: dict[str, Any]) -> list[dict[str, Any]]:
        """The async form of :meth:`execute` (async tools are awaited, sync ones run in a thread)."""
        calls = final_tool_calls(assistant_message)
        if calls and not self.replay:
            intake(self.store, self.registry, conversation_id, assistant_message, calls)
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
            if isinstance(step, Wait):
                self.clock.sleep(step.seconds)
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
            if isinstance(step, Wait):
                await self.clock.asleep(step.seconds)
                continue
            with self._renewer.holding(step.claim):
                ok, text, ms = await self._ainvoke(step)
            outcome = self._finish(step, ok, text, ms, append_result)
            if outcome is not None:
                return outcome

    def work_on(self, conversation_id: str, tool_call_id: str) -> ToolOutcome | None:
        """Advance one call by one step if it can be advanced now (what a worker does).

        Returns the outcome this executor recorded, or None when the call was
        final already, held by someone else, waiting for a retry, or lost in a race.
        """
        state = load_call(self.store, conversation_id, tool_call_id)
        if state is None or state.final or self.replay:
            return None
        step = self._advance(state, self.clock.now(), True)
        if not isinstance(step, Run):
            return step if isinstance(step, ToolOutcome) else None
        with self._renewer.holding(step.claim):
            ok, text, ms = self._invoke(step)
        return self._finish(step, ok, text, ms, True)

    def work_through(self, calls: Sequence[tuple[str, str]], stop: Callable[[], bool] = lambda: False) -> int:
        """Advance each ``(conversation_id, tool_call_id)`` in turn; return how many outcomes it recorded.

        Like :meth:`work_on` for each call, except that while a call runs the next
        claimable one is read, and its claim is committed together with the running
        call's outcome (one commit per call instead of two). A call that cannot be
        advanced (the store refused a write) is logged and passed over: one call never
        stops the others.
        """
        finished = 0
        queue = list(calls)
        ready: Run | None = None
        while queue or ready is not None:
            current = queue[0] if ready is None else (ready.state.conversation_id, ready.state.tool_call_id)
            try:
                if ready is None:
                    conv, call_id = queue.pop(0)
                    state = load_call(self.store, conv, call_id)
                    if state is None or state.final or self.replay:
                        continue
                    step = self._advance(state, self.clock.now(), True)
                    if isinstance(step, ToolOutcome):
                        finished += 1
                    if not isinstance(step, Run):
                        continue
                    ready = step
                run, ready = ready, None
                then = None if stop() else self._next_claimable(queue)
                with self._renewer.holding(run.claim):
                    ok, text, ms = self._invoke(run)
                outcome, ready = self._finish_and_claim(run, ok, text, ms, True, then)
                finished += outcome is not None
            except Exception:
                ready = None
                self.passed_over += 1
                _log.exception("tool call %s of conversation %s could not be advanced", current[1], current[0])
        return finished

    def _next_claimable(self, queue: list[tuple[str, str]]) -> Run | None:
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
            return Run(state, placeholder, tool, kwargs)
        return None

    # -- closing ------------------------------------------------------------------------------

    def close_pending(self, conversation_id: str, reason: str = "interrupted") -> list[dict[str, Any]]:
        """Answer every assistant tool call that has no result, so the history is valid again.

        A call never claimed is recorded as failed ("not run"). A call another worker
        holds under a live lease is waited for (its holder renews the lease while the
        tool runs) and answered with its real outcome; only a call whose lease expired
        (its holder died) is recorded as outcome-unknown. A call with a recorded outcome
        gets that outcome. Returns the tool-result messages appended.
        """
        messages = self.store.messages(conversation_id)
        pending = pending_tool_calls(messages)
        calls = {str(c.get("id")): c.get("function", {}) for m in messages for c in (m.get("tool_calls") or [])}
        out = []
        for call_id in pending:
            fn = calls.get(call_id, {})
            name, arguments = str(fn.get("name", "")), str(fn.get("arguments", ""))
            while True:
                done = self._close_one(conversation_id, call_id, name, arguments, reason)
                if isinstance(done, ToolOutcome):
                    out.append(result_message(call_id, done.content))
                    break
                if done.seconds > 0:
                    self.clock.sleep(done.seconds)
        return out

    def _close_one(self, conv: str, call_id: str, name: str, arguments: str, reason: str) -> ToolOutcome | Wait:
        state = load_call(self.store, conv, call_id)
        if state is None:
            try:
                with self.store.transaction() as w:
                    if w.head(call_stream_id(conv, call_id)) is not None:
                        return Wait(0)
                    requested = open_call(w, conv, call_id, name, arguments, idempotent=False)
                    fresh = fold_call(None, requested)
                    assert fresh is not None
                    done = self._refuse(fresh, f"not run ({reason})", True, writer=w)
            except ConflictError:
                if call_exists(self.store, conv, call_id):
                    return Wait(0)
                raise
        elif state.final:
            done = self._recorded(state, True)
        elif state.status == "claimed":
            now = self.clock.now()
            lease = state.lease_until or 0.0
            if lease > now:
                return Wait(min(self.poll_seconds, lease - now))
            done = self._mark_unknown(state, f"{reason} while worker {state.worker_id} held it", True)
        elif state.status == "requested":
            done = self._refuse(state, f"not run ({reason})", True)
        else:
            last = f"; last error: {state.last_error}" if state.last_error else ""
            done = self._refuse(state, f"not completed ({reason}){last}", True)
        assert not isinstance(done, Run)
        return done
