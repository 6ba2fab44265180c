"""The controller logs its sentence when it says something new, not when only a number moved."""

from __future__ import annotations

import logging

import pytest

from common.config import ArkConfig
from failover.automation import LOG_EVERY_S, Controller
from failover.controller import Settings


def test_numbers_alone_do_not_make_a_new_line(caplog: pytest.LogCaptureFixture) -> None:
    body = Controller.__new__(Controller)
    body._logged = ("", 0.0)
    caplog.set_level(logging.INFO, logger="failover.automation")
    said = ["primary n1 healthy, epoch 0; standbys n2 (lag 3)", "primary n1 healthy, epoch 0; standbys n2 (lag 40)",
            "primary n1 silent for 5.2 s (ttl 5 s): failing over to n2",
            "primary n1 healthy, epoch 0; standbys n2 (lag 1)"]
    for t, sentence in enumerate(said):
        body._say(sentence, float(t))
    body._say(said[-1], 3.0 + LOG_EVERY_S)
    body._say("primary n1 healthy, epoch 1; standbys n2 (lag 1)", 4.0 + LOG_EVERY_S)  # a new epoch is news
    assert [r.getMessage() for r in caplog.records] == [said[0], said[2], said[3], said[3],
                                                        "primary n1 healthy, epoch 1; standbys n2 (lag 1)"]


def test_a_bad_ttl_is_refused_with_a_fix() -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        Controller(ArkConfig.model_construct(), lambda _t: None, settings=Settings(ttl_s=0))  # refused first
    assert err.value.fix
