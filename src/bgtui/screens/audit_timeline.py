"""One session's timeline from the local copy: request, approvals, planes, active, end, receipt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, Protocol

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Label

from bgtui.protocol.evidence import summary_line
from bgtui.screens.audit_modals import EntryScreen
from bgtui.screens.base import BgScreen
from bgtui.widgets.tables import widen_columns

if TYPE_CHECKING:
    from bgtui.mirror_schema import AuditRow
    from bgtui.screens.audit_reader import MirrorReader

STAGES: tuple[tuple[str, str], ...] = (
    ("request.", "request"),
    ("approval.", "approval"),
    ("session.activating", "planes"),
    ("plane.", "planes"),
    ("session.active", "active"),
    ("credentials.", "active"),
    ("recording.", "recording"),
    ("session.receipt", "receipt"),
    ("session.", "end"),
)


def stage_of(event: str) -> str:
    """Where in a session's life an event belongs (request → … → receipt)."""
    for prefix, stage in STAGES:
        if event.startswith(prefix):
            return stage
    return "other"


class SessionActions(Protocol):
    """What the auditor screen does for a session, offered here too."""

    def export_session(self, session: str) -> None: ...
    def play_session(self, session: str) -> None: ...


class TimelineScreen(BgScreen):
    """The session's entries oldest first, each with its stage, time and actor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="audit-back", tooltip="Back to the audit log."),
        Binding(
            "enter",
            "entry",
            "Entry",
            id="audit-entry",
            tooltip="The selected entry in full.",
            priority=True,
        ),
        Binding("e", "export", "Export", id="audit-export", tooltip="Write its evidence bundle."),
        Binding("p", "play", "Play", id="audit-play", tooltip="Replay its recorded terminal."),
    ]

    def __init__(self, session: str, reader: MirrorReader, actions: SessionActions) -> None:
        super().__init__()
        self.session = session
        self.reader = reader
        self.actions = actions
        self.rows: list[AuditRow] = []

    def compose_body(self) -> Iterable[Widget]:
        yield Label(Text(f"Session {self.session}: timeline"), classes="section", id="tl-title")
        yield Label("reading the local copy…", id="tl-summary", classes="title")
        table: DataTable[Text] = DataTable(id="timeline", cursor_type="row")
        table.add_columns("STAGE", "AT", "ACTOR", "EVENT", "SEQ", "DETAIL")
        yield table

    def on_mount(self) -> None:
        super().on_mount()
        self._load()

    @work(exclusive=True, group="audit-timeline")
    async def _load(self) -> None:
        session = self.session
        future = self.reader.submit("timeline", lambda m: m.timeline(session))
        self.rows = await asyncio.wrap_future(future)
        table = self.query_one("#timeline", DataTable)
        table.clear()
        fixed = [9, 19, max((len(r.actor) for r in self.rows), default=5), 25, 6]
        width = max(20, table.scrollable_content_region.width - sum(fixed) - 2 * 6 - 1)
        cells = [
            (
                Text(stage_of(row.event), style="bold"),
                Text(row.at.replace("T", " ").removesuffix("Z")),
                Text(row.actor),
                Text(row.event),
                Text(str(row.seq), justify="right"),
                Text(summary_line(row.data, width)),
            )
            for row in self.rows
        ]
        widen_columns(table, cells)
        for row, line in zip(self.rows, cells, strict=True):
            table.add_row(*line, key=str(row.seq))
        self.query_one("#tl-summary", Label).update(Text(self.summary()))
        self.refresh_bindings()

    def summary(self) -> str:
        """`request → approval → planes → active → end → receipt`, as far as the log goes."""
        if not self.rows:
            return "no entries of this session in the local copy"
        stages: list[str] = []
        for row in self.rows:
            stage = stage_of(row.event)
            if not stages or stages[-1] != stage:
                stages.append(stage)
        span = f"{self.rows[0].at} … {self.rows[-1].at}"
        return f"{' → '.join(stages)}   ({len(self.rows)} entries, {span})"

    def recorded(self) -> bool:
        return any(row.event == "recording.uploaded" for row in self.rows)

    def _selected(self) -> AuditRow | None:
        table = self.query_one("#timeline", DataTable)
        if not self.rows or table.cursor_row < 0:
            return None
        return self.rows[min(table.cursor_row, len(self.rows) - 1)]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "entry":
            return self._selected() is not None
        if action == "export":
            return bool(self.rows)
        if action == "play":
            return self.recorded()
        return True

    @on(DataTable.RowSelected)
    def action_entry(self) -> None:
        row = self._selected()
        if row is not None:
            self.app.push_screen(EntryScreen(row))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_export(self) -> None:
        self.actions.export_session(self.session)

    def action_play(self) -> None:
        if self.recorded():
            self.actions.play_session(self.session)
