"""The storage backends of the log: memory, SQLite file and PostgreSQL, one package each.

The seam: :class:`Backend` (:mod:`.backend`) is the one object a backend package
exposes, opened by URL scheme through :func:`open_backend` (:mod:`.registry`); its
:class:`Recorder` (:mod:`.recorder`) is the log itself. The contract every backend
must pass ships as :mod:`chatledger.store.testing`.
"""

from chatledger.store.backends.backend import Backend, BackendBase, LogScan
from chatledger.store.backends.recorder import NewRecord, Record, Recorder, StreamHead, WriteTransaction
from chatledger.store.backends.registry import BackendOpener, open_backend, register_backend, schemes

__all__ = [
    "Backend",
    "BackendBase",
    "BackendOpener",
    "LogScan",
    "NewRecord",
    "Record",
    "Recorder",
    "StreamHead",
    "WriteTransaction",
    "open_backend",
    "register_backend",
    "schemes",
]
