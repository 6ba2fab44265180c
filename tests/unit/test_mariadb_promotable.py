"""MariaDB ``ark check --promotable``: what the standby lacks of the primary, each with its fix (pure compare)."""

from __future__ import annotations

from dataclasses import replace

from consumers.mariadb.promotable import Inventory, TableFacts, compare

T = "bank.history"


def _facts(**over: object) -> TableFacts:
    base = TableFacts(columns={"id": ("bigint(20)", True), "note": ("varchar(20)", False)},
                      names={"id": "id", "note": "note"}, auto_increment="id",
                      indexes={("note",): ("by_note", False)}, foreign_keys={"fk": "note->bank.notes.note"}, rows=10)
    return replace(base, **over)  # type: ignore[arg-type]


def _inv(facts: TableFacts | None, sequences: dict[str, tuple[str, int, int, int]] | None = None) -> Inventory:
    return Inventory({T: facts} if facts else {}, sequences or {})


SEQ = "START WITH 1 MINVALUE 1 MAXVALUE 9223372036854775806 INCREMENT BY 1 CACHE 1000 NOCYCLE"


def test_an_equal_standby_lacks_nothing() -> None:
    mine, theirs = _inv(_facts(), {"bank.s": (SEQ, 1001, 1, 1)}), _inv(_facts(), {"bank.s": (SEQ, 2001, 1, 1)})
    assert compare(mine, theirs, "sb") == []


def test_each_lack_is_named_with_its_fix() -> None:
    mine = _inv(_facts(), {"bank.s": (SEQ, 1001, 1, 1), "bank.r": (SEQ, 5001, 1, 1)})
    theirs = _inv(_facts(auto_increment="", indexes={}, foreign_keys={}, rows=9,
                         columns={"id": ("bigint(20)", True), "note": ("varchar(30)", False)}),
                  {"bank.r": (SEQ, 1001, 1, 1)})
    lacks = {(lack.subject, lack.fix.split()[0]) for lack in compare(mine, theirs, "sb")}
    assert lacks == {("column bank.history.note", "ark"), ("column bank.history.id", "ALTER"),
                     ("index bank.history.by_note", "CREATE"), ("foreign key bank.history.fk", "add"),
                     ("table bank.history", "wait"), ("sequence bank.s", "CREATE"), ("sequence bank.r", "SELECT")}
    fixes = " ".join(lack.fix for lack in compare(mine, theirs, "sb"))
    assert "MODIFY `id` bigint(20) NOT NULL AUTO_INCREMENT" in fixes and "SETVAL(`bank`.`r`, 5000)" in fixes


def test_a_missing_sequence_never_used_needs_no_setval() -> None:
    (lack,) = compare(_inv(None, {"bank.s": (SEQ, 1, 1, 1)}), _inv(None), "sb")
    assert lack.fix == f"CREATE SEQUENCE `bank`.`s` {SEQ}  -- on the standby"


def test_a_missing_table_is_a_resync() -> None:
    (lack,) = compare(_inv(_facts()), _inv(None), "sb")
    assert lack.subject == f"table {T}" and lack.fix == f"ark resync sb --table {T}"
