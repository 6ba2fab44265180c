"""Issue 9, item 8: what ark check / ark status say about the WAL the slot holds back (pure rules)."""

from __future__ import annotations

from producers.postgresql.wal import WalFacts, free_space, summary, warnings

GB = 1 << 30


def facts(**kw: object) -> WalFacts:
    base: dict[str, object] = dict(slot="ark_g", keep_size_mb=-1, slot_exists=True, held_bytes=2 * GB,
                                   wal_status="reserved", safe_wal_size=None, wal_dir_bytes=3 * GB,
                                   free_bytes=100 * GB, free_how="statvfs of /d/pg_wal (the primary is on this host)",
                                   retransmit_window_s=900.0)
    base.update(kw)
    return WalFacts(**base)  # type: ignore[arg-type]


def test_an_unbounded_slot_is_warned_in_check_with_the_alter_system_fix_but_not_in_status() -> None:
    found = warnings(facts())
    assert len(found) == 1 and "max_slot_wal_keep_size is -1" in found[0].what and not found[0].fatal
    assert "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'" in found[0].fix
    assert warnings(facts(), settings=False) == []
    text = summary(facts())
    assert "holds back 2 GB" in text and "unlimited (-1)" in text and "free under it: 100 GB" in text
    assert "900 s retransmit window" in text


def test_a_slot_holding_more_than_half_the_free_disk_and_a_lost_slot_are_named() -> None:
    near = warnings(facts(keep_size_mb=10240, held_bytes=60 * GB, free_bytes=100 * GB), settings=False)
    assert len(near) == 1 and "only 100 GB is free" in near[0].what
    lost = warnings(facts(keep_size_mb=10240, wal_status="lost"), settings=False)
    assert lost[0].fatal and "--accept-gap" in lost[0].fix
    close = warnings(facts(keep_size_mb=10240, safe_wal_size=GB), settings=False)
    assert "within 1 GB of max_slot_wal_keep_size" in close[0].what


def test_free_space_is_measured_only_where_it_can_be() -> None:
    free, how = free_space("db.example", "/var/lib/postgresql/15/main")
    assert free is None and "check /var/lib/postgresql/15/main/pg_wal there" in how
    free, how = free_space("127.0.0.1", None)
    assert free is None and "pg_read_all_settings" in how
