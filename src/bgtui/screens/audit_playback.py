"""Recording playback inside the TUI: a session's asciicast recordings, one at a time."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Label

from bgtui.screens.base import BgScreen
from bgtui.widgets.audit_cast import Cast
from bgtui.widgets.audit_player import CastPlayer

Recording = tuple[str, Cast]
"""(sha256, parsed cast)."""


class PlaybackScreen(BgScreen):
    """Replays the output of a session's recordings; space pauses, 1/4/i set the speed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="audit-back", tooltip="Back to the audit log."),
        Binding("space", "play_pause", "Play/Pause", id="play-toggle", tooltip="Pause or resume."),
        Binding("1", "speed(1)", "1x", id="play-1x", tooltip="Play at recorded speed."),
        Binding("4", "speed(4)", "4x", id="play-4x", tooltip="Play four times as fast."),
        Binding("i", "speed(0)", "Instant", id="play-instant", tooltip="Show it all at once."),
        Binding("r", "restart", "Restart", id="play-restart", tooltip="Play from the start."),
        Binding("n", "next", "Next rec.", id="play-next", tooltip="The session's next recording."),
    ]

    def __init__(self, session: str, recordings: list[Recording], *, autoplay: bool = True) -> None:
        super().__init__()
        self.session = session
        self.recordings = recordings
        self.index = 0
        self.autoplay = autoplay

    def compose_body(self) -> Iterable[Widget]:
        yield Label(id="play-title", classes="section")
        yield self._player()
        yield Label(id="play-status", classes="title")

    def _player(self) -> CastPlayer:
        return CastPlayer(self.recordings[self.index][1], autoplay=self.autoplay, id="player")

    def on_mount(self) -> None:
        super().on_mount()
        self._title()

    def _title(self) -> None:
        sha256, cast = self.recordings[self.index]
        self.query_one("#play-title", Label).update(
            Text(
                f"Session {self.session}: recording {self.index + 1} of {len(self.recordings)}"
                f" · sha256 {sha256[:16]}… · {cast.width}x{cast.height}"
                + (f" · {cast.title}" if cast.title else "")
            )
        )

    @property
    def player(self) -> CastPlayer:
        return self.query_one(CastPlayer)

    @on(CastPlayer.Progressed)
    def _progressed(self) -> None:
        self.query_one("#play-status", Label).update(Text(self.player.status_text()))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next":
            return len(self.recordings) > 1
        return True

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_play_pause(self) -> None:
        self.player.toggle()

    def action_speed(self, speed: float) -> None:
        self.player.set_speed(speed or math.inf)

    def action_restart(self) -> None:
        self.player.restart()

    async def action_next(self) -> None:
        if len(self.recordings) < 2:
            return
        self.index = (self.index + 1) % len(self.recordings)
        await self.player.remove()
        await self.mount(self._player(), after="#play-title")
        self._title()
