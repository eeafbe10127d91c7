"""Time left in an active session, ticking once a second on the app's (injected) clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from bgtui.protocol.timefmt import format_duration, parse_utc


class Countdown(Widget):
    """`9m12s left (until 12:34:56Z)`; `due now` once past; nothing without an expiry."""

    DEFAULT_CSS = """
    Countdown { height: 1; width: auto; }
    Countdown.-low { color: $warning; text-style: bold; }
    """

    expires_at: reactive[str | None] = reactive(None)

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh)

    def seconds_left(self) -> int | None:
        if not self.expires_at:
            return None
        return int((parse_utc(self.expires_at) - self.clock()).total_seconds())

    def render(self) -> Text:
        left = self.seconds_left()
        self.set_class(left is not None and left < 60, "-low")
        if left is None:
            return Text("")
        if left <= 0:
            return Text(f"due now (expiry {self.expires_at})")
        return Text(f"{format_duration(left)} left (until {self.expires_at})")
