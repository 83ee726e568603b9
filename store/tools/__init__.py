"""The tool-call ledger and the canonical executor.

:mod:`.registry` declares tools, :mod:`.ledger` records each call's lifecycle as
events (requested, claimed, renewed, succeeded, failed, outcome unknown).
:mod:`.executor` is the one place a tool runs; it takes final assistant messages
in through :mod:`.intake`, advances each call through the moves of :mod:`.steps`,
keeps running calls' leases alive with :mod:`.renewal`, and compares a request
with the record through :mod:`.compare`. :mod:`.worker` drains queued calls, and
:mod:`.replay` re-drives a recorded conversation from the ledger without running
any tool. The public names are re-exported by :mod:`chatledger.store`.
"""
