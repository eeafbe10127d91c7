"""Local processes, as /proc shows them: liveness and a polite-then-firm kill.

Used by teardown (ending a session's sshd connections) and by the sandbox (stopping its
servers); Linux only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


def alive(pid: int) -> bool:
    """True while `pid` is a running process; a zombie (exited, not yet reaped) counts as dead."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_all(pids: Iterable[int], grace: float = 3.0) -> None:
    """SIGTERM each process, wait up to `grace` seconds, then SIGKILL whatever is left."""
    targets = [pid for pid in dict.fromkeys(pids) if pid > 1 and pid != os.getpid()]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in targets):
        time.sleep(0.05)
    for pid in targets:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Process:
    """One process as /proc/PID/stat shows it."""

    pid: int
    parent: int
    name: str  # the kernel's comm: "sshd" whatever setproctitle made of the command line
    state: str


def process_table() -> dict[int, Process]:
    """Every process visible in /proc, by PID."""
    found: dict[int, Process] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The name is in parentheses and may itself contain spaces or parentheses.
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        name = head.split("(", 1)[1] if "(" in head else ""
        found[int(entry.name)] = Process(int(entry.name), int(fields[1]), name, fields[0])
    return found


def descendants(pid: int, table: dict[int, Process] | None = None) -> list[int]:
    """Every live descendant of `pid`, children first, then theirs."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.parent, []).append(process.pid)
    found: list[int] = []
    queue = list(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, []))
    return found
