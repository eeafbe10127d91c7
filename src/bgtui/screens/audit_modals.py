"""The auditor's dialogs: one entry in full, verification with progress, where to export."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.json import JSON
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from bgtui.screens.modals import CANCEL

if TYPE_CHECKING:
    from bgtui.mirror_schema import AuditRow
    from bgtui.screens.audit_jobs import Progress, VerifyReport

CLOSE: list[BindingType] = [
    Binding("escape", "close", "Close", id="audit-close", tooltip="Close this dialog."),
]


def entry_json(row: AuditRow) -> str:
    """The entry as the log holds it (its fields, not its exact bytes), pretty-printed."""
    value = {
        "seq": row.seq,
        "at": row.at,
        "event": row.event,
        "actor": row.actor,
        "session": row.session,
        "data": row.data,
    }
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class EntryScreen(ModalScreen[None]):
    """One audit entry in full, with its chain hash."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *CLOSE,
        Binding("enter", "close", "Close", show=False, id="audit-entry-close", tooltip="Close."),
    ]

    def __init__(self, row: AuditRow) -> None:
        super().__init__(classes="dialog")
        self.row = row

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box", id="audit-entry"):
            yield Label(Text(f"Audit entry {self.row.seq}", style="bold"))
            yield Label(Text(f"hash {self.row.hash}", style="dim"), id="entry-hash")
            yield Static(JSON(entry_json(self.row)), id="entry-json")

    def action_close(self) -> None:
        self.dismiss(None)


def verdict_text(report: VerifyReport) -> Text:
    """✔ or ✘, in one or two lines: the controller's history first, then the local copy."""
    text = Text()
    if report.rewritten:
        text.append("✘ the controller's history does not extend the verified copy\n", "bold red")
        text.append(f"{report.rewritten}\n", "red")
    verdict = report.verdict
    if verdict.ok:
        text.append(
            f"✔ intact: {verdict.size:,} entries, {verdict.checkpoints} checkpoints verified",
            "bold green",
        )
        text.append(" (local copy)")
        if report.last_verified is not None:
            size, head = report.last_verified
            text.append(f"\nnewest signed checkpoint: size {size:,}, head {head[:16]}…", "dim")
    else:
        where = f" at entry {verdict.first_bad}" if verdict.first_bad is not None else ""
        text.append(f"✘ broken{where}: {verdict.detail}", "bold red")
        text.append(" (local copy)")
    return text


class VerifyScreen(ModalScreen["VerifyReport | None"]):
    """Runs a verification (sync, then the whole local chain) with a progress bar and says
    what it found; dismissed with the report."""

    DEFAULT_CSS = """
    VerifyScreen #verify-progress { margin: 1 0; }
    VerifyScreen #verify-verdict { width: 100%; }
    VerifyScreen #verify-note { width: 100%; display: none; }
    """

    BINDINGS: ClassVar[list[BindingType]] = CLOSE

    @dataclass
    class Step(Message):
        phase: str
        done: int
        total: int

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, VerifyScreen.Step) and message.phase == self.phase

    @dataclass
    class Finished(Message):
        report: VerifyReport

    def __init__(self, job: Callable[[Progress], VerifyReport]) -> None:
        super().__init__(classes="dialog")
        self.job = job
        self.report: VerifyReport | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box", id="audit-verify"):
            yield Label(Text("Verify the audit log", style="bold"))
            yield Label("starting…", id="verify-phase")
            yield ProgressBar(total=None, show_eta=False, id="verify-progress")
            yield Label(id="verify-verdict")
            yield Label(id="verify-note")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="verify-close")

    def on_mount(self) -> None:
        self._run()

    @work(thread=True, exit_on_error=False, group="audit-verify", description="verify")
    def _run(self) -> None:
        def progress(phase: str, done: int, total: int) -> None:
            self.post_message(self.Step(phase, done, total))

        report = self.job(progress)
        self.post_message(self.Finished(report))

    @on(Step)
    def _step(self, message: Step) -> None:
        what = "syncing from the controller" if message.phase == "sync" else "verifying the chain"
        self.query_one("#verify-phase", Label).update(
            f"{what}: {message.done:,} of {message.total:,} entries"
        )
        self.query_one(ProgressBar).update(total=max(1, message.total), progress=message.done)

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        report = self.report = message.report
        bad = bool(report.rewritten) or not report.verdict.ok
        self._frame("error" if bad else "success")
        self.query_one("#verify-phase", Label).update("done")
        bar = self.query_one(ProgressBar)
        bar.update(total=max(1, report.verdict.size), progress=max(1, report.verdict.size))
        self.query_one("#verify-verdict", Label).update(verdict_text(report))
        note = self.query_one("#verify-note", Label)
        note.update(Text(report.note or "", style="dim"))
        note.display = bool(report.note)

    @on(Worker.StateChanged)
    def _failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self._frame("error")
            self.query_one("#verify-phase", Label).update("stopped")
            self.query_one("#verify-verdict", Label).update(
                Text(f"✘ could not verify: {error}", style="bold red")
            )

    def _frame(self, colour: str) -> None:
        """Green or red around the verdict (inline: the app's .dialog-box rule wins over CSS
        here)."""
        box = self.query_one("#audit-verify")
        box.styles.border = ("thick", self.app.get_css_variables()[colour])

    @on(Button.Pressed, "#verify-close")
    def action_close(self) -> None:
        self.dismiss(self.report)


class ExportScreen(ModalScreen[Path | None]):
    """Asks where to write a session's evidence bundle (a new or empty directory)."""

    BINDINGS: ClassVar[list[BindingType]] = CANCEL

    def __init__(self, session: str, suggestion: str) -> None:
        super().__init__(classes="dialog")
        self.session = session
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box", id="audit-export"):
            yield Label(Text(f"Export the evidence bundle of session {self.session} to"))
            yield Input(self.suggestion, id="export-path")
            yield Label(
                "a new or empty directory; anyone can check it with sha256sum -c SHA256SUMS, "
                "ssh-keygen -Y verify and sh verify-chain.sh (see its README.md)",
                classes="hint",
            )

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(Path(event.value.strip()).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)
