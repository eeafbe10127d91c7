"""Approver mode: the inbox of pending requests (newest first) and the active sessions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Label

from bgtui.client import View
from bgtui.screens.approval import ApprovalScreen
from bgtui.screens.base import BgScreen
from bgtui.screens.common import (
    LIVE_STATES,
    age_text,
    duration_text,
    left_text,
    newest_first,
    state_label,
)
from bgtui.screens.modals import ConfirmScreen
from bgtui.widgets.tables import selected_key, table_rows


class ApproverScreen(BgScreen):
    """Requests waiting for a decision, and sessions that can be revoked."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter",
            "review",
            "Review",
            id="review",
            tooltip="See exactly what it grants.",
            priority=True,  # else the focused table's hidden enter binding hides it
        ),
        Binding("v", "revoke", "Revoke", id="revoke", tooltip="Revoke the selected session."),
        Binding("tab", "app.focus_next", "Next pane", show=False, id="next-pane"),
    ]

    selection: reactive[str] = reactive("", bindings=True)

    def compose_body(self) -> Iterable[Widget]:
        yield Label("Inbox: pending requests, newest first", classes="section")
        inbox: DataTable[str] = DataTable(id="inbox", cursor_type="row")
        inbox.add_columns(
            "ID", "RESOURCE", "PRIVILEGE", "DURATION", "OPERATOR", "AGE", "WINDOW", "REASON"
        )
        yield inbox
        yield Label("Active sessions", classes="section")
        active: DataTable[str] = DataTable(id="active", cursor_type="row")
        active.add_columns("ID", "STATE", "RESOURCE", "PRIVILEGE", "OPERATOR", "TIME LEFT")
        yield active

    def refresh_views(self, rid: str | None) -> None:
        super().refresh_views(rid)
        now = self.bg.clock()
        views = newest_first(self.bg.views())
        pending = [v for v in views if v.get("state") == "pending"]
        live = [v for v in views if v.get("state") in LIVE_STATES]
        table_rows(
            self.query_one("#inbox", DataTable),
            [
                (
                    str(v["id"]),
                    (
                        str(v["id"]),
                        str(v.get("resource")),
                        str(v.get("privilege")),
                        duration_text(v.get("requested_duration")),
                        str(v.get("operator")),
                        age_text(v.get("created_at"), now),
                        left_text(v.get("window_ends_at"), now),
                        str(v.get("reason")),
                    ),
                )
                for v in pending
            ],
        )
        table_rows(
            self.query_one("#active", DataTable),
            [
                (
                    str(v["id"]),
                    (
                        str(v["id"]),
                        state_label(v),
                        str(v.get("resource")),
                        str(v.get("privilege")),
                        str(v.get("operator")),
                        left_text(v.get("expires_at"), now) if v.get("state") == "active" else "-",
                    ),
                )
                for v in live
            ],
        )
        self._track_selection()

    @on(DataTable.RowHighlighted)
    def _track_selection(self) -> None:
        focused = self.focused
        table_id = focused.id if isinstance(focused, DataTable) else "inbox"
        key = selected_key(self.query_one(f"#{table_id}", DataTable))
        self.selection = f"{table_id}:{key}" if key else ""

    def on_descendant_focus(self) -> None:
        self._track_selection()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:  # a mouse double-click on a row
        self._track_selection()
        self.action_review()

    def _selected_view(self) -> View | None:
        key = self.selection.partition(":")[2]
        return self.bg.view(key) if key else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = self._selected_view()
        if action == "review":
            return view is not None and view.get("state") == "pending"
        if action == "revoke":
            return view is not None and view.get("state") in ("activating", "active")
        return True

    def action_review(self) -> None:
        view = self._selected_view()
        if view is not None and view.get("state") == "pending":
            self.app.push_screen(ApprovalScreen(str(view["id"])))

    def action_revoke(self) -> None:
        view = self._selected_view()
        if view is None:
            return
        rid = str(view["id"])

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.bg.call(f"revoked {rid}", lambda c: c.revoke(rid))

        self.app.push_screen(
            ConfirmScreen(
                f"Revoke {view.get('operator')}'s session on {view.get('resource')} now? "
                "Everything minted for it is torn down."
            ),
            confirmed,
        )
