"""The failover's end-of-epoch marker is written again when a capture's writer fences it (F22)."""

from __future__ import annotations

import pytest

from common.errors import FencedError
from failover.handover import write_unless_fenced


def test_a_marker_fenced_by_a_retrying_capture_is_written_again() -> None:
    tries: list[int] = []

    def write() -> int:
        tries.append(1)
        if len(tries) < 3:
            raise FencedError("capture of group g was fenced by a newer capture (same transactional.id)")
        return 42

    assert write_unless_fenced(write, tries=5, pause_s=0) == 42
    assert len(tries) == 3


def test_a_marker_fenced_every_time_fails_the_failover_naming_it() -> None:
    def write() -> int:
        raise FencedError("fenced")

    with pytest.raises(FencedError):
        write_unless_fenced(write, tries=3, pause_s=0)


def test_other_errors_are_not_retried() -> None:
    tries: list[int] = []

    def write() -> int:
        tries.append(1)
        raise TimeoutError("the broker does not answer")

    with pytest.raises(TimeoutError):
        write_unless_fenced(write, tries=3, pause_s=0)
    assert len(tries) == 1
