"""Auditor mode driven with Pilot against a real `bgctl serve` and a real mirror.db.

Sessions are driven through the real `bgtui` CLI first, so the controller's log has content;
then the app runs as audrey (auditor), syncs its local mirror over signed calls and browses it.
The controller is tampered with the way tests/test_mirror.py does it (stopped, state.db
rewritten, rechained and re-signed with its own key, restarted). The paging test needs no
controller: it bulk-fills a mirror with the builder bench/mirror.py uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import ok, poll, state_is
from tests.servers import Appliance, appliance
from tests.test_audit_cli import CAST
from tests.test_lifecycle_cli import approve, submit
from tests.test_mirror import client, controller_rows, rewrite_entry, session
from tests.test_tui import make_app, run, until
from tests.test_tui_auditor_snapshots import AUDREY, NoShell
from tests.test_tui_snapshots import INFO, NOW
from textual.pilot import Pilot
from textual.widgets import Input, Label

from bgtui.app import BgtuiApp, create_app
from bgtui.client import ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.mirror import Mirror, mirror_path
from bgtui.screens.audit_modals import EntryScreen, ExportScreen, VerifyScreen
from bgtui.screens.audit_playback import PlaybackScreen
from bgtui.screens.audit_timeline import TimelineScreen
from bgtui.screens.auditor import AuditorScreen
from bgtui.tui_config import TuiSettings
from bgtui.tui_link import MemoryCache
from bgtui.widgets.audit_player import CastPlayer
from bgtui.widgets.audit_table import AuditTable
from bgtui.widgets.header import BgHeader

SIZE = (120, 40)


@pytest.fixture
def ap(tmp_path: Path) -> Iterator[Appliance]:
    yield from appliance(tmp_path)


def auditor(app: BgtuiApp) -> AuditorScreen:
    """The auditor mode's screen (the bottom of its stack, under any dialog)."""
    found = app.screen_stack[0]
    assert isinstance(found, AuditorScreen), found
    return found


def status(app: BgtuiApp) -> str:
    return str(auditor(app).query_one("#audit-status", Label).content)


def shown_rows(app: BgtuiApp) -> list[Any]:
    return list(auditor(app).query_one(AuditTable).rows_shown)


async def synced(pilot: Pilot[Any], ap: Appliance) -> BgtuiApp:
    """The app connected and its table showing every entry the controller holds."""
    app = pilot.app
    assert isinstance(app, BgtuiApp)
    await until(pilot, lambda: app.current_mode == "auditor", "auditor mode")
    size = len(controller_rows(ap))
    await until(
        pilot,
        lambda: (page := auditor(app).page) is not None and page.total >= size,
        f"the table to show all {size} entries",
    )
    return app


async def type_into(pilot: Pilot[Any], selector: str, text: str) -> None:
    app = pilot.app
    field = app.screen.query_one(selector, Input)
    field.value = ""
    field.focus()
    await pilot.pause()
    await pilot.press(*text)


async def filtered(pilot: Pilot[Any], check: Any, what: str) -> None:
    await until(pilot, lambda: check(shown_rows(pilot.app)), what)  # type: ignore[arg-type]


def test_browse_filter_search_and_timeline(ap: Appliance) -> None:
    first = session(ap, "alpha")
    second = session(ap, "bravo")

    async def scenario() -> None:
        app = make_app(ap, "audrey")
        async with app.run_test(size=SIZE) as pilot:
            await synced(pilot, ap)
            size = len(controller_rows(ap))
            rows = shown_rows(app)
            assert rows[0].seq == size and [r.seq for r in rows] == sorted(
                (r.seq for r in rows), reverse=True
            )
            assert status(app).startswith(f"rows 1–{len(rows)} of {size}")

            # filter by session (typed lower-case: ids are read as the log writes them)
            await type_into(pilot, "#filter-session", first.lower())
            await filtered(
                pilot, lambda rs: rs and {r.session for r in rs} == {first}, "session filter"
            )
            with Mirror(mirror_path(ClientHome(ap.identities["audrey"].home)), "acme-prod") as m:
                lifecycle = m.timeline(first)
            assert [r.seq for r in shown_rows(app)] == [r.seq for r in reversed(lifecycle)]
            assert f"of {len(lifecycle)} matching" in status(app)

            # text search, with the session filter cleared
            await type_into(pilot, "#filter-session", "")
            await type_into(pilot, "#filter-text", "bravo")
            await filtered(
                pilot,
                lambda rs: [(r.session, r.event) for r in rs] == [(second, "request.submitted")],
                "text search",
            )
            await type_into(pilot, "#filter-event", "approval.*")
            await filtered(pilot, lambda rs: rs == [], "search and event: nothing")
            await type_into(pilot, "#filter-text", "")
            await filtered(
                pilot,
                lambda rs: (
                    {(r.event, r.actor) for r in rs} == {("approval.approve", "alice")}
                    and len(rs) == 2
                ),
                "event prefix",
            )
            await pilot.press("enter")  # back to the table
            await pilot.pause()
            assert isinstance(app.screen.focused, AuditTable)
            assert footer_keys(app)["escape"] == "All entries"  # while something is filtered

            # the session's timeline, from its request to its teardown receipt
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, EntryScreen), "entry screen")
            assert '"decision": "approve"' in str(app.screen.query_one("#entry-json").render())
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, AuditorScreen), "back")
            await type_into(pilot, "#filter-event", "")
            await pilot.press("enter")
            await until(pilot, lambda: len(shown_rows(app)) > 2, "unfiltered again")
            assert "escape" not in footer_keys(app)  # nothing to clear: not in the footer
            table = app.screen.query_one(AuditTable)
            index = next(i for i, r in enumerate(table.rows_shown) if r.session == first)
            table.move_cursor(row=index)
            await pilot.pause()
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, TimelineScreen), "timeline")
            timeline = app.screen
            assert isinstance(timeline, TimelineScreen)
            await until(pilot, lambda: timeline.rows, "the timeline's rows")
            events = [r.event for r in timeline.rows]
            assert events[:3] == ["request.submitted", "approval.approve", "session.activating"]
            assert "session.active" in events and events[-1] == "session.receipt"
            assert events.index("session.active") < events.index("session.ended_by_operator")
            assert [r.seq for r in timeline.rows] == sorted(r.seq for r in timeline.rows)
            assert [r.actor for r in timeline.rows][:2] == ["olive", "alice"]
            summary = str(timeline.query_one("#tl-summary", Label).content)
            assert summary.startswith("request → approval → planes → active")
            assert "→ receipt" in summary

    run(scenario)


async def verify(pilot: Pilot[Any]) -> VerifyScreen:
    app = pilot.app
    await pilot.press("v")
    await until(pilot, lambda: isinstance(app.screen, VerifyScreen), "the verify dialog")
    dialog = app.screen
    assert isinstance(dialog, VerifyScreen)
    await until(pilot, lambda: dialog.report is not None, "a verdict", timeout=30)
    return dialog


def verdict(dialog: VerifyScreen) -> str:
    return str(dialog.query_one("#verify-verdict", Label).content)


def test_verify_then_a_rewritten_controller_history_is_caught(ap: Appliance) -> None:
    rid = session(ap)
    home = ClientHome(ap.identities["audrey"].home)

    async def scenario() -> None:
        app = make_app(ap, "audrey")
        async with app.run_test(size=SIZE) as pilot:
            await synced(pilot, ap)
            size = len(controller_rows(ap))
            dialog = await verify(pilot)
            assert verdict(dialog).startswith(f"✔ intact: {size} entries, ")
            assert dialog.report is not None and dialog.report.rewritten is None
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, AuditorScreen), "closed")
            screen = auditor(app)
            assert not screen.query_one("#audit-banner").display

            # The controller's operator rewrites the request's reason, rechains and re-signs.
            await asyncio.to_thread(ap.stop)
            await until(pilot, lambda: app.connection == "offline", "offline")
            with Mirror(mirror_path(home), "acme-prod") as mirror:
                submitted = mirror.timeline(rid)[0]
            rewrite_entry(ap, submitted.seq, b"INC-4711 checkout errors", b"routine maintenance")
            await asyncio.to_thread(ap.start)
            await until(pilot, lambda: app.connection == "connected", "reconnect")

            dialog = await verify(pilot)
            shown = verdict(dialog)
            assert "✘ the controller's history does not extend the verified copy" in shown
            assert "AUDIT LOG REWRITTEN on controller acme-prod" in shown
            assert f"✔ intact: {size} entries" in shown  # the local copy, as it was
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, AuditorScreen), "closed")
            banner = screen.query_one("#audit-banner", Label)
            assert banner.display and "AUDIT LOG REWRITTEN" in str(banner.content)
            assert "the local copy is kept" in str(banner.content)
            assert "AUDIT LOG REWRITTEN" in screen.query_one(BgHeader).render_text()
            # what the table shows is still the original entry
            await type_into(pilot, "#filter-text", "checkout")
            await filtered(pilot, lambda rs: [r.seq for r in rs] == [submitted.seq], "search")
            await type_into(pilot, "#filter-text", "maintenance")
            await filtered(pilot, lambda rs: rs == [], "the rewritten text is not here")
        with Mirror(mirror_path(home), "acme-prod") as mirror:
            kept = mirror.audit_entry(submitted.seq)
            assert kept is not None and kept.data["reason"] == "INC-4711 checkout errors"
            assert mirror.audit_size() == size
            key = mirror.controller_key()
            assert key is not None and mirror.verify(key).ok

    run(scenario)


def recorded_session(ap: Appliance) -> str:
    """A session whose operator uploaded a terminal recording before ending it."""
    rid = str(submit(ap)["id"])
    approve(ap, rid)
    poll(ap, rid, state_is("active"))
    with client(ap, "olive") as c:
        c.upload_recording(rid, CAST)
    ok(ap.bgtui("olive", "end", rid))
    poll(ap, rid, state_is("ended"))
    return rid


def test_playback_then_export_offline_checks_with_sha256sum(ap: Appliance, tmp_path: Path) -> None:
    rid = recorded_session(ap)
    session(ap, "later")
    out = tmp_path / "evidence"
    notes: list[str] = []

    async def scenario() -> None:
        app = make_app(ap, "audrey")
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await synced(pilot, ap)
            await type_into(pilot, "#filter-session", rid)
            await filtered(pilot, lambda rs: rs and {r.session for r in rs} == {rid}, "filter")
            await pilot.press("enter")
            screen = auditor(app)
            await until(pilot, lambda: screen.check_action("play", ()), "play offered")

            # playback downloads the recording (checked against its SHA-256) and replays it
            await pilot.press("p")
            await until(pilot, lambda: isinstance(app.screen, PlaybackScreen), "playback")
            await pilot.press("i")
            player = app.screen.query_one(CastPlayer)
            await until(pilot, lambda: player.finished, "the whole recording")
            assert player.terminal.plain().splitlines() == ["$ whoami", "olive"]
            assert "finished" in str(app.screen.query_one("#play-status", Label).content)
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, AuditorScreen), "back")

            # with the controller down, export still works, from the local copy
            await asyncio.to_thread(ap.stop)
            await until(pilot, lambda: app.connection == "offline", "offline")
            assert "offline" in app.screen.query_one(BgHeader).render_text()
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, ExportScreen), "export dialog")
            field = app.screen.query_one("#export-path", Input)
            assert field.value == f"./evidence-{rid}"
            field.value = str(out)
            await pilot.press("enter")
            await until(pilot, lambda: any("wrote the evidence bundle" in n for n in notes), "done")
            await app.workers.wait_for_complete()

            # and a played recording plays offline too
            await pilot.press("p")
            await until(pilot, lambda: isinstance(app.screen, PlaybackScreen), "playback again")

    run(scenario)
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True, check=False
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert f"recordings/{hashlib.sha256(CAST).hexdigest()}.cast: OK" in sums.stdout
    entries = (out / "entries.jsonl").read_text()
    assert rid in entries and "recording.uploaded" in entries


def bench_builder() -> Any:
    """bench/mirror.py's `build` (the bench is a script, not a package)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "mirror.py"
    spec = importlib.util.spec_from_file_location("bench_mirror", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_mirror", module)
    spec.loader.exec_module(module)
    return module.build


def offline_auditor(tmp_path: Path, entries: int, keymap: dict[str, str] | None = None) -> BgtuiApp:
    home = ClientHome(tmp_path / "home")
    Identity.create(home, "audrey", "auditor", AUDREY)
    with Mirror(mirror_path(home), "acme-prod") as mirror:
        bench_builder()(mirror, entries)
    settings = TuiSettings(
        home=home,
        controller=f"unix:{tmp_path / 'nobody-listens.sock'}",
        identity_name="audrey",
        reconnect_delays=(3600.0,),
        offline_after=1,
        keymap=keymap or {},
    )
    return create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(settings.controller, signer),
        identities=Identity.load_all(home),
        clock=lambda: NOW,
        shell_launcher=NoShell(),
        mirror=MemoryCache([], [], INFO),
    )


def footer_keys(app: BgtuiApp) -> dict[str, str]:
    """Key to description of the bindings the footer shows now (enabled and shown)."""
    return {
        key: active.binding.description
        for key, active in app.screen.active_bindings.items()
        if active.enabled and active.binding.show
    }


def test_paging_thousands_of_entries_a_page_at_a_time(tmp_path: Path) -> None:
    total = 4000
    # Older entries rebound to ctrl+n: the counts under the table name the keys as bound.
    app = offline_auditor(tmp_path, total, keymap={"audit-next-page": "ctrl+n"})

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.current_mode == "auditor", "auditor mode")
            await until(pilot, lambda: auditor(app).page is not None, "the first page")
            table = app.screen.query_one(AuditTable)
            page = table.page_size
            assert 10 < page < 100 and table.row_count == page  # one screenful, not the log
            assert [r.seq for r in table.rows_shown] == list(range(total, total - page, -1))
            assert status(app) == f"rows 1–{page} of {total:,} · ^n older"

            await pilot.press("ctrl+n")
            await until(pilot, lambda: table.page_offset == page, "page 2")
            assert table.rows_shown[0].seq == total - page and table.row_count == page
            assert status(app) == f"rows {page + 1}–{2 * page} of {total:,} · ^n older · pgup newer"

            table.move_cursor(row=page - 1)
            await pilot.press("down")  # off the bottom edge: one row further
            await until(pilot, lambda: table.page_offset == page + 1, "scrolled by one")
            assert table.cursor_row == page - 1
            assert table.selected_row().seq == total - 2 * page  # type: ignore[union-attr]

            await pilot.press("ctrl+end")
            await until(pilot, lambda: table.rows_shown[-1].seq == 1, "the oldest page")
            assert status(app) == f"rows {total - page + 1:,}–{total:,} of {total:,} · pgup newer"
            await pilot.press("pageup")
            await until(pilot, lambda: table.page_offset == total - 2 * page, "back a page")

    run(scenario)
