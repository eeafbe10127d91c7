"""Finding and ending the live SSH connections of one certificate, and revoking its key ID.

OpenSSH checks a certificate (validity, principals, revocation) only while a connection
authenticates; an established connection outlives the certificate's expiry. So teardown does two
things where it can: it adds the session's key ID to sshd's key revocation list (KRL, sshd's
`RevokedKeys`) so a still-valid certificate cannot log in again, and it ends the connections
that already logged in with it.

Finding the connections of one key ID (Linux only: it reads /proc)
-----------------------------------------------------------------
sshd's log (LogLevel VERBOSE; checked against OpenSSH 9.2) carries, per connection::

    Connection from 127.0.0.1 port 35242 on 127.0.0.1 port 2299 rdomain ""
    Accepted publickey for root from 127.0.0.1 port 35242 ssh2: ED25519-CERT SHA256:...
        ID 01HX... (serial 123) CA ED25519 SHA256:...

A bare `sshd -E FILE` log has no prefix; a syslog or journal export prefixes each line with
`... sshd[PID]: ` (`sshd-session[PID]` from OpenSSH 9.8 on), and then lines are tied to their
connection by PID, so a log shared by several sshd instances is read correctly too. The client's
address and source port of each connection whose latest authentication used that key ID are
looked up among the ESTABLISHED sockets of /proc/net/tcp and /proc/net/tcp6 whose local port is
sshd's port (both, because two hosts may use one source port at once); the
sshd processes holding that socket (found through /proc/PID/fd) are climbed to the top-most one
that still holds it and is not the listener (the process holding the LISTEN socket on the port):
that is the connection's privileged process ("sshd: USER [priv]", or "sshd: root@notty" when
the login user is root, or the first `sshd-session`). Ending it, and the processes under it,
closes the connection. It finds every authenticated connection of the key ID, including ones
that run no command (`ssh -N`, forwarding only) and multiplexing masters (one PID per TCP
connection, whatever the number of channels in it).

This needs no handle on the listener: only the log, the port and a /proc in which the sshd
processes are visible and their fds readable (the same host, as root or as sshd's user).
It cannot see connections to another host or to an sshd in another PID namespace, connections
whose log lines are gone (rotated or truncated log), or key IDs sshd rewrote while logging
(bgtui's are ULIDs). A process that detached itself from the connection (double fork, `setsid`,
`nohup … &` then reparented) is no longer under it and survives. A connection that is still
authenticating when the scan runs is not cut: revoke the key ID first, so that it fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from controller.processes import Process, descendants, kill_all, process_table

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_PROC = Path("/proc")
_PREFIX = re.compile(r"^(?:.*?\bsshd(?:-session)?\[(?P<pid>\d+)\]: )?(?P<message>.*)$")
_CONNECTION = re.compile(
    r"^Connection from (?P<addr>\S+) port (?P<port>\d+) on (?P<local>\S+) port (?P<lport>\d+)"
)
_ACCEPTED = re.compile(
    r"^Accepted publickey for (?P<user>\S+) from (?P<addr>\S+) port (?P<port>\d+) ssh2: "
    r"\S+-CERT \S+ ID (?P<key_id>.*) \(serial (?P<serial>\d+)\) CA "
)
_ESTABLISHED, _LISTEN = "01", "0A"


class RevocationError(RuntimeError):
    """ssh-keygen could not update the key revocation list; the message says why."""


# -- the log --------------------------------------------------------------------------------


Endpoint = tuple[IPAddress, int]
"""A client's (address, source port): what tells one TCP connection to sshd from another."""


def client_address(text: str) -> IPAddress | None:
    """An address as sshd logs it or /proc shows it; an IPv4-mapped IPv6 one as IPv4."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def source_endpoints(log_text: str, port: int, key_id: str) -> set[Endpoint]:
    """Client (address, source port) pairs whose latest connection to sshd port `port` used
    `key_id`.

    Two clients on two hosts may use the same source port at once, so a connection is known by
    both. For each endpoint the last `Connection from` line resets what is known, so a reused
    one is never taken for an earlier connection. Lines with an `sshd[PID]:` prefix are matched
    to their connection by PID, and connections to other ports are ignored.
    """
    latest: dict[Endpoint, str | None] = {}
    local_port_of_pid: dict[str, int] = {}
    for line in log_text.splitlines():
        prefixed = _PREFIX.match(line)
        if prefixed is None:  # pragma: no cover - the pattern matches any line
            continue
        pid, message = prefixed["pid"], prefixed["message"]
        connected = _CONNECTION.match(message)
        if connected:
            local_port = int(connected["lport"])
            if pid is not None:
                local_port_of_pid[pid] = local_port
            address = client_address(connected["addr"])
            if local_port == port and address is not None:
                latest[(address, int(connected["port"]))] = None
            continue
        accepted = _ACCEPTED.match(message)
        if accepted:
            if pid is not None and local_port_of_pid.get(pid, port) != port:
                continue
            address = client_address(accepted["addr"])
            if address is not None:
                latest[(address, int(accepted["port"]))] = accepted["key_id"]
    return {endpoint for endpoint, found in latest.items() if found == key_id}


# -- /proc ----------------------------------------------------------------------------------


def _proc_address(text: str) -> IPAddress | None:
    """/proc/net/tcp{,6}'s hex address: 32-bit words in host (little-endian) byte order."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return client_address(str(ipaddress.ip_address(ordered)))


def _tcp_inodes(local_port: int, state: str, remotes: set[Endpoint] | None) -> set[str]:
    """Socket inodes of TCP sockets in `state` on `local_port` (whose remote end is one of
    `remotes`, when given)."""
    inodes: set[str] = set()
    for table in (_PROC / "net" / "tcp", _PROC / "net" / "tcp6"):
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != state:
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            if local != local_port:
                continue
            if remotes is not None:
                address, _, remote_port = fields[2].rpartition(":")
                remote = _proc_address(address)
                if remote is None or (remote, int(remote_port, 16)) not in remotes:
                    continue
            inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        entries = list((_PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for entry in entries:
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def _is_sshd(process: Process | None) -> bool:
    return process is not None and process.name.startswith("sshd")


# -- live connections -----------------------------------------------------------------------


def sessions_for(log: Path, port: int, key_id: str) -> list[int]:
    """PIDs of the per-connection sshd processes (one per live TCP connection to sshd's `port`)
    that authenticated with a certificate whose key ID is `key_id`; [] if the log is unreadable.
    See the module docstring for what this can and cannot find."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    endpoints = source_endpoints(text, port, key_id)
    if not endpoints:
        return []
    connections = _tcp_inodes(port, _ESTABLISHED, endpoints)
    if not connections:
        return []
    listening = _tcp_inodes(port, _LISTEN, None)
    table = process_table()
    sockets = {pid: _socket_inodes(pid) for pid, p in table.items() if _is_sshd(p)}
    listeners = {pid for pid, inodes in sockets.items() if inodes & listening}
    found: set[int] = set()
    for pid, inodes in sockets.items():
        held = inodes & connections
        if not held or pid in listeners:
            continue
        top = pid
        while True:  # climb while the parent is an sshd that holds the same connection
            parent = table[top].parent
            if parent in listeners or not sockets.get(parent, set()) & held:
                break
            top = parent
        found.add(top)
    return sorted(found)


def terminate_sessions(log: Path, port: int, key_id: str, grace: float = 3.0) -> int:
    """Ends every live connection of `key_id` to sshd's `port` (SIGTERM, then SIGKILL after
    `grace` seconds) with the processes still running under it; returns how many were cut.

    Scans again after cutting, so a connection that finished authenticating meanwhile is cut
    too (at most three rounds)."""
    cut: set[int] = set()
    for _round in range(3):
        sessions = [pid for pid in sessions_for(log, port, key_id) if pid not in cut]
        if not sessions:
            break
        table = process_table()
        tree = [child for pid in sessions for child in descendants(pid, table)]
        kill_all([*sessions, *tree], grace)
        cut.update(sessions)
    return len(cut)


# -- revocation -----------------------------------------------------------------------------


def revoke_key_id(krl: Path, ca_public: Path, key_id: str) -> None:
    """Adds `key_id` (for certificates signed by the CA in `ca_public`) to the OpenSSH KRL at
    `krl`, creating the KRL if it is missing. sshd refuses such certificates from their next
    authentication on; established connections are not affected.

    The KRL is rewritten in a temporary file beside it and renamed into place (keeping its
    mode), under an exclusive lock on `KRL.lock`, so sshd never reads a half-written list (it
    would refuse every key) and two concurrent revocations do not lose one another."""
    if not key_id or "\n" in key_id:
        raise ValueError("key_id must be one non-empty line")
    if shutil.which("ssh-keygen") is None:
        raise RevocationError("ssh-keygen not found (apt-get install openssh-client)")
    if not ca_public.is_file():
        raise RevocationError(f"{ca_public}: the CA public key is missing")
    directory = krl.parent
    lock_path = krl.with_name(krl.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with tempfile.TemporaryDirectory(prefix=".krl-", dir=directory) as scratch:
            spec = Path(scratch) / "spec"
            spec.write_text(f"id: {key_id}\n")
            updated = Path(scratch) / "krl"
            exists = krl.exists()
            if exists:
                shutil.copyfile(krl, updated)
            argv = ["ssh-keygen", "-q", "-k", *(["-u"] if exists else [])]
            result = subprocess.run(
                [*argv, "-f", str(updated), "-s", str(ca_public), str(spec)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip() or f"exit {result.returncode}"
                raise RevocationError(f"{krl}: ssh-keygen could not revoke {key_id}: {detail}")
            os.chmod(updated, krl.stat().st_mode & 0o777 if exists else 0o644)
            os.replace(updated, krl)


__all__ = [
    "RevocationError",
    "revoke_key_id",
    "sessions_for",
    "source_endpoints",
    "terminate_sessions",
]
