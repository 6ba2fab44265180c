"""Compression that follows the link (common/link.py): the decision table, its hysteresis, the statistics window,
and the redo writer around it (a fixed codec is never changed; a change applies only after a commit)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common import redo_kafka
from common.link import (
    DOWN_AFTER,
    LEVELS,
    MAX_LINGER_MS,
    MIN_DWELL_S,
    UP_AFTER,
    LinkSample,
    LinkState,
    StatsWindow,
    decide,
    linger_for,
)
from common.settings import KafkaSettings

MB = 1_000_000
SATURATED = LinkSample(wire_bytes_per_s=1.2 * MB, payload_bytes_per_s=6 * MB, busy=0.9, rtt_ms=40.0)
IDLE = LinkSample(wire_bytes_per_s=0.05 * MB, payload_bytes_per_s=0.2 * MB, busy=0.02, rtt_ms=1.0)
CPU_BOUND = LinkSample(wire_bytes_per_s=30 * MB, payload_bytes_per_s=120 * MB, busy=0.1, rtt_ms=0.5)


def run(samples: list[LinkSample], state: LinkState | None = None, start: float = 100.0) -> tuple[LinkState, list[int]]:
    """Feed one sample per second; return the final state and the level after each window."""
    state = state or LinkState(since_s=0.0)
    levels = []
    for i, sample in enumerate(samples):
        decision = decide(state, sample, start + i)
        if decision.change is not None:
            assert decision.change.codec == LEVELS[decision.state.level].codec
        state = decision.state
        levels.append(state.level)
    return state, levels


@pytest.mark.parametrize(("samples", "expected_level", "why"), [
    ([IDLE] * 30, 0, "an idle LAN stays on lz4"),
    ([CPU_BOUND] * 30, 0, "a capture limited by its CPU, not the link, never pays for zstd"),
    ([SATURATED] * (UP_AFTER - 1), 0, "one saturated window is not a trend"),
    ([SATURATED] * UP_AFTER, 1, "a saturated link steps up to zstd"),
    ([SATURATED, IDLE] * 10, 0, "alternating windows never make a streak"),
    ([SATURATED] * UP_AFTER + [SATURATED] * int(MIN_DWELL_S + UP_AFTER), 2, "still saturated after the dwell: zstd 9"),
    ([SATURATED] * 60, len(LEVELS) - 1, "the ladder stops at its top"),
])
def test_decision_table(samples: list[LinkSample], expected_level: int, why: str) -> None:
    state, _levels = run(samples)
    assert state.level == expected_level, why


def test_capacity_is_what_the_link_carried_while_it_was_the_bottleneck() -> None:
    state, _ = run([IDLE, SATURATED, IDLE])
    assert state.capacity_bytes_per_s == SATURATED.wire_bytes_per_s
    both = (2 * IDLE.wire_bytes_per_s + SATURATED.wire_bytes_per_s) / (2 * IDLE.payload_bytes_per_s
                                                                        + SATURATED.payload_bytes_per_s)
    assert state.ratios[0] == pytest.approx(both), "the ratio of a level is summed over its windows"
    faster = LinkSample(wire_bytes_per_s=2.2 * MB, payload_bytes_per_s=6 * MB, busy=0.9)
    state, _ = run([faster], state)
    assert state.capacity_bytes_per_s == pytest.approx(1.7 * MB), "smoothed over the link-bound windows"


def test_no_change_within_the_dwell_time() -> None:
    state, levels = run([SATURATED] * UP_AFTER)
    assert levels[-1] == 1
    _, later = run([SATURATED] * int(MIN_DWELL_S - 1), state, start=100.0 + UP_AFTER)
    assert set(later) == {1}


def test_relieved_link_does_not_bounce_back_when_the_cheaper_codec_would_saturate_it() -> None:
    """Hysteresis: zstd made the link idle, but lz4 at the same payload rate would need more than half the capacity."""
    state, _ = run([SATURATED] * UP_AFTER)
    assert state.level == 1
    relieved = LinkSample(wire_bytes_per_s=0.8 * MB, payload_bytes_per_s=6 * MB, busy=0.05, rtt_ms=5.0)
    state, levels = run([relieved] * 60, state, start=200.0)
    assert set(levels) == {1}


def test_steps_down_when_the_load_falls_and_the_cheaper_codec_fits() -> None:
    state, _ = run([SATURATED] * UP_AFTER)
    quiet = LinkSample(wire_bytes_per_s=0.02 * MB, payload_bytes_per_s=0.1 * MB, busy=0.01, rtt_ms=5.0)
    state, levels = run([quiet] * (DOWN_AFTER - 1), state, start=200.0)
    assert state.level == 1, "not before DOWN_AFTER windows in a row"
    state, levels = run([quiet], state, start=300.0)
    assert state.level == 0


def test_a_busy_window_restarts_the_count_down() -> None:
    state, _ = run([SATURATED] * UP_AFTER)
    quiet = LinkSample(wire_bytes_per_s=0.02 * MB, payload_bytes_per_s=0.1 * MB, busy=0.01, rtt_ms=5.0)
    samples = [quiet] * (DOWN_AFTER - 1) + [SATURATED] + [quiet] * (DOWN_AFTER - 1)
    state, levels = run(samples, state, start=200.0)
    assert set(levels) == {1}


def test_the_cheaper_ratio_is_derived_from_the_measured_one() -> None:
    state = LinkState(level=1, totals=((1, 0.14, 1.0),))
    assert state.ratio_of(1) == 0.14
    assert state.ratio_of(0) == pytest.approx(0.14 / LEVELS[1].assumed_ratio_vs_lz4)
    assert LinkState().ratio_of(0) is None


@pytest.mark.parametrize(("rtt", "linger"), [(None, 20), (0.3, 20), (45.0, 45), (800.0, MAX_LINGER_MS)])
def test_linger_follows_the_round_trip(rtt: float | None, linger: int) -> None:
    assert linger_for(LEVELS[1], rtt).linger_ms == linger


def stats(ts_s: float, tx_bytes: int, rtt_us: int | None = 2000) -> str:
    brokers: dict[str, Any] = {"b1": {"rtt": {"p50": rtt_us, "cnt": 0 if rtt_us is None else 5}}}
    return json.dumps({"ts": int(ts_s * 1e6), "tx_bytes": tx_bytes, "brokers": brokers})


def test_stats_window_turns_counters_into_rates() -> None:
    now = [10.0]
    window = StatsWindow(clock=lambda: now[0])
    assert window.sample(stats(10.0, 1000)) is None  # the first report opens the first window
    window.payload_bytes, window.waited_s = 4_000_000, 1.5
    now[0] = 12.0
    sample = window.sample(stats(12.0, 1_001_000))
    assert sample is not None
    assert sample.wire_bytes_per_s == pytest.approx(500_000)
    assert sample.payload_bytes_per_s == pytest.approx(2_000_000)
    assert sample.busy == pytest.approx(0.75)
    assert sample.rtt_ms == pytest.approx(2.0)
    assert sample.ratio == pytest.approx(0.25)
    assert window.payload_bytes == 0 and window.waited_s == 0.0
    assert window.sample("not json") is None
    now[0] = 13.0
    assert window.sample(stats(13.0, 1_001_000, rtt_us=None)).rtt_ms is None  # type: ignore[union-attr]


def test_reports_served_at_once_after_a_long_commit_make_one_busy_window_not_one_and_two_idle() -> None:
    """librdkafka hands its 1 s reports over when the producer is polled: a commit that waited 3 s on the link
    returns with three at once. Timed by their ``ts`` the waiting went to the first (100 %) and none to the others
    (0 %), so two busy windows in a row never came; timed as served, each commit is one busy window."""
    now = [0.0]
    window = StatsWindow(clock=lambda: now[0])
    window.sample(stats(0.0, 0))
    samples = []
    for commit in range(1, 3):
        now[0] = 3.0 * commit  # the commit returns after waiting 3 s on the link
        window.waited_s, window.payload_bytes = 3.0, 300_000
        for k in (2, 1, 0):  # three reports, served within a millisecond
            samples.append(window.sample(stats(now[0] - k, 100_000 * commit)))
            now[0] += 0.0005
    made = [s for s in samples if s is not None]
    assert len(made) == 2
    assert all(s.busy > 0.99 for s in made)
    state = LinkState(since_s=-100.0)
    for s in made:
        state = decide(state, s, now[0]).state
    assert state.level == 1  # two busy windows in a row: one step up


class FakeProducer:
    """Stands in for confluent_kafka.Producer in the writer's own logic (no broker)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.closed = False
        self.calls: list[str] = []

    def init_transactions(self, _timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")

    def produce(self, *_args: object, **_kwargs: object) -> None:
        self.calls.append("produce")

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def make(settings: KafkaSettings, **kwargs: Any) -> FakeProducer:
        producer = FakeProducer(kwargs)
        made.append(producer)
        return producer

    monkeypatch.setattr(redo_kafka, "make_producer", make)
    return made


def test_a_fixed_codec_is_never_changed(producers: list[FakeProducer]) -> None:
    writer = redo_kafka.KafkaWriter(KafkaSettings(compression="gzip"), "g")
    assert not writer.adaptive
    assert "stats_cb" not in producers[0].conf and "compression.type" not in producers[0].conf  # make_producer's own
    assert writer.choice.codec == "gzip"


def test_auto_switches_only_after_a_commit(producers: list[FakeProducer]) -> None:
    now = [0.0]
    writer = redo_kafka.KafkaWriter(KafkaSettings(compression="auto"), "g", clock=lambda: now[0])
    assert writer.adaptive and producers[0].conf["compression.type"] == "lz4"
    on_stats = producers[0].conf["stats_cb"]
    writer.begin()
    writer.produce(b"x" * 6_000_000, [], 0)
    tx = 0
    for second in range(int(MIN_DWELL_S) + UP_AFTER + 2):
        now[0] = float(second)
        writer._window.waited_s = 0.9  # the capture waited on the link most of every second
        writer._window.payload_bytes = 6_000_000
        tx += 1_200_000
        on_stats(stats(float(second), tx, rtt_us=40_000))
    assert len(producers) == 1, "never while a transaction is open"
    writer.commit()
    assert len(producers) == 2 and producers[0].closed
    new = producers[1].conf
    assert (new["compression.type"], new["compression.level"], new["linger.ms"]) == ("zstd", 3, 40)
    assert producers[1].calls == ["init"]
    assert writer.changes == [writer.choice]
