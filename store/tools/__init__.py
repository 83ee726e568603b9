"""The tool-call ledger and the canonical executor.

:mod:`.registry` declares tools, :mod:`.ledger` records each call's lifecycle as
events (requested, claimed, renewed, succeeded, failed, outcome unknown),
:mod:`.executor` is the one place a tool runs, and :mod:`.replay` re-drives a
recorded conversation from the ledger without running any tool.
The public names are re-exported by :mod:`chatledger.store`.
"""
