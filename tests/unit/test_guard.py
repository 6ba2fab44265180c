"""Never harm a primary: the refusals checked before anything writes to a standby (tables of cases), and the
applier refusing before it prepares anything."""

from __future__ import annotations

from typing import Any

import pytest

from common import agent
from common.exit_codes import ExitCode
from common.guard import (
    IdentityChanged,
    IsASource,
    NotEmpty,
    Recorded,
    SameDatabase,
    Situation,
    TargetFacts,
    recorded_identities,
    refusals,
    source_refusal,
)
from common.identity import DatabaseIdentity
from tests.support.memory import MemoryRedoLog, MemoryStandby, memory_channel, record

PRIMARY = DatabaseIdentity("postgresql", "7301", "16384", "cluster 7301 db bank")
LOOPBACK = DatabaseIdentity("postgresql", "7301", "16999", "cluster 7301 db bank_copy")  # same server, other db
SB1 = DatabaseIdentity("postgresql", "8802", "16384", "cluster 8802 db bank")
SB2 = DatabaseIdentity("postgresql", "9903", "16384", "cluster 9903 db bank")


def sit(live: DatabaseIdentity, action: str = "apply", **kw: Any) -> Situation:
    facts = kw.pop("facts", TargetFacts(live))
    return Situation(group="g", standby="sb1", action=action, facts=facts, **{"primary": PRIMARY, **kw})


def kinds(s: Situation) -> list[type]:
    return [type(r) for r in refusals(s)]


CASES = [
    ("its own database", sit(SB1), []),
    ("the primary itself (localhost, 127.0.0.1, an alias: one identity)", sit(PRIMARY), [SameDatabase]),
    ("the primary, unreachable now but recorded", sit(PRIMARY, primary=None,
     recorded=Recorded({"primary": ("primary", PRIMARY)}, frozenset({PRIMARY}))), [SameDatabase]),
    ("a former primary of the group", sit(SB2, recorded=Recorded({}, frozenset({SB2}))), [SameDatabase]),
    ("another standby, live", sit(SB2, others={"sb2": SB2}), [SameDatabase]),
    ("another standby, recorded", sit(SB2, recorded=Recorded({"sb2": ("standby", SB2)})), [SameDatabase]),
    ("a loopback standby: same server, other database", sit(LOOPBACK), []),
    ("a capture's source", sit(SB1, facts=TargetFacts(SB1, {}, ["logical replication slot x"])), [IsASource]),
    ("a declared chain", sit(SB1, facts=TargetFacts(SB1, {}, ["publication p"]), chain=True), []),
    ("replaced behind its address (state row)", sit(SB2, facts=TargetFacts(SB2, {("g", "sb1"): SB1.key})),
     [IdentityChanged]),
    ("replaced behind its address (recorded)", sit(SB2, recorded=Recorded({"sb1": ("standby", SB1)})),
     [IdentityChanged]),
    ("sync repairs a replaced standby", sit(SB2, "sync", facts=TargetFacts(SB2, {("g", "sb1"): SB1.key})), []),
    ("sync onto foreign data", sit(SB1, "sync", occupied={"public.t": 12}), [NotEmpty]),
    ("sync onto foreign data, --overwrite", sit(SB1, "sync", occupied={"public.t": 12}, overwrite=True), []),
    ("resync of our own standby", sit(SB1, "sync", occupied={"public.t": 12},
     facts=TargetFacts(SB1, {("g", "sb1"): SB1.key})), []),
    ("sync onto another group's standby", sit(SB1, "sync", occupied={"public.t": 12},
     facts=TargetFacts(SB1, {("other", "x"): SB1.key})), [NotEmpty]),
]


@pytest.mark.parametrize(("name", "situation", "expected"), CASES, ids=[c[0] for c in CASES])
def test_refusals(name: str, situation: Situation, expected: list[type]) -> None:
    found = refusals(situation)
    assert [type(r) for r in found] == expected, name
    for r in found:
        assert r.fix and "sb1" in r.message and "Traceback" not in r.message


def test_each_refusal_has_its_own_exit_code() -> None:
    codes = {SameDatabase: ExitCode.SAME_DATABASE, IsASource: ExitCode.IS_A_SOURCE,
             IdentityChanged: ExitCode.IDENTITY_CHANGED, NotEmpty: ExitCode.NOT_EMPTY}
    assert {cls.exit_code for cls in codes} == set(codes.values()) and len(set(codes.values())) == 4


def test_not_empty_names_tables_and_counts_not_values() -> None:
    (r,) = refusals(sit(SB1, "sync", occupied={"public.accounts": 1200, "public.big": 1_000_001}))
    assert "public.accounts (1,200 rows)" in r.message and "public.big (over 1,000,000 rows)" in r.message
    assert "--overwrite" in r.fix


def test_recorded_identities_and_the_capture_refusal() -> None:
    recs = [record("node-identity", "node1", role="primary", identity=PRIMARY.key, label="p"),
            record("node-identity", "sb1", role="standby", identity=SB1.key, label="s"),
            record("node-identity", "sb1", role="standby", identity="not an identity", label="?")]
    rec = recorded_identities(recs)
    assert rec.nodes == {"node1": ("primary", PRIMARY), "sb1": ("standby", SB1)} and rec.primaries == {PRIMARY}
    assert source_refusal("g", "node1", PRIMARY, rec) is None
    refused = source_refusal("g", "node1", SB1, rec)
    assert isinstance(refused, SameDatabase) and "standby sb1" in refused.message


def test_the_applier_refuses_before_it_prepares_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.base import ApplyState
    from tests.unit.test_runners import apply, config

    monkeypatch.setattr(agent, "BACKOFF_START_S", 0.01)
    log, store = MemoryRedoLog(), []
    standby = MemoryStandby("bank")
    standby.db.state = ApplyState("g", "sb", log.topic, 0, 0, "0/1", b"\x01", 0, 0, 0)
    # The primary's identity as the capture recorded it: the standby entry points at that very database.
    memory_channel(store).publish(record("node-identity", "p", role="primary", identity=standby.identity.key,
                                         label="x").body, "p")
    err = apply(config(), standby, log, store).wait_exit()
    assert isinstance(err, SameDatabase) and err.exit_code == ExitCode.SAME_DATABASE
    assert standby.prepared == 0 and standby.commits == []  # nothing was written, not even the read-only guard
