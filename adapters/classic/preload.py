"""Preloading fresh classic agents from the log, always with a provider-valid view of it.

:func:`preload_pair` and :func:`preload_group` do what ``send``/``receive`` would
have done, without calling them (``GroupChatManager.resume`` sends, which would
fire the hooks again): each stored send is appended to the sender's and the
recipient's ``chat_messages`` with the roles each of them sees.

Every history the classic adapter hands a model obeys the provider rule
(:mod:`chatledger.store.validity`): each assistant message with tool calls is
followed at once by the results of those calls. Turns stored by this adapter
obey it by construction (a turn is one batch). A log written by an older
version, where simultaneous requests interleaved their sends
(``user user assistant+calls assistant+calls tool tool``), does not; such a
conversation must not be stuck forever, so :func:`provider_view` repairs the
*view*, never the log:

* each tool result is moved to just after the assistant message that called it;
* a call that has no result anywhere is left out of its message (and a message
  left with neither text nor calls is left out);
* a result that answers no call, or answers one a second time, is left out.

Everything else keeps its stored order. The repair is deterministic, so a retry
of a request sees the same view and hits the same recorded model responses.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from chatledger.adapters.classic.recording import StoredSend, autogen_module, canonical_message, to_openai
from chatledger.store.validity import check_provider_valid, provider_violations

__all__ = ["Resolver", "preload_group", "preload_pair", "provider_view", "sender_views"]

log = logging.getLogger(__name__)


def _responses(send: StoredSend) -> list[dict[str, Any]]:
    """The tool results a send carries (none for any other send)."""
    message = send.message
    if message.get("tool_responses"):
        return [dict(r) for r in message["tool_responses"]]
    if message.get("role") == "tool":
        return [{"tool_call_id": message.get("tool_call_id"), "role": "tool", "content": message.get("content")}]
    return []


def _flat(sends: Sequence[StoredSend]) -> list[dict[str, Any]]:
    return [m for s in sends for m in to_openai(s.message, s.role)]


def provider_view(sends: Sequence[StoredSend], conversation_id: str = "") -> list[StoredSend]:
    """``sends`` as a history a provider accepts: unchanged when valid, else repaired (see the module).

    Raises:
        InvalidHistoryError: never for sends read from a log; kept as the last check
            that what is handed out obeys the rule.
    """
    if not provider_violations(_flat(sends)):
        return list(sends)
    log.warning(
        "conversation %r: the stored history breaks the provider rule (written by an older version?); "
        "the model is given a repaired view, the log is unchanged",
        conversation_id,
    )
    answers: dict[str, tuple[StoredSend, dict[str, Any]]] = {}
    for send in sends:
        for response in _responses(send):
            answers.setdefault(str(response.get("tool_call_id")), (send, response))
    used: set[str] = set()
    out: list[StoredSend] = []
    for send in sends:
        if _responses(send):
            continue  # placed after the call it answers
        calls = send.message.get("tool_calls") or []
        if not calls:
            out.append(send)
            continue
        kept = []
        for call in calls:
            cid = str(call.get("id")) if isinstance(call, dict) else ""
            if cid in answers and cid not in used:
                used.add(cid)
                kept.append(call)
        message = dict(send.message)
        if kept:
            message["tool_calls"] = kept
        else:
            message.pop("tool_calls", None)
            if not message.get("content"):
                continue
        out.append(replace(send, message=message))
        out.extend(_results_of(kept, answers))
    check_provider_valid(_flat(out), f"the repaired view of conversation {conversation_id!r}")
    return out


def _results_of(calls: list[dict[str, Any]], answers: dict[str, tuple[StoredSend, dict[str, Any]]]) -> list[StoredSend]:
    """One tool send per stored send the results of ``calls`` came from, in call order."""
    groups: dict[int, tuple[StoredSend, list[dict[str, Any]]]] = {}
    for call in calls:
        source, response = answers[str(call.get("id"))]
        groups.setdefault(id(source), (source, []))[1].append(response)
    return [
        replace(source, message=canonical_message({"tool_responses": responses}, source.sender or ""))
        for source, responses in groups.values()
    ]


Resolver = Callable[[StoredSend], tuple[Any, Any] | None]


def sender_views(message: dict[str, Any], sender_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The message as its sender and as its recipient hold it (what send/receive append)."""
    normilize_message_to_oai = autogen_module().agentchat.conversable_agent.normilize_message_to_oai
    _, mine = normilize_message_to_oai(copy.deepcopy(message), name=sender_name, role="assistant")
    _, theirs = normilize_message_to_oai(copy.deepcopy(message), name=sender_name, role="user")
    return mine, theirs


def preload_pair(sends: Iterable[StoredSend], resolve: Resolver) -> int:
    """Append stored sends to two agents' histories, each from its own point of view; return the count.

    ``resolve`` maps a send to its (sender, recipient) agents, or None to skip it. The
    sends are first put in a provider-valid view (:func:`provider_view`).
    """
    count = 0
    for send in provider_view(list(sends)):
        pair = resolve(send)
        if pair is None:
            continue
        sender, recipient = pair
        mine, theirs = sender_views(send.message, sender.name)
        sender.chat_messages[recipient].append(mine)
        recipient.chat_messages[sender].append(theirs)
        count += 1
    return count


def preload_group(sends: Iterable[StoredSend], manager: Any, resolve: Callable[[StoredSend], Any]) -> int:
    """Append stored sends to a group chat as its manager would have relayed them; return the count.

    Each send goes speaker -> manager, into ``groupchat.messages``, and manager ->
    every other agent, exactly as ``GroupChatManager.run_chat`` does. The sends are
    first put in a provider-valid view (:func:`provider_view`).
    """
    groupchat = manager.groupchat
    count = 0
    for send in provider_view(list(sends)):
        speaker = resolve(send)
        if speaker is None:
            continue
        mine, theirs = sender_views(send.message, speaker.name)
        speaker.chat_messages[manager].append(mine)
        manager.chat_messages[speaker].append(theirs)
        groupchat.append(copy.deepcopy(theirs), speaker)
        relay_out, relay_in = sender_views(theirs, manager.name)
        for agent in groupchat.agents:
            if agent is not speaker:
                manager.chat_messages[agent].append(copy.deepcopy(relay_out))
                agent.chat_messages[manager].append(copy.deepcopy(relay_in))
        count += 1
    return count
