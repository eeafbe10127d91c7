"""Small helpers shared by tests: run the real CLIs and read their answers, snapshot a tree."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.servers import Appliance

View = dict[str, Any]


def run(
    program: str, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `bgtui` or `bgctl` as a real process, the way a user would."""
    module = {"bgtui": "bgtui.cli", "bgctl": "controller.cli"}[program]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=120,
        check=False,
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` with its mode and SHA-256, to prove a refusal changed nothing."""
    result: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            mode = oct(path.stat().st_mode & 0o777)
            result[str(path.relative_to(root))] = (
                f"{mode} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            )
    return result


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Asserts a CLI call succeeded; its stdout."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Asserts a refusal: exit 1, exactly one `bgtui: …` line on stderr containing `needles`."""
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgtui: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def show(app: Appliance, rid: str, who: str = "olive") -> View:
    """`bgtui show ID --json` as `who`."""
    view: View = json.loads(ok(app.bgtui(who, "show", rid, "--json")))
    return view


def poll(app: Appliance, rid: str, until: Callable[[View], bool], timeout: float = 20.0) -> View:
    """Shows `rid` (as the auditor, who sees every request) until `until` holds."""
    deadline = time.monotonic() + timeout
    while True:
        view = show(app, rid, "audrey")
        if until(view):
            return view
        assert time.monotonic() < deadline, f"timed out in {view['state']}: {view}"
        time.sleep(0.1)


def state_is(*states: str) -> Callable[[View], bool]:
    return lambda view: view["state"] in states


def wait_state(app: Appliance, rid: str, *states: str, timeout: float = 20.0) -> View:
    """`poll` until the request is in one of `states`."""
    return poll(app, rid, state_is(*states), timeout)
