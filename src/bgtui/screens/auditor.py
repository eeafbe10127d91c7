"""Auditor mode (placeholder until the audit browser lands on the local Mirror)."""

from __future__ import annotations

from collections.abc import Iterable

from textual.widget import Widget
from textual.widgets import Label

from bgtui.screens.base import BgScreen


class AuditorScreen(BgScreen):
    """Lists nothing yet: the audit log browser, verification and export come next."""

    def compose_body(self) -> Iterable[Widget]:
        yield Label("auditor mode", classes="title", id="auditor-title")
        yield Label(
            "The audit log browser (filters, session timeline, verification, export) is not "
            "built yet; use `bgtui audit verify | log | export` meanwhile.",
            id="auditor-note",
        )
