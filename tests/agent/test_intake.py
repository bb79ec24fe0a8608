"""The intake: what a bus worker hands on is clock-marked, passes privacy (a poll's readings
become records), and reaches the writer's ``put`` (a list here: our own seam); a bus worker feeds
it directly, with no agent in between."""

from __future__ import annotations

from datetime import date

from support.waiting import wait_until

from edge_agent.agent.intake import Intake
from edge_agent.clock import ClockState, ClockWatch
from edge_agent.field.health import HealthBoard
from edge_agent.field.scheduler import BusWorker, Schedule
from edge_agent.model import DataClass, Event, PollResult, Priority, Reading, Record
from edge_agent.privacy.keys import KeyRing
from edge_agent.privacy.pseudonym import pseudonymize
from edge_agent.privacy.stage import Privacy
from edge_agent.settings import PrivacySettings

T0 = 1732380000000
RING = KeyRing({1: bytes(range(32))})
SYNCED = ClockState(True, "fake", "synchronised")
UNSYNCED = ClockState(False, "fake", "not synchronised")
ID = "11010519491231002X"  # the GB 11643 standard's own example, no one's number


class Watch(ClockWatch):
    """A watch whose answer the test sets."""

    def __init__(self, state: ClockState) -> None:
        super().__init__(0.0, probe=lambda: self.now)
        self.now = state


def make(state: ClockState = SYNCED) -> tuple[Intake, Watch, list[list]]:
    batches: list[list] = []
    watch = Watch(state)
    privacy = Privacy(PrivacySettings(), RING, today=date(2024, 11, 23))
    return Intake(privacy, watch, batches.append), watch, batches


def level(value: float, ts: int = T0) -> Reading:
    return Reading("river-1", "level_m", value, ts)


def test_readings_pass_privacy_and_reach_the_writer_as_records_in_one_batch() -> None:
    intake, _, batches = make()
    intake.accept_readings([level(1.5), Reading("gate-1", "card_no", ID, T0, data_class=DataClass.IDENTIFIER),
                            Reading("gate-1", "owner", "someone", T0, data_class=DataClass.NAME),
                            Reading("gate-1", "lane", 2, T0)])
    [batch] = batches
    assert batch == [Record("river-1", T0, {"level_m": 1.5}),  # one record per device and time
                     Record("gate-1", T0, {"card_no": pseudonymize(ID, RING, "id"), "lane": 2})]  # name dropped
    assert intake.unsynced_items == 0 and all(r.clk_synced for r in batch)


def test_while_the_clock_is_unsynced_everything_is_marked_and_counted() -> None:
    intake, watch, batches = make(UNSYNCED)
    intake.accept_readings([level(1.0), level(2.0, T0 + 1)])
    intake.accept_events([Event("river-1", "alarm", Priority.CRITICAL, T0 + 2, {"rule": "level_m_above"})])
    watch.now = SYNCED
    intake.accept_readings([level(3.0, T0 + 3)])
    assert [[item.clk_synced for item in batch] for batch in batches] == [[False, False], [False], [True]]
    assert intake.unsynced_items == 3


def test_events_pass_privacy() -> None:
    intake, _, batches = make()
    intake.accept_events([Event("hub-1", "sos", Priority.CRITICAL, T0, {"band": "B-1", "wearer": {"id_no": ID}},
                                classes={"wearer.id_no": DataClass.IDENTIFIER})])
    [[event]] = batches
    assert event.data == {"band": "B-1", "wearer": {"id_no": pseudonymize(ID, RING, "id")}}


def test_nothing_left_after_privacy_puts_nothing() -> None:
    intake, _, batches = make(UNSYNCED)
    intake.accept_readings([Reading("gate-1", "owner", "someone", T0, data_class=DataClass.NAME)])
    intake.accept_readings([])
    intake.accept_events([])
    assert batches == []


class OnePoll:
    """A reader that answers once with a reading and an event, then nothing."""

    def __init__(self) -> None:
        self.results = [PollResult(readings=[level(1.0)], answered=True,
                                   events=[Event("river-1", "door", Priority.HIGH, T0, {"state": "open"})])]

    def poll(self) -> PollResult:
        return self.results.pop() if self.results else PollResult(answered=True)


def test_a_bus_worker_feeds_the_intake_directly() -> None:
    intake, _, batches = make(UNSYNCED)
    worker = BusWorker("plant", [Schedule("river-1", OnePoll(), 60.0)], intake.accept_readings, HealthBoard(),
                       events_sink=intake.accept_events)
    worker.start()
    try:
        wait_until(lambda: len(batches) == 2, 5, "the poll's reading and event")
    finally:
        worker.stop()
        worker.join(5)
    items = sorted((type(item).__name__, item.clk_synced) for batch in batches for item in batch)
    assert items == [("Event", False), ("Record", False)]
