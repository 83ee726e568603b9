"""eventsourcing's application and projection test cases, run with chatledger as the persistence module.

The application reads ``PERSISTENCE_MODULE`` and ``CHATLEDGER_URL`` from its environment
(``os.environ`` here, as in a deployment); the projection runners get them as ``env``.
"""

from __future__ import annotations

import os
import threading
from typing import ClassVar
from unittest import mock

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.tests import application as app_cases
from eventsourcing.tests import projection as projection_cases
from eventsourcing.tests.projection import EventCountersView

from chatledger.adapters.eventsourcing import ChatledgerProcessRecorder
from chatledger.store import open_store
from tests.adapters.eventsourcing.support import StoreCase, per_backend

MODULE = "chatledger.adapters.eventsourcing"


class CountersView(ChatledgerProcessRecorder, EventCountersView):
    """A materialized view kept in the store: each counter is a stream, each increment an event.

    An increment and its tracking are one store transaction (``insert_events(..., tracking=)``).
    """

    def _count(self, name: str) -> int:
        last = self.select_events(f"counter-{name}", desc=True, limit=1)
        return last[0].originator_version if last else 0

    def _increment(self, name: str, tracking: Tracking) -> None:
        event = StoredEvent(f"counter-{name}", self._count(name) + 1, "incremented", b"{}")
        self.insert_events([event], tracking=tracking)

    def wait(
        self,
        application_name: str,
        notification_id: int | None,
        timeout: float = 3.0,
        interrupt: threading.Event | None = None,
    ) -> None:
        """eventsourcing's wait, with 3 s rather than 1 s by default: CI machines run many tests at once."""
        super().wait(application_name, notification_id, timeout, interrupt)

    def get_created_event_counter(self) -> int:
        return self._count("created")

    def get_subsequent_event_counter(self) -> int:
        return self._count("subsequent")

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self._increment("created", tracking)

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self._increment("subsequent", tracking)


class _Environ(StoreCase):
    """Points eventsourcing at this test's store through ``os.environ``."""

    env: ClassVar[dict[str, str]] = {}

    def setUp(self) -> None:
        StoreCase.setUp(self)
        patch = mock.patch.dict(os.environ, {"PERSISTENCE_MODULE": MODULE, "CHATLEDGER_URL": self.url})
        patch.start()
        self.addCleanup(patch.stop)
        self.env = {"PERSISTENCE_MODULE": MODULE, "CHATLEDGER_URL": self.url}


class _Example(_Environ, app_cases.ExampleApplicationTestCase):
    expected_factory_topic = "chatledger.adapters.eventsourcing.factory:ChatledgerFactory"


class _Application(_Environ, app_cases.ApplicationTestCase):
    pass


class _View(_Environ, projection_cases.EventCountersViewTestCase):
    def construct_event_counters_view(self) -> EventCountersView:
        return CountersView(open_store(self.url), "CountersView")


class _Projection(_Environ, projection_cases.AggregateEventCountersProjectionTestCase):
    view_class = CountersView


class _EventSourcedProjection(_Environ, projection_cases.EventSourcedProjectionTestCase):
    pass


class _TaggedDecisions(_Environ, projection_cases.TaggedDecisionCountersProjectionTestCase):
    view_class = CountersView

    def setUp(self) -> None:
        self.skipTest(
            "chatledger provides no dynamic-consistency-boundary recorders (eventsourcing.dcb, which "
            "eventsourcing 9.5 itself offers for POPO and PostgreSQL only)"
        )


globals().update(
    per_backend(
        __name__,
        {
            "ExampleApplication": _Example,
            "Application": _Application,
            "EventCountersView": _View,
            "AggregateEventCountersProjection": _Projection,
            "EventSourcedProjection": _EventSourcedProjection,
            "TaggedDecisionCountersProjection": _TaggedDecisions,
        },
        ("sqlite", "postgres"),
    )
)
