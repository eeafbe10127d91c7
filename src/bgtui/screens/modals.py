"""Small typed dialogs: passphrase, reason, confirmation, file path, identity switcher."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

from bgtui.identity import Identity


def show_error(label: Label, message: str) -> None:
    """Shows `message` in an error label (as plain text), or hides the label when empty."""
    label.update(Text(message))
    label.display = bool(message)


CANCEL: list[BindingType] = [
    Binding("escape", "cancel", "Cancel", id="cancel", tooltip="Close without doing anything.")
]


class PassphraseScreen(ModalScreen[str | None]):
    """Asks for the passphrase of an encrypted identity key (None: cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = CANCEL

    def __init__(self, name: str, error: str | None = None) -> None:
        super().__init__(classes="dialog")
        self.identity_name = name
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(f"Passphrase for identity [b]{self.identity_name}[/b]")
            yield Input(password=True, id="passphrase", placeholder="passphrase")
            yield Label(id="error", classes="error")

    def on_mount(self) -> None:
        show_error(self.query_one("#error", Label), self.error or "")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value) if event.value else None

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReasonScreen(ModalScreen[str | None]):
    """Asks for a reason (rejections); refuses an empty one."""

    BINDINGS: ClassVar[list[BindingType]] = CANCEL

    def __init__(self, title: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text)
            yield Input(id="reason", placeholder="the operator reads this")
            yield Label("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Sign rejection", id="ok", variant="error")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        value = self.query_one("#reason", Input).value.strip()
        if not value:
            show_error(self.query_one("#error", Label), "a reason is required")
            return
        self.dismiss(value)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no, for actions that tear a session down."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *CANCEL,
        Binding("y", "yes", "Yes", id="confirm-yes", tooltip="Do it."),
        Binding("n", "cancel", "No", id="confirm-no", tooltip="Don't."),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="dialog")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.question)
            with Horizontal(classes="buttons"):
                yield Button("Yes", id="yes", variant="warning")
                yield Button("No", id="no")

    @on(Button.Pressed, "#yes")
    def action_yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(False)


class PathScreen(ModalScreen[Path | None]):
    """Asks where to write a file (a new one; nothing is overwritten)."""

    BINDINGS: ClassVar[list[BindingType]] = CANCEL

    def __init__(self, title: str, suggestion: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text)
            yield Input(self.suggestion, id="path")
            yield Label("written with mode 0600; an existing file is never overwritten")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(Path(event.value.strip()).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)


class IdentityScreen(ModalScreen[str | None]):
    """Picks one of the home's identities; the app switches to its role's mode."""

    BINDINGS: ClassVar[list[BindingType]] = CANCEL

    def __init__(self, identities: list[Identity], current: str | None) -> None:
        super().__init__(classes="dialog")
        self.identities = identities
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Use which identity?")
            options = [
                Option(
                    Text(
                        f"{'▸' if i.name == self.current else ' '} {i.name:<12} {i.role:<9} "
                        f"{i.fingerprint}"
                    ),
                    id=i.name,
                )
                for i in self.identities
            ]
            yield OptionList(*options, id="identities")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
