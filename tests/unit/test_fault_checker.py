"""The fault suite's observation check (tests/support/faults.py) flags each kind of violation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.faults import FaultRun, Observation, batches_partial

INV = Decimal("100000.00")


def obs(rows: int = 5, ids: int = 5, seqs: int = 5, dseqs: int = 5, lo: int = 1, hi: int = 5,
        total: Decimal = INV, extras: dict[str, int] | None = None) -> Observation:
    return Observation(rows, ids, seqs, dseqs, lo, hi, total, extras or {})


@pytest.mark.parametrize(("o", "previous", "expect"), [
    (obs(), 0, ""),
    (obs(0, 0, 0, 0, 0, 0), 0, ""),  # an empty ledger is the prefix 1..0
    (obs(total=Decimal("99990.00")), 0, "total balance"),
    (obs(rows=6, seqs=6, hi=6, dseqs=5), 0, "duplicates"),
    (obs(rows=6, ids=5, seqs=6, dseqs=6, hi=6), 0, "duplicates"),
    (obs(hi=6), 0, "gap-free prefix"),  # 5 seqs in 1..6: one missing
    (obs(lo=2, hi=6), 0, "gap-free prefix"),
    (obs(), 7, "went backwards"),
])
def test_observation_problems(o: Observation, previous: int, expect: str) -> None:
    problems = o.problems(INV, previous, [])
    assert (not problems) if not expect else any(expect in p for p in problems), problems


def test_partial_bulk_is_flagged() -> None:
    extra = batches_partial("bulk", 100)
    assert obs(extras={extra[0]: 0}).problems(INV, 0, [extra]) == []
    assert obs(extras={extra[0]: 1}).problems(INV, 0, [extra])


def test_fault_run_assert_clean() -> None:
    FaultRun("F0", "ok", runs=1, samples=3).assert_clean()
    for bad in (FaultRun("F0", "x", runs=1, samples=3, lost=1), FaultRun("F0", "x", runs=0, samples=3),
                FaultRun("F0", "x", runs=1, samples=3, unequal_tables=["public.t"]),
                FaultRun("F0", "x", runs=1, samples=3, error="boom")):
        with pytest.raises(AssertionError):
            bad.assert_clean()
