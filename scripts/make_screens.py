"""Regenerates `screens/`: an SVG of every TUI screen and state worth seeing (`make screens`).

Nothing here is a fixture: a sandbox appliance (`bgctl serve`, the Kubernetes API simulator, a
throwaway PostgreSQL, a loopback sshd) is started, the operator's history is made with the real
`bgtui` command line, and then the app built by `create_app` (as `bgtui demo` builds it) is
driven with key presses through one story: olive asks for orders-db, alice reviews and approves
it and a Kubernetes request, olive opens her session, ends it and sees the teardown. Each step
saves an SVG named so the files sort in story order. Last, audrey browses the audit log,
a session's timeline, and verifies the chain.

Only the display clock is fixed: it is frozen at a set offset from the session's own times
before each shot (ages, windows and countdowns read as round numbers, not "0s"). Ids, keys and
timestamps are real, so every run writes different files.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from textual.containers import VerticalScroll
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import DataTable, Footer, Input, OptionList

from bgtui.app import BgtuiApp, create_app
from bgtui.client import ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import parse_utc
from bgtui.shell import ShellOutcome, ShellSession
from bgtui.tui_config import TuiSettings
from controller.sandbox.appliance import SandboxAppliance

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "screens"
SIZE = (120, 40)
DEADLINE = 60.0  # seconds any one wait may take (activation and teardown take about one)


class StoryClock:
    """The app's display clock: real time until frozen, then the frozen moment."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or datetime.now(UTC)

    def freeze(self, at: str | None, offset: timedelta) -> None:
        self.frozen = parse_utc(at) + offset if at else None


class NoShell:
    """Screenshots never hand the terminal over (the tmux test covers the real hand-off)."""

    def launch(self, app: Any, session: ShellSession) -> ShellOutcome:
        return ShellOutcome(False, "no shell while taking screenshots")


# -- the command line, as each person runs it ---------------------------------------------------


def bgtui(appliance: SandboxAppliance, who: str, *args: str) -> str:
    """Runs the real `bgtui` as `who`; its stdout, or exits naming what failed."""
    result = subprocess.run(
        [sys.executable, "-m", "bgtui.cli", *args],
        capture_output=True,
        text=True,
        env=appliance.client_env(who),
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"make_screens: `bgtui {' '.join(args)}` as {who} failed: {result.stderr}")
    return result.stdout


def cli_view(appliance: SandboxAppliance, rid: str) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(bgtui(appliance, "olive", "show", rid, "--json"))
    return view


def cli_wait(appliance: SandboxAppliance, rid: str, state: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while cli_view(appliance, rid).get("state") != state:
        if time.monotonic() > deadline:
            sys.exit(f"make_screens: {rid} never became {state}")
        time.sleep(0.2)


def cli_request(appliance: SandboxAppliance, resource: str, privilege: str, reason: str) -> str:
    said = bgtui(
        appliance,
        "olive",
        "request",
        resource,
        "--privilege",
        privilege,
        "--duration",
        "30m",
        "--reason",
        reason,
        "--json",
    )
    return str(json.loads(said)["id"])


def history(appliance: SandboxAppliance) -> None:
    """Before the app opens: an earlier bastion session, used and ended, and three requests
    waiting for alice (she approves one, rejects one and leaves one for later)."""
    rid = cli_request(appliance, "bastion", "ops", "INC-4709: disk full on the bastion")
    bgtui(appliance, "alice", "approve", rid, "--yes")
    cli_wait(appliance, rid, "active")
    bgtui(appliance, "olive", "end", rid)
    cli_wait(appliance, rid, "ended")
    cli_request(appliance, "cluster", "edit", "INC-4713: orders-api crash-looping, restart pods")
    cli_request(appliance, "status-page", "use", "INC-4713: post an incident banner")
    cli_request(appliance, "bastion", "admin", "INC-4715: rotate the bastion's host keys")


# -- the app ---------------------------------------------------------------------------------


def build_app(appliance: SandboxAppliance, clock: StoryClock) -> BgtuiApp:
    """The app as `bgtui demo` builds it, with the story clock and no shell."""
    identities = [
        Identity.load(ClientHome(home), name) for name, (_, home) in appliance.identities.items()
    ]
    url = appliance.controller_url

    def client_factory(identity: Identity, signer: Signer) -> ControllerClient:
        return ControllerClient(url, signer)

    settings = TuiSettings(home=identities[0].home, controller=url, identity_name="olive")
    return create_app(
        settings,
        client_factory=client_factory,
        identities=identities,
        clock=clock,
        shell_launcher=NoShell(),
    )


class Story:
    """Key presses, waits on the app's state (never fixed sleeps) and one SVG per shot."""

    def __init__(self, pilot: Pilot[None], clock: StoryClock) -> None:
        self.pilot = pilot
        self.app = cast(BgtuiApp, pilot.app)
        self.clock = clock
        self.shots: list[str] = []

    async def until(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not ready():
            if time.monotonic() > deadline:
                seen = Path(tempfile.gettempdir()) / "make_screens-timeout.svg"
                seen.write_text(self.app.export_screenshot(), encoding="utf-8")
                raise TimeoutError(f"waited {DEADLINE:.0f}s for {what}; the screen: {seen}")
            await self.pilot.pause(0.05)

    async def press(self, *keys: str) -> None:
        for key in keys:
            await self.pilot.press(key)
            await self.pilot.pause()

    async def type(self, text: str) -> None:
        await self.press(*("space" if ch == " " else ch for ch in text))

    def state(self, rid: str) -> str | None:
        view = self.app.view(rid)
        return None if view is None else str(view.get("state"))

    async def until_state(self, rid: str, state: str) -> None:
        """Waits for `rid` to reach `state`; after a few seconds presses f5 (re-read from the
        controller), since the view an action returns can land after a newer streamed one."""
        deadline = time.monotonic() + 5
        while self.state(rid) != state and time.monotonic() < deadline:
            await self.pilot.pause(0.05)
        if self.state(rid) != state:
            await self.press("f5")
        await self.until(f"{rid} {state}", lambda: self.state(rid) == state)

    def when(self, rid: str, field: str) -> str:
        """A time field of a view (`created_at`, `activated_at`…), as the controller said it."""
        return str((self.app.view(rid) or {}).get(field) or "")

    def rid_of(self, resource: str, state: str) -> str:
        return next(
            str(v["id"])
            for v in self.app.views()
            if v.get("resource") == resource and v.get("state") == state
        )

    async def as_identity(self, name: str, *, shot: str | None = None) -> None:
        """ctrl+o, move to `name` in the switcher, enter; waits until connected as them."""
        await self.press("ctrl+o")
        options = self.app.screen.query_one("#identities", OptionList)
        for _ in range(len(self.app.identities)):
            highlighted = options.highlighted
            if highlighted is not None and options.get_option_at_index(highlighted).id == name:
                break
            await self.press("down")
        if shot:
            current = self.app.identity.name if self.app.identity else "nobody"
            await self.shot(shot, f"switch identity (from {current} to {name})")
        await self.press("enter")
        await self.until(
            f"{name} connected",
            lambda: (
                self.app.identity is not None
                and self.app.identity.name == name
                and self.app.connection == "connected"
                and bool(self.app.memory.resources)
            ),
        )
        await self.app.workers.wait_for_complete()
        await self.pilot.pause(0.2)

    async def select(self, table: str, key: str) -> None:
        """Focuses `table` and moves its cursor to the row `key`."""
        widget = self.app.screen.query_one(table, DataTable)
        widget.focus()
        await self.until(f"row {key} in {table}", lambda: key in _row_keys(widget))
        widget.move_cursor(row=_row_keys(widget).index(key))
        await self.pilot.pause()

    async def shot(self, name: str, title: str) -> None:
        """Redraws on the story clock, then saves screens/NN-name.svg."""
        for widget in self.app.screen.query(Input):
            widget.cursor_blink = False
        self.app.views_changed.publish(None)
        self.app.screen.refresh(layout=True)
        await self.pilot.pause(0.2)
        # After a mode switch the footer recomposes its keys a moment later.
        await self.until("the footer's keys", self._footer_ready)
        filename = f"{len(self.shots) + 1:02d}-{name}.svg"
        svg = self.app.export_screenshot(title=f"bgtui — {title}")
        (OUT / filename).write_text(svg, encoding="utf-8", newline="\n")
        self.shots.append(filename)
        print(f"  {filename}", flush=True)

    def _footer_ready(self) -> bool:
        screens = [s for s in self.app.screen_stack if s.query(Footer)]
        return not screens or bool(screens[-1].query_one(Footer).children)


def _row_keys(table: DataTable[Any]) -> list[str]:
    cells = (table.coordinate_to_cell_key(Coordinate(i, 0)) for i in range(table.row_count))
    return [str(cell.row_key.value) for cell in cells]


async def story(appliance: SandboxAppliance) -> list[str]:
    clock = StoryClock()
    app = build_app(appliance, clock)
    async with app.run_test(size=SIZE) as pilot:
        s = Story(pilot, clock)
        await s.until("olive connected", lambda: app.connection == "connected")
        await s.until("the catalog", lambda: len(app.memory.resources) == 4)
        pending_k8s = s.rid_of("cluster", "pending")
        pending_status = s.rid_of("status-page", "pending")
        clock.freeze(s.when(pending_k8s, "created_at"), timedelta(minutes=3))

        # The operator: catalog, the request form, the request pending.
        await s.select("#catalog", "cluster")
        await s.shot("operator-catalog", "operator: catalog and my requests")
        await s.select("#catalog", "orders-db")
        await s.press("n")
        await s.until("the request form", lambda: app.screen.query("#duration").first().has_focus)
        await s.type("30m")
        await s.press("tab")
        await s.type("INC-4712: slow order queries, need EXPLAIN")
        await s.shot("request-form", "operator: request form")
        await s.press("ctrl+s")
        await s.until("the orders-db request", lambda: _has(app, "orders-db", "pending"))
        pending_db = s.rid_of("orders-db", "pending")
        created = s.when(pending_db, "created_at")
        clock.freeze(created, timedelta(seconds=40))
        await s.select("#mine", pending_db)
        await s.press("enter")
        await s.shot("request-pending", "operator: my request, pending approval")
        await s.press("escape")

        # The approver: inbox, the postgres recipe request, the Kubernetes request.
        await s.as_identity("alice", shot="identity-switcher")
        clock.freeze(created, timedelta(minutes=2))
        await s.select("#inbox", pending_db)
        await s.shot("approver-inbox", "approver: inbox")
        await s.press("enter")
        await s.until("the signature check", lambda: "verified" in _text(app, "#verdict"))
        await s.shot("approval-postgres-recipe", "approver: review a PostgreSQL recipe request")
        app.screen.query_one("#approval", VerticalScroll).scroll_end(animate=False)
        await s.shot("approval-postgres-teardown", "approver: the recipe's teardown, then sign")
        await s.press("a")
        await s.until_state(pending_db, "active")

        await s.select("#inbox", pending_k8s)
        await s.press("enter")
        await s.until("the signature check", lambda: "verified" in _text(app, "#verdict"))
        clock.freeze(s.when(pending_k8s, "created_at"), timedelta(minutes=4))
        app.screen.query_one("#approve-duration", Input).focus()
        await s.type("15m")
        await s.shot("approval-kubernetes", "approver: review a Kubernetes request, shortened")
        await s.pilot.click("#approve")
        await s.until_state(pending_k8s, "active")

        await s.select("#inbox", pending_status)
        await s.press("enter", "r")
        await s.type("use the status-page runbook's banner macro")
        await s.shot("reject-reason", "approver: reject, with a reason")
        await s.press("enter")
        await s.until_state(pending_status, "rejected")
        active_at = s.when(pending_db, "activated_at")
        clock.freeze(active_at, timedelta(minutes=4, seconds=10))
        await s.select("#active", pending_db)
        await s.shot("approver-active-sessions", "approver: active sessions")

        # The operator again: the live session, ending it, the teardown.
        await s.as_identity("olive")
        await s.select("#mine", pending_db)
        await s.shot("operator-sessions", "operator: my sessions")
        await s.press("enter")
        await s.shot("session-active", "operator: active session")
        await s.press("f1")
        await s.shot("help", "help: keys on the session screen")
        await s.press("escape", "e")
        await s.shot("end-confirm", "operator: end the session?")
        await s.press("y")
        await s.until_state(pending_db, "ended")
        ended_at = s.when(pending_db, "ended_at")
        clock.freeze(ended_at, timedelta(seconds=30))
        await s.shot("session-ended", "operator: ended session and its teardown")
        await s.press("escape")

        # The auditor: the log (copied into her mirror), a session's timeline, the chain checked.
        await s.as_identity("audrey")
        synced = ("synced", "in sync")
        await s.until("the log copied", lambda: _text(app, "#audit-sync").startswith(synced))
        await s.until("the first page", lambda: "rows 1" in _text(app, "#audit-status"))
        await s.shot("auditor-log", "auditor: the audit log, newest first")
        for _ in range(20):  # down to an entry of olive's orders-db session
            if getattr(app.screen, "selected_session", lambda: None)() == pending_db:
                break
            await s.press("down")
        await s.press("t")
        await s.until("the timeline", lambda: "reading" not in _text(app, "#tl-summary"))
        await s.shot("auditor-timeline", "auditor: one session's timeline")
        await s.press("escape")
        await s.press("v")
        await s.until("the verdict", lambda: bool(_text(app, "#verify-verdict").strip()))
        if "intact" not in _text(app, "#verify-verdict"):  # never a failure in the README
            raise RuntimeError(f"the audit log did not verify: {_text(app, '#verify-verdict')}")
        await s.shot("auditor-verify", "auditor: the audit log verified")
        return s.shots


def _has(app: BgtuiApp, resource: str, state: str) -> bool:
    return any(v.get("resource") == resource and v.get("state") == state for v in app.views())


def _text(app: BgtuiApp, selector: str) -> str:
    found = app.screen.query(selector)
    return str(getattr(found.first(), "content", "")) if found else ""


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.svg"):
        old.unlink()
    print("starting the sandbox appliance…", flush=True)
    with SandboxAppliance() as appliance:
        if appliance.missing:
            for line in appliance.missing:
                print(f"  missing: {line}", file=sys.stderr)
            print("make_screens: the story needs every resource kind", file=sys.stderr)
            return 1
        print("the operator's history, with the command line…", flush=True)
        history(appliance)
        print(f"the story, in the app ({SIZE[0]}x{SIZE[1]}), into {OUT.relative_to(ROOT)}/:")
        shots = asyncio.run(story(appliance))
    print(f"{len(shots)} screens written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
