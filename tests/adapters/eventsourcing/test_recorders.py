"""eventsourcing's own recorder test cases, shipped in its wheel, run against chatledger's recorders.

Each case class is subclassed once per backend (SQLite, PostgreSQL, memory); ``create_recorder``
opens a fresh store, so notification ids start at 1 as the cases expect.
"""

from __future__ import annotations

from eventsourcing.persistence import TrackingRecorder
from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from chatledger.adapters.eventsourcing import (
    ChatledgerAggregateRecorder,
    ChatledgerApplicationRecorder,
    ChatledgerFactory,
    ChatledgerProcessRecorder,
    ChatledgerTrackingRecorder,
)
from tests.adapters.eventsourcing.support import StoreCase, per_backend


class _Aggregate(StoreCase, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> ChatledgerAggregateRecorder:
        return ChatledgerAggregateRecorder(self.open(), "App")


class _Snapshots(StoreCase, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> ChatledgerAggregateRecorder:
        return ChatledgerAggregateRecorder(self.open(), "App", purpose="snapshots")


class _TextIds(StoreCase, cases.AggregateRecorderTestCase):
    def new_originator_id(self) -> str:
        return f"call_{super().new_originator_id()}"

    def create_recorder(self) -> ChatledgerAggregateRecorder:
        return ChatledgerAggregateRecorder(self.open(), "App", originator_id_type="text")


class _Application(StoreCase, cases.ApplicationRecorderTestCase[ChatledgerApplicationRecorder]):
    def create_recorder(self) -> ChatledgerApplicationRecorder:
        return ChatledgerApplicationRecorder(self.open(), "App")

    def test_insert_subscribe(self) -> None:
        """A subscription yields recorded events, then events recorded while it runs, then stops."""
        self.optional_test_insert_subscribe()

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        """Ten writer threads and two reader threads share one recorder without errors."""
        super().test_concurrent_no_conflicts(initial_position)


class _Tracking(StoreCase, cases.TrackingRecorderTestCase):
    def create_recorder(self) -> ChatledgerTrackingRecorder:
        return ChatledgerTrackingRecorder(self.open(), "View")


class _Process(StoreCase, cases.ProcessRecorderTestCase):
    def create_recorder(self) -> ChatledgerProcessRecorder:
        return ChatledgerProcessRecorder(self.open(), "Process")


class _NonInterleaving(StoreCase, cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ChatledgerApplicationRecorder:
        return ChatledgerApplicationRecorder(self.open(), "App")


class _Factory(StoreCase, cases.InfrastructureFactoryTestCase[ChatledgerFactory]):
    def setUp(self) -> None:
        StoreCase.setUp(self)
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": "chatledger.adapters.eventsourcing"})
        self.env["CHATLEDGER_URL"] = self.url
        cases.InfrastructureFactoryTestCase.setUp(self)

    def tearDown(self) -> None:
        cases.InfrastructureFactoryTestCase.tearDown(self)
        StoreCase.tearDown(self)

    def expected_factory_class(self) -> type[ChatledgerFactory]:
        return ChatledgerFactory

    def expected_aggregate_recorder_class(self) -> type[ChatledgerAggregateRecorder]:
        return ChatledgerAggregateRecorder

    def expected_application_recorder_class(self) -> type[ChatledgerApplicationRecorder]:
        return ChatledgerApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[ChatledgerTrackingRecorder]:
        return ChatledgerTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return _TrackingSubclass

    def expected_process_recorder_class(self) -> type[ChatledgerProcessRecorder]:
        return ChatledgerProcessRecorder


class _TrackingSubclass(ChatledgerTrackingRecorder):
    """A view class, as a projection would define it."""


globals().update(
    per_backend(
        __name__,
        {
            "AggregateRecorder": _Aggregate,
            "SnapshotRecorder": _Snapshots,
            "TextIdRecorder": _TextIds,
            "ApplicationRecorder": _Application,
            "TrackingRecorder": _Tracking,
            "ProcessRecorder": _Process,
            "NonInterleavingNotificationIDs": _NonInterleaving,
            "InfrastructureFactory": _Factory,
        },
        ("sqlite", "postgres", "memory"),
    )
)
