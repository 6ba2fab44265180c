"""librdkafka's own log lines, through Python logging, and each kind at most once every 10 s.

Left to itself librdkafka writes its log lines straight to stderr, and while a broker is down it writes one line
per failed connection: measured here (librdkafka 2.16, a refused connection), 20 lines a second per client, whatever
``reconnect.backoff.ms`` says for connections refused at once. Every Ark process holds several clients, so an
outage of a minute wrote thousands of identical lines into each service's journal. Routed through
:data:`LIBRDKAFKA` instead, a line of the same facility from the same client is kept at most once per
:data:`EVERY_S`, with the count of those it stands for, and it goes wherever the process's logging goes (the
console's log file, a service's stderr). librdkafka hands these lines over when the client is polled, which every
Ark client is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: One line of a kind (level, facility, client) per this many seconds.
EVERY_S = 10.0


class RepeatFilter(logging.Filter):
    """Lets the first line of a kind through, drops the repeats for :data:`EVERY_S`, and adds their count to the next
    line of that kind that goes through."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self._seen: dict[tuple[object, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        # confluent-kafka logs ("%s [%s] %s", facility, client name, text): the kind is the facility and the client.
        key: tuple[object, ...] = (record.levelno, *args[:2]) if len(args) == 3 else (record.levelno, record.msg)
        now = self.clock()
        last, repeats = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.every_s:
            self._seen[key] = (last, repeats + 1)
            return False
        self._seen[key] = (now, 0)
        if repeats:
            record.msg = f"{record.msg} (and %d more like it in the last %.0f s)"
            record.args = (*args, repeats, now - last)
        return True


LIBRDKAFKA = logging.getLogger("ark.librdkafka")
LIBRDKAFKA.addFilter(RepeatFilter())
