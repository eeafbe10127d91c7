"""Operator mode: the resource catalog above, my requests and sessions below, live."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Label

from bgtui.client import View
from bgtui.screens import session_actions
from bgtui.screens.base import BgScreen
from bgtui.screens.common import duration_text, newest_first, note_text, state_label
from bgtui.screens.request_form import RequestFormScreen
from bgtui.screens.session import SessionScreen
from bgtui.screens.session_actions import SESSION_BINDINGS
from bgtui.widgets.tables import selected_key, table_rows


class OperatorScreen(BgScreen):
    """Resources to ask for, and my requests with their live state."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "request", "Request", id="request", tooltip="Ask for the selected resource."),
        # priority: the focused table's own (hidden) enter binding would hide this one.
        Binding("enter", "open", "Open", id="open", tooltip="Open the selection.", priority=True),
        *SESSION_BINDINGS,
        Binding("tab", "app.focus_next", "Next pane", show=False, id="next-pane"),
    ]

    selection: reactive[str] = reactive("", bindings=True)
    """`resource:NAME` or `request:ID`: what the footer's keys act on."""

    def compose_body(self) -> Iterable[Widget]:
        yield Label("Resources", classes="section")
        catalog: DataTable[str] = DataTable(id="catalog", cursor_type="row")
        catalog.add_columns("NAME", "KIND", "NETWORK", "CREDENTIAL", "PRIVILEGES", "DESCRIPTION")
        yield catalog
        yield Label("My requests and sessions", classes="section")
        mine: DataTable[str] = DataTable(id="mine", cursor_type="row")
        mine.add_columns("ID", "STATE", "RESOURCE", "PRIVILEGE", "DURATION", "NOTE")
        yield mine

    def my_views(self) -> list[View]:
        me = self.bg.identity.fingerprint if self.bg.identity else None
        return newest_first([v for v in self.bg.views() if v.get("operator_fingerprint") == me])

    def refresh_views(self, rid: str | None) -> None:
        super().refresh_views(rid)
        now = self.bg.clock()
        rows = []
        for item in self.bg.memory.resources:
            description = str(item.get("description") or "")
            if item.get("available") is False:
                description = f"(unavailable: {item.get('unavailable_reason')}) {description}"
            rows.append(
                (
                    str(item.get("name")),
                    (
                        str(item.get("name")),
                        str(item.get("kind")),
                        str(item.get("network")),
                        ",".join(item.get("credential_sources") or []),
                        ",".join(item.get("privileges") or []),
                        description,
                    ),
                )
            )
        table_rows(self.query_one("#catalog", DataTable), rows)
        mine = [
            (
                str(v["id"]),
                (
                    str(v["id"]),
                    state_label(v),
                    str(v.get("resource")),
                    str(v.get("privilege")),
                    duration_text(v.get("approved_duration") or v.get("requested_duration")),
                    note_text(v, now),
                ),
            )
            for v in self.my_views()
        ]
        table_rows(self.query_one("#mine", DataTable), mine)
        self._track_selection()

    @on(DataTable.RowHighlighted)
    def _track_selection(self) -> None:
        focused = self.focused
        table_id = focused.id if isinstance(focused, DataTable) else "catalog"
        key = selected_key(self.query_one(f"#{table_id}", DataTable))
        kind = "resource" if table_id == "catalog" else "request"
        self.selection = f"{kind}:{key}" if key else ""
        self.refresh_bindings()

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:  # a click on the highlighted row
        self._track_selection()
        self.action_open()

    def on_descendant_focus(self) -> None:
        self._track_selection()

    # -- what the selection allows -----------------------------------------------------------
    def selected_view(self) -> View | None:
        kind, _, key = self.selection.partition(":")
        return self.bg.view(key) if kind == "request" else None

    def selected_resource(self) -> dict[str, Any] | None:
        kind, _, key = self.selection.partition(":")
        if kind == "request":
            view = self.bg.view(key)
            key = str(view.get("resource")) if view else ""
        for item in self.bg.memory.resources:
            if item.get("name") == key:
                return item
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        kind = self.selection.partition(":")[0]
        if action == "open":
            return bool(self.selection)
        if action == "request":
            resource = self.selected_resource() if kind == "resource" else None
            return resource is not None and resource.get("available") is not False
        if action in ("withdraw", "end", "connect", "save_credentials"):
            return session_actions.action_allowed(
                action, self.selected_view(), self.selected_resource()
            )
        return True

    def action_open(self) -> None:
        kind, _, key = self.selection.partition(":")
        if kind == "resource":
            self.action_request()
        elif kind == "request" and key:
            self.app.push_screen(SessionScreen(key))

    def action_request(self) -> None:
        resource = self.selected_resource()
        if resource is not None and resource.get("available") is not False:
            self.app.push_screen(RequestFormScreen(resource))

    def _rid(self) -> str:
        return self.selection.partition(":")[2]

    def action_withdraw(self) -> None:
        session_actions.withdraw(self.bg, self._rid())

    def action_end(self) -> None:
        session_actions.end(self.bg, self._rid())

    def action_connect(self) -> None:
        session_actions.connect(self.bg, self._rid(), self.selected_resource())

    def action_save_credentials(self) -> None:
        session_actions.save_credentials(self.bg, self._rid())
