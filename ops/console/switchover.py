"""The console's switchover: decide, confirm, then run ``ark switchover`` in a worker thread.

The decision shown first is failover/plan.decide_switchover on what the console knows (roles replayed from the
control topic, the appliers' and the capture's fresh heartbeats): a refusal says why and what to do, and changes
nothing. Only a "go" asks for confirmation. The switchover itself is ops.handover.run_switchover, the CLI's own
code (it decides again on its own fresh view), run in a thread so the console stays responsive; each step line
it says is shown on the Group tab as it comes. One switchover at a time; failover is not offered (see HELP).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual.widgets import Static

from common.errors import ArkError, HandoverFailed, HandoverRefused
from ops.console.dialogs import ConfirmScreen
from ops.console.model import switchover_decision
from ops.console.source import SWITCHOVER_GRACE_S, SWITCHOVER_TIMEOUT_S

if TYPE_CHECKING:
    from ops.console.app import ArkConsole

log = logging.getLogger(__name__)

#: A second quit within this many seconds leaves while a switchover runs (it goes on to its end).
QUIT_AGAIN_S = 5.0
#: Step lines shown on the Group tab (fewer in a small terminal, where the standbys must stay in sight).
SHOWN_STEPS, SHOWN_STEPS_SMALL = 12, 4


def _fix(exc: ArkError) -> str:
    return f" (fix: {exc.fix})" if exc.fix else ""


class SwitchoverAction:
    """The switchover action of one console app (``app``: its screens, source and event feed)."""

    def __init__(self, app: ArkConsole) -> None:
        self.app = app
        #: The target of the switchover running now (None: none runs).
        self.running: str | None = None
        #: What the running (or last) switchover said, oldest first.
        self.lines: list[str] = []
        self._quit_asked = 0.0

    def start(self) -> None:
        """``s``: decide on the selected standby, then ask, then run."""
        app = self.app
        if self.running is not None:
            app.say_outcome(f"switchover not started: the switchover to {self.running} is still running; its "
                            "outcome shows on the Group tab", "error")
            return
        target = app.selected_standby()
        if target is None or app.view is None:
            return
        decision = switchover_decision(app.view, target)
        if not decision.go:
            app.say_outcome(f"switchover to {target} refused: {decision.sentence}; nothing was changed"
                            + (f" (fix: {decision.fix})" if decision.fix else ""), "error", refresh=False)
            return
        primary = app.view.roles.primary if app.view.roles else "the primary"
        detail = "\n".join([decision.sentence + ".", *(f"· {n}" for n in decision.notes),
                            f"Runs 'ark switchover {target}': {primary} turns read-only (writing sessions get "
                            f"{SWITCHOVER_GRACE_S:g} s, then end), the capture drains it, {target} applies up to the "
                            f"end-of-epoch marker and is promoted; each step waits at most {SWITCHOVER_TIMEOUT_S:g} s "
                            "and shows on the Group tab."])

        def answered(yes: bool | None) -> None:
            if not yes:
                app.say_outcome(f"switchover to {target}: cancelled, nothing changed", "info", refresh=False)
            elif self.running is not None:  # another one began while this dialog was open
                app.say_outcome(f"switchover to {target} not started: the switchover to {self.running} is running",
                                "error")
            else:
                self._run(target)

        app.push_screen(ConfirmScreen(f"Switch over from {primary} to {target}?", detail,
                                      yes="Yes, switch over [y]"), answered)

    def _run(self, target: str) -> None:
        self.running = target
        self.lines = []
        self._said(f"{time.strftime('%H:%M:%S')} switchover to {target} started")
        self.app.run_worker(lambda: self._work(target), name="switchover", group="switchover", thread=True,
                            exit_on_error=False)

    def _work(self, target: str) -> None:
        """In the worker thread: run it, then hand the outcome to the app's thread."""
        app = self.app

        def say(line: str) -> None:
            log.info("switchover to %s: %s", target, line)
            self._to_app(self._said, line)

        try:
            report = app.source.actions.switchover(target, say)
        except HandoverRefused as exc:
            outcome = (f"switchover to {target} refused (exit {int(exc.exit_code)}): {exc.message}{_fix(exc)}",
                       "error")
        except HandoverFailed as exc:
            outcome = (f"switchover to {target} stopped part-way (exit {int(exc.exit_code)}): {exc.message}"
                       f"{_fix(exc)}", "error")
        except ArkError as exc:
            outcome = (f"switchover to {target} not done (exit {int(exc.exit_code)}): {exc.message}{_fix(exc)}",
                       "error")
        except Exception as exc:  # noqa: BLE001 - worker boundary: the console must hear the outcome and allow another
            outcome = (f"switchover to {target} stopped: {type(exc).__name__}: {exc}; 'ark topology' shows where the "
                       "group is", "error")
        else:
            outcome = (f"switchover to {target} done in {report.seconds:.2f} s: {report.primary} is the primary of "
                       f"epoch {report.epoch}", "info")
        log.info("%s", outcome[0])
        self._to_app(self._finished, *outcome)

    def _to_app(self, fn: Callable[..., None], *args: Any) -> None:
        """Hand ``fn(*args)`` to the app's thread; never raises into the switchover (whose step must go on when
        the console has been left: its lines are in the console's log and its steps on the control topic)."""
        try:
            self.app.call_from_thread(fn, *args)
        except RuntimeError as exc:  # the app has exited
            log.debug("console gone, not shown: %s", exc)

    def _said(self, line: str) -> None:
        self.lines.append(line)
        self.show()

    def _finished(self, sentence: str, severity: str) -> None:
        self.running = None
        self._said(sentence)
        self.app.say_outcome(sentence, severity)

    def show(self) -> None:
        """The step lines on the Group tab (hidden until a switchover runs)."""
        panel = self.app.query_one("#handover", Static)
        head = (f"[b]switchover to {escape(self.running)} running[/b] (q asks before leaving)" if self.running
                else "[b]last switchover from this console[/b]")
        shown = SHOWN_STEPS if self.app.size.height >= 40 else SHOWN_STEPS_SMALL
        panel.update("\n".join([head, *(escape(line) for line in self.lines[-shown:])]))
        panel.set_class(bool(self.lines), "shown")

    def blocks_quit(self) -> bool:
        """True (and says why) at the first quit while a switchover runs: leaving would hide its outcome. A
        second quit within :data:`QUIT_AGAIN_S` leaves; the switchover goes on to its end in this process
        (the terminal is given back; the process exits when it is done)."""
        if self.running is None:
            return False
        now = time.monotonic()
        if now - self._quit_asked < QUIT_AGAIN_S:
            log.warning("console left while the switchover to %s runs; it goes on to its end", self.running)
            return False
        self._quit_asked = now
        self.app.notify(f"a switchover to {self.running} is running: its steps show on the Group tab. Press q again "
                        f"within {QUIT_AGAIN_S:g} s to leave anyway (it goes on to its end; 'ark topology' shows it)",
                        severity="warning", timeout=QUIT_AGAIN_S)
        return True
