"""The console's modal dialogs: a question with a value (delay, table), the confirmation every
action goes through before its intent is written, and the help."""

from __future__ import annotations

from collections.abc import Callable

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

DIALOG_CSS = """
ConfirmScreen, AskScreen, HelpScreen { align: center middle; }
#dialog { width: 76; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 0 1; }
#dialog.ask { border: thick $accent; }
#dialog.help { width: 106; max-height: 100%; }
#question { text-style: bold; margin-bottom: 1; }
#detail { color: $text-muted; margin-bottom: 1; }
#error { color: $error; height: auto; }
#buttons { height: auto; align-horizontal: right; }
#buttons Button { margin-left: 2; }
"""


class ConfirmScreen(ModalScreen[bool]):
    """'Write this intent?' — y / enter on Yes writes it; n / escape does nothing."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No", show=False)]

    def __init__(self, question: str, detail: str, yes: str = "Yes, write it [y]") -> None:
        super().__init__()
        self.question, self.detail, self.yes = question, detail, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(escape(self.question), id="question")
            yield Static(escape(self.detail), id="detail")
            with Horizontal(id="buttons"):
                yield Button(escape(self.yes), id="yes", variant="warning")
                yield Button(escape("No [n]"), id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # enter alone never writes an intent

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class AskScreen(ModalScreen[str | None]):
    """One value, checked before the dialog closes (``check`` returns an error sentence or None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, placeholder: str, check: Callable[[str], str | None], value: str = "") -> None:
        super().__init__()
        self.question, self.placeholder, self.check, self.value = question, placeholder, check, value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="ask"):
            yield Static(escape(self.question), id="question")
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            yield Static("", id="error")
            yield Static("enter: next (you confirm before anything is written) · escape: cancel", id="detail")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        problem = self.check(event.value.strip())
        if problem:
            self.query_one("#error", Static).update(escape(problem))
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """Keys
  1 2 3        the Group, Agents and Events tabs; arrows move in the shown table
  d            change the apply delay of the selected standby
  p / r        pause / resume apply on the selected standby
  t            resync one table of the selected standby
  v            verify the selected standby against the primary
  s            switch over to the selected standby: the console first says whether it may go (and
               if not, why and what to do); only then does it ask, and runs 'ark switchover' with
               its default grace (5 s) and timeout (120 s), showing each step on the Group tab
  f5           refresh now (the console refreshes by itself)
  ?            this help;  q  quit (while a switchover runs: press q twice; it goes on to its end)

Every action asks for confirmation first, and is written as a signed intent on the group's control
topic (or runs the CLI's own code: verify, switchover), never behind the controller's back.

Failover is deliberately not offered here: promoting a standby when the primary is gone is a decision
to take after 'ark failover TARGET --dry-run' (which standby is most advanced, how long it would take,
what the old primary keeps), then 'ark failover TARGET' from a shell. A demoted former primary comes
back with 'ark reinstate NODE'."""


class HelpScreen(ModalScreen[None]):
    """The keys, the actions, and why failover is not one of them."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", "Close", show=False),
                Binding("enter", "close", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="ask help"):
            yield Static(escape(HELP), id="help")

    def action_close(self) -> None:
        self.dismiss(None)
