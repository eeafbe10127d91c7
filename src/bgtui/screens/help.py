"""The help screen: every key that works where you are, with its binding id for config.toml."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static


class HelpScreen(ModalScreen[None]):
    """Keys of the screen below (enabled or not), and how to rebind them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "close", "Close", id="close-help", tooltip="Close help.")
    ]

    def __init__(self, below: Screen[Any]) -> None:
        super().__init__(classes="dialog")
        self.below = below

    def compose(self) -> ComposeResult:
        below = self.below
        text = Text()
        if below is not None:
            seen: set[str] = set()
            for active in below.active_bindings.values():
                binding = active.binding
                if binding.action in seen or not binding.id:  # no id: a widget's own keys
                    continue
                seen.add(binding.action)
                style = "" if active.enabled else "dim"
                shown = self.app.get_key_display(binding)
                text.append(f"{shown:>10}  ", style="bold " + style)
                text.append(f"{binding.description or binding.action:<16}", style=style)
                text.append(f" {binding.id or '-':<18}", style="dim")
                text.append(f" {binding.tooltip}\n", style=style)
        identity = getattr(self.app, "identity", None)
        with VerticalScroll(classes="dialog-box", id="help"):
            if identity is not None:
                yield Label(
                    Text(f"You are {identity.name} ({identity.role}) {identity.fingerprint}")
                )
            yield Label("Keys here (dim: not available right now)", classes="title")
            yield Static(text)
            yield Label(
                Text(
                    "Rebind any key by its id in config.toml of the client home, e.g.\n"
                    '[keymap]\napprove = "ctrl+a"\n\n'
                    "Arrows move in lists, Tab moves between them. Mouse: click rows, buttons "
                    "and footer keys. Ctrl+P lists every action."
                )
            )

    def action_close(self) -> None:
        self.dismiss(None)
