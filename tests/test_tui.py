"""The TUI driven with Pilot against a real `bgctl serve` (tests/servers.py); no fake controller.

Each test starts its own controller with olive (operator), alice and arne (approvers) and
audrey (auditor). The app gets a real ControllerClient; other parties act through the real
`bgtui` CLI in a thread, so the app's screens change through the live event stream. The only
stand-ins are the display clock (for countdown text) and the shell launcher (the headless
driver cannot hand over a terminal; the real hand-off is exercised in tmux).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.servers import Appliance, appliance
from tests.test_tui_snapshots import IDS, fixture_view, settle, snapshot_app
from tests.test_tui_snapshots import plane as snapshot_plane
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static

from bgtui.app import ActionFinished, BgtuiApp, ViewsArrived, create_app, open_mirror
from bgtui.client import ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.mirror import mirror_path
from bgtui.protocol.timefmt import now_utc, parse_utc
from bgtui.screens.approval import ApprovalScreen
from bgtui.screens.approver import ApproverScreen
from bgtui.screens.modals import ConfirmScreen, IdentityScreen, ReasonScreen
from bgtui.screens.operator import OperatorScreen
from bgtui.screens.request_form import RequestFormScreen
from bgtui.screens.session import SessionScreen
from bgtui.shell import ShellOutcome, ShellSession
from bgtui.tui_config import TuiSettings
from bgtui.tui_link import MemoryCache, ThreadCache, ViewCache
from bgtui.widgets.countdown import Countdown
from bgtui.widgets.header import BgHeader

View = dict[str, Any]
T = TypeVar("T")
SIZE = (120, 40)


@pytest.fixture
def ap(tmp_path: Path) -> Iterator[Appliance]:
    yield from appliance(tmp_path)


class Clock:
    """The display clock: real time until a test pins it."""

    def __init__(self) -> None:
        self.pinned: datetime | None = None

    def __call__(self) -> datetime:
        return self.pinned or now_utc()


class RecordingLauncher:
    """Records each hand-off; optionally runs `during(session)` as if a shell were open."""

    def __init__(self, during: Callable[[ShellSession], None] | None = None) -> None:
        self.sessions: list[ShellSession] = []
        self.during = during

    def launch(self, app: Any, session: ShellSession) -> ShellOutcome:
        self.sessions.append(session)
        if self.during is not None:
            self.during(session)
        if session.ended.is_set():
            return ShellOutcome(True, "the session ended, so its shell was closed", 0)
        return ShellOutcome(True, "shell closed (exit 0)", 0)


def make_app(
    ap: Appliance,
    name: str,
    *,
    clock: Clock | None = None,
    launcher: RecordingLauncher | None = None,
    home: Path | None = None,
    keymap: dict[str, str] | None = None,
    mirror: ViewCache | None = None,
) -> BgtuiApp:
    client_home = ClientHome(home or ap.identities[name].home)
    settings = TuiSettings(
        home=client_home,
        controller=ap.url,
        identity_name=name,
        keymap=keymap or {},
        reconnect_delays=(0.2, 0.3, 0.5),
        offline_after=2,
    )
    return create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(ap.url, signer, timeout=5),
        identities=Identity.load_all(client_home),
        clock=clock or Clock(),
        shell_launcher=launcher or RecordingLauncher(),
        mirror=mirror,
    )


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


async def until(pilot: Pilot[Any], check: Callable[[], object], what: str, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            await pilot.pause()  # let screens redraw from what just arrived
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def cli(ap: Appliance, who: str, *args: str) -> str:
    """Runs the real `bgtui` CLI as `who` off the event loop, so the app keeps running."""
    result = await asyncio.to_thread(ap.bgtui, who, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def connected(pilot: Pilot[Any]) -> BgtuiApp:
    app = pilot.app
    assert isinstance(app, BgtuiApp)
    await until(pilot, lambda: app.connection == "connected" and app.memory.resources, "connect")
    await pilot.pause()
    return app


def row(app: BgtuiApp, table_id: str, key: str) -> list[str]:
    table = app.screen.query_one(f"#{table_id}", DataTable)
    return [str(cell) for cell in table.get_row(key)]


def text(app: BgtuiApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


async def request_in_app(pilot: Pilot[Any], duration: str = "10m", reason: str = "INC-4711") -> str:
    """Fills the request form for the highlighted resource (status-page) and sends it."""
    app = pilot.app
    assert isinstance(app, BgtuiApp)
    before = {str(v["id"]) for v in app.views()}
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, RequestFormScreen), "request form")
    await pilot.press(*duration, "tab", *reason, "enter")
    await until(pilot, lambda: isinstance(app.screen, OperatorScreen), "form to close")
    await until(pilot, lambda: {str(v["id"]) for v in app.views()} - before, "the new request")
    (rid,) = {str(v["id"]) for v in app.views()} - before
    return rid


def screen_text(app: BgtuiApp) -> str:
    """What the terminal shows now, toasts included, as text (from the SVG screenshot)."""
    lines = re.findall(r"<text[^>]*>(.*?)</text>", app.export_screenshot(), re.S)
    return " ".join(html.unescape(line).replace("\xa0", " ") for line in lines)


def state_of(app: BgtuiApp, rid: str) -> str | None:
    view = app.view(rid)
    return None if view is None else str(view.get("state"))


def test_operator_requests_then_active_with_countdown_then_ends(ap: Appliance) -> None:
    clock = Clock()

    async def scenario() -> None:
        app = make_app(ap, "olive", clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            header = app.screen.query_one(BgHeader)
            assert (header.who, header.role) == ("olive", "operator")
            assert header.fingerprint.startswith("SHA256:")
            assert row(app, "catalog", "status-page")[:3] == ["status-page", "service", "direct"]

            rid = await request_in_app(pilot)
            assert row(app, "mine", rid)[1] == "Pending"
            await cli(ap, "alice", "approve", rid, "--yes")
            await until(pilot, lambda: state_of(app, rid) == "active", "Active")
            assert row(app, "mine", rid)[1] == "Active"

            # The session screen counts down on the injected clock, from the real expiry.
            app.screen.query_one("#mine", DataTable).focus()
            await pilot.pause()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), "session screen")
            expires = parse_utc(str(app.view(rid)["expires_at"]))  # type: ignore[index]
            clock.pinned = expires - timedelta(minutes=9, seconds=12)
            countdown = app.screen.query_one(Countdown)
            countdown.refresh()
            assert str(countdown.render()).startswith("9m12s left")
            assert "Active" in str(app.screen.query_one("#state", Label).content)

            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirm")
            await pilot.press("y")
            await until(pilot, lambda: state_of(app, rid) == "ended", "Ended")
            await pilot.pause()
            assert "ended by operator" in str(app.screen.query_one("#state", Label).content)
        shown = json.loads(await cli(ap, "olive", "show", rid, "--json"))
        assert shown["state"] == "ended" and shown["ended_reason"] == "ended by operator"

    run(scenario)


def test_request_form_validates_as_you_type(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "olive")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, RequestFormScreen), "form")
            await pilot.press(*"10x")
            await pilot.pause()
            assert "bad duration" in str(app.screen.query_one("#duration-error", Label).content)
            await pilot.press("backspace", "backspace", "backspace", *"9h")
            await pilot.pause()
            error = str(app.screen.query_one("#duration-error", Label).content)
            assert "longer than this controller's maximum of 4h" in error
            await pilot.press("backspace", "backspace")
            await pilot.pause()
            error = str(app.screen.query_one("#duration-error", Label).content)
            assert error == "a duration is required, like 30m or 1h30m"
            await pilot.press(*"9h")
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "a reason is required" in str(
                app.screen.query_one("#reason-error", Label).content
            )
            assert isinstance(app.screen, RequestFormScreen)  # nothing was sent
        assert json.loads(await cli(ap, "olive", "list", "--json")) == []

    run(scenario)


def fixed_plane() -> dict[str, Any]:
    return snapshot_plane("network", "direct", "x")


def test_approver_sees_exactly_what_is_granted_and_approves_shorter(ap: Appliance) -> None:
    async def scenario() -> None:
        out = await cli(
            ap, "olive", "request", "status-page", "--privilege", "admin", "--duration", "30m",
            "--reason", "INC-9 restart the status page", "--json",
        )  # fmt: skip
        rid = json.loads(out)["id"]
        app = make_app(ap, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await until(pilot, lambda: app.view(rid) is not None, "the request")
            assert isinstance(app.screen, ApproverScreen)
            cells = row(app, "inbox", rid)
            assert cells[:5] == [rid, "status-page", "admin", "30m", "olive"]
            assert cells[6].endswith("left")  # request window
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "approval")
            await pilot.pause()
            grant = text(app, "#grant")
            olive = Identity.load(ClientHome(ap.identities["olive"].home))
            for needle in (
                "approvals still needed: 1 of 1",
                "resource      status-page",
                "privilege     admin",
                "duration      30m, counted from activation",
                "network path  direct",
                "credential    out-of-band",
                "reason        INC-9 restart the status page",
                f"operator      olive {olive.fingerprint}",
                "this approval activates the session",
            ):
                assert needle in grant, f"{needle!r} not in {grant}"
            assert "operator signature verified" in text(app, "#verdict")
            app.screen.query_one("#approve-duration").focus()
            await pilot.press(*"45m")
            await pilot.pause()
            assert "longer than the 30m requested" in str(
                app.screen.query_one("#duration-error", Label).content
            )
            await pilot.press("backspace", "backspace", "backspace", *"5m")
            await pilot.pause()
            assert "5m (shortened from 30m)" in text(app, "#grant")
            await pilot.click("#approve")
            await until(pilot, lambda: state_of(app, rid) == "active", "Active")
            assert isinstance(app.screen, ApproverScreen)
            assert row(app, "active", rid)[1] == "Active"
        shown = json.loads(await cli(ap, "olive", "show", rid, "--json"))
        assert shown["approved_duration"] == 300
        assert shown["approvals"][0]["approver"] == "alice"
        # The snapshots' cached views have exactly the shape the real controller sends.
        fixed = fixture_view("active", rid, created=shown["created_at"])
        assert set(shown) == set(fixed)
        assert set(shown["planes"][0]) == set(fixed_plane())

    run(scenario)


def test_reject_in_approver_app_and_the_operator_sees_why(ap: Appliance) -> None:
    async def scenario() -> None:
        operator = make_app(ap, "olive")
        async with operator.run_test(size=SIZE) as pilot:
            await connected(pilot)
            rid = await request_in_app(pilot)
            # The approver rejects in their own app (below) while this one is closed; then
            # a second rejection path, the CLI, is not needed: reopen and read the reason.
        approver = make_app(ap, "alice")
        async with approver.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await until(pilot, lambda: approver.view(rid) is not None, "the request")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(approver.screen, ApprovalScreen), "approval")
            await pilot.press("r")
            await until(pilot, lambda: isinstance(approver.screen, ReasonScreen), "reason")
            await pilot.press("enter")
            await pilot.pause()
            assert "a reason is required" in str(approver.screen.query_one("#error").content)  # type: ignore[attr-defined]
            await pilot.press(*"use the read replica", "enter")
            await until(pilot, lambda: state_of(approver, rid) == "rejected", "Rejected")
        operator = make_app(ap, "olive")
        async with operator.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await until(pilot, lambda: operator.view(rid) is not None, "the request")
            cells = row(operator, "mine", rid)
            assert cells[1] == "Rejected"
            assert cells[5] == "rejected: use the read replica"

    run(scenario)


def test_rejection_reaches_an_open_operator_screen_live(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "olive")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            rid = await request_in_app(pilot)
            await cli(ap, "alice", "reject", rid, "--reason", "not during the freeze", "--yes")
            await until(pilot, lambda: state_of(app, rid) == "rejected", "Rejected")
            await pilot.pause()
            assert row(app, "mine", rid)[5] == "rejected: not during the freeze"

    run(scenario)


def test_withdraw_with_a_rebound_key(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "olive", keymap={"withdraw": "x"})
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            rid = await request_in_app(pilot)
            app.screen.query_one("#mine", DataTable).focus()
            await pilot.pause()
            await pilot.press("w")  # rebound away: does nothing
            await pilot.pause(0.3)
            assert state_of(app, rid) == "pending"
            await pilot.press("x")
            await until(pilot, lambda: state_of(app, rid) == "cancelled", "Cancelled")
            await pilot.pause()
            assert row(app, "mine", rid)[5] == "withdrawn by operator"

    run(scenario)


def test_revoke_from_the_approver_app(ap: Appliance) -> None:
    async def scenario() -> None:
        out = await cli(
            ap, "olive", "request", "status-page", "--privilege", "use", "--duration", "10m",
            "--reason", "INC-5", "--json",
        )  # fmt: skip
        rid = json.loads(out)["id"]
        await cli(ap, "alice", "approve", rid, "--yes")
        app = make_app(ap, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            await until(pilot, lambda: state_of(app, rid) == "active", "Active")
            app.screen.query_one("#active", DataTable).focus()
            await pilot.pause()
            assert app.screen.check_action("revoke", ()) is True
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirm")
            await pilot.press("y")
            await until(pilot, lambda: state_of(app, rid) == "ended", "Ended")
            assert app.view(rid)["ended_reason"] == "revoked by customer"  # type: ignore[index]

    run(scenario)


def test_expiry_while_the_session_screen_is_open(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "olive")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            rid = await request_in_app(pilot, duration="3s")
            app.screen.query_one("#mine", DataTable).focus()
            await pilot.pause()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), "session screen")
            await cli(ap, "alice", "approve", rid, "--yes")
            await until(pilot, lambda: state_of(app, rid) == "active", "Active")
            await until(pilot, lambda: state_of(app, rid) == "ended", "expiry", timeout=20)
            await pilot.pause()
            assert isinstance(app.screen, SessionScreen)
            assert "expired" in str(app.screen.query_one("#state", Label).content)
            assert app.screen.query_one(Countdown).expires_at is None
            assert app.screen.check_action("end", ()) is False

    run(scenario)


def test_controller_going_away_and_coming_back(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "olive")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            rid = await request_in_app(pilot)
            await asyncio.to_thread(ap.stop)
            await until(pilot, lambda: app.connection == "offline", "offline")
            header = app.screen.query_one(BgHeader)
            assert header.state == "offline"
            assert "offline" in header.render_text()
            await until(pilot, lambda: "cannot reach the controller" in screen_text(app), "why")
            assert "offline: showing the local copy" in screen_text(app)  # in a toast
            assert re.search(r"\[Errno \d+\]", screen_text(app))  # plain text, not markup
            # Cached data is still on screen, read-only.
            assert row(app, "mine", rid)[1] == "Pending"
            assert row(app, "catalog", "status-page")[0] == "status-page"
            await asyncio.to_thread(ap.start)
            await until(pilot, lambda: app.connection == "connected", "reconnect")
            await cli(ap, "olive", "withdraw", rid)
            await until(pilot, lambda: state_of(app, rid) == "cancelled", "live again")

    run(scenario)


def test_a_first_connection_makes_the_mirror_and_an_offline_start_shows_it(ap: Appliance) -> None:
    """No audit sync ever ran in olive's home: the TUI's own first connection makes the mirror,
    and a later start with the controller down shows the catalog and the request from it."""
    home = ClientHome(ap.identities["olive"].home)
    assert not mirror_path(home).exists()

    def the_mirror() -> ThreadCache:  # as `bgtui` itself opens it (bgtui.app.launch)
        return ThreadCache(partial(open_mirror, home, ap.url))

    async def online() -> str:
        cache = the_mirror()
        try:
            async with make_app(ap, "olive", mirror=cache).run_test(size=SIZE) as pilot:
                await connected(pilot)
                return await request_in_app(pilot)
        finally:
            cache.close()  # writes are queued: close finishes them

    rid = run(online)
    assert mirror_path(home).stat().st_mode & 0o777 == 0o600
    ap.stop()

    async def offline() -> None:
        cache = the_mirror()
        try:
            app = make_app(ap, "olive", mirror=cache)
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: app.connection == "offline", "offline")
                await until(pilot, lambda: app.view(rid) is not None, "the request, from disk")
                assert row(app, "mine", rid)[1] == "Pending"
                assert row(app, "catalog", "status-page")[0] == "status-page"
                header = app.screen.query_one(BgHeader)
                assert header.controller == "acme-prod"  # the id it said it had, remembered
                assert "offline" in header.render_text()
        finally:
            cache.close()

    run(offline)


def test_connect_hands_over_and_closes_the_shell_when_the_session_ends(ap: Appliance) -> None:
    def end_meanwhile(session: ShellSession) -> None:
        # The "shell" is open (the event loop is blocked, as with a real suspend); the
        # session ends elsewhere and the event-stream thread must close it.
        result = ap.bgtui("alice", "revoke", session.request_id)
        assert result.returncode == 0, result.stderr
        assert session.ended.wait(20), "the shell was not told the session ended"

    launcher = RecordingLauncher(end_meanwhile)

    async def scenario() -> None:
        app = make_app(ap, "olive", launcher=launcher)
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            rid = await request_in_app(pilot)
            await cli(ap, "alice", "approve", rid, "--yes")
            await until(pilot, lambda: state_of(app, rid) == "active", "Active")
            app.screen.query_one("#mine", DataTable).focus()
            await pilot.pause()
            await pilot.press("c")
            await until(pilot, lambda: launcher.sessions, "hand-off")
            await until(pilot, lambda: any("shell was closed" in n for n in notes), "told why")
            (session,) = launcher.sessions
            assert (session.request_id, session.kind) == (rid, "service")
            assert session.address == ap.target.address  # type: ignore[union-attr]
            assert session.credential is None  # out of band: nothing minted
            assert session.ended_reason == "revoked by customer"
            assert any("revoked by customer" in n for n in notes)

    run(scenario)


def test_switching_identity_switches_mode(ap: Appliance, tmp_path: Path) -> None:
    both = tmp_path / "both"
    for name in ("olive", "alice"):
        src = ap.identities[name].home / "identities" / name
        shutil.copytree(src, both / "identities" / name)

    async def scenario() -> None:
        app = make_app(ap, "olive", home=both)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            assert app.current_mode == "operator"
            await pilot.press("ctrl+o")
            await until(pilot, lambda: isinstance(app.screen, IdentityScreen), "switcher")
            await pilot.press("home", "enter")  # alice sorts first
            await until(pilot, lambda: app.current_mode == "approver", "approver mode")
            await until(pilot, lambda: app.connection == "connected", "reconnect as alice")
            assert isinstance(app.screen, ApproverScreen)
            assert app.screen.query_one(BgHeader).who == "alice"

    run(scenario)


def test_auditor_identity_opens_auditor_mode(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "audrey")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            assert app.current_mode == "auditor"

    run(scenario)


def test_command_palette_offers_the_actions_of_the_screen(ap: Appliance) -> None:
    async def scenario() -> None:
        app = make_app(ap, "olive")
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Request" in titles and "Help" in titles and "Identity" in titles
            assert "Withdraw" not in titles  # nothing pending is selected
            await pilot.press("f1")
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"

    run(scenario)


def test_encrypted_key_asks_for_the_passphrase(tmp_path: Path) -> None:
    """No controller needed: the key is opened (or not) before any call is made."""
    from bgtui.protocol.keys import PrivateKey
    from bgtui.screens.modals import PassphraseScreen

    home = ClientHome(tmp_path / "home")
    Identity.create(home, "olive", "operator", PrivateKey.generate("olive"), b"correct horse")
    settings = TuiSettings(
        home=home,
        controller=f"unix:{tmp_path / 'none.sock'}",
        passphrase_env="BGTUI_TEST_UNSET_PASSPHRASE",
        reconnect_delays=(3600.0,),
        offline_after=1,
    )
    app = create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(settings.controller, signer),
        identities=Identity.load_all(home),
        clock=Clock(),
        shell_launcher=RecordingLauncher(),
    )

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, PassphraseScreen), "the prompt")
            await pilot.press(*"wrong", "enter")
            await until(
                pilot,
                lambda: (
                    isinstance(app.screen, PassphraseScreen)
                    and "wrong passphrase" in str(app.screen.query_one("#error", Label).content)
                ),
                "asked again",
            )
            assert app.identity is None
            await pilot.press(*"correct horse", "enter")
            await until(pilot, lambda: app.identity is not None, "the key opened")
            await until(pilot, lambda: app.connection == "offline", "offline")
            assert app.key is not None and app.current_mode == "operator"

    run(scenario)


# -- stale views -----------------------------------------------------------------------------


def test_an_older_view_never_replaces_a_newer_one_in_memory() -> None:
    rid = IDS["active"]
    active = fixture_view("active", rid, created="2026-01-15T11:49:00Z", revision=20)
    cache = MemoryCache([active])
    cache.save_views([{**active, "state": "activating", "revision": 10}])
    assert cache.view(rid) == active
    unrevised = {k: v for k, v in active.items() if k != "revision"}
    cache.save_views([{**unrevised, "state": "pending"}])  # no revision: counts as 0
    assert cache.view(rid) == active
    cache.save_views([{**active, "detail": "same revision"}])  # equal revisions replace
    assert cache.view(rid) == {**active, "detail": "same revision"}
    ended = {**active, "state": "ended", "revision": 30}
    cache.save_views([ended])
    assert cache.view(rid) == ended
    # Views without a revision (older controllers, fixtures) replace each other as before.
    old = MemoryCache([{**unrevised, "state": "pending"}])
    old.save_views([unrevised])
    assert old.view(rid) == unrevised


def test_an_actions_late_answer_does_not_undo_a_newer_event(tmp_path: Path) -> None:
    """`end` answers with the session Ending; the stream's Ended can arrive first."""

    async def scenario() -> None:
        app = snapshot_app(tmp_path, "olive")
        rid = IDS["active"]
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            shown = app.view(rid)
            assert shown is not None
            ended = {**shown, "state": "ended", "ended_reason": "ended by operator"}
            app.post_message(ViewsArrived([{**ended, "revision": 2}]))
            await pilot.pause()
            assert row(app, "mine", rid)[1] == "Ended"
            app.post_message(
                ActionFinished("end", {**shown, "state": "ending", "revision": 1}, None)
            )
            await pilot.pause()
            await pilot.pause()
            assert state_of(app, rid) == "ended"
            assert row(app, "mine", rid)[1] == "Ended"

    run(scenario)


def test_a_refusal_with_brackets_is_shown_verbatim_and_never_read_as_markup(
    tmp_path: Path,
) -> None:
    """Refusals carry others' text (controller errors, paths, recipe names). As Rich markup,
    `[/]` would crash the app and `[b=c]` would vanish; they are shown as written."""

    async def scenario() -> None:
        app = snapshot_app(tmp_path, "olive")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await settle(pilot)
            error = "role [/] of a[b=c] not created"
            app.post_message(ActionFinished("end", None, error))
            await until(pilot, lambda: "end refused" in screen_text(app), "the refusal")
            assert error in screen_text(app)
            app.screen.notify("from a screen: [/]")  # a Screen passes markup=True by default
            await until(pilot, lambda: "from a screen: [/]" in screen_text(app), "verbatim")

    run(scenario)


TOKEN_RECIPE = """\
name = "status-token"
description = "the status service's API token, read from the customer's store"
kind = "command"
argv = ["printf", "%s", "tok-5e55ion"]
"""


def test_copy_credentials_writes_a_new_0600_file(tmp_path: Path) -> None:
    catalog = (
        '\n[[resources]]\nname = "status-api"\nkind = "service"\naddress = "{address}"\n'
        'network = "direct"\ncredential = "command"\nrecipe = "recipes/token.toml"\n'
        'privileges = ["use"]\n'
    )
    app_ = Appliance(tmp_path, secret_files={"recipes/token.toml": TOKEN_RECIPE})
    try:
        app_.setup()
        assert app_.target is not None
        config = app_.home / "controller.toml"
        config.write_text(config.read_text() + catalog.format(address=app_.target.address))
        app_.start()
        made = app_.bgtui("olive", "request", "status-api", "--duration", "10m", "--reason", "x")
        rid = made.stdout.split()[0]
        assert app_.bgtui("alice", "approve", rid, "--yes").returncode == 0
        out = tmp_path / "creds.json"

        async def scenario() -> None:
            app = make_app(app_, "olive")
            async with app.run_test(size=SIZE) as pilot:
                await connected(pilot)
                await until(pilot, lambda: (app.view(rid) or {}).get("state") == "active", "active")
                app.screen.query_one("#mine", DataTable).focus()
                await pilot.pause()
                assert isinstance(app.screen, OperatorScreen)
                app.screen.action_save_credentials()
                await pilot.pause()
                field = app.screen.query_one("#path")
                field.value = str(out)  # type: ignore[attr-defined]
                await pilot.press("enter")
                await until(pilot, out.exists, "the credential file")

        run(scenario)
        assert out.stat().st_mode & 0o777 == 0o600
        assert json.loads(out.read_text()) == {"value": "tok-5e55ion"}
    finally:
        app_.close()
