"""SVG snapshots of auditor mode on a fixed local mirror (pytest-textual-snapshot).

The mirror is a real mirror.db, filled with a fixed, correctly chained log of three sessions
(the event names and data shapes the controller writes; tests/test_tui_auditor.py checks the
live ones) and one checkpoint signed by a fixed-seed controller key. The client points at a
socket nobody listens on, so the header says "offline" and everything comes from the mirror,
as it would with the controller down. Regenerate with
`pytest tests/test_tui_auditor_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.test_tui_snapshots import INFO, NOW, RESOURCES, SIZE, NoShell, settle
from textual.pilot import Pilot

from bgtui.app import BgtuiApp, create_app
from bgtui.client import ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.mirror import Mirror, mirror_path
from bgtui.protocol.evidence import GENESIS, chain_hash
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Checkpoint
from bgtui.screens.audit_playback import PlaybackScreen
from bgtui.screens.auditor import AuditorScreen
from bgtui.tui_config import TuiSettings
from bgtui.tui_link import MemoryCache

SnapCompare = Callable[..., bool]
AUDREY = PrivateKey(bytes(range(96, 128)), "audrey")
CONTROLLER = PrivateKey(bytes(range(128, 160)), "acme-prod")
SESSIONS = {
    "ended": "01KF0M3ZQ8N3V5X7Z9B1D3F5H7",
    "active": "01KF0N2ZQ8N3V5X7Z9B1D3F5H7",
    "rejected": "01KF0P1ZQ8N3V5X7Z9B1D3F5H7",
}
CAST = (
    b'{"version": 2, "width": 80, "height": 24, "timestamp": 1768474800, "title": "bastion"}\n'
    b'[0.10, "o", "olive@bastion:~$ "]\n'
    b'[0.80, "i", "systemctl restart status-page\\r"]\n'
    b'[0.85, "o", "systemctl restart status-page\\r\\n"]\n'
    b'[1.90, "o", "\\u001b[32m\\u25cf\\u001b[0m status-page.service restarted\\r\\n"]\n'
    b'[2.40, "o", "olive@bastion:~$ exit\\r\\n"]\n'
)
CAST_SHA = hashlib.sha256(CAST).hexdigest()

Step = tuple[int, str, str, dict[str, Any]]  # (seconds after the start, event, actor, data)


def lifecycle(reason: str, *, recorded: bool) -> list[Step]:
    steps: list[Step] = [
        (0, "request.submitted", "olive", {"reason": reason, "resource": "status-page",
                                           "privilege": "use", "duration": 1800}),
        (60, "approval.approve", "alice", {"decision": "approve", "duration": 1800}),
        (61, "session.activating", "controller", {}),
        (61, "plane.ready", "controller", {"plane": "network", "provider": "direct"}),
        (62, "plane.ready", "controller", {"plane": "credential", "provider": "out-of-band"}),
        (62, "session.active", "controller", {"expires_at": "2026-01-15T10:31:02Z"}),
    ]  # fmt: skip
    if recorded:
        steps.append((300, "recording.uploaded", "olive", {"sha256": CAST_SHA, "bytes": len(CAST)}))
    steps += [
        (301, "session.ended_by_operator", "olive", {}),
        (302, "session.ended", "controller", {"reason": "ended by operator"}),
        (302, "session.receipt", "controller", {"teardown": "complete"}),
    ]
    return steps


def fixture_log() -> list[dict[str, Any]]:
    """The fixed log: an ended session with a recording, a live one, a rejected request."""
    start = 1_768_471_200  # 2026-01-15T10:00:00Z
    timed: list[tuple[int, str, str, str, dict[str, Any]]] = []
    for at, event, actor, data in lifecycle("INC-4711 checkout errors", recorded=True):
        timed.append((start + at, event, actor, SESSIONS["ended"], data))
    for at, event, actor, data in lifecycle("INC-4712 status page flapping", recorded=False)[:6]:
        timed.append((start + 3000 + at, event, actor, SESSIONS["active"], data))
    timed.append(
        (
            start + 3400,
            "request.submitted",
            "olive",
            SESSIONS["rejected"],
            {
                "reason": "INC-4713 reindex orders",
                "resource": "orders-db",
                "privilege": "readwrite",
                "duration": 900,
            },
        )
    )
    timed.append((start + 3460, "approval.reject", "alice", SESSIONS["rejected"],
                  {"decision": "reject", "reason": "use the read replica"}))  # fmt: skip
    timed.sort(key=lambda item: item[0])
    return [
        {
            "actor": actor,
            "at": f"2026-01-15T{(at - start) // 3600 + 10:02d}:{(at - start) % 3600 // 60:02d}:"
            f"{(at - start) % 60:02d}Z",
            "data": data,
            "event": event,
            "seq": seq,
            "session": session,
        }
        for seq, (at, event, actor, session, data) in enumerate(timed, start=1)
    ]


def write_mirror(path: Path, entries: list[dict[str, Any]]) -> None:
    """A mirror.db holding `entries`, chained, with one checkpoint over all of them."""
    with Mirror(path, "acme-prod") as mirror:
        prev, rows = GENESIS, []
        for value in entries:
            text = json.dumps(value, separators=(",", ":"), sort_keys=True)
            digest = chain_hash(prev, text.encode())
            rows.append(("acme-prod", value["seq"], text, prev, digest))
            prev = digest
        conn = mirror.db.conn
        conn.executemany(
            "INSERT INTO audit_entries (controller, seq, entry, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        signed = Checkpoint("acme-prod", len(rows), prev, "2026-01-15T11:00:00Z").sign(CONTROLLER)
        conn.execute(
            "INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?, ?)",
            ("acme-prod", len(rows), prev, signed.payload.decode(), signed.signature, "fixed"),
        )
        conn.execute(
            "INSERT INTO controllers (id, key) VALUES (?, ?)",
            ("acme-prod", CONTROLLER.public.openssh("acme-prod")),
        )
        conn.commit()
        mirror.save_recording(CAST_SHA, CAST)


def auditor_app(tmp_path: Path, *, tamper: bool = False) -> BgtuiApp:
    home = ClientHome(tmp_path / "home")
    Identity.create(home, "audrey", "auditor", AUDREY)
    write_mirror(mirror_path(home), fixture_log())
    if tamper:
        with Mirror(mirror_path(home), "acme-prod") as mirror:
            mirror.db.conn.execute(
                "UPDATE audit_entries SET entry = replace(entry, 'INC-4711', 'INC-0000')"
                " WHERE seq = 1"
            )
            mirror.db.conn.commit()
    settings = TuiSettings(
        home=home,
        controller="unix:/run/bgctl/bgctl.sock",  # what the header shows
        identity_name="audrey",
        reconnect_delays=(3600.0,),
        offline_after=1,
    )
    offline = f"unix:{tmp_path / 'nobody-listens.sock'}"
    return create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(offline, signer),
        identities=Identity.load_all(home),
        clock=lambda: NOW,
        shell_launcher=NoShell(),
        mirror=MemoryCache([], RESOURCES, INFO),
    )


async def shown(pilot: Pilot[Any]) -> None:
    """Offline, the first page read, every worker done."""
    await settle(pilot)
    app = pilot.app
    for _ in range(200):
        screen = app.screen
        if isinstance(screen, AuditorScreen) and screen.page is not None:
            break
        await pilot.pause(0.02)
    await app.workers.wait_for_complete()
    await pilot.pause()


def steps(
    *keys: str, then: Callable[[Pilot[Any]], Awaitable[None]] | None = None
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await shown(pilot)
        for key_name in keys:
            await pilot.press(key_name)
            await pilot.pause(0.05)
            await pilot.app.workers.wait_for_complete()
        if then is not None:
            await then(pilot)
        await settle(pilot)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    return run_before


def test_audit_table(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("down", "down"))


def test_audit_table_filtered(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)

    async def filtered(pilot: Pilot[Any]) -> None:
        app.screen.query_one("#filter-event").focus()
        await pilot.press(*"session.*", "enter")
        await pilot.pause(0.4)  # the filter bar's debounce
        await pilot.app.workers.wait_for_complete()

    assert snap_compare(app, terminal_size=SIZE, run_before=steps(then=filtered))


def test_session_timeline(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)
    # ctrl+end: the oldest entry, the first session's request; its whole life is logged
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("ctrl+end", "t"))


def test_entry_detail(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("down", "enter"))


async def verified(pilot: Pilot[Any]) -> None:
    await pilot.press("v")
    for _ in range(200):
        screen = pilot.app.screen
        if getattr(screen, "report", None) is not None:
            break
        await pilot.pause(0.02)
    await pilot.app.workers.wait_for_complete()


def test_verify_intact(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)
    assert snap_compare(app, terminal_size=SIZE, run_before=steps(then=verified))


def test_verify_broken(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path, tamper=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=steps(then=verified))


def test_rewrite_banner(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)

    async def rewritten(pilot: Pilot[Any]) -> None:
        screen = pilot.app.screen
        assert isinstance(screen, AuditorScreen)
        # The line Mirror.sync returns for a controller that rewrote entry 1 (the live case
        # is tests/test_tui_auditor.py).
        screen.note_rewritten(
            "AUDIT LOG REWRITTEN on controller acme-prod: its entry 18 differs from our copy: "
            "history was rewritten; the local copy (18 entries) is kept unchanged"
        )
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=steps(then=rewritten))


def test_playback(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = auditor_app(tmp_path)

    async def played(pilot: Pilot[Any]) -> None:
        # down to the first row of a session with a recording (the ended one)
        table = pilot.app.screen.query_one("#audit-table")
        table.focus()
        for _ in range(200):
            screen = pilot.app.screen
            if isinstance(screen, AuditorScreen) and screen.check_action("play", ()):
                break
            await pilot.press("down")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause(0.02)
        await pilot.press("p")
        for _ in range(200):
            if isinstance(pilot.app.screen, PlaybackScreen):
                break
            await pilot.pause(0.02)
        await pilot.press("i")  # instant: the whole output, deterministically
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=steps(then=played))
