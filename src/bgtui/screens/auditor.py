"""Auditor mode: the audit log browser over the local mirror (DESIGN §6, §7).

Everything reads the mirror (mirror.db in the client home), so it all works with the controller
down. A dedicated thread owns the browsing connection (`MirrorReader`); sync, verify, export and
recordings run in thread workers with their own connection. When the controller answers, the
copy is synced on connect and after each lifecycle event; a controller whose history no longer
extends the verified copy puts a red banner over the log, and the local copy is kept as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, Label
from textual.worker import Worker, WorkerState

from bgtui.protocol.errors import Refused
from bgtui.screens.audit_modals import EntryScreen, ExportScreen, VerifyScreen
from bgtui.screens.audit_playback import PlaybackScreen
from bgtui.screens.audit_timeline import TimelineScreen
from bgtui.screens.base import BgScreen
from bgtui.widgets.audit_filter import AuditFilterBar
from bgtui.widgets.audit_table import AuditTable, Cursor
from bgtui.widgets.header import BgHeader

if TYPE_CHECKING:
    from bgtui.client import ControllerClient
    from bgtui.mirror_schema import AuditFilter, AuditRow
    from bgtui.screens.audit_jobs import SyncReport, VerifyReport
    from bgtui.screens.audit_reader import AuditPage, MirrorPlace, MirrorReader

SYNC_DELAY = 0.5  # after a lifecycle event, so a burst of them syncs once


@dataclass
class SyncStep(Message):
    done: int
    total: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SyncStep)


@dataclass
class SyncEnded(Message):
    """A sync finished: its report, or why there was none (offline, refused)."""

    report: SyncReport | None
    problem: str | None = None
    offline: bool = False


class AuditorScreen(BgScreen):
    """The audit log, newest first, a page at a time, with filters and the session tools."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter",
            "entry",
            "Entry",
            id="audit-entry",
            tooltip="The selected entry in full.",
            priority=True,  # else the focused table's hidden enter binding hides it
        ),
        Binding("t", "timeline", "Timeline", id="audit-timeline", tooltip="The session's life."),
        Binding(
            "f",
            "filter_session",
            "Only session",
            id="audit-filter-session",
            tooltip="Show only the selected entry's session.",
        ),
        Binding("slash", "search", "Search", id="audit-search", tooltip="Find entries by words."),
        Binding(
            "escape",
            "clear_filter",
            "All entries",
            id="audit-clear-filter",
            tooltip="Clear the filters: the whole log again.",
        ),
        Binding(
            "v", "verify", "Verify", id="audit-verify", tooltip="Sync, then check the whole chain."
        ),
        Binding("s", "sync", "Sync", id="audit-sync", tooltip="Copy new entries now."),
        Binding(
            "e", "export", "Export", id="audit-export", tooltip="Write the session's evidence."
        ),
        Binding("p", "play", "Play", id="audit-play", tooltip="Replay the session's recording."),
        Binding("tab", "app.focus_next", "Next pane", show=False, id="next-pane"),
    ]

    DEFAULT_CSS = """
    AuditorScreen #audit-banner {
        display: none;
        width: 100%;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    AuditorScreen.-rewritten #audit-banner { display: block; }
    AuditorScreen #audit-table { height: 1fr; }
    AuditorScreen #audit-bottom { height: 1; margin: 0 1; }
    AuditorScreen #audit-status { width: 1fr; }
    AuditorScreen #audit-sync { width: auto; color: $text-muted; }
    AuditorScreen.-problem #audit-status { color: $text-error; }
    """

    selection: reactive[str] = reactive("")
    """The highlighted entry's seq ("" for none): what the footer's keys act on."""
    rewritten: reactive[str] = reactive("")
    """The loud line of a sync that found the controller's history rewritten (kept once set)."""

    def __init__(self) -> None:
        super().__init__()
        self.reader: MirrorReader | None = None
        self.place: MirrorPlace | None = None
        self.filter: AuditFilter | None = None
        self.page: AuditPage | None = None
        self.recorded: dict[str, bool] = {}
        self._syncing = False
        self._sync_again = False
        self._sync_timer: Any = None
        self._allowed: tuple[bool, bool, bool] = (False, False, False)

    def compose_body(self) -> Iterable[Widget]:
        yield Label(id="audit-banner")
        yield AuditFilterBar(id="audit-filter")
        yield AuditTable(id="audit-table")
        with Horizontal(id="audit-bottom"):
            yield Label("reading the local copy…", id="audit-status")
            yield Label("", id="audit-sync")

    @property
    def table(self) -> AuditTable:
        return self.query_one(AuditTable)

    # -- start and stop ----------------------------------------------------------------------
    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.bg, "connection", self._link_changed, init=False)
        self.table.focus()
        # after the first layout, so the first page is as tall as the table
        self.call_after_refresh(self._open_reader, self._known_place())
        if self.bg.connection == "connected":
            self.start_sync()

    def on_unmount(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def _known_place(self) -> MirrorPlace | None:
        """The mirror the app opened, else this home's mirror for the controller's id."""
        from bgtui.screens.audit_reader import MirrorPlace

        cache = self.bg.cache
        path, controller_id = getattr(cache, "path", None), getattr(cache, "controller_id", None)
        if isinstance(path, Path) and isinstance(controller_id, str):
            return MirrorPlace(path, controller_id)
        known = self.bg.memory.info.get("controller_id")
        return MirrorPlace(self._mirror_path(), str(known)) if known else None

    def _mirror_path(self) -> Path:
        from bgtui.mirror import mirror_path

        return mirror_path(self.bg.settings.home)

    def _open_reader(self, place: MirrorPlace | None) -> None:
        from bgtui.screens.audit_reader import MirrorReader

        if place is None or place == self.place:
            if place is None:
                self._status("no local copy of the audit log yet: it is made by the first sync")
                self._resolve_place()
            return
        if self.reader is not None:
            self.reader.close()
        self.place, self.reader = place, MirrorReader(place)
        self.recorded.clear()
        self.load(0, "first")

    @work(thread=True, exit_on_error=False, group="audit-place", description="find the mirror")
    def _resolve_place(self) -> None:
        """Offline and no mirror handed in: the home's mirror for this controller, if any."""
        from bgtui.mirror import Mirror
        from bgtui.screens.audit_reader import MirrorPlace

        path = self._mirror_path()
        controller_id = Mirror.known_controller(path, self.bg.settings.controller)
        if controller_id is not None:
            self.app.call_from_thread(self._open_reader, MirrorPlace(path, controller_id))

    # -- pages -------------------------------------------------------------------------------
    def load(self, offset: int, cursor: Cursor = "keep") -> None:
        """Shows the page at `offset` of the entries matching the filter."""
        if self.reader is not None:
            self._load(self.reader, offset, cursor, self.filter)

    @work(exclusive=True, group="audit-page", exit_on_error=False, description="read a page")
    async def _load(
        self, reader: MirrorReader, offset: int, cursor: Cursor, chosen: AuditFilter | None
    ) -> None:
        from bgtui.mirror_schema import AuditFilter
        from bgtui.screens.audit_reader import NoMirror, read_page

        size = self.table.page_size
        wanted = chosen or AuditFilter()
        future = reader.submit("page", lambda m: read_page(m, offset, size, wanted))
        try:
            page = await asyncio.wrap_future(future)
        except NoMirror as exc:
            self._status(str(exc))
            return
        except Refused as exc:
            self._status(str(exc), problem=True)
            return
        self.page = page
        self.table.show_page(page.offset, page.rows, page.total, cursor)
        self._show_counts()
        self._track_selection()

    def _show_counts(self) -> None:
        page = self.page
        if page is None:
            return
        if page.total == 0:
            text = "no entries match" if self.filter else "the local copy holds no entries yet"
        else:
            text = f"rows {page.first:,}–{page.last:,} of {page.total:,}"
            more = [
                f"{self._key_for(binding_id)} {label}"
                for binding_id, label, there in (
                    ("audit-next-page", "older", page.last < page.total),
                    ("audit-prev-page", "newer", page.first > 1),
                )
                if there
            ]
            if more:
                text += " · " + " · ".join(more)
        if self.filter and page.held:
            text += f" matching · the local copy holds {page.held:,}"
        self._status(text)

    def _key_for(self, binding_id: str) -> str:
        """The key of one of the table's bindings, as the footer shows keys (keymap applied)."""
        for binding in AuditTable.BINDINGS:
            if isinstance(binding, Binding) and binding.id == binding_id:
                key = self.bg.settings.keymap.get(binding_id, binding.key).split(",")[0].strip()
                return self.app.get_key_display(Binding(key, binding.action))
        raise KeyError(binding_id)

    def _status(self, text: str, *, problem: bool = False) -> None:
        self.set_class(problem, "-problem")
        self.query_one("#audit-status", Label).update(Text(text))

    @on(AuditTable.PageWanted)
    def _page_wanted(self, message: AuditTable.PageWanted) -> None:
        self.load(message.offset, message.cursor)

    @on(AuditFilterBar.Changed)
    def _filter_changed(self, message: AuditFilterBar.Changed) -> None:
        from bgtui.mirror_schema import AuditFilter

        self.filter = None if message.filter == AuditFilter() else message.filter
        self.load(0, "first")
        self.refresh_bindings()  # `All entries` shows only while something is filtered

    @on(AuditFilterBar.Done)
    def _filter_done(self) -> None:
        self.table.focus()

    # -- selection ---------------------------------------------------------------------------
    @on(AuditTable.RowHighlighted)
    def _track_selection(self) -> None:
        row = self.table.selected_row()
        self.selection = str(row.seq) if row is not None else ""
        if row is not None and row.session and row.session not in self.recorded:
            self._look_for_recordings(row.session)
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """Refreshes the footer when what the keys may do changed (not on every row: the
        footer is rebuilt on each refresh, which would slow paging down)."""
        session = self.selected_session()
        allowed = (
            bool(self.selection),
            session is not None,
            session is not None and self.recorded.get(session, False),
        )
        if allowed != self._allowed:
            self._allowed = allowed
            self.refresh_bindings()

    def selected(self) -> AuditRow | None:
        return self.table.selected_row() if self.selection else None

    def selected_session(self) -> str | None:
        row = self.selected()
        return row.session if row is not None else None

    @work(group="audit-recorded", exit_on_error=False, description="find recordings")
    async def _look_for_recordings(self, session: str) -> None:
        if self.reader is None:
            return
        future = self.reader.submit("recorded", lambda m: bool(m.session_recordings(session)))
        self.recorded[session] = await asyncio.wrap_future(future)
        self._refresh_keys()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "entry":
            return isinstance(self.focused, AuditTable) and self.selected() is not None
        if action in ("timeline", "filter_session", "export"):
            return self.selected_session() is not None
        if action == "play":
            session = self.selected_session()
            return session is not None and self.recorded.get(session, False)
        if action == "clear_filter":  # also the way back from a filter field to the table
            return self.filter is not None or isinstance(self.focused, Input)
        return True

    # -- live: sync with the controller ------------------------------------------------------
    def refresh_views(self, rid: str | None) -> None:
        super().refresh_views(rid)
        if self.rewritten:
            header = self.query_one(BgHeader)
            marked = ("⚠ AUDIT LOG REWRITTEN", header.controller)
            header.controller = " · ".join(part for part in marked if part)
        if rid is not None and self.is_mounted and self.bg.connection == "connected":
            # A lifecycle event: the controller signed a checkpoint with it; copy it soon.
            if self._sync_timer is not None:
                self._sync_timer.stop()
            self._sync_timer = self.set_timer(SYNC_DELAY, self.start_sync)

    def _link_changed(self, state: str) -> None:
        if state == "connected":
            self.start_sync()
        elif state == "offline":
            self.query_one("#audit-sync", Label).update("offline: the local copy")

    def _client(self) -> ControllerClient | None:
        """The controller client, unless the controller is known to be away."""
        return self.bg.client if self.bg.connection in ("connected", "connecting") else None

    def start_sync(self) -> None:
        """Copies what the controller added (one sync at a time; a request meanwhile queues)."""
        client = self._client()
        if client is None:
            return
        if self._syncing:
            self._sync_again = True
            return
        self._syncing, self._sync_again = True, False
        self._sync(client)

    @work(thread=True, exit_on_error=False, group="audit-sync", description="sync the log")
    def _sync(self, client: ControllerClient) -> None:
        from bgtui.client import ApiRefused, Unreachable
        from bgtui.screens.audit_jobs import sync_copy

        def progress(_phase: str, done: int, total: int) -> None:
            self.post_message(SyncStep(done, total))

        path = self._mirror_path() if self.place is None else self.place.path
        try:
            report = sync_copy(path, client, progress)
        except Unreachable:
            self.post_message(SyncEnded(None, offline=True))
        except (ApiRefused, Refused) as exc:
            self.post_message(SyncEnded(None, str(exc)))
        else:
            self.post_message(SyncEnded(report))

    @on(SyncStep)
    def _sync_step(self, message: SyncStep) -> None:
        self.query_one("#audit-sync", Label).update(
            f"syncing: {message.done:,} of {message.total:,}"
        )

    @on(SyncEnded)
    def _sync_ended(self, message: SyncEnded) -> None:
        self._syncing = False
        shown = self.query_one("#audit-sync", Label)
        report = message.report
        if report is None:
            shown.update("offline: the local copy" if message.offline else "sync refused")
            if message.problem:
                self.notify(message.problem, title="audit sync", severity="error")
        else:
            if report.result.rewritten:
                self.note_rewritten(report.result.rewritten)
                shown.update("controller history rewritten: local copy kept")
            else:
                fetched = report.result.fetched
                shown.update(f"synced: {fetched:,} new" if fetched else "in sync")
            if report.place != self.place:
                self._open_reader(report.place)
            else:
                self.load(self.table.page_offset)
        if self._sync_again:
            self.start_sync()

    def note_rewritten(self, line: str) -> None:
        """Shows the loud banner (and marks the header); it stays for this run of the app."""
        self.rewritten = line
        self.query_one("#audit-banner", Label).update(
            Text(
                f"⚠ {line}. The controller's history does not extend the copy verified here: "
                "the local copy is kept, browse and export it; tell the controller's owners."
            )
        )
        self.add_class("-rewritten")
        self.refresh_views(None)
        self.notify(line, title="AUDIT LOG REWRITTEN", severity="error", timeout=30)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        if event.worker.group == "audit-sync":
            self._syncing = False
        error = event.worker.error
        shown = str(error) if isinstance(error, Refused) else f"{type(error).__name__}: {error}"
        self.notify(shown, title=f"{event.worker.description} failed", severity="error")

    # -- actions -----------------------------------------------------------------------------
    def action_entry(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.push_screen(EntryScreen(row))

    def action_timeline(self) -> None:
        session = self.selected_session()
        if session is not None and self.reader is not None:
            self.app.push_screen(TimelineScreen(session, self.reader, self))

    def action_filter_session(self) -> None:
        session = self.selected_session()
        if session is not None:
            self.query_one(AuditFilterBar).set_value("session", session)

    def action_clear_filter(self) -> None:
        self.query_one(AuditFilterBar).clear()
        self.table.focus()

    def action_search(self) -> None:
        self.query_one("#filter-text", Input).focus()

    def action_sync(self) -> None:
        if self._client() is None:
            self.notify("the controller is offline: showing the local copy", severity="warning")
        self.start_sync()

    def action_verify(self) -> None:
        from bgtui.screens.audit_jobs import verify_copy

        job = partial(verify_copy, self._mirror_path(), self.place, self._client())
        self.app.push_screen(VerifyScreen(job), self._verified)

    def _verified(self, report: VerifyReport | None) -> None:
        if report is None:
            return
        if report.rewritten:
            self.note_rewritten(report.rewritten)
        if report.place != self.place:
            self._open_reader(report.place)
        else:
            self.load(self.table.page_offset)

    def action_export(self) -> None:
        session = self.selected_session()
        if session is not None:
            self.export_session(session)

    def export_session(self, session: str) -> None:
        """Asks where, then writes the session's evidence bundle from the local copy."""

        def chosen(out: Path | None) -> None:
            if out is not None:
                self._export(session, out)

        self.app.push_screen(ExportScreen(session, f"./evidence-{session}"), chosen)

    @work(thread=True, exit_on_error=False, group="audit-export", description="export")
    def _export(self, session: str, out: Path) -> None:
        from bgtui.screens.audit_jobs import export_session

        written = export_session(
            self.place, self._client(), session, out, rewritten=bool(self.rewritten)
        )
        self.app.call_from_thread(
            self.notify,
            f"wrote the evidence bundle of {session} to {written.resolve()}; see its README.md",
            title="exported",
        )

    def action_play(self) -> None:
        session = self.selected_session()
        if session is not None:
            self.play_session(session)

    def play_session(self, session: str) -> None:
        """Fetches the session's recordings if need be, then replays them in the TUI."""
        self._play(session)

    @work(thread=True, exit_on_error=False, group="audit-play", description="playback")
    def _play(self, session: str) -> None:
        from bgtui.screens.audit_jobs import session_recordings
        from bgtui.widgets.audit_cast import parse_cast

        found = session_recordings(self.place, self._client(), session)
        if not found.paths:
            raise Refused(
                f"session {session}'s recordings are not here and the controller is offline"
                if found.missing
                else f"session {session} has no recordings"
            )
        casts = [(p.stem, parse_cast(p.read_bytes(), p.name)) for p in found.paths]
        self.app.call_from_thread(self.app.push_screen, PlaybackScreen(session, casts))
        if found.missing:
            self.app.call_from_thread(
                self.notify,
                f"{len(found.missing)} of the session's recordings could not be fetched",
                severity="warning",
            )


def binding_classes() -> list[type[Any]]:
    """Every class whose keys auditor mode shows, so `[keymap]` may rebind them by id."""
    from bgtui.screens.audit_modals import EntryScreen, ExportScreen, VerifyScreen

    return [
        AuditorScreen,
        AuditTable,
        TimelineScreen,
        PlaybackScreen,
        EntryScreen,
        VerifyScreen,
        ExportScreen,
    ]
