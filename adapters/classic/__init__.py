"""Classic AutoGen (``autogen`` 0.14, ``ConversableAgent``) on top of chatledger.

:mod:`.agents` builds the agents (pairs, group chats, subscribers), :mod:`.recording`
stores each send, :mod:`.turn` stores a request's sends as one turn, :mod:`.preload`
loads fresh agents with a provider-valid view of the log, :mod:`.tools` routes tool
calls through the executor, :mod:`.cache` is the store-backed model cache and
:mod:`.replay` re-drives a recorded conversation.
``autogen`` itself is imported only when one of these functions is called.
"""

from chatledger.adapters.classic.agents import (
    ChatledgerMixin,
    chatledger_agent,
    chatledger_group_chat,
    chatledger_pair,
    classic_subscriber,
)
from chatledger.adapters.classic.replay import replay_classic

__all__ = [
    "ChatledgerMixin",
    "chatledger_agent",
    "chatledger_group_chat",
    "chatledger_pair",
    "classic_subscriber",
    "replay_classic",
]
