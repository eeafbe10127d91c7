"""One request and its session: state, countdown, each plane's progress, everything granted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Label, Static

from bgtui import sessionview
from bgtui.screens import session_actions
from bgtui.screens.base import BgScreen
from bgtui.screens.common import state_label
from bgtui.screens.session_actions import SESSION_BINDINGS
from bgtui.widgets.countdown import Countdown
from bgtui.widgets.planes import PlanesView, plane_summary


class SessionScreen(BgScreen):
    """The detail of one of my requests, updated live from the event stream."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="back", tooltip="Back to the list."),
        *SESSION_BINDINGS,
    ]

    def __init__(self, rid: str) -> None:
        super().__init__()
        self.rid = rid

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="session-body"):
            yield Label("", id="title", classes="title")
            yield Label("", id="state", classes="state")
            yield Countdown(self.bg.clock, id="countdown")
            yield Label("Planes", classes="section")
            yield PlanesView(id="planes")
            yield Label("Request", classes="section")
            yield Static("", id="details")

    def refresh_views(self, rid: str | None) -> None:
        super().refresh_views(rid)
        if rid is not None and rid != self.rid:
            return
        view = self.bg.view(self.rid)
        if view is None:
            self.query_one("#title", Label).update(Text(f"request {self.rid} (not known yet)"))
            return
        state = str(view.get("state"))
        self.query_one("#title", Label).update(
            Text(f"{view.get('resource')} · {view.get('privilege')} · {self.rid}")
        )
        line = Text(state_label(view), style="bold")
        if state == "activating":
            line.append(f"  {plane_summary(view.get('planes') or [])}")
        elif state != "active":
            said = sessionview.state_line(view, self.bg.clock()).removeprefix(state).strip()
            if said:
                line.append(f"  {said}")
        self.query_one("#state", Label).update(line)
        for name in ("pending", "activating", "active", "ending", "ended"):
            self.set_class(state == name, f"-{name}")
        self.query_one(Countdown).expires_at = view.get("expires_at") if state == "active" else None
        self.query_one(PlanesView).show(view.get("planes") or [])
        lines = sessionview.show_lines(view, None, "", self.bg.clock())
        self.query_one("#details", Static).update(Text("\n".join(lines)))
        self.refresh_bindings()

    def _resource(self) -> dict[str, Any] | None:
        view = self.bg.view(self.rid)
        for item in self.bg.memory.resources:
            if view is not None and item.get("name") == view.get("resource"):
                return item
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("withdraw", "end", "connect", "save_credentials"):
            return session_actions.action_allowed(action, self.bg.view(self.rid), self._resource())
        return True

    def action_withdraw(self) -> None:
        session_actions.withdraw(self.bg, self.rid)

    def action_end(self) -> None:
        session_actions.end(self.bg, self.rid)

    def action_connect(self) -> None:
        session_actions.connect(self.bg, self.rid, self._resource())

    def action_save_credentials(self) -> None:
        session_actions.save_credentials(self.bg, self.rid)
