"""The frame every mode's screens share: header on top, footer keys below, live refresh."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from bgtui.identity import Identity
from bgtui.widgets.header import BgHeader

if TYPE_CHECKING:
    from bgtui.app import BgtuiApp


class BgScreen(Screen[None]):
    """A screen that redraws from the app's view cache whenever views or the link change."""

    @property
    def bg(self) -> BgtuiApp:
        return cast("BgtuiApp", self.app)

    def compose(self) -> ComposeResult:
        yield BgHeader()
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:
        return ()

    def on_mount(self) -> None:
        self.bg.views_changed.subscribe(self, self._views_changed)
        self.bg.identity_changed.subscribe(self, self._identity_changed)
        self.watch(self.bg, "connection", self._connection_changed)
        self._update_header()
        self.refresh_views(None)

    def _views_changed(self, rid: str | None) -> None:
        self.refresh_views(rid)

    def _identity_changed(self, identity: Identity) -> None:
        self._update_header()
        self.refresh_views(None)

    def _connection_changed(self, state: str) -> None:
        self.query_one(BgHeader).state = state

    def _update_header(self) -> None:
        header = self.query_one(BgHeader)
        app = self.bg
        if app.identity is not None:
            header.who = app.identity.name
            header.role = app.identity.role
            header.fingerprint = app.identity.fingerprint
        header.controller = str(app.memory.info.get("controller_id") or "")
        header.address = app.settings.controller
        header.state = app.connection

    def refresh_views(self, rid: str | None) -> None:
        """Redraw from the cache; `rid` is the one view that changed (None: maybe all)."""
        self._update_header()
