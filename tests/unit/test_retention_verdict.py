"""Pure decisions of retention-as-archive: the retention verdict and the purge bound (no services)."""

from __future__ import annotations

import pytest

from ops.errors import OpsError
from ops.purge import PurgeRefused, parse_duration, plan_bound
from ops.retention import StandbyNeed, TopicRetention, hours_left, verdict

H = 3_600_000  # one hour in ms
NOW = 1_000 * H
DAY_S = 86_400.0


def _topic(**kw: object) -> TopicRetention:
    base: dict[str, object] = {"topic": "ark.g.redo", "exists": True, "retention_ms": 168 * H, "low": 0,
                               "high": 1000, "oldest_ts_ms": NOW - 10 * H, "newest_ts_ms": NOW}
    base.update(kw)
    return TopicRetention(**base)  # type: ignore[arg-type]


def _kinds(topic: TopicRetention, delays: dict[str, float], needs: list[StandbyNeed] | None = None,
           margin_s: float = DAY_S, configured_ms: int = 168 * H) -> list[str]:
    """A short tag per warning, to compare with the table."""
    tags = []
    found = verdict(topic, delays, margin_s, needs or [], NOW, bootstrap="b:9092",
                    configured_retention_ms=configured_ms)
    for w in found:
        assert w.fix, w  # every warning names its fix
        text = w.what
        tags.append("compact" if "cleanup.policy" in text else "bytes" if "retention.bytes" in text
                    else "config" if "kafka.redo_retention_hours" in text else "lost" if "no longer retained" in text
                    else "falling" if "fall off" in text else "close" if "close to the start" in text
                    else "short" if "keeps" in text else text)
    return tags


@pytest.mark.parametrize("case, topic, delays, margin_s, expected", [
    ("a week, no delay", _topic(), {"s": 0.0}, DAY_S, []),
    ("infinite retention, long delay", _topic(retention_ms=-1), {"s": 30 * DAY_S}, DAY_S, []),
    ("exactly delay + margin is enough", _topic(retention_ms=48 * H), {"s": DAY_S}, DAY_S, []),
    ("one ms short", _topic(retention_ms=48 * H - 1), {"s": DAY_S}, DAY_S, ["short"]),
    ("longest of several delays counts", _topic(retention_ms=48 * H), {"a": 0.0, "b": 2 * DAY_S}, DAY_S, ["short"]),
    ("margin alone", _topic(retention_ms=12 * H), {}, DAY_S, ["short"]),
    ("margin 0", _topic(retention_ms=12 * H), {"s": 0.0}, 0.0, []),
    ("compaction", _topic(cleanup_policy="compact"), {"s": 0.0}, DAY_S, ["compact"]),
    ("compact,delete", _topic(cleanup_policy="compact,delete"), {"s": 0.0}, DAY_S, ["compact"]),
    ("size-based", _topic(retention_bytes=10**9), {"s": 0.0}, DAY_S, ["bytes"]),
    ("size and short time", _topic(retention_bytes=10**9, retention_ms=H), {"s": 0.0}, DAY_S, ["short", "bytes"]),
    ("no topic, config short", _topic(exists=False), {"s": 7 * DAY_S}, DAY_S, ["config"]),
    ("no topic, config fine", _topic(exists=False), {"s": 0.0}, DAY_S, []),
])
def test_verdict_topic(case: str, topic: TopicRetention, delays: dict[str, float], margin_s: float,
                       expected: list[str]) -> None:
    assert _kinds(topic, delays, margin_s=margin_s) == expected, case


def test_short_warning_names_the_fix_and_the_delay() -> None:
    [w] = verdict(_topic(retention_ms=H), {"late": 7200.0}, DAY_S, [], NOW, bootstrap="b:9092",
                  configured_retention_ms=H)
    assert "standby late" in w.what and "7200 s" in w.what
    assert "kafka-configs.sh --bootstrap-server b:9092 --alter --entity-type topics --entity-name ark.g.redo" in w.fix
    assert f"retention.ms={26 * H}" in w.fix and "redo_retention_hours: 26" in w.fix


@pytest.mark.parametrize("case, topic, need, expected", [
    ("caught up", _topic(), StandbyNeed("s", 1000, None), []),
    ("fresh entry, a week kept", _topic(), StandbyNeed("s", 500, NOW - H), []),
    ("entry 150 h old of 168", _topic(), StandbyNeed("s", 500, NOW - 150 * H), ["falling"]),
    ("below the low watermark", _topic(low=600), StandbyNeed("s", 500, None), ["lost"]),
    ("at the low watermark is fine", _topic(low=500), StandbyNeed("s", 500, NOW - H), []),
    # Size-based: 1000 offsets over 10 h = 100/h; 50 offsets ahead of the start = 0.5 h left.
    ("size: 0.5 h left", _topic(retention_ms=-1, retention_bytes=10**6, low=100, high=1100),
     StandbyNeed("s", 150, NOW - H), ["bytes", "falling"]),
    ("size: 5 h left", _topic(retention_ms=-1, retention_bytes=10**6, low=100, high=1100),
     StandbyNeed("s", 600, NOW - H), ["bytes", "falling"]),
    ("size: 40 h left", _topic(retention_ms=-1, retention_bytes=10**6, low=100, high=100_100,
                               oldest_ts_ms=NOW - 40 * H), StandbyNeed("s", 100_000, NOW - H), ["bytes"]),
    ("size: nothing deleted yet, no estimate", _topic(retention_ms=-1, retention_bytes=10**6),
     StandbyNeed("s", 10, NOW - H), ["bytes"]),
    ("size: no timestamps, offsets close", _topic(retention_ms=-1, retention_bytes=10**6, low=100, high=1100,
                                                  oldest_ts_ms=None), StandbyNeed("s", 150, None), ["bytes", "close"]),
])
def test_verdict_standby(case: str, topic: TopicRetention, need: StandbyNeed, expected: list[str]) -> None:
    assert _kinds(topic, {"s": 0.0}, [need]) == expected, case


def test_hours_left_is_commit_time_plus_retention() -> None:
    left = hours_left(_topic(retention_ms=48 * H), StandbyNeed("s", 10, NOW - 40 * H), NOW)
    assert left == pytest.approx(8.0)
    assert hours_left(_topic(retention_ms=-1), StandbyNeed("s", 10, NOW - 40 * H), NOW) is None


def test_size_estimate_after_rate() -> None:
    topic = _topic(retention_ms=-1, retention_bytes=1, low=100, high=100_100)  # 10_000 offsets/h
    assert hours_left(topic, StandbyNeed("s", 100_000 + 100, None), NOW) == pytest.approx(10.0)


# -- the purge bound ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case, needs, keep, tail, low, high, bound, by", [
    ("slowest standby limits", {"a": 500, "b": 300}, 900, 950, 0, 1000, 300, "standby b"),
    ("keep-hours limits", {"a": 500}, 200, 950, 0, 1000, 200, "--keep-hours"),
    ("capture tail limits when all caught up", {"a": 1000, "b": 1000}, 1000, 990, 0, 1000, 990,
     "capture resume tail"),
    ("no standbys: tail", {}, 1000, 990, 0, 1000, 990, "capture resume tail"),
    ("nothing to delete: standby at low", {"a": 100}, 900, 950, 100, 1000, 100, "standby a"),
    ("standby already below low: never below low", {"a": 50}, 900, 950, 100, 1000, 100, "standby a"),
    ("end of topic", {}, 5000, 5000, 0, 1000, 1000, "end of topic"),
])
def test_plan_bound(case: str, needs: dict[str, int], keep: int, tail: int, low: int, high: int, bound: int,
                    by: str) -> None:
    got, limited_by, limits = plan_bound(needs, {}, set(), keep_offset=keep, tail_offset=tail, low=low, high=high)
    assert (got, limited_by) == (bound, by), case
    assert all(got <= v or v < low for v in limits.values()), "never at or above any limit"


def test_plan_bound_refuses_unknown_standby_and_names_ignore() -> None:
    with pytest.raises(PurgeRefused) as err:
        plan_bound({"a": 500}, {"b": "connection refused"}, set(), keep_offset=900, tail_offset=900, low=0, high=1000)
    assert "standby b" in err.value.message and "connection refused" in err.value.message
    assert "--ignore b" in err.value.fix


def test_plan_bound_ignore() -> None:
    got, by, _ = plan_bound({"a": 500, "b": 100}, {"c": "never synced"}, {"b", "c"}, keep_offset=900,
                            tail_offset=900, low=0, high=1000)
    assert (got, by) == (500, "standby a")


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1.5d", 129600)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1w", "h", "-1h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(OpsError):
        parse_duration(text)


def test_a_delay_longer_than_retention_is_refused_with_the_fix() -> None:
    from ops.retention import delay_verdict

    hour = 3_600_000
    assert delay_verdict(3600, 48 * hour, 24 * 3600, "ark.g.redo", bootstrap="b:9092") is None
    assert delay_verdict(10 * 24 * 3600, -1, 24 * 3600, "ark.g.redo", bootstrap="b:9092") is None  # unlimited
    refused = delay_verdict(30 * 3600, 48 * hour, 24 * 3600, "ark.g.redo", bootstrap="b:9092")
    assert refused is not None
    assert "54 h" in refused.what and "48 h" in refused.what
    assert f"retention.ms={54 * hour}" in refused.fix and "--force" in refused.fix
    not_yet = delay_verdict(30 * 3600, 48 * hour, 24 * 3600, "ark.g.redo", bootstrap="b:9092", exists=False)
    assert not_yet is not None and "kafka.redo_retention_hours: 54" in not_yet.fix
