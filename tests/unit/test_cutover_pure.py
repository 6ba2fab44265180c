"""The pure part of ``ark cutover``: which column counters the target gets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from common.errors import ArkError, HandoverRefused
from common.node_ops import FenceReport, Sequence
from ops.cutover import column_sequences
from schemas.entries import Column, TableMeta


def _meta(table: str, default: str | None, neutral: str = "int32", key: int = 1) -> TableMeta:
    return TableMeta(table, (Column("id", neutral, "integer", False, key, default_expr=default),
                             Column("v", "string", "text")), "1")


def test_a_serial_key_gets_a_column_counter_with_its_sequence_value() -> None:
    source = {"shop.orders_id_seq": Sequence(last_value=41)}
    got = column_sequences(source, [_meta("shop.orders", "nextval('orders_id_seq'::regclass)"),
                                    _meta("shop.quoted", "nextval('\"shop\".\"q_seq\"'::regclass)"),
                                    _meta("shop.plain", None), _meta("shop.text_key", "nextval('s')", "string"),
                                    _meta("shop.no_key", "nextval('s')", key=0)])
    assert got["shop.orders_id_seq"] == Sequence(last_value=41)  # the sequence itself travels too
    assert got["shop.orders"] == Sequence(last_value=41, column="id")
    assert got["shop.quoted"] == Sequence(last_value=None, column="id")  # its sequence is not replicated: max(id)
    assert {"shop.plain", "shop.text_key", "shop.no_key"}.isdisjoint(got)


def test_mariadb_auto_increment_counters_are_kept_as_they_come() -> None:
    source = {"shop.orders": Sequence(last_value=7, column="id")}
    assert column_sequences(source, [_meta("shop.orders", None)]) == source


# -- whatever stops a cutover after the fence makes the source writable again ----------------------------------
class _Node:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def writable(self) -> bool:
        return True

    def fence(self, grace_s: float) -> FenceReport:
        self.calls.append("fence")
        return FenceReport(waited_s=0.0, sessions_ended=0, position="p1")

    def unfence(self) -> None:
        self.calls.append("unfence")

    def close(self) -> None:
        pass


class _Channel:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish(self, body: Any, target: str) -> str:
        self.sent.append(body)
        return "r"

    def close(self) -> None:
        pass


@pytest.mark.parametrize("failure", [RuntimeError("driver says no"), ArkError("verify could not hold", fix="x"),
                                     KeyboardInterrupt()])
def test_a_failure_after_the_fence_unfences_the_source(monkeypatch: pytest.MonkeyPatch, failure: BaseException
                                                       ) -> None:
    import ops.cutover as cut

    nodes = {"src": _Node(), "dst": _Node()}
    channel = _Channel()
    cfg = SimpleNamespace(primary=SimpleNamespace(name="src", engine="a"), standby=lambda n: SimpleNamespace(name=n))
    monkeypatch.setattr(cut, "check_ready", lambda *_a, **_k: {"state": "running"})
    monkeypatch.setattr(cut, "node_ops", lambda _cfg, name: nodes[name])
    monkeypatch.setattr(cut, "current_roles", lambda _cfg: SimpleNamespace(epoch=3))
    monkeypatch.setattr(cut.ControlChannel, "for_config", classmethod(lambda _cls, _cfg, start=None: channel))

    def verify(*_a: Any, **_k: Any) -> Any:
        raise failure

    monkeypatch.setattr(cut, "verify_standby", verify)
    run = cut.Cutover(cfg, "dst", grace_s=0, timeout_s=1, chunk_rows=10, max_lag_s=5,  # type: ignore[arg-type]
                      say=lambda _s: None)
    expected = KeyboardInterrupt if isinstance(failure, KeyboardInterrupt) else HandoverRefused
    with pytest.raises(expected) as caught:
        run.run()
    assert nodes["src"].calls == ["fence", "unfence"] and nodes["dst"].calls == []
    assert channel.sent == []  # no node-fenced record for a cutover undone
    if expected is HandoverRefused:
        assert "src is writable again" in caught.value.message
        assert "driver says no" not in caught.value.message  # a driver's text may quote a value: never shown
