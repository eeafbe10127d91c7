"""A real OpenSSH `sshd` on a free loopback port that lets in only certificates from one CA.

Only certificates get in (`AuthorizedKeysFile none`, no passwords), and only for the certificate
principals listed for the login user (`AuthorizedPrincipalsFile <dir>/principals/%u`).

Finding the live connections of one certificate (sessions_for / terminate_sessions)
------------------------------------------------------------------------------------
With `-E logfile` sshd writes bare messages: no timestamps and no PIDs. What the log does carry
(LogLevel VERBOSE, checked against OpenSSH 9.2) is, per connection::

    Connection from 127.0.0.1 port 35242 on 127.0.0.1 port 2299 rdomain ""
    Accepted publickey for root from 127.0.0.1 port 35242 ssh2: ED25519-CERT SHA256:...
        ID key-id-123 (serial 0) CA ED25519 SHA256:...

So the client's source port ties a key ID to a TCP connection. sessions_for(key_id) takes, for
each source port, the last `Connection from` line and the `Accepted publickey` line after it
(so a reused source port is never confused with an earlier connection), finds that live
ESTABLISHED socket in /proc/net/tcp (local = this sshd's port, remote = that source port) and
returns the PID of the per-connection sshd process that holds it: the direct child of the
listener ("sshd: USER [priv]"; when the login user is root OpenSSH skips the unprivileged
post-auth child and it is "sshd: root@notty", "sshd: root@pts/N" or, for `ssh -N`, "sshd: root").
Linux only: it reads /proc.

It finds: every live, authenticated connection to this sshd whose certificate had that key ID,
including ones that run no command (`ssh -N`, port forwarding only) and multiplexed masters
(one PID per TCP connection, whatever the number of channels in it).

It cannot find: connections to any other sshd; connections whose log lines are missing (the log
was removed or truncated); sockets it may not read (/proc/PID/fd of processes owned by other
users when not root; here sshd runs as this user, so that does not arise); key IDs that sshd
rewrote while logging (it escapes non-printable characters, so give printable IDs without
" (serial "). terminate_sessions also ends the processes started inside those sessions while
they are still descendants of the connection's sshd; a process that detached itself (double
fork, `setsid`, `nohup ... &` then reparented) is no longer in that tree and survives. A
connection still in its handshake is not returned, and one that authenticates after the scan is
not cut: the certificate stays valid until it expires, so call revoke_key_id() first to stop
new logins with it (sshd checks its RevokedKeys KRL on every authentication).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from controller.sandbox.ports import SandboxError, descendants, free_port, kill_all, parent_map

SSHD = Path("/usr/sbin/sshd")
DEFAULT_PRINCIPALS = ("bg-admin", "bg-ops")
_PRIVSEP_DIR = Path("/run/sshd")
_INSTALL_HINT = "apt-get install openssh-server"

_CONNECTION = re.compile(r"^Connection from (?P<addr>\S+) port (?P<port>\d+) on ")
_ACCEPTED = re.compile(
    r"^Accepted publickey for (?P<user>\S+) from (?P<addr>\S+) port (?P<port>\d+) ssh2: "
    r"\S+-CERT \S+ ID (?P<key_id>.*) \(serial (?P<serial>\d+)\) CA "
)


def available() -> str | None:
    """None when a loopback sshd can be started here, else a one-line reason."""
    if not SSHD.exists():
        return f"sshd not found: {_INSTALL_HINT}"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found: apt-get install openssh-client"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("sshd")
        except KeyError:
            return f"running as root and no 'sshd' privilege-separation user: {_INSTALL_HINT}"
    return None


def _current_user() -> str:
    # pwd rather than getpass.getuser(): sshd logs in the account of the uid, whatever $USER says.
    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class _State:
    """What cleanup needs, kept apart from the owner so a finalizer can run without it."""

    tempdir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    extra: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        """Kills the listener and every process under it, then removes the files; idempotent."""
        process = self.process
        if process is not None:
            tree = descendants(process.pid) if process.poll() is None else []
            kill_all([process.pid, *tree])
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            self.process = None
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None


class LoopbackSshd:
    """OpenSSH sshd on 127.0.0.1 trusting one user CA; use as a context manager or start/stop.

    `principals` maps login user -> certificate principals accepted for that user (default: the
    current user -> bg-admin, bg-ops). Only the current user can actually log in unless sshd
    runs as root.
    """

    def __init__(
        self,
        ca_public_key_line: str,
        root: Path | None = None,
        principals: dict[str, list[str]] | None = None,
    ) -> None:
        line = ca_public_key_line.strip()
        if not line or "\n" in line or len(line.split()) < 2:
            raise ValueError("ca_public_key_line must be one OpenSSH public key line")
        self._ca_line = line
        self._root = root
        self._user = _current_user()
        self._principals = (
            {name: list(values) for name, values in principals.items()}
            if principals is not None
            else {self._user: list(DEFAULT_PRINCIPALS)}
        )
        for name, values in self._principals.items():
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"not a login user name: {name!r}")
            if any(not value or any(c.isspace() for c in value) for value in values):
                raise ValueError(f"principals for {name!r} must be non-empty, without spaces")
        self._state = _State()
        self._finalizer = weakref.finalize(self, self._state.cleanup)
        self._port: int | None = None
        self._host_key_line: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LoopbackSshd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LoopbackSshd:
        if self._state.process is not None:
            return self
        reason = available()
        if reason is not None:
            raise SandboxError(reason)
        try:
            self._prepare()
            self._launch()
        except BaseException:
            self._state.cleanup()
            raise
        return self

    def stop(self) -> None:
        """Kills the listener and all its children (live sessions included), removes the dir."""
        self._state.cleanup()
        self._port = None

    # -- properties ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise SandboxError("sshd sandbox is not running")
        return self._port

    @property
    def user(self) -> str:
        """The login user: the account this process runs as."""
        return self._user

    @property
    def directory(self) -> Path:
        if self._state.tempdir is None:
            raise SandboxError("sshd sandbox is not running")
        return self._state.tempdir

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def pid(self) -> int | None:
        """The listener's PID while running."""
        process = self._state.process
        return process.pid if process is not None else None

    @property
    def host_key_line(self) -> str:
        """A known_hosts line: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`."""
        if self._host_key_line is None:
            raise SandboxError("sshd sandbox is not running")
        return f"[{self.host}]:{self.port} {self._host_key_line}"

    def known_hosts(self, path: Path) -> Path:
        """Writes a known_hosts file holding only this server's host key."""
        path.write_text(self.host_key_line + "\n")
        return path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- live connections ------------------------------------------------------------------

    def sessions_for(self, key_id: str) -> list[int]:
        """PIDs of the per-connection sshd processes (one per live TCP connection) that
        authenticated with a certificate whose key ID is `key_id`. See the module docstring
        for what this can and cannot find."""
        process = self._state.process
        if process is None or process.poll() is not None:
            return []
        ports = _ports_for_key_id(self.log_text(), key_id)
        if not ports:
            return []
        inodes = _established_inodes(self.port, ports)
        if not inodes:
            return []
        parents = parent_map()
        tree = set(descendants(process.pid, parents))
        found: set[int] = set()
        for pid in tree:
            if inodes & _socket_inodes(pid):
                # Climb to the listener's direct child: the process that owns the connection.
                top = pid
                while parents.get(top) not in (process.pid, None) and parents.get(top) in tree:
                    top = parents[top]
                found.add(top)
        return sorted(found)

    def terminate_sessions(self, key_id: str) -> int:
        """Ends every live connection of `key_id` (SIGTERM, then SIGKILL after 3 s) along with
        the processes still running under it; returns how many connections were cut."""
        sessions = self.sessions_for(key_id)
        if not sessions:
            return 0
        parents = parent_map()
        tree = [child for pid in sessions for child in descendants(pid, parents)]
        kill_all([*sessions, *tree])
        return len(sessions)

    def revoke_key_id(self, key_id: str) -> None:
        """Adds `key_id` to this sshd's key revocation list: certificates from the CA with that
        key ID are refused from the next authentication on (live connections are not cut)."""
        if not key_id or "\n" in key_id:
            raise ValueError("key_id must be one non-empty line")
        spec = self.directory / "revoke.spec"
        spec.write_text(f"id: {key_id}\n")
        try:
            subprocess.run(
                [
                    *("ssh-keygen", "-q", "-k", "-u"),
                    *("-f", str(self.directory / "revoked_keys")),
                    *("-s", str(self.directory / "user_ca.pub"), str(spec)),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
        finally:
            spec.unlink(missing_ok=True)

    # -- internals -------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._root is not None:
            self._root.mkdir(parents=True, exist_ok=True)
        tempdir = Path(tempfile.mkdtemp(prefix="bgtui-sshd-", dir=self._root))
        self._state.tempdir = tempdir
        host_key = tempdir / "ssh_host_ed25519_key"
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "bgtui-sandbox",
                "-f",
                str(host_key),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        public = host_key.with_name(host_key.name + ".pub").read_text().split()
        self._host_key_line = f"{public[0]} {public[1]}"
        (tempdir / "user_ca.pub").write_text(self._ca_line + "\n")
        subprocess.run(  # an empty KRL: sshd refuses every key if RevokedKeys is unreadable
            ["ssh-keygen", "-q", "-k", "-f", str(tempdir / "revoked_keys")],
            check=True,
            capture_output=True,
            timeout=30,
        )
        principals_dir = tempdir / "principals"
        principals_dir.mkdir()
        for name, values in self._principals.items():
            (principals_dir / name).write_text("".join(f"{value}\n" for value in values))
        if os.geteuid() == 0 and not _PRIVSEP_DIR.is_dir():
            # sshd running as root insists on its (empty) privilege-separation chroot.
            _PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _write_config(self, port: int) -> Path:
        tempdir = self.directory
        lines = [
            f"ListenAddress {self.host}",
            f"Port {port}",
            f"HostKey {tempdir / 'ssh_host_ed25519_key'}",
            f"PidFile {tempdir / 'sshd.pid'}",
            f"TrustedUserCAKeys {tempdir / 'user_ca.pub'}",
            f"RevokedKeys {tempdir / 'revoked_keys'}",
            f"AuthorizedPrincipalsFile {tempdir / 'principals'}/%u",
            "AuthorizedKeysFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "LogLevel VERBOSE",
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "Subsystem sftp internal-sftp",
        ]
        config = tempdir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _launch(self) -> None:
        last_error = "sshd did not start"
        for _attempt in range(3):
            port = free_port(self.host)
            config = self._write_config(port)
            check = subprocess.run(
                [str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True, check=False
            )
            if check.returncode != 0:
                raise SandboxError(f"sshd rejected its config: {check.stderr.strip()}")
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            process = subprocess.Popen(
                [str(SSHD), "-D", "-f", str(config), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
            )
            self._state.process = process
            if _wait_for_banner(self.host, port, process, timeout=10):
                self._port = port
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=5)
            self._state.process = None
            output = self.log_text()[log_offset:].strip()
            tail = output.splitlines()
            last_error = tail[-1] if tail else f"sshd exited with status {process.returncode}"
            if "Address already in use" not in output:
                break
        raise SandboxError(f"sshd did not start: {last_error}")


def _wait_for_banner(
    host: str, port: int, process: subprocess.Popen[bytes], timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(256).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _ports_for_key_id(log: str, key_id: str) -> set[int]:
    """Client source ports whose latest connection authenticated with `key_id`."""
    latest: dict[int, str | None] = {}
    for line in log.splitlines():
        connected = _CONNECTION.match(line)
        if connected:
            latest[int(connected["port"])] = None
            continue
        accepted = _ACCEPTED.match(line)
        if accepted:
            latest[int(accepted["port"])] = accepted["key_id"]
    return {port for port, found in latest.items() if found == key_id}


def _established_inodes(local_port: int, remote_ports: set[int]) -> set[str]:
    """Socket inodes of ESTABLISHED TCP connections local_port <-> one of remote_ports."""
    inodes: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != "01":  # 01 = ESTABLISHED
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            if local == local_port and remote in remote_ports:
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path("/proc") / str(pid) / "fd"
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


__all__ = ["DEFAULT_PRINCIPALS", "LoopbackSshd", "SandboxError", "available"]
