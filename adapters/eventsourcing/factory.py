"""The infrastructure factory eventsourcing constructs from ``PERSISTENCE_MODULE``.

An application selects chatledger with ``PERSISTENCE_MODULE=chatledger.adapters.eventsourcing``
and names the store with ``CHATLEDGER_URL`` (the variable chatledger's CLI reads), each
looked up with the application's ``APPNAME_`` prefix first, as eventsourcing does for its
own variables. ``CHATLEDGER_TENANT`` scopes the application to a tenant (default
``default``); ``ORIGINATOR_ID_TYPE`` is ``uuid`` (default) or ``text``. Encryption and
signing follow the store's own settings (``CHATLEDGER_MASTER_KEY``, ``CHATLEDGER_SIGNING_KEY``).
"""

from __future__ import annotations

from typing import TypeVar, cast

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from chatledger.adapters.eventsourcing.recorders import (
    ChatledgerAggregateRecorder,
    ChatledgerApplicationRecorder,
    ChatledgerProcessRecorder,
    ChatledgerTrackingRecorder,
    OriginatorIdType,
)
from chatledger.store import ChatledgerError, Store, open_store
from chatledger.store.url import resolve_url

__all__ = ["ChatledgerFactory"]

_R = TypeVar("_R", ChatledgerApplicationRecorder, ChatledgerTrackingRecorder, ChatledgerProcessRecorder)


class ChatledgerFactory(InfrastructureFactory[ChatledgerTrackingRecorder]):
    """Hands an application its recorders, all over one chatledger store opened from its environment."""

    CHATLEDGER_URL = "CHATLEDGER_URL"
    CHATLEDGER_TENANT = "CHATLEDGER_TENANT"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = ChatledgerAggregateRecorder
    application_recorder_class = ChatledgerApplicationRecorder
    tracking_recorder_class = ChatledgerTrackingRecorder
    process_recorder_class = ChatledgerProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower()
        if id_type not in ("uuid", "text"):
            msg = f"Invalid {self.ORIGINATOR_ID_TYPE} {id_type!r}, must be 'uuid' or 'text'"
            raise OSError(msg)
        self.originator_id_type = cast(OriginatorIdType, id_type)
        url = resolve_url(self.env.get(self.CHATLEDGER_URL) or None)
        try:
            self.store: Store = open_store(url, tenant=self.env.get(self.CHATLEDGER_TENANT) or "default")
        except ChatledgerError as exc:
            msg = f"could not open the chatledger store {url!r}: {exc}"
            raise OSError(msg) from exc

    @property
    def namespace(self) -> str:
        """The application's name: its streams are apart from other applications' in the same store."""
        return self.env.name

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """A recorder of ``events`` or (sparse) ``snapshots``."""
        return self.aggregate_recorder_class(
            self.store, self.namespace, purpose=purpose, originator_id_type=self.originator_id_type
        )

    def application_recorder(self) -> ApplicationRecorder:
        """The application's recorder (``APPLICATION_RECORDER_TOPIC`` may name a subclass)."""
        return self._made(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)

    def _made(self, topic_key: str, default: type[_R]) -> _R:
        """A recorder of the class the environment's ``topic_key`` names, else of ``default``."""
        topic = self.env.get(topic_key)
        cls: type[_R] = resolve_topic(topic) if topic else default
        return cls(self.store, self.namespace, originator_id_type=self.originator_id_type)

    def tracking_recorder(
        self, tracking_recorder_class: type[ChatledgerTrackingRecorder] | None = None
    ) -> ChatledgerTrackingRecorder:
        """A tracking recorder (a view), of the given class, ``TRACKING_RECORDER_TOPIC``'s, or the plain one."""
        if tracking_recorder_class is not None:
            return tracking_recorder_class(self.store, self.namespace, originator_id_type=self.originator_id_type)
        return self._made(self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class)

    def process_recorder(self) -> ProcessRecorder:
        """A process application's recorder (``PROCESS_RECORDER_TOPIC`` may name a subclass)."""
        return self._made(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)

    def env_create_table(self) -> bool:
        """Whether ``CREATE_TABLE`` asks for tables; the store creates its layout when opened either way."""
        return bool(strtobool(self.env.get(self.CREATE_TABLE) or "yes"))

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()
