"""Delayed file targets (pure parts): the delay in force, the gate, the retention check, the in-flight
view the sender plans against, verify's allocation tolerance, and the config knobs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from common.config import parse_config
from common.control import ControlRecord
from common.errors import ConfigError
from filesync.chunks import signature_of_bytes
from filesync.delay import (
    DelayInForce,
    control_target,
    fold,
    retention_problems,
    wait_seconds,
)
from filesync.plan import Acked
from filesync.service import allocation_differs
from filesync.state import StateDB
from tests.support.memory import record

FILES_SET_DELAY, FILES_PAUSE, FILES_RESUME = "files-set-delay", "files-pause", "files-resume"


def rec(kind: str, target: str, offset: int = 0, **args: str) -> ControlRecord:
    return record(kind, target, at_offset=offset, at_us=0, rid="r", **args)


@pytest.mark.parametrize(
    ("name", "records", "expected"),
    [
        ("config value when no intent", [], DelayInForce(60)),
        ("intent for the target", [rec(FILES_SET_DELAY, "docs/undo", seconds="3600")], DelayInForce(3600)),
        ("intent for every target of the set", [rec(FILES_SET_DELAY, "docs/", seconds="10")], DelayInForce(10)),
        ("the last word wins, even backwards",
         [rec(FILES_SET_DELAY, "docs/undo", seconds="3600"), rec(FILES_SET_DELAY, "docs/undo", seconds="5")],
         DelayInForce(5)),
        ("another target or set is ignored",
         [rec(FILES_SET_DELAY, "docs/dr", seconds="1"), rec(FILES_SET_DELAY, "pacs/undo", seconds="2"),
          rec("set-delay", "undo", seconds="3")], DelayInForce(60)),
        ("a value that is not finite is ignored", [rec(FILES_SET_DELAY, "docs/undo", seconds="inf")],
         DelayInForce(60)),
        ("pause then resume", [rec(FILES_PAUSE, "docs/undo"), rec(FILES_RESUME, "docs/")], DelayInForce(60)),
        ("paused keeps its delay", [rec(FILES_PAUSE, "docs/")], DelayInForce(60, paused=True)),
    ],
)
def test_fold(name: str, records: list[ControlRecord], expected: DelayInForce) -> None:
    assert fold(records, "docs", "undo", DelayInForce(60)) == expected, name


def test_control_target_names() -> None:
    assert control_target("docs", "undo") == "docs/undo"
    assert control_target("docs", "all") == control_target("docs", "") == "docs/"


def test_gate_never_before_publication_plus_delay() -> None:
    published_us = 1_000_000_000 * 1_000_000
    t0 = published_us / 1e6
    assert wait_seconds(published_us, DelayInForce(0), t0) == 0
    assert wait_seconds(published_us, DelayInForce(30), t0 + 10) == pytest.approx(20)
    assert wait_seconds(published_us, DelayInForce(30), t0 + 30) == 0
    assert wait_seconds(published_us, DelayInForce(5), t0 + 10) == 0  # delay lowered at run time: due now
    assert wait_seconds(published_us, DelayInForce(0, paused=True), t0 + 1e6) == math.inf
    assert not DelayInForce().holds and DelayInForce(1).holds and DelayInForce(0, True).holds


@pytest.mark.parametrize(
    ("retention_ms", "delays", "margin_h", "problems"),
    [
        (7 * 86_400_000, {"undo": DelayInForce(86_400)}, 24, 0),
        (36 * 3_600_000, {"undo": DelayInForce(86_400)}, 24, 1),  # 24 h delay + 24 h margin > 36 h
        (-1, {"undo": DelayInForce(10 * 86_400)}, 24, 0),  # unlimited retention
        (3_600_000, {"dr": DelayInForce(0), "undo": DelayInForce(1800)}, 0, 0),
        (3_600_000, {"dr": DelayInForce(0), "undo": DelayInForce(7200)}, 0, 1),  # only the delayed one
    ],
)
def test_retention_problems(retention_ms: int, delays: dict[str, DelayInForce], margin_h: float,
                            problems: int) -> None:
    found = retention_problems("docs", "ark.g.files.docs", retention_ms, delays, margin_h)
    assert len(found) == problems
    for p in found:
        assert "undo" in p.what and "retention_ms" in p.fix and "ark files delay" in p.fix


def test_in_flight_view_and_its_clearing(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "sender.db")
    a1, a2 = Acked("FILE", b"h1", b"m"), Acked("FILE", b"h2", b"m")
    db.set_acked("undo", "a", a1)
    db.set_acked("undo", "gone", a1)
    p1 = db.begin_pass("p1", 1)
    p2 = db.begin_pass("p2", 2)
    assert (p1, p2) == (1, 2)
    db.set_pending("undo", "a", p1, a2)        # content shipped in pass 1
    db.set_pending("undo", "gone", p1, None)   # deleted in pass 1
    db.set_pending("undo", "new", p2, a1)      # created in pass 2
    assert db.expected("undo") == {"a": a2, "new": a1}
    assert db.expected("dr") == {} and db.pending_count("undo") == 3
    # the target applied pass 1 (its acks said so before the PassAck): only pass 2 is still in flight
    db.set_acked("undo", "a", a2)
    db.set_acked("undo", "gone", None)
    assert db.clear_pending("undo", p1) == 2
    assert db.expected("undo") == {"a": a2, "new": a1} and db.pending_count("undo") == 1
    # delta bases of in-flight contents are kept
    sig = signature_of_bytes(b"x" * 1000)
    db.put_signature(sig)
    db.set_pending("undo", "x", p2, Acked("FILE", sig.content_hash, b"m"))
    db.prune_signatures()
    assert db.signature(sig.content_hash) == sig
    db.end_pass("p2", 5, 10, 12, 3)
    last = db.last_pass()
    assert last is not None and (last.pass_id, last.redo_start, last.redo_end, last.changes) == ("p2", 10, 12, 3)
    db.close()


@pytest.mark.parametrize(("src", "dst", "differs"), [
    (32, 32, False),                    # identical
    (32, 32 + 8, False),                # one extent block more: filesystem noise
    (32, 204_800, True),                # 16 KiB of data arrived as 100 MiB allocated
    (2_000_000, 2_000_000 + 16, False),  # within 1/64 of a large file
])
def test_allocation_tolerance(src: int, dst: int, differs: bool) -> None:
    assert allocation_differs(src, dst) is differs


def test_config_delay_and_consistency_points() -> None:
    base = {"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"}, "primary": {"name": "p", "engine": "postgresql"}}
    cfg = parse_config({**base, "files": {"docs": {
        "source": "/srv/docs", "consistency_points": True,
        "targets": [{"name": "dr", "path": "/srv/docs"}, {"name": "undo", "path": "/srv/u", "delay_seconds": 3600}]}}})
    fs = cfg.files["docs"]
    assert fs.consistency_points and fs.target("undo").delay_seconds == 3600 and fs.target("dr").delay_seconds == 0
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "files": {"docs": {"source": "/s", "targets": [
            {"name": "undo", "path": "/u", "delay_seconds": -5}]}}})
    assert "delay_seconds" in str(err.value)
