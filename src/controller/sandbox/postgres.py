"""A throwaway PostgreSQL cluster: `initdb` + `pg_ctl` in a temp dir on a free loopback port.

TCP logins use SCRAM-SHA-256 (the superuser `bgadmin` gets a generated password); the Unix
socket lives in the cluster's own 0700 directory and trusts whoever can reach it (the owner).
PostgreSQL refuses to run as root, so when this process is root the cluster is owned by, and
every server command runs as, the `postgres` system user (through `runuser`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from controller.processes import alive
from controller.sandbox.ports import SandboxError, SandboxServer, free_port

ADMIN_USER = "bgadmin"
DATABASE = "orders"
READONLY_ROLE = "bg_readonly"
READWRITE_ROLE = "bg_readwrite"
SERVICE_USER = "postgres"
_INSTALL_HINT = "apt-get install postgresql"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: PATH first, then the newest
    /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        bindir = Path(on_path).parent
        if (bindir / "pg_ctl").exists():
            return bindir
        real = Path(on_path).resolve().parent
        if (real / "pg_ctl").exists():
            return real
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def _service_account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None


def available() -> str | None:
    """None when a throwaway cluster can be started here, else a one-line reason."""
    if find_bindir() is None:
        return f"initdb not found: {_INSTALL_HINT}"
    if os.geteuid() == 0:
        if _service_account() is None:
            return (
                "running as root and no 'postgres' user to run PostgreSQL as: "
                f"{_INSTALL_HINT} (or run as a non-root user)"
            )
        if shutil.which("runuser") is None:
            return "running as root and runuser not found: apt-get install util-linux"
    return None


@dataclass
class _State:
    """What cleanup needs, kept apart from the owner so a finalizer can run without it."""

    bindir: Path | None = None
    run_as: str | None = None
    tempdir: Path | None = None
    extra_dirs: list[Path] = field(default_factory=list)
    pid: int | None = None

    def command(self, program: str, *args: str) -> list[str]:
        assert self.bindir is not None
        argv = [str(self.bindir / program), *args]
        if self.run_as is not None:
            return ["runuser", "-u", self.run_as, "--", *argv]
        return argv

    def cleanup(self) -> None:
        """Stops the postmaster (immediate shutdown) and removes every file; safe to repeat."""
        if self.tempdir is not None and self.bindir is not None:
            data = self.tempdir / "data"
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(
                        self.command("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"),
                        cwd=self.tempdir,
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
        if self.pid is not None:
            _kill_hard(self.pid)
            self.pid = None
        for directory in [*self.extra_dirs, *([self.tempdir] if self.tempdir else [])]:
            shutil.rmtree(directory, ignore_errors=True)
        self.extra_dirs = []
        self.tempdir = None


def _kill_hard(pid: int) -> None:
    """Last resort when `pg_ctl stop` did not end the postmaster."""
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)


class ThrowawayPostgres(SandboxServer):
    """A private PostgreSQL cluster that starts in a few seconds and leaves nothing behind.

    Use as a context manager, or call start() and stop(). `root` is the parent directory for
    the cluster's temp dir (default: the system temp dir); when running as root it must be
    reachable by the `postgres` user.
    """

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._state = _State()
        self._finalizer = weakref.finalize(self, self._state.cleanup)
        self._password = secrets.token_urlsafe(24)
        self._port: int | None = None
        self._socket_dir: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ThrowawayPostgres:
        if self._state.tempdir is not None:
            return self
        reason = available()
        if reason is not None:
            raise SandboxError(reason)
        state = self._state
        state.bindir = find_bindir()
        account = _service_account() if os.geteuid() == 0 else None
        state.run_as = account.pw_name if account is not None else None
        try:
            self._create_dirs(account)
            self._initdb()
            self._start_server()
        except BaseException:
            state.cleanup()
            raise
        return self

    def stop(self) -> None:
        """Immediate shutdown, then the temp dir is removed; idempotent."""
        self._state.cleanup()
        self._port = None
        self._socket_dir = None

    # -- properties ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise SandboxError("PostgreSQL sandbox is not running")
        return self._port

    @property
    def user(self) -> str:
        return ADMIN_USER

    @property
    def password(self) -> str:
        return self._password

    @property
    def database(self) -> str:
        return DATABASE

    @property
    def directory(self) -> Path:
        if self._state.tempdir is None:
            raise SandboxError("PostgreSQL sandbox is not running")
        return self._state.tempdir

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise SandboxError("PostgreSQL sandbox is not running")
        return self._socket_dir

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while running."""
        return self._state.pid

    @property
    def admin_dsn(self) -> str:
        """A libpq conninfo for the superuser over TCP (password included), database postgres."""
        return self.dsn(user=ADMIN_USER, password=self._password, dbname="postgres")

    def dsn(self, user: str, password: str, dbname: str = DATABASE) -> str:
        """A libpq conninfo over TCP for any login role (values are quoted as libpq needs)."""
        return make_conninfo(
            host=self.host,
            port=str(self.port),
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout="5",
        )

    def env(self, user: str, password: str, dbname: str = DATABASE) -> dict[str, str]:
        """PG* environment variables for real clients such as `psql`."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": user,
            "PGPASSWORD": password,
            "PGDATABASE": dbname,
        }

    # -- data ------------------------------------------------------------------------------

    def seed(self) -> None:
        """Creates database `orders` with table `orders(id, customer, total)` and a few rows, and
        the NOLOGIN group roles `bg_readonly` (SELECT) and `bg_readwrite` (SELECT, INSERT,
        UPDATE, DELETE) that break-glass login roles are granted IN ROLE. Idempotent."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            for role in (READONLY_ROLE, READWRITE_ROLE):
                found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if found.fetchone() is None:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        with psycopg.connect(self.dsn(ADMIN_USER, self._password, DATABASE)) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS orders ("
                " id serial PRIMARY KEY,"
                " customer text NOT NULL,"
                " total numeric(10, 2) NOT NULL)"
            )
            count = conn.execute("SELECT count(*) FROM orders").fetchone()
            if count is not None and count[0] == 0:
                conn.cursor().executemany(
                    "INSERT INTO orders (customer, total) VALUES (%s, %s)",
                    [("acme", "120.50"), ("globex", "75.00"), ("initech", "9.99")],
                )
            ro, rw = sql.Identifier(READONLY_ROLE), sql.Identifier(READWRITE_ROLE)
            db = sql.Identifier(DATABASE)
            for statement in (
                "GRANT CONNECT ON DATABASE {db} TO {ro}, {rw}",
                "GRANT USAGE ON SCHEMA public TO {ro}, {rw}",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro}",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {rw}",
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {rw}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ro}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
                " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {rw}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
                " GRANT USAGE, SELECT ON SEQUENCES TO {rw}",
            ):
                conn.execute(sql.SQL(statement).format(db=db, ro=ro, rw=rw))

    # -- internals -------------------------------------------------------------------------

    def _create_dirs(self, account: pwd.struct_passwd | None) -> None:
        state = self._state
        if self._root is not None:
            self._root.mkdir(parents=True, exist_ok=True)
        tempdir = Path(tempfile.mkdtemp(prefix="bgtui-pg-", dir=self._root))
        state.tempdir = tempdir
        socket_dir = tempdir / "sock"
        if len(str(socket_dir)) + len("/.s.PGSQL.65535") > _SOCKET_PATH_MAX:
            socket_dir = Path(tempfile.mkdtemp(prefix="bgpg-"))
            state.extra_dirs.append(socket_dir)
        else:
            socket_dir.mkdir()
        socket_dir.chmod(0o700)
        self._socket_dir = socket_dir
        if account is not None:
            for path in (tempdir, socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
            probe = subprocess.run(
                ["runuser", "-u", account.pw_name, "--", "test", "-w", str(tempdir)],
                capture_output=True,
                check=False,
                timeout=10,
            )
            if probe.returncode != 0:
                raise SandboxError(
                    f"the '{account.pw_name}' user cannot reach {tempdir}: "
                    "pick a root under a world-traversable directory such as /tmp"
                )

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        state = self._state
        assert state.tempdir is not None
        result = subprocess.run(
            state.command(program, *args),
            cwd=state.tempdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            tail = detail[-1] if detail else f"exit status {result.returncode}"
            raise SandboxError(f"{program} failed: {tail}")

    def _initdb(self) -> None:
        state = self._state
        assert state.tempdir is not None
        pwfile = state.tempdir / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self._password + "\n")
        if state.run_as is not None:
            account = pwd.getpwnam(state.run_as)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            self._run(
                "initdb",
                "-D",
                str(state.tempdir / "data"),
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_config(self, port: int) -> None:
        state = self._state
        assert state.tempdir is not None
        conf = state.tempdir / "data" / "postgresql.conf"
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "password_encryption": "scram-sha-256",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "40",
            "logging_collector": "off",
            "log_connections": "on",
            "log_disconnections": "on",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        with conf.open("a") as handle:
            handle.write("\n# bgtui sandbox\n")
            for key, value in settings.items():
                handle.write(f"{key} = {value}\n")

    def _start_server(self) -> None:
        state = self._state
        assert state.tempdir is not None
        data = state.tempdir / "data"
        log = state.tempdir / "postgres.log"
        if state.run_as is not None:
            account = pwd.getpwnam(state.run_as)
            log.touch(mode=0o600)
            os.chown(log, account.pw_uid, account.pw_gid)
        last_error: SandboxError | None = None
        for _attempt in range(3):
            port = free_port(self.host)
            self._write_config(port)
            log_offset = log.stat().st_size if log.exists() else 0
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "30", "start")
            except SandboxError as exc:
                last_error = exc
                if "already in use" in log.read_text(errors="replace")[log_offset:]:
                    continue  # another process took the port between probe and bind
                raise SandboxError(f"{exc}; see {log}") from None
            self._port = port
            state.pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
            return
        assert last_error is not None
        raise last_error
