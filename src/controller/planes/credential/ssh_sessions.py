"""Finding and ending the live SSH connections of a session, from sshd's own log.

sshd logs every certificate login with the certificate's key ID, which bgtui sets to the
session id, under the PID of the connection's privileged process; ending that process closes
the connection. This works where the controller can read the sshd log and signal its
processes (the same host, or a host where it runs this with the rights to). Elsewhere the
certificate's expiry only stops new logins, and connections end with the network path.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

_ACCEPTED = re.compile(
    r"\[(?P<pid>\d+)\]: Accepted publickey for \S+ from \S+ port \d+ \S+: "
    r"\S+-CERT \S+ ID \"?(?P<id>[^\"\s]+)\"? \(serial \d+\)"
)


def _is_sshd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"sshd" in cmdline


def sessions_for(log: Path, key_id: str) -> list[int]:
    """PIDs of live sshd connection processes that logged in with certificate `key_id`."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    pids = {int(m["pid"]) for m in _ACCEPTED.finditer(text) if m["id"] == key_id}
    return sorted(pid for pid in pids if _is_sshd(pid))


def terminate_sessions(log: Path, key_id: str, grace: float = 2.0) -> int:
    """Ends every live connection of `key_id` (SIGTERM, then SIGKILL); returns how many."""
    pids = sessions_for(log, key_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_is_sshd(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _is_sshd(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return len(pids)
