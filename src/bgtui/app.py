"""The bgtui Textual app: one hub, three modes (operator, approver, auditor).

The app owns who you are (identity, signer, controller client), the view cache every screen
renders from, and the live link to the controller (`EventFollower`). Screens read the cache
and call the hub's methods; controller calls run in thread workers and come back as Messages.
Build it with `create_app`, which the CLI and the tests both call.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen
from textual.signal import Signal

from bgtui.client import ControllerClient, View
from bgtui.identity import Identity
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.sshsig import Signer
from bgtui.screens.approver import ApproverScreen
from bgtui.screens.auditor import AuditorScreen
from bgtui.screens.help import HelpScreen
from bgtui.screens.modals import IdentityScreen, PassphraseScreen
from bgtui.screens.operator import OperatorScreen
from bgtui.shell import ShellLauncher, ShellSession
from bgtui.tui_config import Clock, TuiSettings
from bgtui.tui_link import (
    EventFollower,
    KeyOpening,
    MemoryCache,
    ThreadCache,
    ViewCache,
    open_identity,
)

if TYPE_CHECKING:
    from bgtui.cli import ClientContext
    from bgtui.home import ClientHome
    from bgtui.mirror import Mirror

ClientFactory = Callable[[Identity, Signer], ControllerClient]


@dataclass
class ViewsArrived(Message):
    """Views from the controller (a whole listing or one event)."""

    views: list[View]


@dataclass
class CachedViews(Message):
    """Views (and the last catalog) from the local store, read after startup: they fill in,
    never replace."""

    views: list[View]
    catalog: tuple[list[dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class CatalogArrived(Message):
    resources: list[dict[str, Any]]
    info: dict[str, Any]


@dataclass
class ConnectionChanged(Message):
    state: str  # connecting | connected | reconnecting | offline
    detail: str = ""


@dataclass
class ActionFinished(Message):
    """A user-started controller call ended: its view on success, else the refusal."""

    label: str
    view: View | None
    error: str | None


class BgtuiApp(App[None], inherit_bindings=False):
    """Break-glass access: operator, approver and auditor modes over one controller."""

    TITLE = "bgtui"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "operator": OperatorScreen,
        "approver": ApproverScreen,
        "auditor": AuditorScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit", tooltip="Leave bgtui."),
        Binding("f1", "help", "Help", id="help", tooltip="Keys and what they do here."),
        # show=False: the footer already shows the palette's key at its right end.
        Binding(
            "ctrl+p",
            "command_palette",
            "Palette",
            id="palette",
            show=False,
            tooltip="Every action here.",
        ),
        Binding(
            "ctrl+o",
            "switch_identity",
            "Identity",
            id="switch-identity",
            tooltip="Use another identity from this home (and its mode).",
        ),
        Binding("f5", "refresh", "Refresh", id="refresh", tooltip="Re-read from the controller."),
    ]

    connection: reactive[str] = reactive("connecting", bindings=True)
    """connecting, connected, reconnecting or offline."""

    def __init__(
        self,
        settings: TuiSettings,
        *,
        client_factory: ClientFactory,
        identities: list[Identity],
        clock: Clock,
        shell_launcher: ShellLauncher,
        cache: ViewCache | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.client_factory = client_factory
        self.identities = identities
        self.clock = clock
        self.shell_launcher = shell_launcher
        # Screens read from memory (instant); a Mirror, when given, seeds it after the first
        # frame (an offline start shows the last known state) and every view is written
        # through to it.
        self.memory = cache if isinstance(cache, MemoryCache) else MemoryCache()
        self.cache: ViewCache = cache if cache is not None else self.memory
        self._cache_read = self.cache is self.memory
        self.identity: Identity | None = None
        self.key: PrivateKey | None = None
        self.signer: Signer | None = None
        self.client: ControllerClient | None = None
        self.connection_detail = ""
        self.follower: EventFollower | None = None
        self.open_sessions: dict[str, ShellSession] = {}
        self.views_changed: Signal[str | None] = Signal(self, "views-changed")
        self.identity_changed: Signal[Identity] = Signal(self, "identity-changed")
        if settings.theme:
            self.theme = settings.theme

    # -- startup and identity ------------------------------------------------------------
    def on_mount(self) -> None:
        self.set_keymap(self.settings.keymap)
        chosen = self._initial_identity()
        if chosen is None:
            self.action_switch_identity()
        else:
            self.use_identity(chosen)

    @work(thread=True, exit_on_error=False, group="cache")
    def _read_cache(self) -> None:
        self.post_message(CachedViews(self.cache.views(), self.cache.catalog()))

    def _initial_identity(self) -> Identity | None:
        if self.settings.identity_name:
            for identity in self.identities:
                if identity.name == self.settings.identity_name:
                    return identity
        return self.identities[0] if len(self.identities) == 1 else None

    @work(exclusive=True, group="identity")
    async def use_identity(self, identity: Identity) -> None:
        """Opens the identity's key (asking a passphrase if needed), then connects as it."""
        opening: KeyOpening = await asyncio.to_thread(
            open_identity, identity, self.settings.passphrase_env, None
        )
        error = opening.error
        while opening.needs_passphrase:
            secret = await self.push_screen_wait(PassphraseScreen(identity.name, error))
            if secret is None:
                self.notify(f"identity {identity.name} not opened", severity="warning")
                return
            opening = await asyncio.to_thread(
                open_identity, identity, self.settings.passphrase_env, secret.encode()
            )
            error = opening.error
        if opening.signer is None:
            self.notify(opening.error or "cannot open the identity", severity="error")
            return
        # The mode's screen first, then the client: building one loads httpx and the TLS
        # trust store, so it happens off the event loop while the screen is already up.
        self._stop_following()
        self.identity, self.key, self.signer, self.client = (
            identity,
            opening.key,
            opening.signer,
            None,
        )
        await self.switch_mode(identity.role)
        self.identity_changed.publish(identity)
        self.views_changed.publish(None)
        self.connection = "connecting"
        if not self._cache_read:
            # After the mode's first frame: reading the store loads SQLite, and that work
            # would only slow the frame down.
            self._cache_read = True
            self.screen.call_after_refresh(self._read_cache)
        try:
            client = await asyncio.to_thread(self.client_factory, identity, opening.signer)
        except Refused as exc:
            self.connection_detail = str(exc)
            self.connection = "offline"
            self.notify(str(exc), severity="error")
            return
        self.client = client
        self.follower = EventFollower(
            client,
            lambda state, detail: self.post_message(ConnectionChanged(state, detail)),
            lambda views: self.post_message(ViewsArrived(views)),
            lambda resources, info: self.post_message(CatalogArrived(resources, info)),
            delays=self.settings.reconnect_delays,
            offline_after=self.settings.offline_after,
            on_view=self._note_final,
        )
        self.follower.start()

    def _stop_following(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None

    def _note_final(self, view: View) -> None:
        """Runs in the follower's thread: wakes any open shell watching this session."""
        session = self.open_sessions.get(str(view.get("id")))
        if session is not None and view.get("state") not in ("active", "activating"):
            session.ended_reason = str(view.get("ended_reason") or view.get("state"))
            session.ended.set()

    async def on_unmount(self) -> None:
        self._stop_following()

    # -- live updates ----------------------------------------------------------------------
    @on(ViewsArrived)
    def _views_arrived(self, message: ViewsArrived) -> None:
        self.memory.save_views(message.views)
        if self.cache is not self.memory:
            try:
                self.cache.save_views(message.views)
            except Exception as exc:  # the mirror is a copy: a failed write must not stop us
                self.log.warning(f"mirror write failed: {exc}")
        rid = str(message.views[0]["id"]) if len(message.views) == 1 else None
        self.views_changed.publish(rid)

    @on(CachedViews)
    def _cached_views(self, message: CachedViews) -> None:
        self.memory.seed(message.views)
        if message.catalog is not None and not self.memory.resources and not self.memory.info:
            self.memory.resources, self.memory.info = message.catalog  # the controller's is newer
        self.views_changed.publish(None)

    @on(CatalogArrived)
    def _catalog_arrived(self, message: CatalogArrived) -> None:
        self.memory.resources = message.resources
        self.memory.info = message.info
        if self.cache is not self.memory:
            try:
                self.cache.save_catalog(self.settings.controller, message.resources, message.info)
            except Exception as exc:  # the mirror is a copy: a failed write must not stop us
                self.log.warning(f"mirror write failed: {exc}")
        self.views_changed.publish(None)

    @on(ConnectionChanged)
    def _connection_changed(self, message: ConnectionChanged) -> None:
        went_offline = message.state == "offline" and self.connection != "offline"
        self.connection_detail = message.detail
        self.connection = message.state
        if went_offline and message.detail:
            # The header says offline; this says why (and stays until dismissed or timed out).
            self.notify(message.detail, title="offline: showing the local copy", severity="warning")

    @on(ActionFinished)
    def _action_finished(self, message: ActionFinished) -> None:
        if message.error is not None:
            self.notify(message.error, title=f"{message.label} refused", severity="error")
            return
        if message.view is not None:
            self.post_message(ViewsArrived([message.view]))
        self.notify(message.label, title="done")

    # -- controller calls ------------------------------------------------------------------
    def views(self) -> list[View]:
        return self.memory.views()

    def view(self, rid: str) -> View | None:
        return self.memory.view(rid)

    def call(self, label: str, fn: Callable[[ControllerClient], View | None]) -> None:
        """Runs `fn(client)` in a thread worker; the outcome arrives as ActionFinished."""
        client = self.client
        if client is None:
            self.notify("not connected as any identity yet", severity="warning")
            return
        self.run_worker(
            partial(self._call_thread, label, fn, client),
            thread=True,
            group="action",
            exit_on_error=False,
            description=label,
        )

    def _call_thread(
        self, label: str, fn: Callable[[ControllerClient], View | None], client: ControllerClient
    ) -> None:
        try:
            view = fn(client)
        except Refused as exc:
            self.post_message(ActionFinished(label, None, str(exc)))
            return
        self.post_message(ActionFinished(label, view, None))

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification here is plain text, whatever the caller (screens pass markup=True
        by default): messages carry controller errors, paths and ids, and Rich markup would eat
        a `[Errno 111]` or fail on a stray `[`."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # -- actions ---------------------------------------------------------------------------
    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.screen))

    def action_switch_identity(self) -> None:
        current = self.identity.name if self.identity else None

        def chosen(name: str | None) -> None:
            for identity in self.identities:
                if identity.name == name and name != current:
                    self.use_identity(identity)

        self.push_screen(IdentityScreen(self.identities, current), chosen)

    def action_refresh(self) -> None:
        if self.follower is not None:
            self.follower.refresh()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """One palette entry per action the current screen offers right now."""
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if (
                not active.enabled
                or binding.action in seen
                or binding.action in ("command_palette",)
            ):
                continue
            seen.add(binding.action)
            yield SystemCommand(
                binding.description or binding.action,
                binding.tooltip or binding.description,
                partial(self.run_action, binding.action, active.node),
            )
        yield SystemCommand("Theme", "Change the colour theme", self.action_change_theme)


def create_app(
    settings: TuiSettings,
    *,
    client_factory: ClientFactory,
    identities: list[Identity],
    clock: Clock,
    shell_launcher: ShellLauncher,
    mirror: ViewCache | None = None,
) -> BgtuiApp:
    """The app with every dependency given: what the CLI runs and what the tests drive."""
    return BgtuiApp(
        settings,
        client_factory=client_factory,
        identities=identities,
        clock=clock,
        shell_launcher=shell_launcher,
        cache=mirror,
    )


def binding_ids() -> set[str]:
    """Every binding id a user may rebind in `[keymap]`."""
    from bgtui.screens import approval, auditor, modals, request_form, session

    classes: list[Any] = [
        BgtuiApp,
        OperatorScreen,
        ApproverScreen,
        approval.ApprovalScreen,
        session.SessionScreen,
        request_form.RequestFormScreen,
        modals.ConfirmScreen,
        HelpScreen,
        *auditor.binding_classes(),
    ]
    ids = set()
    for cls in classes:
        for binding in cls.BINDINGS:
            if isinstance(binding, Binding) and binding.id:
                ids.add(binding.id)
    return ids


def launch(context: ClientContext) -> None:
    """Runs the TUI for the CLI's context (home, identity, controller); returns on quit."""
    from bgtui.protocol.timefmt import now_utc
    from bgtui.shell import TerminalShellLauncher
    from bgtui.tui_config import tui_options

    home = context.home
    identities = Identity.load_all(home)
    if not identities:
        raise Refused(
            f"no identity in {home.path}; create one with `bgtui keygen --role ROLE --name NAME`"
        )
    if context.identity_name and context.identity_name not in {i.name for i in identities}:
        names = ", ".join(i.name for i in identities)
        raise Refused(f"no identity named {context.identity_name!r} in {home.path}; have: {names}")
    settings = TuiSettings(
        home=home,
        controller=context.controller(),
        identity_name=context.identity_name,
        **tui_options(home.config_path, binding_ids()),
    )
    # Opened in its own thread once the app asks, so the first frame never waits on SQLite.
    mirror = ThreadCache(partial(open_mirror, home, settings.controller))
    app = create_app(
        settings,
        client_factory=lambda identity, signer: context.client(signer),
        identities=identities,
        clock=now_utc,
        shell_launcher=TerminalShellLauncher(),
        mirror=mirror,
    )
    try:
        app.run()
    finally:
        mirror.close()


def open_mirror(home: ClientHome, url: str, controller_id: str | None) -> Mirror | None:
    """The local mirror of `controller_id` (made if new); without one, of the controller last
    seen at `url`, if any."""
    from bgtui.mirror import Mirror, mirror_path

    path = mirror_path(home)
    try:
        controller_id = controller_id or Mirror.known_controller(path, url)
        return Mirror(path, controller_id) if controller_id else None
    except (Refused, OSError, sqlite3.Error):
        return None
