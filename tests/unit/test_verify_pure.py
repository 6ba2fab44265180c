"""``ark verify``'s pure parts: bisection, row diffs, ranges, SQL predicates, verdicts, and the hold's state machine."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Any

import pytest

from common.control import ControlRecord
from common.verify import (
    Digest,
    KeyRange,
    RangeDiff,
    TableSpec,
    bisect_ranges,
    chunk_ranges,
    diff_rows,
    format_key,
)
from consumers.base import ApplyState
from consumers.hold import VerifyHold, crosses, floor_of
from consumers.hooks import Boundary
from ops.verify import EXIT_DIFFERENT, EXIT_EQUAL, EXIT_INCOMPLETE, TableResult, verdict_of
from schemas.control import VerifyArmed, VerifyHeld
from schemas.entries import Column, Position, TableMeta, TxnChunk
from schemas.positions import pg_lsn
from tests.support.memory import memory_channel, record

# -- bisection against in-memory tables ------------------------------------------------------------------


class FakeSides:
    """Two tables {int key: value}; keys travel as text like the real thing."""

    def __init__(self, primary: dict[int, str], standby: dict[int, str]) -> None:
        self.sides = (primary, standby)
        self.digests = 0

    def _in(self, rng: KeyRange, side: dict[int, str]) -> list[int]:
        lo = int(rng.lo[0]) if rng.lo else None
        hi = int(rng.hi[0]) if rng.hi else None
        return sorted(k for k in side if (lo is None or k > lo) and (hi is None or k <= hi))

    def one(self, rng: KeyRange, side: dict[int, str]) -> Digest:
        keys = self._in(rng, side)
        text = "".join(hashlib.md5(f"{k}:{side[k]}".encode()).hexdigest() for k in keys)
        return Digest(len(keys), hashlib.md5(text.encode()).hexdigest() if keys else "")

    def digest(self, rng: KeyRange) -> tuple[Digest, Digest]:
        self.digests += 1
        return self.one(rng, self.sides[0]), self.one(rng, self.sides[1])

    def split(self, rng: KeyRange, on_primary: bool, rows: int) -> tuple[str, ...]:
        keys = self._in(rng, self.sides[0] if on_primary else self.sides[1])
        assert len(keys) == rows
        return (str(keys[len(keys) // 2 - 1]),)

    def leaves(self, leaf_rows: int, rng: KeyRange | None = None) -> list[KeyRange]:
        rng = rng or KeyRange(None, None)
        p, s = self.digest(rng)
        return [r for r, _, _ in bisect_ranges(rng, p, s, self.digest, self.split, leaf_rows)]


def _covered(leaves: list[KeyRange], key: int) -> bool:
    return any((r.lo is None or key > int(r.lo[0])) and (r.hi is None or key <= int(r.hi[0])) for r in leaves)


BASE = {k: f"v{k}" for k in range(1, 1001)}


@pytest.mark.parametrize(("name", "primary", "standby", "bad_keys"), [
    ("equal", BASE, dict(BASE), []),
    ("one changed", BASE, {**BASE, 500: "x"}, [500]),
    ("one missing", BASE, {k: v for k, v in BASE.items() if k != 7}, [7]),
    ("one extra beyond the end", BASE, {**BASE, 5000: "new"}, [5000]),
    ("extra below the start", BASE, {**BASE, -3: "new"}, [-3]),
    ("three spread", BASE, {**{k: v for k, v in BASE.items() if k != 1}, 999: "y", 1500: "z"}, [1, 999, 1500]),
    ("standby empty", BASE, {}, list(range(1, 1001))),
    ("primary empty", {}, {1: "a", 2: "b"}, [1, 2]),
])
def test_bisection_finds_exactly_the_differing_keys(name: str, primary: dict[int, str], standby: dict[int, str],
                                                    bad_keys: list[int]) -> None:
    fake = FakeSides(primary, standby)
    leaves = fake.leaves(leaf_rows=10)
    for key in bad_keys:
        assert _covered(leaves, key), f"{name}: key {key} not in any differing range"
    for rng in leaves:
        p, s = fake.digest(rng)
        assert p != s, f"{name}: equal range {rng} reported"
        assert max(p.rows, s.rows) <= 10 or not bad_keys
    assert bool(leaves) == bool(bad_keys)


def test_bisection_is_logarithmic_and_in_key_order() -> None:
    standby = {**BASE, 10: "x", 900: "y"}
    fake = FakeSides(BASE, standby)
    leaves = fake.leaves(leaf_rows=8)
    assert len(leaves) == 2
    assert int(leaves[0].hi[0]) < int(leaves[1].hi[0])  # type: ignore[index]
    assert fake.digests < 2 * 2 * 10 + 1  # about two digests per level per difference


def test_bisection_inside_one_chunk() -> None:
    fake = FakeSides(BASE, {**BASE, 250: "x"})
    assert fake.leaves(10, KeyRange(("500",), None)) == []
    leaves = fake.leaves(10, KeyRange(("200",), ("300",)))
    assert len(leaves) == 1 and _covered(leaves, 250)


# -- row diffs, ranges, SQL ----------------------------------------------------------------------------
@pytest.mark.parametrize(("primary", "standby", "expected"), [
    ([], [], ([], [], [])),
    ([(("1",), "a")], [], ([("1",)], [], [])),
    ([], [(("1",), "a")], ([], [("1",)], [])),
    ([(("1",), "a"), (("2",), "b")], [(("1",), "a"), (("2",), "B")], ([], [], [("2",)])),
    ([(("1", "x"), "a"), (("3", "y"), "c")], [(("2", "z"), "b"), (("3", "y"), "c")],
     ([("1", "x")], [("2", "z")], [])),
])
def test_diff_rows(primary: Any, standby: Any, expected: Any) -> None:
    assert diff_rows(primary, standby) == expected


def test_chunk_ranges_cover_everything_once() -> None:
    assert chunk_ranges([]) == [KeyRange(None, None)]
    assert chunk_ranges([("10",), ("20",)]) == [KeyRange(None, ("10",)), KeyRange(("10",), ("20",)),
                                                 KeyRange(("20",), None)]
    assert KeyRange(None, ("10",)).describe() == "(-inf, 10]"
    assert KeyRange(("1", "a"), None).describe() == "((1, a), +inf]"
    assert format_key(("7",)) == "7"


def _meta(*cols: tuple[str, str, int]) -> TableMeta:
    return TableMeta(table="s.t", version="v", columns=tuple(
        Column(name=n, type="other", source_type=t, key_position=k) for n, t, k in cols))


def test_table_spec_where_and_key_order() -> None:
    from consumers.postgresql.verify import _Sql

    spec = TableSpec.of(_meta(("v", "text", 0), ("b", "integer", 2), ("a", "text", 1)))
    assert spec.key == ("a", "b") and spec.columns == ("v", "b", "a")
    pred, params = _Sql(spec).where(KeyRange(("x", "1"), ("y", "2")))
    assert pred == '("a", "b") > (%s::text, %s::integer) AND ("a", "b") <= (%s::text, %s::integer)'
    assert params == ["x", "1", "y", "2"]
    assert _Sql(spec).where(KeyRange(None, None)) == ("true", [])


def test_table_without_key_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="no primary key"):
        TableSpec.of(_meta(("v", "text", 0)))


@pytest.mark.parametrize(("verdicts", "expected"), [
    ([], ("equal", EXIT_EQUAL)),
    (["equal", "equal"], ("equal", EXIT_EQUAL)),
    (["equal", "different"], ("different", EXIT_DIFFERENT)),
    (["error", "equal"], ("incomplete", EXIT_INCOMPLETE)),
    (["error", "different"], ("different", EXIT_DIFFERENT)),
])
def test_verdict(verdicts: list[str], expected: tuple[str, int]) -> None:
    results = []
    for v in verdicts:
        r = TableResult("t", error="no key" if v == "error" else "")
        if v == "different":
            r.ranges.append(RangeDiff(KeyRange(None, None), 1, 0, [("1",)]))
        results.append(r)
    assert verdict_of(results) == expected


# -- the applier's hold ------------------------------------------------------------------------------
def _chunk(lsn: int, checkpoint: bool = False) -> TxnChunk:
    return TxnChunk(txn_id="" if checkpoint else "7", commit=pg_lsn(lsn), commit_time_us=0, chunk_index=0,
                    last=True, changes=[])


@pytest.mark.parametrize(("lsn", "checkpoint", "expected"), [
    (99, False, False), (100, False, True), (101, False, True),   # a commit at P is not in the snapshot
    (98, True, False), (99, True, True), (100, True, True),       # a checkpoint at P-1: all below P seen
])
def test_crosses(lsn: int, checkpoint: bool, expected: bool) -> None:
    p: Position = pg_lsn(100)
    assert crosses(_chunk(lsn, checkpoint), floor_of(p.key)) is expected


def _rec(kind: str, target: str = "sb", **args: str) -> ControlRecord:
    return record(kind, target, rid="r1", **args)


STATE = ApplyState(group="g", standby="sb", topic="t", partition=0, next_offset=42, position="0/50",
                   position_key=pg_lsn(0x50).key, epoch=0, commit_time_us=0, applied_at_us=0)


def _boundary(tick: Any = lambda: None, reports: list[str] | None = None) -> Boundary:
    seen = reports if reports is not None else []
    return Boundary(applier=None, metas={}, pending=lambda: STATE, committed=lambda: STATE,  # type: ignore[arg-type]
                    begin=lambda: None, commit=lambda: None, tick=tick, stopping=threading.Event(),
                    report=seen.append)


def _sent(store: list[Any]) -> list[Any]:
    reader = memory_channel(store)
    return [r.body for r in reader.poll()]


def test_hold_protocol_end_to_end() -> None:
    store: list[Any] = []
    hold = VerifyHold(memory_channel(store), "sb")
    assert not hold.active and not hold.urgent()
    hold.on_control([_rec("verify-hold", "other", max_hold_s="5"), _rec("verify-hold", max_hold_s="5")])
    assert hold.needs_ack() and hold.urgent()
    assert not hold.blocks(_chunk(0x60))  # not armed yet: nothing blocks
    hold.at_boundary(_boundary())
    assert _sent(store) == [VerifyArmed("r1", "0/50", 42)]
    assert hold.blocks(_chunk(0x60))      # armed, P unknown: every new transaction waits
    p = pg_lsn(0x100)
    hold.on_control([_rec("verify-at", request="r1", position=p.text, key=p.key.hex())])
    assert not hold.blocks(_chunk(0x60)) and hold.blocks(_chunk(0x100)) and hold.blocks(_chunk(0xFF, True))

    ticks = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            hold.on_control([_rec("verify-release", request="r1")])

    reports: list[str] = []
    hold.before_txn(_chunk(0x100), _boundary(tick, reports))
    sent = _sent(store)
    assert [type(b) for b in sent] == [VerifyArmed, VerifyHeld]
    assert sent[-1].next_offset == 42 and sent[-1].position_key == STATE.position_key
    assert not hold.active and reports == ["held for verify", "running"]


def test_hold_gives_up_after_max_hold() -> None:
    hold = VerifyHold(memory_channel(), "sb")
    hold.on_control([_rec("verify-hold", max_hold_s="0.05")])
    hold.ack(STATE)
    hold.before_txn(_chunk(0x60), _boundary())  # no P ever comes
    assert not hold.active


def test_release_of_another_request_is_ignored() -> None:
    hold = VerifyHold(memory_channel(), "sb")
    hold.on_control([_rec("verify-hold")])
    hold.on_control([_rec("verify-release", request="someone-else")])
    assert hold.needs_ack()


def test_bisection_stops_when_a_split_makes_no_progress() -> None:
    fake = FakeSides(BASE, {**BASE, 3: "x"})
    root = KeyRange(None, ("1000",))
    p, s = fake.digest(root)
    leaves = bisect_ranges(root, p, s, fake.digest, lambda rng, _on_primary, _rows: rng.hi or ("0",), 10)
    assert [r for r, _, _ in leaves] == [root]


def test_hold_answers_at_once_when_the_state_already_sits_at_p() -> None:
    # An idle source (a primary fenced for a cutover): its one checkpoint at its final position was applied before
    # the hold, and no entry will come after it. The state row at P's floor holds everything below P.
    store: list[Any] = []
    hold = VerifyHold(memory_channel(store), "sb")
    hold.on_control([_rec("verify-hold", max_hold_s="5")])
    hold.at_boundary(_boundary())  # armed at STATE (0/50)
    p = pg_lsn(0x51)               # P just past the state: its floor is the state's key (a checkpoint's)
    hold.on_control([_rec("verify-at", request="r1", position=p.text, key=p.key.hex())])
    at_floor = dataclasses.replace(STATE, position_key=floor_of(p.key))
    boundary = _boundary()
    boundary.committed = lambda: at_floor  # type: ignore[misc]
    hold.at_boundary(boundary)
    sent = _sent(store)
    assert [type(b) for b in sent] == [VerifyArmed, VerifyHeld]
    assert sent[-1].position_key == floor_of(p.key)
    hold.at_boundary(boundary)  # answered once
    assert len(_sent(store)) == 2
    # Still below P (a transaction just before it not applied yet): no answer.
    store2: list[Any] = []
    hold2 = VerifyHold(memory_channel(store2), "sb")
    hold2.on_control([_rec("verify-hold", max_hold_s="5")])
    hold2.at_boundary(_boundary())
    hold2.on_control([_rec("verify-at", request="r1", position=pg_lsn(0x100).text, key=pg_lsn(0x100).key.hex())])
    hold2.at_boundary(_boundary())
    assert [type(b) for b in _sent(store2)] == [VerifyArmed]
