"""Integrity and confidentiality of the log.

:mod:`.chain` hashes each event onto its stream's chain, :mod:`.verify` checks the
chains, :mod:`.crypto` encrypts payloads at rest and erases by destroying keys held in
:mod:`.keystore`, and :mod:`.redaction` removes secrets before anything is stored.
"""
