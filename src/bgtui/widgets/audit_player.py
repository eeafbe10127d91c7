"""A terminal-like view that replays a recording's output at its own pace.

Output events are fed, in order and at their recorded times (divided by the speed; long idle
gaps are cut to the recording's `idle_time_limit`, else to two seconds), into a `TerminalText`
whose last lines are drawn, as a terminal shows its bottom rows. Input events are not shown:
what the operator typed appears as the terminal echoed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.console import RenderableType
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget

from bgtui.widgets.audit_cast import Cast, TerminalText

SPEEDS: tuple[float, ...] = (1.0, 4.0, math.inf)
IDLE_CAP = 2.0


def speed_label(speed: float) -> str:
    return "instant" if math.isinf(speed) else f"{speed:g}x"


class CastPlayer(Widget, can_focus=True):
    """Plays `cast`'s output; `toggle()`, `set_speed()` and `restart()` steer it."""

    DEFAULT_CSS = """
    CastPlayer {
        height: 1fr;
        margin: 0 1;
        padding: 0 1;
        border: round $accent;
        background: $background;
    }
    """

    playing: reactive[bool] = reactive(False)
    speed: reactive[float] = reactive(1.0)

    @dataclass
    class Progressed(Message):
        """Playback moved on, paused, resumed or changed speed."""

        player: CastPlayer

        @property
        def control(self) -> CastPlayer:
            return self.player

    def __init__(self, cast: Cast, *, autoplay: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cast = cast
        self.events = cast.output()
        self.terminal = TerminalText()
        self.position = 0.0  # seconds into the recording
        self.next_index = 0
        self.autoplay = autoplay
        self._timer: Timer | None = None

    def on_mount(self) -> None:
        if self.autoplay:
            self.play()
        else:
            self._changed()

    @property
    def finished(self) -> bool:
        return self.next_index >= len(self.events)

    def render(self) -> RenderableType:
        return self.terminal.tail(max(1, self.content_size.height))

    def status_text(self) -> str:
        state = "finished" if self.finished else ("playing" if self.playing else "paused")
        return (
            f"{state} · {speed_label(self.speed)} · {self.position:.1f}s of "
            f"{self.cast.duration:.1f}s · {self.next_index}/{len(self.events)} output events"
        )

    # -- steering -------------------------------------------------------------------------
    def play(self) -> None:
        if self.finished:
            return
        self.playing = True
        self._schedule()

    def pause(self) -> None:
        self.playing = False
        self._cancel()
        self._changed()

    def toggle(self) -> None:
        if self.finished:
            self.restart()
        elif self.playing:
            self.pause()
        else:
            self.play()

    def set_speed(self, speed: float) -> None:
        self.speed = speed
        if self.playing:
            self._schedule()
        else:
            self._changed()

    def restart(self) -> None:
        self._cancel()
        self.terminal.clear()
        self.position, self.next_index = 0.0, 0
        self.refresh()
        self.play()

    # -- the clock ------------------------------------------------------------------------
    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _schedule(self) -> None:
        self._cancel()
        if not self.playing:
            return
        if self.finished:
            self.playing = False
            self._changed()
            return
        if math.isinf(self.speed):
            self._feed_until(math.inf)
            self.playing = False
            self._changed()
            return
        gap = max(0.0, self.events[self.next_index].time - self.position)
        gap = min(gap, self.cast.idle_limit or IDLE_CAP) / self.speed
        self._timer = self.set_timer(gap, self._tick)
        self._changed()

    def _tick(self) -> None:
        self._timer = None
        if not self.finished:
            self._feed_until(self.events[self.next_index].time)
        self._schedule()

    def _feed_until(self, moment: float) -> None:
        """Feeds every output event up to `moment` (all of them for infinity)."""
        while not self.finished and self.events[self.next_index].time <= moment:
            event = self.events[self.next_index]
            self.terminal.feed(event.data)
            self.position = event.time
            self.next_index += 1
        self.refresh()

    def _changed(self) -> None:
        self.post_message(self.Progressed(self))
