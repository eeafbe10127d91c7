"""The auditor's filter bar: session, actor, event, since, until and text, applied as you type.

Typing restarts a short timer; when it fires the bar posts `Changed` with the whole filter,
so a fast typist causes one query, not one per key. A time the mirror could not read is named
under the bar and nothing is posted until it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Label

from bgtui.client import request_id
from bgtui.protocol.errors import Refused

if TYPE_CHECKING:
    from bgtui.mirror_schema import AuditFilter

FIELDS: tuple[tuple[str, str], ...] = (
    ("session", "session id"),
    ("actor", "actor"),
    ("event", "event (session.*)"),
    ("since", "since 2h|date"),
    ("until", "until date"),
    ("text", "search words"),
)
DEBOUNCE = 0.25


def session_value(text: str) -> str:
    """A typed session id (or approval link) as the log stores it."""
    try:
        return request_id(text)
    except Refused:
        return text.strip().upper()


class AuditFilterBar(Widget):
    """Six inputs; posts `Changed` (debounced) and `Done` (Enter: back to the table)."""

    DEFAULT_CSS = """
    AuditFilterBar {
        height: auto;
        margin: 0 1;
    }
    AuditFilterBar Horizontal { height: auto; }
    AuditFilterBar #filter-label { width: auto; padding: 0 1 0 0; color: $text-muted; }
    AuditFilterBar Input { width: 1fr; margin-right: 1; background: $boost; }
    AuditFilterBar #filter-session { width: 2fr; }
    AuditFilterBar #filter-text { width: 2fr; }
    AuditFilterBar #filter-error {
        color: $text-error;
        padding: 0 1;
        display: none;
    }
    """

    @dataclass
    class Changed(Message):
        bar: AuditFilterBar
        filter: AuditFilter

        @property
        def control(self) -> AuditFilterBar:
            return self.bar

    @dataclass
    class Done(Message):
        bar: AuditFilterBar

        @property
        def control(self) -> AuditFilterBar:
            return self.bar

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._timer: Timer | None = None
        self.applied: AuditFilter | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("Filter", id="filter-label")
            for name, hint in FIELDS:
                yield Input(placeholder=hint, id=f"filter-{name}", compact=True)
        yield Label(id="filter-error")

    def value(self, name: str) -> str:
        return self.query_one(f"#filter-{name}", Input).value

    def clear(self) -> None:
        """Empties every field and applies that right away."""
        for name, _ in FIELDS:
            self.query_one(f"#filter-{name}", Input).value = ""
        self.apply()

    def set_value(self, name: str, value: str) -> None:
        """Fills one field (as if typed) and applies the filter right away."""
        self.query_one(f"#filter-{name}", Input).value = value
        self.apply()

    def current(self) -> AuditFilter:
        """The filter the inputs say now; raises `Refused` for a time it can't read."""
        # Imported here: the mirror's module pulls in sqlite-utils, which app start-up skips.
        from bgtui.mirror_schema import AuditFilter, time_bound

        values = {name: self.value(name).strip() or None for name, _ in FIELDS}
        for name in ("since", "until"):
            text = values[name]
            if text is not None:
                time_bound(text, end=name == "until")
        session = values["session"]
        return AuditFilter(
            session=session_value(session) if session else None,
            actor=values["actor"],
            event=values["event"],
            since=values["since"],
            until=values["until"],
            text=values["text"],
        )

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE, self.apply)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply()
        self.post_message(self.Done(self))

    def apply(self) -> None:
        """Posts the filter now (if it reads and differs from the one applied)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        error = self.query_one("#filter-error", Label)
        try:
            chosen = self.current()
        except Refused as exc:
            error.update(Text(str(exc)))
            error.display = True
            return
        error.display = False
        if chosen != (self.applied or type(chosen)()):
            self.applied = chosen
            self.post_message(self.Changed(self, chosen))
