"""The TUI's start-up, and the auditor's audit browser on a large local mirror, through Pilot.

    python bench/tui.py [--entries 1000000] [--dir DIR] [--keep DIR] [--runs 5]

1. Start-up: `python -c 'import bgtui.app'` in a fresh process, and the real app (operator
   mode, the controller unreachable) from process start to its first frame (Textual's `Ready`
   event under `App.run_test`), each the best and median of `--runs` fresh processes.
2. Auditor mode on a mirror of `--entries` synthetic, chained entries (bench/mirror.py's
   builder, bulk-inserted): time to the first page shown, page-down, a jump to the oldest page,
   and filters (session, event prefix, text search) from the moment the filter is applied to
   the moment its rows are on screen (the filter bar's 250 ms typing debounce is not included).

`--keep DIR` keeps the built home (and reuses it when it is already there: building a million
entries takes about two minutes). It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIRST_FRAME = "--first-frame-child"


# -- 1. start-up ----------------------------------------------------------------------------


def first_frame_child(home: str) -> None:
    """Runs in a fresh process: imports the app, runs it until its first frame, reports."""
    started = time.perf_counter()
    from textual import events

    from bgtui.app import create_app
    from bgtui.client import ControllerClient
    from bgtui.home import ClientHome
    from bgtui.identity import Identity
    from bgtui.shell import TerminalShellLauncher
    from bgtui.tui_config import TuiSettings

    imported = time.perf_counter()
    client_home = ClientHome(Path(home))
    settings = TuiSettings(
        home=client_home,
        controller=f"unix:{home}/nobody-listens.sock",
        reconnect_delays=(3600.0,),
        offline_after=1,
    )
    app = create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(settings.controller, signer),
        identities=Identity.load_all(client_home),
        clock=lambda: datetime.now(UTC),
        shell_launcher=TerminalShellLauncher(),
    )
    frame: list[float] = []

    def hook(message: Any) -> None:
        if isinstance(message, events.Ready) and not frame:
            frame.append(time.perf_counter())

    async def run() -> None:
        async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
            while not frame:
                await pilot.pause(0.001)

    asyncio.run(run())
    print(
        json.dumps({"wall": time.time(), "import": imported - started, "frame": frame[0] - started})
    )


def startup(runs: int, tmp: Path) -> None:
    from bgtui.home import ClientHome
    from bgtui.identity import Identity
    from bgtui.protocol.keys import PrivateKey

    home = tmp / "startup-home"
    Identity.create(ClientHome(home), "olive", "operator", PrivateKey.generate("olive"))
    python = sys.executable
    env = {**os.environ, "BGTUI_HOME": str(home)}
    imports, walls, in_process = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([python, "-c", "import bgtui.app"], check=True, env=env)
        imports.append(time.perf_counter() - start)
    for _ in range(runs):
        spawned = time.time()
        child = subprocess.run(
            [python, __file__, FIRST_FRAME, str(home)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"the first-frame child failed:\n{child.stderr}")
        out = child.stdout
        report = json.loads(out.strip().splitlines()[-1])
        walls.append(report["wall"] - spawned)
        in_process.append((report["import"], report["frame"]))
    print(f"start-up (fresh processes; best / median of {runs} runs):")
    show("python -c 'import bgtui.app' (whole process)", imports)
    show("process start to the app's first frame (Ready)", walls)
    show("  of which: importing bgtui.app in-process", [i for i, _ in in_process])
    show("  of which: import + first frame in-process", [f for _, f in in_process])


def show(label: str, seconds: list[float], *, cold: bool = False) -> None:
    """Best / median in ms; `cold`: the first run too (a filter's first page also counts its
    matches, which the mirror then remembers)."""
    best, median = min(seconds) * 1000, statistics.median(seconds) * 1000
    first = f"   first {seconds[0] * 1000:>7.1f} ms" if cold else ""
    print(f"  {label:<56} {best:>8.1f} ms / {median:>8.1f} ms{first}")


# -- 2. the auditor on a large mirror -------------------------------------------------------


def built_home(root: Path, entries: int) -> Path:
    """A client home with an auditor identity and a mirror of `entries` entries."""
    sys.path.insert(0, str(HERE))
    from mirror import build  # bench/mirror.py: the same builder, not a copy

    from bgtui.home import ClientHome
    from bgtui.identity import Identity
    from bgtui.mirror import Mirror, mirror_path
    from bgtui.protocol.keys import PrivateKey

    home = root / "auditor-home"
    done = home / "built"
    if done.exists() and done.read_text() == str(entries):
        print(f"reusing the mirror of {entries:,} entries in {home}")
        return home
    home.mkdir(parents=True, exist_ok=True)
    client_home = ClientHome(home)
    if not (home / "identities" / "audrey").exists():
        Identity.create(client_home, "audrey", "auditor", PrivateKey.generate("audrey"))
    path = mirror_path(client_home)
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    with Mirror(path, "acme-prod") as mirror:
        build(mirror, entries)
    print(f"built {entries:,} entries in {time.perf_counter() - start:.1f}s "
          f"({path.stat().st_size / 1e6:,.0f} MB with indexes)")  # fmt: skip
    done.write_text(str(entries))
    return home


async def until(pilot: Any, check: Callable[[], object], timeout: float = 120.0) -> float:
    """Seconds until `check()` holds, looking every millisecond (the app runs meanwhile)."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the TUI did not get there")
        await asyncio.sleep(0.001)
    return time.perf_counter() - start


def auditor_bench(home: Path, entries: int) -> None:
    from textual import events
    from textual.widgets import Input

    from bgtui.app import create_app
    from bgtui.client import ControllerClient
    from bgtui.home import ClientHome
    from bgtui.identity import Identity
    from bgtui.screens.auditor import AuditorScreen
    from bgtui.shell import TerminalShellLauncher
    from bgtui.tui_config import TuiSettings
    from bgtui.tui_link import MemoryCache
    from bgtui.widgets.audit_filter import AuditFilterBar
    from bgtui.widgets.audit_table import AuditTable

    client_home = ClientHome(home)
    settings = TuiSettings(
        home=client_home,
        controller=f"unix:{home}/nobody-listens.sock",
        identity_name="audrey",
        reconnect_delays=(3600.0,),
        offline_after=1,
    )
    app = create_app(
        settings,
        client_factory=lambda identity, signer: ControllerClient(settings.controller, signer),
        identities=Identity.load_all(client_home),
        clock=lambda: datetime.now(UTC),
        shell_launcher=TerminalShellLauncher(),
        mirror=MemoryCache([], [], {"controller_id": "acme-prod"}),
    )
    n = entries
    sid = f"01J{(n // 2 // 10) * 10 + 1:023d}"  # a session in the middle (bench/mirror.py)

    async def run() -> None:
        start = time.perf_counter()
        async with app.run_test(size=(160, 50)) as pilot:

            def screen() -> AuditorScreen:
                found = app.screen_stack[0] if app.screen_stack else None
                assert isinstance(found, AuditorScreen)
                return found

            await until(
                pilot,
                lambda: isinstance(app.screen, AuditorScreen) and app.screen.query(AuditTable),
            )
            table = app.screen.query_one(AuditTable)
            await until(pilot, lambda: table.row_count > 0)
            first = time.perf_counter() - start
            rows = table.row_count
            print(f"auditor mode on {n:,} entries, {rows} rows a page (terminal 160x50;")
            print("  best / median of 5 runs, filters of 3; controller unreachable):")
            print(f"  {'app start to the first page shown':<56} {first * 1000:>8.1f} ms")

            async def key(name: str) -> None:
                # As the terminal driver delivers a key (Pilot.press also waits for the
                # app to go idle, which would be measured too).
                app.post_message(events.Key(name, None))

            async def timed(
                label: str,
                act: Callable[[], Awaitable[object]],
                done: Callable[[], object],
                prepare: Callable[[], Awaitable[object]] | None = None,
                repeat: int = 5,
                cold: bool = False,
            ) -> None:
                seconds = []
                for _ in range(repeat):
                    if prepare is not None:
                        await prepare()
                    await pilot.pause()  # from an idle app: the last frame drawn
                    begin = time.perf_counter()
                    await act()
                    await until(pilot, done)
                    seconds.append(time.perf_counter() - begin)
                page = screen().page
                if cold and page is not None:
                    label = f"{label}: {page.total:,} match"
                show(label, seconds, cold=cold)

            before = [0]

            async def note_offset() -> None:
                before[0] = table.page_offset

            await timed(
                "page down (key to rows shown)",
                lambda: key("pagedown"),
                lambda: table.page_offset == before[0] + rows,
                prepare=note_offset,
            )

            async def to_top() -> None:
                await key("ctrl+home")
                await until(pilot, lambda: table.page_offset == 0)

            await timed(
                "jump to the oldest page (ctrl+end)",
                lambda: key("ctrl+end"),
                lambda: table.rows_shown and table.rows_shown[-1].seq == 1,
                prepare=to_top,
            )
            bar = app.screen.query_one(AuditFilterBar)

            def field(name: str) -> Input:
                return bar.query_one(f"#filter-{name}", Input)

            async def clear() -> None:
                for name in ("session", "event", "text"):
                    field(name).value = ""
                bar.apply()
                await until(pilot, lambda: screen().filter is None and table.total == n)

            filters = [
                ("filter: one session", "session", sid),
                ("filter: event prefix session.*", "event", "session.*"),
                ("search: 'rollback hotfix'", "text", "rollback hotfix"),
                ("search: 'INC-4242'", "text", "INC-4242"),
            ]
            unfiltered: list[Any] = [None]

            async def reset() -> None:
                await clear()
                unfiltered[0] = screen().page

            def filtered() -> bool:
                page = screen().page
                return screen().filter is not None and page is not unfiltered[0]

            for label, name, value in filters:

                async def act(name: str = name, value: str = value) -> None:
                    field(name).value = value
                    bar.apply()

                await timed(label, act, filtered, prepare=reset, repeat=3, cold=True)
            await clear()

    asyncio.run(run())


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == FIRST_FRAME:
        first_frame_child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per start-up figure")
    parser.add_argument("--dir", type=Path, default=None, help="where temporary files go")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the mirror here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        tmp = Path(scratch)
        startup(args.runs, tmp)
        home = built_home(args.keep or tmp, args.entries)
        auditor_bench(home, args.entries)


if __name__ == "__main__":
    main()
