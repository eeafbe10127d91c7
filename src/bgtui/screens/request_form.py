"""The request form: privilege, credential source (only when several apply), duration and
reason, checked as you type; submitting signs the request with the operator's key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.validation import Function, ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select

from bgtui.actions import build_request
from bgtui.client import View
from bgtui.protocol.errors import Refused
from bgtui.protocol.timefmt import format_duration, now_utc, parse_duration
from bgtui.screens.base import BgScreen
from bgtui.screens.modals import show_error


class DurationValidator(Validator):
    """A duration the controller can grant: `90s`, `15m`, `1h30m`, at most the policy maximum."""

    def __init__(self, maximum: int | None) -> None:
        super().__init__()
        self.maximum = maximum

    def validate(self, value: str) -> ValidationResult:
        if not value.strip():
            return self.failure("a duration is required, like 30m or 1h30m")
        try:
            seconds = parse_duration(value)
        except Refused as exc:
            return self.failure(str(exc))
        if self.maximum and seconds > self.maximum:
            return self.failure(
                f"{format_duration(seconds)} is longer than this controller's "
                f"maximum of {format_duration(self.maximum)}"
            )
        return self.success()


class RequestFormScreen(BgScreen):
    """Ask for one resource."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Cancel", id="cancel-request", tooltip="Back."),
        Binding("ctrl+s", "submit", "Sign & send", id="submit", tooltip="Sign and submit."),
    ]

    AUTO_FOCUS = "#duration"

    def __init__(self, resource: dict[str, Any]) -> None:
        super().__init__()
        self.resource = resource
        self.privileges = [str(p) for p in resource.get("privileges") or []]
        self.sources = [str(s) for s in resource.get("credential_sources") or []]

    def compose_body(self) -> Iterable[Widget]:
        r = self.resource
        with VerticalScroll(id="form"):
            yield Label(Text(f"Request access to {r.get('name')}"), classes="title")
            yield Label(
                Text(
                    f"{r.get('kind')} at {r.get('address') or '-'} · network {r.get('network')}"
                    f" · {r.get('description') or ''}"
                ),
                id="resource-line",
            )
            for plane in r.get("planes") or []:
                does = f"  {plane.get('plane')}/{plane.get('provider')}: {plane.get('does')}"
                yield Label(Text(does))
            yield Label("Privilege")
            yield Select(
                [(p, p) for p in self.privileges],
                value=self.privileges[0] if self.privileges else Select.NULL,
                allow_blank=False,
                id="privilege",
            )
            if len(self.sources) > 1:
                yield Label("Credential source")
                yield Select([(s, s) for s in self.sources], allow_blank=False, id="source")
            else:
                yield Label(f"Credential source: {self.sources[0] if self.sources else '-'}")
            maximum = self.bg.memory.info.get("max_duration")
            yield Label("Duration (counted from activation, e.g. 30m or 1h30m)")
            yield Input(
                placeholder="30m",
                id="duration",
                validators=[DurationValidator(maximum if isinstance(maximum, int) else None)],
                validate_on=["changed", "submitted"],
            )
            yield Label("", id="duration-error", classes="error")
            yield Label("Reason (the approver reads it)")
            yield Input(
                placeholder="INC-4711: checkout errors",
                id="reason",
                validators=[Function(lambda v: bool(v.strip()), "a reason is required")],
                validate_on=["changed", "submitted"],
            )
            yield Label("", id="reason-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Sign & send", id="send", variant="primary")
                yield Button("Cancel", id="cancel")
            yield Label("", id="form-error", classes="error")

    @on(Input.Changed)
    def _validated(self, event: Input.Changed) -> None:
        target = {"duration": "#duration-error", "reason": "#reason-error"}.get(str(event.input.id))
        if target is None or event.validation_result is None:
            return
        messages = event.validation_result.failure_descriptions
        show_error(self.query_one(target, Label), messages[0] if messages else "")

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        if event.input.id == "duration":
            self.query_one("#reason", Input).focus()
        else:
            self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.app.pop_screen()

    @on(Button.Pressed, "#send")
    def action_submit(self) -> None:
        errors = []
        for field in ("duration", "reason"):
            widget = self.query_one(f"#{field}", Input)
            result = widget.validate(widget.value)
            if result is not None and not result.is_valid:
                message = result.failure_descriptions[0]
                show_error(self.query_one(f"#{field}-error", Label), message)
                errors.append(message)
        if errors:
            show_error(self.query_one("#form-error", Label), "fix the fields above first")
            return
        app = self.bg
        if app.identity is None or app.signer is None or app.client is None:
            show_error(self.query_one("#form-error", Label), "not connected as an operator yet")
            return
        privilege = str(self.query_one("#privilege", Select).value)
        # One source (or none) offered: `build_request` takes it (or refuses) as the CLI does.
        source = str(self.query_one("#source", Select).value) if len(self.sources) > 1 else None
        duration = parse_duration(self.query_one("#duration", Input).value)
        reason = self.query_one("#reason", Input).value
        client, identity, key, signer = app.client, app.identity, app.key, app.signer
        show_error(self.query_one("#form-error", Label), "signing and sending…")

        def send() -> None:
            try:
                controller_id = (
                    app.memory.info.get("controller_id") or client.info()["controller_id"]
                )
                signed = build_request(
                    identity=identity,
                    key=key,
                    signer=signer,
                    controller_id=str(controller_id),
                    resource=self.resource,
                    privilege=privilege,
                    credential_source=source,
                    duration=duration,
                    reason=reason,
                    now=now_utc(),  # signed time is real time, whatever the display clock
                )
                view = client.submit(signed)
            except Refused as exc:
                self.app.call_from_thread(self._refused, str(exc))
                return
            self.app.call_from_thread(self._sent, view)

        self.run_worker(send, thread=True, group="submit", exclusive=True, exit_on_error=False)

    def _refused(self, message: str) -> None:
        show_error(self.query_one("#form-error", Label), f"refused: {message}")

    def _sent(self, view: View) -> None:
        from bgtui.app import ViewsArrived

        self.app.post_message(ViewsArrived([view]))
        self.app.notify(f"request {view['id']} sent: {view.get('state')}", title="requested")
        self.dismiss()
