"""Asciicast v2 recordings read back for playback (no Textual here).

A recording is a JSON header line, then one `[time, code, data]` line per event: `o` output,
`i` input, `r` resize (`COLSxROWS`), `m` marker. Playback shows the output the way a terminal
would, simplified: lines, carriage returns (a redrawn line replaces the old one), backspaces and
colours (SGR); other escape sequences (cursor moves, screen clears, titles) are dropped.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from itertools import islice

from rich.text import Text

from bgtui.protocol.errors import Refused

# CSI sequences other than SGR, OSC strings, and two-character escapes.
_DROPPED = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-ln-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\^_=>78]"
    r"|\x1b[()][0-9A-Za-z]"
)
_SGR_AT_END = re.compile(r"\x1b\[[0-9;]*m$")
_KEPT_CONTROLS = "\n\r\b\x1b\t"


@dataclass(frozen=True)
class CastEvent:
    """One event: seconds since the start, its code (o, i, r, m) and its data."""

    time: float
    code: str
    data: str


@dataclass(frozen=True)
class Cast:
    """A parsed recording: the terminal it was made in and its events, in time order."""

    width: int
    height: int
    events: list[CastEvent]
    title: str | None = None
    idle_limit: float | None = None

    @property
    def duration(self) -> float:
        return self.events[-1].time if self.events else 0.0

    def output(self) -> list[CastEvent]:
        return [e for e in self.events if e.code == "o"]


def parse_cast(data: bytes, name: str = "recording") -> Cast:
    """Reads asciicast v2 bytes; refuses anything else, naming the line."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise Refused(f"{name}: line 1 is not an asciicast v2 header")
    events: list[CastEvent] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], int | float)
            or not isinstance(item[1], str)
            or not isinstance(item[2], str)
        ):
            raise Refused(f"{name}: line {number} is not an event [time, code, data]")
        events.append(CastEvent(float(item[0]), item[1], item[2]))
    events.sort(key=lambda e: e.time)  # stable: events at the same time keep their order
    limit = header.get("idle_time_limit")
    return Cast(
        width=int(header.get("width") or 80),
        height=int(header.get("height") or 24),
        events=events,
        title=str(header["title"]) if header.get("title") else None,
        idle_limit=float(limit) if isinstance(limit, int | float) and limit > 0 else None,
    )


class TerminalText:
    """Output fed in as it came, kept as lines the way a (simple) terminal shows them."""

    def __init__(self, scrollback: int = 10_000) -> None:
        self.lines: deque[str] = deque(maxlen=scrollback)
        self.current = ""
        self._carriage = False  # a \r was the last thing: the next text redraws the line

    def clear(self) -> None:
        self.lines.clear()
        self.current = ""
        self._carriage = False

    def feed(self, data: str) -> None:
        text = _DROPPED.sub("", data)
        for char in text:
            if char == "\n":
                self.lines.append(self.current)
                self.current, self._carriage = "", False
            elif char == "\r":
                self._carriage = True
            elif char == "\b":
                if self.current and not _SGR_AT_END.search(self.current):
                    self.current = self.current[:-1]
            elif char >= " " or char in _KEPT_CONTROLS:
                if self._carriage:
                    self.current, self._carriage = "", False
                self.current += char

    def tail(self, rows: int) -> Text:
        """The last `rows` lines (the one being written last), with their colours."""
        older = rows - 1
        shown = [*islice(self.lines, max(0, len(self.lines) - older), None)] if older > 0 else []
        shown.append(self.current)
        return Text.from_ansi("\n".join(shown), no_wrap=True, end="")

    def plain(self) -> str:
        """Everything kept, as plain text (for tests and copying)."""
        return Text.from_ansi("\n".join([*self.lines, self.current]), end="").plain
