"""A real OpenSSH `sshd` on a free loopback port that lets in only certificates from one CA.

Only certificates get in (`AuthorizedKeysFile none`, no passwords), and only for the certificate
principals listed for the login user (`AuthorizedPrincipalsFile <dir>/principals/%u`).

Live connections and revocation
-------------------------------
sessions_for / terminate_sessions / revoke_key_id delegate to the controller's production code
in controller.planes.credential.ssh_sessions (which reads this sshd's log, its port and /proc,
and needs no handle on the listener); see that module for exactly what it can and cannot find.
The sshd logs with LogLevel VERBOSE to `log_path` and reads its RevokedKeys KRL from
`revoked_keys_path`, so a resource with options `sshd_log` and `revoked_keys` set to these
lets the controller cut and revoke a session's connections here.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from controller.planes.credential import ssh_sessions
from controller.processes import descendants, kill_all
from controller.sandbox.ports import SandboxError, SandboxServer, free_port

SSHD = Path("/usr/sbin/sshd")
DEFAULT_PRINCIPALS = ("bg-admin", "bg-ops")
_PRIVSEP_DIR = Path("/run/sshd")
_INSTALL_HINT = "apt-get install openssh-server"


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


class LoopbackSshd(SandboxServer):
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
    def session_home(self) -> Path:
        """HOME in the sessions sshd starts (empty: no rc file of the real user runs)."""
        return self.directory / "home"

    @property
    def revoked_keys_path(self) -> Path:
        """The KRL sshd reads as RevokedKeys (for a resource's `revoked_keys` option)."""
        return self.directory / "revoked_keys"

    @property
    def host_public_key(self) -> str:
        """The host key as `ssh-ed25519 AAAA...` (for a resource's `host_key` option)."""
        if self._host_key_line is None:
            raise SandboxError("sshd sandbox is not running")
        return self._host_key_line

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
        authenticated with a certificate whose key ID is `key_id` (see ssh_sessions)."""
        process = self._state.process
        if process is None or process.poll() is not None:
            return []
        return ssh_sessions.sessions_for(self.log_path, self.port, key_id)

    def terminate_sessions(self, key_id: str) -> int:
        """Ends every live connection of `key_id` (SIGTERM, then SIGKILL after 3 s) along with
        the processes still running under it; returns how many connections were cut."""
        process = self._state.process
        if process is None or process.poll() is not None:
            return 0
        return ssh_sessions.terminate_sessions(self.log_path, self.port, key_id)

    def revoke_key_id(self, key_id: str) -> None:
        """Adds `key_id` to this sshd's key revocation list: certificates from the CA with that
        key ID are refused from the next authentication on (live connections are not cut)."""
        ssh_sessions.revoke_key_id(self.revoked_keys_path, self.directory / "user_ca.pub", key_id)

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
            ["ssh-keygen", "-q", "-k", "-f", str(self.revoked_keys_path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        principals_dir = tempdir / "principals"
        principals_dir.mkdir()
        self.session_home.mkdir(mode=0o700)
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
            f"RevokedKeys {self.revoked_keys_path}",
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
            # Sessions get a HOME of their own: the login user's real rc files stay out of
            # them. Debian's bash sources ~/.bashrc for every ssh command, and a slow tool
            # started there (pyenv's rehash, say) that a teardown kills mid-way leaves its lock
            # behind, after which every later login on the machine hangs on it.
            f"SetEnv HOME={self.session_home}",
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


__all__ = ["DEFAULT_PRINCIPALS", "LoopbackSshd", "SandboxError", "available"]
