"""The approval screen: exactly what will be granted, read from the operator-signed request
(never from the controller's unsigned fields), then approve (maybe shorter) or reject."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from bgtui import actions, sessionview
from bgtui.client import ControllerClient, View, verified_request
from bgtui.protocol.errors import Refused
from bgtui.protocol.objects import Request, Signed
from bgtui.protocol.timefmt import format_duration, parse_duration
from bgtui.screens.base import BgScreen
from bgtui.screens.common import age_text, left_text
from bgtui.screens.modals import ReasonScreen, show_error


class ApprovalScreen(BgScreen):
    """Review one pending request and sign a decision with the approver's key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="back", tooltip="Back to the inbox."),
        Binding("a", "approve", "Approve", id="approve", tooltip="Sign an approval."),
        Binding("r", "reject", "Reject", id="reject", tooltip="Sign a rejection, with a reason."),
    ]

    decidable: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, rid: str) -> None:
        super().__init__()
        self.rid = rid
        self.signed: Signed | None = None
        self.req: Request | None = None
        self.shown: View | None = None

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="approval"):
            yield Label(f"Review request {self.rid}", classes="title")
            yield Static("", id="verdict")
            yield Static("", id="grant")
            yield Label("Approve for (shorter than requested is allowed, never longer)")
            yield Input(id="approve-duration", placeholder="as requested")
            yield Label("", id="duration-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Approve (a)", id="approve", variant="success")
                yield Button("Reject (r)", id="reject", variant="error")
            yield Label("", id="decision-error", classes="error")

    def refresh_views(self, rid: str | None) -> None:
        super().refresh_views(rid)
        if rid is not None and rid != self.rid:
            return
        view = self.bg.view(self.rid)
        if view is None:
            return
        self.shown = view
        verdict = self.query_one("#verdict", Static)
        try:
            self.signed, self.req = verified_request(view)
        except Refused as exc:
            self.signed = self.req = None
            verdict.update(Text(f"✗ DO NOT APPROVE: {exc}", style="bold red"))
            self.decidable = False
            return
        now = self.bg.clock()
        line = Text("✓ operator signature verified", style="bold green")
        line.append(
            f"   state {view.get('state')} · asked {age_text(view.get('created_at'), now)} ago"
            f" · request window {left_text(view.get('window_ends_at'), now)}",
            style="",
        )
        verdict.update(line)
        self.decidable = view.get("state") == "pending"
        self._show_grant()

    def _duration(self) -> int | None:
        """The shortened duration typed, None for as requested; raises Refused when invalid."""
        text = self.query_one("#approve-duration", Input).value.strip()
        if not text:
            return None
        seconds = parse_duration(text)
        if self.req is not None and seconds > self.req.requested_duration:
            raise Refused(
                f"{format_duration(seconds)} is longer than the "
                f"{format_duration(self.req.requested_duration)} requested"
            )
        return seconds

    def _show_grant(self) -> None:
        if self.req is None or self.signed is None or self.shown is None:
            return
        try:
            duration = self._duration() or self.req.requested_duration
            show_error(self.query_one("#duration-error", Label), "")
        except Refused as exc:
            duration = self.req.requested_duration
            show_error(self.query_one("#duration-error", Label), str(exc))
        needed = int(self.shown.get("approvals_needed") or 0)
        required = int(self.shown.get("approvals_required") or needed)
        lines = sessionview.decision_lines(
            self.req,
            digest=self.signed.digest,
            operator_name=str(self.shown.get("operator")),
            decision="approve",
            duration=duration,
            approvals_needed=needed,
        )
        lines.insert(0, f"approvals still needed: {needed} of {required}")
        self.query_one("#grant", Static).update(Text("\n".join(lines)))

    @on(Input.Changed, "#approve-duration")
    def _duration_changed(self) -> None:
        self._show_grant()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            return self.decidable
        return True

    @on(Button.Pressed, "#approve")
    def action_approve(self) -> None:
        if not self.decidable:
            return
        try:
            duration = self._duration()
        except Refused as exc:
            show_error(self.query_one("#decision-error", Label), str(exc))
            return
        self._sign("approve", duration, "")

    @on(Button.Pressed, "#reject")
    def action_reject(self) -> None:
        if not self.decidable:
            return

        def given(reason: str | None) -> None:
            if reason:
                self._sign("reject", None, reason)

        self.app.push_screen(ReasonScreen(f"Reject {self.rid}: why? (the operator sees it)"), given)

    def _sign(self, decision: str, duration: int | None, reason: str) -> None:
        app, view = self.bg, self.shown
        if app.identity is None or app.signer is None or view is None:
            return
        identity, signer = app.identity, app.signer
        rid = self.rid

        def decide(client: ControllerClient) -> View:
            controller_id = app.memory.info.get("controller_id") or client.info()["controller_id"]
            checked = actions.decidable(view, controller_id=str(controller_id), duration=duration)
            approval = actions.sign_decision(
                checked, identity=identity, signer=signer, decision=decision, reason=reason
            )
            return client.decide(rid, approval)

        verb = "approved" if decision == "approve" else "rejected"
        app.call(f"{verb} {rid}", decide)
        self.dismiss()
