"""Compression that follows the link: what the redo producer measures, and the pure decision it takes from it.

**What is measured.** The redo producer (:class:`common.redo_kafka.KafkaWriter`) asks librdkafka for its statistics
every :data:`SAMPLE_INTERVAL_MS` (``statistics.interval.ms`` and a ``stats_cb``) and turns two of them and its own
counters into a :class:`LinkSample` over each window:

* ``wire_bytes_per_s``: bytes the producer put on the wire (the top-level ``tx_bytes`` counter: compressed batches
  and request framing), per second;
* ``payload_bytes_per_s``: bytes of entries Ark handed to the producer (before compression), per second; the two
  give the compression ratio the current codec achieves on this workload;
* ``busy``: the share of the window the capture spent blocked on the link, waiting for a Kafka commit (which flushes
  every batch and waits for the broker's acknowledgements) or for room in a full local queue. A link that cannot
  carry what the capture produces shows as a high ``busy``; a capture limited by its own CPU or by the source shows
  a low one (stronger compression would only slow it down further);
* ``rtt_ms``: the median produce round trip to the broker (``brokers[].rtt.p50``), which sets how long batches may
  linger without adding to the lag.

**The decision** (:func:`decide`, pure, table-tested) walks a ladder of :data:`LEVELS`, cheapest CPU first: ``lz4``
with small batches for a LAN, ``zstd`` level 3, then ``zstd`` level 9 with larger batches for a slow WAN link.

* *Up* one step when the link is the bottleneck (``busy >= UP_BUSY``) in :data:`UP_AFTER` windows in a row. The wire
  rate seen then is the link's capacity (:attr:`LinkState.capacity_bytes_per_s`, smoothed over such windows): the
  producer was sending all it could.
* *Down* one step only when the cheaper level would fit easily: the link is idle (``busy <= DOWN_BUSY``) and the
  payload rate at the cheaper level's measured ratio (summed over its windows; else assumed) needs at most
  :data:`DOWN_HEADROOM` of the capacity, in :data:`DOWN_AFTER` windows in a row.
* Nothing changes within :data:`MIN_DWELL_S` of the last change.

The gap between the two thresholds, the longer streak to go down than to go up, and the dwell time are the
hysteresis: a level that relieves the link does not bounce straight back to the one that saturated it.

**How a change applies.** librdkafka cannot change ``compression.type`` on a live producer, so the writer applies a
new :class:`LinkChoice` only right after a Kafka transaction commits: it closes the producer (nothing is in flight)
and makes a new one with the same ``transactional.id``, whose ``init_transactions`` bumps the producer epoch. Every
record stays in exactly one committed transaction, in order, and a stale capture is still fenced as before. A fixed
codec (``kafka.compression: lz4`` and the others) is never changed: only ``auto`` adapts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

#: librdkafka's statistics interval for the redo producer (one :class:`LinkSample` per window of this length).
SAMPLE_INTERVAL_MS = 1000

#: Step up when the capture waits on the link at least this share of a window ...
UP_BUSY = 0.5
#: ... in this many windows in a row.
UP_AFTER = 2
#: Step down only when it waits at most this share of a window ...
DOWN_BUSY = 0.15
#: ... and the cheaper level's wire rate would need at most this share of the measured capacity ...
DOWN_HEADROOM = 0.5
#: ... in this many windows in a row.
DOWN_AFTER = 10
#: No change within this many seconds of the last one (the new level's effect has to show first).
MIN_DWELL_S = 10.0

#: Longest linger a slow link is given (ms): batches wait about one round trip, never more than this.
MAX_LINGER_MS = 100


@dataclass(frozen=True)
class LinkChoice:
    """The producer settings one level of the ladder stands for."""

    codec: str
    level: int  # librdkafka compression.level; -1: the codec's default
    linger_ms: int
    batch_bytes: int
    #: Assumed wire/payload ratio relative to lz4's until this level has been measured on the workload.
    assumed_ratio_vs_lz4: float = 1.0

    def producer_config(self) -> dict[str, Any]:
        """librdkafka properties for this choice."""
        return {"compression.type": self.codec, "compression.level": self.level, "linger.ms": self.linger_ms,
                "batch.size": self.batch_bytes}

    def describe(self) -> str:
        level = "" if self.level < 0 else f" level {self.level}"
        return f"{self.codec}{level}, linger {self.linger_ms} ms, batch {self.batch_bytes // 1000} kB"


#: The ladder, cheapest CPU first. lz4 at the capture's historic settings (linger 20 ms, 1 MB batches): a LAN
#: behaves as before. zstd compresses Ark's entries markedly better at a CPU cost a slow link can afford; bigger
#: batches give it more context.
LEVELS: tuple[LinkChoice, ...] = (
    LinkChoice("lz4", -1, 20, 1_000_000, 1.0),
    LinkChoice("zstd", 3, 20, 1_000_000, 0.7),
    LinkChoice("zstd", 9, 50, 4_000_000, 0.6),
)


@dataclass(frozen=True)
class LinkSample:
    """What the producer saw over one window (see the module docstring)."""

    wire_bytes_per_s: float
    payload_bytes_per_s: float
    busy: float
    rtt_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        """Wire bytes per payload byte (None when nothing was sent)."""
        if self.payload_bytes_per_s <= 0 or self.wire_bytes_per_s <= 0:
            return None
        return self.wire_bytes_per_s / self.payload_bytes_per_s

    def describe(self) -> str:
        rtt = "?" if self.rtt_ms is None else f"{self.rtt_ms:.1f}"
        ratio = "?" if self.ratio is None else f"{self.ratio:.3f}"
        return (f"wire {self.wire_bytes_per_s / 1e6:.2f} MB/s, entries {self.payload_bytes_per_s / 1e6:.2f} MB/s "
                f"(ratio {ratio}), waiting on the link {self.busy:.0%}, rtt {rtt} ms")


@dataclass(frozen=True)
class LinkState:
    """What the decision remembers between windows."""

    level: int = 0
    since_s: float = 0.0  # when the level was last changed (monotonic seconds)
    up_streak: int = 0
    down_streak: int = 0
    #: The wire rate while the link was the bottleneck, smoothed over such windows (None until it has been).
    capacity_bytes_per_s: float | None = None
    #: (level, wire bytes, payload bytes) summed over the windows spent at each level: a single window's ratio is
    #: noisy (a commit may hand over a window's entries while the socket sends the previous one's).
    totals: tuple[tuple[int, float, float], ...] = field(default=())

    @property
    def ratios(self) -> dict[int, float]:
        """The measured wire/payload ratio of each level the producer has run at."""
        return {level: wire / payload for level, wire, payload in self.totals if payload > 0 and wire > 0}

    def ratio_of(self, level: int) -> float | None:
        """The measured ratio of ``level``, else one derived from a measured level and the assumed factors."""
        known = self.ratios
        if level in known:
            return known[level]
        for other, ratio in known.items():
            return ratio * LEVELS[level].assumed_ratio_vs_lz4 / LEVELS[other].assumed_ratio_vs_lz4
        return None


@dataclass(frozen=True)
class Decision:
    """The state after a window, and the choice to apply (None: keep the producer as it is)."""

    state: LinkState
    change: LinkChoice | None = None
    why: str = ""


def linger_for(choice: LinkChoice, rtt_ms: float | None) -> LinkChoice:
    """``choice`` with batches lingering about one round trip (at least the level's own, at most
    :data:`MAX_LINGER_MS`): on a long link a batch that waits one round trip costs little lag and carries more."""
    if rtt_ms is None:
        return choice
    linger = int(min(MAX_LINGER_MS, max(choice.linger_ms, rtt_ms)))
    return replace(choice, linger_ms=linger)


def decide(state: LinkState, sample: LinkSample, now_s: float) -> Decision:
    """The next state, and the level to switch to if any (see the module docstring)."""
    sums = {level: (wire, payload) for level, wire, payload in state.totals}
    wire, payload = sums.get(state.level, (0.0, 0.0))
    sums[state.level] = (wire + sample.wire_bytes_per_s, payload + sample.payload_bytes_per_s)
    totals = tuple(sorted((level, w, p) for level, (w, p) in sums.items()))
    capacity = state.capacity_bytes_per_s
    link_bound = sample.busy >= UP_BUSY and sample.wire_bytes_per_s > 0
    if link_bound:  # the producer sent all it could: that is the link's rate (smoothed: socket buffers blur it)
        capacity = sample.wire_bytes_per_s if capacity is None else (capacity + sample.wire_bytes_per_s) / 2
    elif capacity is not None and sample.wire_bytes_per_s > capacity:
        capacity = sample.wire_bytes_per_s  # the link carried more than we thought it could
    up = state.up_streak + 1 if link_bound else 0
    cheaper_fits = False
    if state.level > 0 and sample.busy <= DOWN_BUSY and capacity is not None:
        cheaper_ratio = LinkState(totals=totals).ratio_of(state.level - 1)
        if cheaper_ratio is not None:
            cheaper_fits = sample.payload_bytes_per_s * cheaper_ratio <= DOWN_HEADROOM * capacity
    down = state.down_streak + 1 if cheaper_fits else 0
    new = LinkState(level=state.level, since_s=state.since_s, up_streak=up, down_streak=down,
                    capacity_bytes_per_s=capacity, totals=totals)
    if now_s - state.since_s < MIN_DWELL_S:
        return Decision(new)
    if up >= UP_AFTER and state.level + 1 < len(LEVELS):
        level = state.level + 1
        why = f"the link is the bottleneck ({up} windows waiting on it)"
    elif down >= DOWN_AFTER:
        level = state.level - 1
        why = f"the link has room for a cheaper codec ({down} windows idle)"
    else:
        return Decision(new)
    changed = replace(new, level=level, since_s=now_s, up_streak=0, down_streak=0)
    return Decision(changed, linger_for(LEVELS[level], sample.rtt_ms), why)


#: The shortest window: a statistics report served sooner after the one before leaves the window open.
MIN_WINDOW_S = 0.5


@dataclass
class StatsWindow:
    """Turns librdkafka's statistics JSON and the writer's own counters into one :class:`LinkSample` per window.

    The writer adds payload bytes and the seconds it waited on the link as they happen; a statistics callback closes
    a window. Windows are timed by when the callbacks are *served*, on the writer's own clock, not by the reports'
    ``ts``: librdkafka makes a report every second but hands it over only when the producer is polled, and a Kafka
    commit that waits 3 s on a slow link hands three over at once when it returns. Timed by ``ts``, the first of
    them took the 3 s of waiting in 1 s (100 %), the two others none (0 %), and the "two busy windows in a row"
    that steps the codec up never came (tests/integration/test_link_compression.py failed that way). A report served
    less than :data:`MIN_WINDOW_S` after the one before leaves the window open."""

    payload_bytes: int = 0
    waited_s: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic)
    _last_at: float | None = None
    _last_tx_bytes: int = 0

    def sample(self, stats_json: str) -> LinkSample | None:
        """The window that ends with this statistics report (None for the first report, an unreadable one, or one
        served too soon after the one before)."""
        try:
            stats = json.loads(stats_json)
            tx_bytes = int(stats["tx_bytes"])
        except (ValueError, KeyError, TypeError):
            return None
        now = self.clock()
        if self._last_at is None:
            self._last_at, self._last_tx_bytes = now, tx_bytes
            self.payload_bytes, self.waited_s = 0, 0.0
            return None
        seconds = now - self._last_at
        if seconds < MIN_WINDOW_S:
            return None
        rtts = [b["rtt"]["p50"] for b in stats.get("brokers", {}).values()
                if isinstance(b, dict) and b.get("rtt", {}).get("cnt", 0) > 0]
        last_tx, payload, waited = self._last_tx_bytes, self.payload_bytes, self.waited_s
        self._last_at, self._last_tx_bytes = now, tx_bytes
        self.payload_bytes, self.waited_s = 0, 0.0
        return LinkSample(wire_bytes_per_s=max(0, tx_bytes - last_tx) / seconds,
                          payload_bytes_per_s=payload / seconds, busy=min(1.0, waited / seconds),
                          rtt_ms=max(rtts) / 1000 if rtts else None)
