"""The console's modal dialogs: a question with a value (delay, table), and the confirmation every
action goes through before its intent is written."""

from __future__ import annotations

from collections.abc import Callable

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

DIALOG_CSS = """
ConfirmScreen, AskScreen { align: center middle; }
#dialog { width: 76; max-width: 100%; height: auto; border: thick $warning; background: $surface; padding: 0 1; }
#dialog.ask { border: thick $accent; }
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

    def __init__(self, question: str, detail: str) -> None:
        super().__init__()
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(escape(self.question), id="question")
            yield Static(escape(self.detail), id="detail")
            with Horizontal(id="buttons"):
                yield Button(escape("Yes, write it [y]"), id="yes", variant="warning")
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
