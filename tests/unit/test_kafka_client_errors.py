"""A broker outage makes each client report a refused connection every second (reconnect.backoff.max.ms 1 s): the
log gets one line per error code per CLIENT_ERROR_EVERY_S, with the count of what it left out (before: 3,735 lines
in one controller's log over a 2-minute outage of F26)."""

from __future__ import annotations

import logging

import pytest

from common import kafka


class _Err:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return f"error {self._code}"


def test_repeats_of_one_error_are_counted_not_logged(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kafka, "_client_errors", {})
    caplog.set_level(logging.WARNING, logger="common.kafka")
    logged = [kafka._log_client_error(_Err(code), clock=lambda t=t: t)
              for t, code in [(0.0, -195), (1.0, -195), (2.0, -187), (5.0, -195), (10.5, -195), (11.0, -195)]]
    assert logged == [True, False, True, False, True, False]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["kafka: error -195", "kafka: error -187",
                     "kafka: error -195 (and 2 more like it in the last 10 s)"]
