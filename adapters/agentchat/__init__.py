"""AutoGen AgentChat (``autogen-agentchat`` 0.7) on top of chatledger.

:mod:`.agents` builds agents and teams whose runs are stored, :mod:`.session` keeps
one conversation's records, :mod:`.context` is the model context read from the log,
:mod:`.models` records and replays model responses, :mod:`.workbench` runs tools
through the executor.
"""

from chatledger.adapters.agentchat.agents import (
    LedgerAssistantAgent,
    LedgerTeam,
    ReplayReport,
    Session,
    chatledger_agent,
    chatledger_team,
    fork_and_rerun,
    replay,
)

__all__ = [
    "LedgerAssistantAgent",
    "LedgerTeam",
    "ReplayReport",
    "Session",
    "chatledger_agent",
    "chatledger_team",
    "fork_and_rerun",
    "replay",
]
