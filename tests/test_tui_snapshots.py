"""SVG snapshots of every screen and state, on fixed data (pytest-textual-snapshot).

This is cached data, not a fake controller: the app is fed a fixed set of views through the
same cache the live app fills from the controller (`MemoryCache`), built here with the real
protocol objects (requests really signed by fixed-seed identity keys, so the approval screen's
signature check passes) in the exact shape `bgctl serve` returns (tests/test_tui.py checks the
shape against a live controller). The client points at a socket nobody listens on, so nothing
live leaks in and the header deterministically says "offline". The display clock is fixed.
Regenerate with `pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from bgtui.app import BgtuiApp, create_app
from bgtui.client import ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Request
from bgtui.shell import ShellOutcome, ShellSession
from bgtui.tui_config import TuiSettings
from bgtui.tui_link import MemoryCache

View = dict[str, Any]
SnapCompare = Callable[..., bool]
NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
SIZE = (120, 40)
KEYS = {
    "olive": ("operator", bytes(range(32))),
    "alice": ("approver", bytes(range(32, 64))),
}
IDS = {
    "pending": "01KF0P1ZQ8N3V5X7Z9B1D3F5H7",
    "active": "01KF0N2ZQ8N3V5X7Z9B1D3F5H7",
    "ended": "01KF0M3ZQ8N3V5X7Z9B1D3F5H7",
    "db": "01KF0Q4ZQ8N3V5X7Z9B1D3F5H7",
}
RECIPE = {
    "recipe": "recipes/pg-role.toml",
    "sha256": "9f2c4e1d7a0b3c5e8f6a1d2b4c7e9f0a3b5d8c1e2f4a6b9c0d3e5f7a8b1c2d4e",
    "text": (
        "CREATE ROLE {role} LOGIN PASSWORD {password} VALID UNTIL {expires}\n  IN ROLE {privilege};"
    ),
    "inputs": {"database": "orders", "privilege": "readonly"},
}


def key(name: str) -> PrivateKey:
    return PrivateKey(KEYS[name][1], name)


def plane(plane: str, provider: str, name: str, state: str = "done") -> dict[str, Any]:
    return {
        "plane": plane,
        "provider": provider,
        "action": "mint",
        "kind": "check",
        "name": name,
        "state": state,
        "error": None,
        "attempt": None,
        "retry_in": None,
    }


def fixture_view(
    state: str,
    rid: str,
    *,
    created: str,
    resource: str = "status-page",
    privilege: str = "use",
    duration: int = 1800,
    reason: str = "INC-4711 checkout errors",
    command: dict[str, Any] | None = None,
    **fields: Any,
) -> View:
    """A view as `bgctl serve` returns it (DESIGN §9), with the request really signed."""
    olive = key("olive")
    req = Request(
        id=rid,
        controller_id="acme-prod",
        resource=resource,
        privilege=privilege,
        credential_source="command" if command else "out-of-band",
        network_path="direct",
        command=command,
        requested_duration=duration,
        reason=reason,
        operator_fingerprint=olive.public.fingerprint,
        operator_key=olive.public.openssh(),
        session_key=None,
        created_at=created,
        nonce="bm9uY2Utbm9uY2Utbm9uY2U",
    )
    signed = req.sign(olive)
    view: View = {
        "id": rid,
        "controller_id": "acme-prod",
        "resource": resource,
        "privilege": privilege,
        "credential_source": req.credential_source,
        "network_path": "direct",
        "command": command,
        "reason": reason,
        "state": state,
        "operator": "olive",
        "operator_fingerprint": olive.public.fingerprint,
        "requested_duration": duration,
        "approved_duration": None,
        "created_at": created,
        "updated_at": created,
        "window_ends_at": None,
        "activated_at": None,
        "expires_at": None,
        "ended_at": None,
        "ended_reason": None,
        "detail": None,
        "digest": signed.digest,
        "request": signed.to_json(),
        "approvals": [],
        "approvals_required": 1,
        "approvals_needed": 1 if state == "pending" else 0,
        "planes": [],
        "receipt": None,
        "has_credential": False,
        "approval_link": f"https://portal.example/acme/requests/{rid}/approve",
        "revision": 0,  # older than anything a controller sends
    }
    view.update(fields)
    return view


def fixture_views() -> list[View]:
    approval = {
        "approver": "alice",
        "fingerprint": key("alice").public.fingerprint,
        "decision": "approve",
        "duration": 1800,
        "reason": "",
        "signed_at": "2026-01-15T11:50:00Z",
    }
    planes = [
        plane("network", "direct", "direct: no tunnel; 10.0.4.20:443 must answer a TCP connect"),
        plane(
            "credential", "out-of-band", "no credential is minted: the operator brings their own"
        ),
    ]
    return [
        fixture_view(
            "pending",
            IDS["pending"],
            created="2026-01-15T11:56:40Z",
            privilege="admin",
            window_ends_at="2026-01-15T12:56:40Z",
        ),
        fixture_view(
            "pending",
            IDS["db"],
            created="2026-01-15T11:58:00Z",
            resource="orders-db",
            privilege="readonly",
            duration=900,
            reason="INC-4712 slow order queries, need EXPLAIN",
            command=RECIPE,
            window_ends_at="2026-01-15T12:58:00Z",
        ),
        fixture_view(
            "active",
            IDS["active"],
            created="2026-01-15T11:49:00Z",
            approved_duration=1800,
            activated_at="2026-01-15T11:50:01Z",
            expires_at="2026-01-15T12:20:01Z",
            approvals=[approval],
            planes=planes,
        ),
        fixture_view(
            "ended",
            IDS["ended"],
            created="2026-01-15T10:00:00Z",
            duration=600,
            approved_duration=600,
            activated_at="2026-01-15T10:01:00Z",
            expires_at="2026-01-15T10:11:00Z",
            ended_at="2026-01-15T10:05:00Z",
            ended_reason="ended by operator",
            approvals=[{**approval, "duration": 600, "signed_at": "2026-01-15T10:00:30Z"}],
            planes=[{**p, "action": "teardown"} for p in planes],
        ),
    ]


RESOURCES: list[dict[str, Any]] = [
    {
        "name": "status-page",
        "kind": "service",
        "address": "10.0.4.20:443",
        "network": "direct",
        "credential_sources": ["out-of-band"],
        "privileges": ["use", "admin"],
        "description": "Status service, production",
        "session_key": False,
        "planes": [
            {"plane": "network", "provider": "direct", "does": "direct: no tunnel"},
            {"plane": "credential", "provider": "out-of-band", "does": "nothing is minted"},
        ],
        "available": True,
    },
    {
        "name": "orders-db",
        "kind": "postgres",
        "address": "10.0.5.7:5432",
        "network": "direct",
        "credential_sources": ["command"],
        "privileges": ["readonly", "readwrite"],
        "description": "Orders database (PostgreSQL 16)",
        "session_key": False,
        "planes": [],
        "available": True,
    },
    {
        "name": "prod-k8s",
        "kind": "kubernetes",
        "address": "https://10.0.1.1:6443",
        "network": "direct",
        "credential_sources": ["controller"],
        "privileges": ["view", "edit"],
        "description": "Production cluster",
        "session_key": False,
        "planes": [],
        "available": False,
        "unavailable_reason": "kubeconfig not readable",
    },
]
INFO = {"controller_id": "acme-prod", "max_duration": 4 * 3600, "approvals_required": 1}


class NoShell:
    def launch(self, app: Any, session: ShellSession) -> ShellOutcome:
        return ShellOutcome(False, "no shell in snapshots")


def snapshot_app(tmp_path: Path, who: str, *, names: tuple[str, ...] = ()) -> BgtuiApp:
    home = ClientHome(tmp_path / "home")
    for name in names or (who,):
        Identity.create(home, name, KEYS[name][0], key(name))
    offline = f"unix:{tmp_path / 'nobody-listens.sock'}"
    settings = TuiSettings(
        home=home,
        controller="unix:/run/bgctl/bgctl.sock",  # what the header shows
        identity_name=who,
        reconnect_delays=(3600.0,),
        offline_after=1,
    )
    return create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(offline, signer),
        identities=Identity.load_all(home),
        clock=lambda: NOW,
        shell_launcher=NoShell(),
        mirror=MemoryCache(fixture_views(), RESOURCES, INFO),
    )


_OFFLINE_TOLD: weakref.WeakSet[BgtuiApp] = weakref.WeakSet()


async def settle(pilot: Pilot[Any]) -> None:
    """Offline for good (one failed connect), no blinking cursors, nothing pending.

    The toast saying why the app is offline (the fixture's doing, in every snapshot) is
    dismissed the first time; toasts the steps of a snapshot raise stay in it.
    """
    app = pilot.app
    assert isinstance(app, BgtuiApp)
    for _ in range(200):
        if app.connection == "offline":
            break
        await pilot.pause(0.02)
    assert app.connection == "offline"
    if app not in _OFFLINE_TOLD:
        _OFFLINE_TOLD.add(app)
        await pilot.pause()  # the toast is a message of its own: let it arrive, then clear it
        app.clear_notifications()
    await pilot.pause()
    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def steps(*keys: str, focus: str | None = None) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        if focus is not None:
            pilot.app.screen.query_one(focus).focus()
            await pilot.pause()
        for key_name in keys:
            await pilot.press(key_name)
            await pilot.pause(0.1)
        await settle(pilot)

    return run_before


def test_operator_catalog(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive")
    assert snap_compare(app, terminal_size=SIZE, run_before=steps())


def test_operator_my_requests(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive")
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("down", focus="#mine"))


def test_request_form_with_validation_error(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive")
    run_before = steps("n", *"5h", "tab", "ctrl+s")
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_session_active(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive")
    run_before = steps("down", "down", "enter", focus="#mine")  # rows: newest first
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_session_ended(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive")
    run_before = steps("down", "down", "down", "enter", focus="#mine")
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_approver_inbox(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "alice")
    assert snap_compare(app, terminal_size=SIZE, run_before=steps())


def test_approval_screen_with_recipe(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "alice")
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("enter"))


def test_reject_reason_dialog(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "alice")
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("down", "enter", "r"))


def test_help_screen(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive")
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("f1"))


def test_identity_switcher(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = snapshot_app(tmp_path, "olive", names=("olive", "alice"))
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("ctrl+o"))


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_offline_header_follows_theme(
    snap_compare: SnapCompare, tmp_path: Path, theme: str
) -> None:
    app = snapshot_app(tmp_path, "olive")
    app.theme = theme
    assert snap_compare(app, terminal_size=(120, 12), run_before=steps())


def test_data_table_rows_are_ordered_newest_first(tmp_path: Path) -> None:
    """Not a snapshot: the inbox order the snapshots show, asserted directly."""
    import asyncio

    async def scenario() -> None:
        app = snapshot_app(tmp_path, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            inbox = app.screen.query_one("#inbox", DataTable)
            keys = [str(inbox.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(2)]
            assert keys == [IDS["db"], IDS["pending"]]

    asyncio.run(scenario())
