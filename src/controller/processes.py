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
