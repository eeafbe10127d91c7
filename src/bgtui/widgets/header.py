"""The top line of every screen: who you are and the controller you are connected to."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label

STATE_MARKS = {
    "connected": ("●", "connected"),
    "connecting": ("○", "connecting…"),
    "reconnecting": ("◌", "reconnecting…"),
    "offline": ("✕", "offline (cached, read-only)"),
}


def short_fingerprint(fingerprint: str) -> str:
    """`SHA256:lbmsoA0yIEcEiVDR…`: enough to recognise a key; the help screen has it whole."""
    return fingerprint if len(fingerprint) <= 24 else fingerprint[:23] + "…"


class BgHeader(Widget):
    """Identity (name, role, fingerprint) on the left; controller and link state on the right.

    The link state never gets cut. When the line is too narrow for everything, the controller's
    address goes first (its id stays), then the identity is shortened.
    """

    DEFAULT_CSS = """
    BgHeader {
        dock: top;
        height: 1;
        layout: horizontal;
        background: $panel;
    }
    BgHeader #identity { width: 1fr; height: 1; }
    BgHeader #link { width: auto; height: 1; padding: 0 1; }
    BgHeader.-connected #link { color: $text-success; }
    BgHeader.-reconnecting #link, BgHeader.-connecting #link { color: $text-warning; }
    BgHeader.-offline #link { color: $text-error; text-style: bold; }
    """

    who: reactive[str] = reactive("no identity")
    role: reactive[str] = reactive("")
    fingerprint: reactive[str] = reactive("")
    controller: reactive[str] = reactive("")
    """The controller's id, once it has said it."""
    address: reactive[str] = reactive("")
    """Where the controller is reached (`unix:PATH`, `https://…`)."""
    state: reactive[str] = reactive("connecting")

    def compose(self) -> ComposeResult:
        yield Label(id="identity")
        yield Label(id="link")

    def on_mount(self) -> None:
        self._redraw()

    def watch_who(self) -> None:
        self._redraw()

    def watch_role(self) -> None:
        self._redraw()

    def watch_fingerprint(self) -> None:
        self._redraw()

    def watch_controller(self) -> None:
        self._redraw()

    def watch_address(self) -> None:
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def watch_state(self, state: str) -> None:
        for name in STATE_MARKS:
            self.set_class(state == name, f"-{name}")
        self._redraw()

    def link_text(self, with_address: bool = True) -> str:
        mark, label = STATE_MARKS.get(self.state, ("?", self.state))
        address = self.address if with_address or not self.controller else ""
        where = " ".join(part for part in (self.controller, address) if part)
        return f"{where or 'no controller'}  {mark} {label}"

    def _identity(self, with_fingerprint: bool) -> Text:
        left = Text(no_wrap=True, overflow="ellipsis")
        left.append(" bgtui ", style="bold reverse")
        left.append(f" {self.who}", style="bold")
        if self.role:
            left.append(f" · {self.role}")
        if self.fingerprint and with_fingerprint:
            left.append(f" · {short_fingerprint(self.fingerprint)}", style="dim")
        return left

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        width = self.size.width or 10_000  # not laid out yet: everything, until the resize
        left, link = self._identity(True), self.link_text()
        if left.cell_len + len(link) + 2 > width:
            link = self.link_text(with_address=False)
        if left.cell_len + len(link) + 2 > width:
            left = self._identity(False)
        self.query_one("#identity", Label).update(left)
        self.query_one("#link", Label).update(Text(link, no_wrap=True))

    def render_text(self) -> str:
        """The whole line as plain text (for tests and logs)."""
        identity = f"{self.who} · {self.role} · {self.fingerprint}"
        return f"{identity} | {self.link_text()}"
