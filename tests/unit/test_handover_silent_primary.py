"""A failover asks an old primary that did not answer its fence only once (found by F25, a host that lost power).

Each try at a host that is gone waits out the whole connect timeout (OLD_PRIMARY_TIMEOUT_S): before the fix the
sequences step tried again after the fence had found nobody there, and the failover waited 3 s more for nothing
(F25: promotion 12.6 s after the death instead of 9.6 s). An old primary that answered the fence is still asked
for its sequences.
"""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import ArkError
from common.node_ops import FenceReport, Sequence, SequenceReport
from failover import handover as handover_mod
from failover.handover import Handover, Report


class _Channel:
    def __init__(self) -> None:
        self.published: list[Any] = []

    def publish(self, body: Any, key: str) -> None:
        self.published.append((body, key))


class _OldOps:
    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def fence(self, grace_s: float) -> FenceReport:
        if not self.answers:
            raise ArkError("node old cannot be reached: timeout expired")
        return FenceReport(grace_s, 0, "0/0")

    def sequences(self) -> dict[str, Sequence]:
        if not self.answers:
            raise ArkError("node old cannot be reached: timeout expired")
        return {"public.s": Sequence(7)}

    def close(self) -> None:
        pass


class _NewOps:
    def set_sequences(self, values: dict[str, Sequence]) -> SequenceReport:
        return SequenceReport(len(values), 0)


def _handover() -> Handover:
    h = Handover.__new__(Handover)  # no Kafka: only the two steps that talk to the old primary run here
    h.cfg = None  # type: ignore[assignment]
    h.say = lambda _line: None
    h.channel = _Channel()  # type: ignore[assignment]
    h._last = 0.0
    h._silent = set()
    return h


@pytest.mark.parametrize("answers, asked", [(False, 1), (True, 2)])
def test_the_old_primary_is_asked_for_its_sequences_only_if_it_answered_the_fence(monkeypatch: pytest.MonkeyPatch,
                                                                                  answers: bool, asked: int) -> None:
    calls: list[str] = []

    def node_ops(_cfg: Any, name: str, **_kw: Any) -> _OldOps:
        calls.append(name)
        return _OldOps(answers)

    monkeypatch.setattr(handover_mod, "node_ops", node_ops)
    h, report = _handover(), Report("failover", 1, "old", "new")
    h._fence_if_reachable("old", 0, report)
    h.sync_sequences("new", _NewOps(), report)  # type: ignore[arg-type]
    assert calls == ["old"] * asked
    if answers:
        assert not any("not copied" in n for n in report.notes)
    else:
        assert any("not copied: old does not answer (it did not answer the fence" in n for n in report.notes)
