"""The lease fold (failover/lease.py): every reader of the same records agrees on one holder."""

from __future__ import annotations

from failover.lease import LeaseBook, LeaseRecord

TTL = 5.0


def _fold(records: list[tuple[str, float, int]], book: LeaseBook | None = None) -> tuple[LeaseBook, list[bool]]:
    book = book or LeaseBook()
    counted = [book.fold(LeaseRecord(h, ttl, at, i)) for i, (h, ttl, at) in enumerate(records)]
    return book, counted


def test_the_first_claim_wins_and_a_racing_claim_is_void() -> None:
    book, counted = _fold([("a", TTL, 1000), ("b", TTL, 1010), ("a", TTL, 2600), ("b", TTL, 4000)])
    assert (book.holder, book.term) == ("a", 1)
    assert counted == [True, False, True, False]


def test_a_claim_takes_over_only_after_the_holder_s_lease_ran_out() -> None:
    book, counted = _fold([("a", TTL, 0), ("a", TTL, 1600), ("b", TTL, 6500), ("a", TTL, 6550)])
    assert counted == [True, True, False, True] and book.holder == "a"
    book, counted = _fold([("a", TTL, 0), ("a", TTL, 1600), ("b", TTL, 6601)])
    assert counted == [True, True, True] and (book.holder, book.term) == ("b", 2)


def test_a_late_renewal_of_the_old_holder_is_void() -> None:
    book, counted = _fold([("a", TTL, 0), ("b", TTL, 5500), ("a", TTL, 6000)])
    assert counted == [True, True, False] and book.holder == "b"


def test_a_holder_that_gives_the_lease_up_is_replaced_at_once() -> None:
    book, counted = _fold([("a", TTL, 0), ("a", 0.0, 100), ("b", TTL, 200)])
    assert counted == [True, True, True] and (book.holder, book.term) == ("b", 2)


def test_a_release_by_someone_else_changes_nothing() -> None:
    book, counted = _fold([("a", TTL, 0), ("b", 0.0, 100), ("a", TTL, 1600)])
    assert counted == [True, False, True] and book.holder == "a"


def test_a_reader_that_starts_inside_a_race_agrees_once_the_void_claim_runs_out() -> None:
    # Everyone else saw a claim first (a holds); a reader that starts at b's void claim thinks b holds until
    # b's claim runs out, then a's next renewal gives it the same holder as everyone else.
    late, counted = _fold([("b", TTL, 1010), ("a", TTL, 2600), ("a", TTL, 4200), ("a", TTL, 5800), ("a", TTL, 7400)])
    assert counted == [True, False, False, False, True] and late.holder == "a"


def test_the_same_holder_after_its_lease_ran_out_begins_a_new_term() -> None:
    book, _ = _fold([("a", TTL, 0), ("a", TTL, 9000)])
    assert (book.holder, book.term) == ("a", 2)
