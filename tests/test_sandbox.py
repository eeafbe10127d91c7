"""The sandbox appliance's real servers: a throwaway PostgreSQL cluster and a loopback sshd.

Everything here talks to real processes with real clients (psycopg, psql, pg_isready, ssh,
ssh-keygen, paramiko); nothing is mocked.
"""

from __future__ import annotations

import gc
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import psycopg
import pytest
from psycopg import errors, sql

from bgtui.protocol.keys import PrivateKey
from controller.processes import alive, descendants, kill_all
from controller.sandbox import postgres as pgsandbox
from controller.sandbox import sshd as sshsandbox
from controller.sandbox.postgres import ThrowawayPostgres
from controller.sandbox.sshd import LoopbackSshd

pytestmark = pytest.mark.timeout(120)


def _require(reason: str | None) -> None:
    # `make test` installs every server these tests need; a missing one is a failure, never a skip.
    if reason is not None:
        pytest.fail(reason)


def _wait_until(predicate: object, timeout: float = 10.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayPostgres]:
    _require(pgsandbox.available())
    with ThrowawayPostgres() as server:
        server.seed()
        yield server


def _create_login(pg: ThrowawayPostgres, name: str, group: str, valid_until: datetime) -> str:
    password = f"pw-{name}"
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {} IN ROLE {}").format(
                sql.Identifier(name),
                sql.Literal(password),
                sql.Literal(valid_until.isoformat()),
                sql.Identifier(group),
            )
        )
    return password


def test_postgres_starts_and_admin_dsn_connects(pg: ThrowawayPostgres) -> None:
    assert pg.host == "127.0.0.1"
    assert pg.socket_dir.is_dir()
    with psycopg.connect(pg.admin_dsn) as conn:
        row = conn.execute("SELECT current_user, current_setting('password_encryption')").fetchone()
        assert row == ("bgadmin", "scram-sha-256")
        server_port = conn.execute("SELECT current_setting('port')").fetchone()
        assert server_port == (str(pg.port),)


def test_tcp_logins_need_the_password(pg: ThrowawayPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn("bgadmin", "wrong-password", "postgres")).close()


def test_seed_creates_orders_and_group_roles(pg: ThrowawayPostgres) -> None:
    with psycopg.connect(pg.dsn("bgadmin", pg.password)) as conn:
        count = conn.execute("SELECT count(*) FROM orders").fetchone()
        assert count is not None and count[0] >= 3
        roles = conn.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'bg\\_%' ORDER BY 1"
        ).fetchall()
        assert roles == [("bg_readonly", False), ("bg_readwrite", False)]
    pg.seed()  # idempotent


def test_break_glass_readonly_role_can_select_but_not_insert(pg: ThrowawayPostgres) -> None:
    expiry = datetime.now(UTC) + timedelta(hours=1)
    password = _create_login(pg, "bg_sess_ro", "bg_readonly", expiry)
    with psycopg.connect(pg.dsn("bg_sess_ro", password)) as conn:
        rows = conn.execute("SELECT customer FROM orders ORDER BY id").fetchall()
        assert ("acme",) in rows
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO orders (customer, total) VALUES ('mallory', 1)")


def test_break_glass_readwrite_role_can_insert(pg: ThrowawayPostgres) -> None:
    expiry = datetime.now(UTC) + timedelta(hours=1)
    password = _create_login(pg, "bg_sess_rw", "bg_readwrite", expiry)
    with psycopg.connect(pg.dsn("bg_sess_rw", password)) as conn:
        conn.execute("INSERT INTO orders (customer, total) VALUES ('hooli', 42)")
        conn.execute("DELETE FROM orders WHERE customer = 'hooli'")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE orders")


def test_expired_login_role_is_refused(pg: ThrowawayPostgres) -> None:
    password = _create_login(pg, "bg_sess_old", "bg_readonly", datetime.now(UTC) - timedelta(1))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn("bg_sess_old", password)).close()


def test_real_psql_reads_orders(pg: ThrowawayPostgres) -> None:
    psql = shutil.which("psql")
    _require(None if psql else "psql not found: apt-get install postgresql-client")
    assert psql is not None
    password = _create_login(pg, "bg_sess_psql", "bg_readonly", datetime.now(UTC) + timedelta(1))
    env = {**os.environ, **pg.env("bg_sess_psql", password)}
    result = subprocess.run(
        [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", "select count(*) from orders"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 3


def _pg_isready(host: str, port: int) -> int:
    tool = shutil.which("pg_isready")
    bindir = pgsandbox.find_bindir()
    if tool is None and bindir is not None and (bindir / "pg_isready").exists():
        tool = str(bindir / "pg_isready")
    assert tool is not None, "pg_isready not found"
    return subprocess.run(
        [tool, "-h", host, "-p", str(port), "-t", "2"], capture_output=True, timeout=10, check=False
    ).returncode


def test_postgres_stop_and_finalizer_leave_nothing_behind(tmp_path: Path) -> None:
    _require(pgsandbox.available())
    server = ThrowawayPostgres().start()
    pid, directory, port = server.pid, server.directory, server.port
    assert pid is not None and alive(pid)
    assert _pg_isready(server.host, port) == 0
    server.stop()
    server.stop()  # idempotent
    assert not directory.exists()
    assert not alive(pid)
    assert _pg_isready("127.0.0.1", port) != 0

    # A cluster whose owner is dropped without stop() (a failed test) is torn down anyway.
    orphan = ThrowawayPostgres().start()
    pid, directory = orphan.pid, orphan.directory
    assert pid is not None
    del orphan
    gc.collect()
    assert not directory.exists()
    assert not alive(pid)


# --------------------------------------------------------------------------------------------
# sshd
# --------------------------------------------------------------------------------------------


class _Keys:
    """A user CA (made by bgtui's own key code) and real ssh-keygen for everything else."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ca = PrivateKey.generate(comment="bgtui-test-ca")
        self.ca = root / "ca"
        fd = os.open(self.ca, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(ca.openssh())
        self.ca_public = ca.public.openssh()

    def user_key(self, name: str) -> Path:
        directory = self.root / name
        directory.mkdir()
        key = directory / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return key

    def certified(
        self, name: str, key_id: str, principal: str, validity: str = "+5m", ca: Path | None = None
    ) -> tuple[Path, Path]:
        """A fresh key pair and its certificate, signed by the real ssh-keygen."""
        key = self.user_key(name)
        subprocess.run(
            [
                *("ssh-keygen", "-q", "-s", str(ca or self.ca)),
                *("-I", key_id, "-n", principal, "-V", validity, f"{key}.pub"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        cert = key.with_name(key.name + "-cert.pub")
        assert cert.exists()
        return key, cert


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> _Keys:
    _require(sshsandbox.available())
    return _Keys(tmp_path_factory.mktemp("ssh-keys"))


@pytest.fixture(scope="module")
def sshd(keys: _Keys) -> Iterator[LoopbackSshd]:
    with LoopbackSshd(keys.ca_public) as server:
        server.known_hosts(keys.root / "known_hosts")
        yield server


def _ssh_argv(server: LoopbackSshd, known_hosts: Path, key: Path, cert: Path | None) -> list[str]:
    argv = ["ssh", "-F", "none", "-i", str(key)]
    if cert is not None:
        argv += ["-o", f"CertificateFile={cert}"]
    return [
        *argv,
        *("-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"),
        *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"),
        *("-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"),
        *("-p", str(server.port), f"{server.user}@{server.host}"),
    ]


def _ssh(
    server: LoopbackSshd, keys: _Keys, key: Path, cert: Path | None, command: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_ssh_argv(server, keys.root / "known_hosts", key, cert), command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_sshd_starts_with_pinned_host_key(sshd: LoopbackSshd, keys: _Keys) -> None:
    assert sshd.host_key_line.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(sshd.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert sshd.host_key_line in scanned.stdout


def test_real_ssh_with_certificate_runs_a_command(sshd: LoopbackSshd, keys: _Keys) -> None:
    key, cert = keys.certified("admin", "key-id-123", "bg-admin")
    result = _ssh(sshd, keys, key, cert, "echo hello")
    assert result.returncode == 0, result.stderr + sshd.log_text()
    assert result.stdout == "hello\n"
    assert "ID key-id-123 (serial 0)" in sshd.log_text()


def test_sessions_run_in_a_home_of_their_own(sshd: LoopbackSshd, keys: _Keys) -> None:
    """Not the login user's real HOME: bash would source its ~/.bashrc for every command, and
    rc files start tools (pyenv) that a teardown's kill can leave holding a lock."""
    key, cert = keys.certified("home", "key-id-home", "bg-admin")
    result = _ssh(sshd, keys, key, cert, 'echo "$HOME"; ls -A "$HOME"')
    assert result.returncode == 0, result.stderr + sshd.log_text()
    assert result.stdout.splitlines()[0] == str(sshd.session_home)
    assert result.stdout.splitlines()[0] != pwd.getpwuid(os.getuid()).pw_dir
    assert stat.S_IMODE(sshd.session_home.stat().st_mode) == 0o700


def test_certificate_for_another_principal_is_refused(sshd: LoopbackSshd, keys: _Keys) -> None:
    key, cert = keys.certified("readonly", "key-id-ro", "bg-readonly")
    result = _ssh(sshd, keys, key, cert, "echo hello")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert result.stdout == ""


def test_expired_certificate_is_refused(sshd: LoopbackSshd, keys: _Keys) -> None:
    key, cert = keys.certified("expired", "key-id-old", "bg-admin", validity="-10m:-5m")
    result = _ssh(sshd, keys, key, cert, "echo hello")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert "expired" in sshd.log_text()


def test_plain_key_without_certificate_is_refused(sshd: LoopbackSshd, keys: _Keys) -> None:
    key = keys.user_key("plain")
    result = _ssh(sshd, keys, key, None, "echo hello")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_certificate_from_another_ca_is_refused(sshd: LoopbackSshd, keys: _Keys) -> None:
    other_ca = keys.user_key("other-ca")
    key, cert = keys.certified("foreign", "key-id-foreign", "bg-admin", ca=other_ca)
    result = _ssh(sshd, keys, key, cert, "echo hello")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_paramiko_connects_with_key_and_certificate(sshd: LoopbackSshd, keys: _Keys) -> None:
    key, cert = keys.certified("paramiko", "key-id-paramiko", "bg-ops")
    pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
    pkey.load_certificate(str(cert))
    client = paramiko.SSHClient()
    client.load_host_keys(str(keys.root / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            sshd.host,
            port=sshd.port,
            username=sshd.user,
            pkey=pkey,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _stdin, stdout, _stderr = client.exec_command("echo from-paramiko", timeout=10)
        assert stdout.read() == b"from-paramiko\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_terminate_sessions_cuts_live_connections(sshd: LoopbackSshd, keys: _Keys) -> None:
    key, cert = keys.certified("live", "key-id-123", "bg-admin")
    bystander_key, bystander_cert = keys.certified("bystander", "key-id-bystander", "bg-ops")
    known_hosts = keys.root / "known_hosts"
    live = subprocess.Popen(
        [*_ssh_argv(sshd, known_hosts, key, cert), "sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tunnel_only = subprocess.Popen(  # no command at all: `ssh -N`, as for port forwarding
        [*_ssh_argv(sshd, known_hosts, key, cert), "-N"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bystander = subprocess.Popen(
        [*_ssh_argv(sshd, known_hosts, bystander_key, bystander_cert), "sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_until(lambda: len(sshd.sessions_for("key-id-123")) == 2), sshd.log_text()
        assert _wait_until(lambda: len(sshd.sessions_for("key-id-bystander")) == 1)
        victims = sshd.sessions_for("key-id-123")
        victim_tree = [p for pid in victims for p in descendants(pid)]  # the remote `sleep 60`
        assert sshd.sessions_for("no-such-key-id") == []

        assert sshd.terminate_sessions("key-id-123") == 2
        # 255: the connection was cut (the remote `sleep 60` finishing would exit 0).
        assert live.wait(timeout=30) == 255
        assert tunnel_only.wait(timeout=30) == 255
        assert not any(alive(pid) for pid in [*victims, *victim_tree])
        assert sshd.sessions_for("key-id-123") == []
        assert sshd.terminate_sessions("key-id-123") == 0

        assert bystander.poll() is None  # another certificate's session is untouched
        assert len(sshd.sessions_for("key-id-bystander")) == 1
    finally:
        for process in (live, tunnel_only, bystander):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=5)


def test_revoked_key_id_cannot_log_in_again(sshd: LoopbackSshd, keys: _Keys) -> None:
    key, cert = keys.certified("revoked", "key-id-revoked", "bg-admin")
    other_key, other_cert = keys.certified("kept", "key-id-kept", "bg-admin")
    assert _ssh(sshd, keys, key, cert, "true").returncode == 0
    sshd.revoke_key_id("key-id-revoked")
    refused = _ssh(sshd, keys, key, cert, "true")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr
    assert _ssh(sshd, keys, other_key, other_cert, "true").returncode == 0


def test_sshd_stop_kills_listener_and_sessions(keys: _Keys) -> None:
    server = LoopbackSshd(keys.ca_public).start()
    listener, directory, port = server.pid, server.directory, server.port
    assert listener is not None
    known_hosts = server.known_hosts(keys.root / "known_hosts-stop")
    key, cert = keys.certified("stop", "key-id-stop", "bg-admin")
    session = subprocess.Popen(
        [*_ssh_argv(server, known_hosts, key, cert), "sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_until(lambda: server.sessions_for("key-id-stop") != []), server.log_text()
        tree = descendants(listener)
        assert tree
        server.stop()
        server.stop()  # idempotent
        assert session.wait(timeout=5) == 255
        assert not alive(listener)
        assert not any(alive(pid) for pid in tree)
        assert not directory.exists()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        if session.poll() is None:
            session.kill()
        session.wait(timeout=5)


def test_custom_principals_map(keys: _Keys) -> None:
    with LoopbackSshd(keys.ca_public, principals={"nobody-here": ["x"]}) as server:
        server.known_hosts(keys.root / "known_hosts-custom")
        assert (server.directory / "principals" / "nobody-here").read_text() == "x\n"
        # The current user has no principals file now, so even a bg-admin certificate fails.
        key, cert = keys.certified("custom", "key-id-custom", "bg-admin")
        result = subprocess.run(
            [*_ssh_argv(server, keys.root / "known_hosts-custom", key, cert), "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 255


def test_descendants_reach_grandchildren_through_proc() -> None:
    """Teardown and the sandbox kill whole trees: a grandchild must be found, not just a child."""
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE)
    try:
        assert shell.stdout is not None
        grandchild = int(shell.stdout.readline())
        found = descendants(os.getpid())
        assert shell.pid in found and grandchild in found
        assert found.index(shell.pid) < found.index(grandchild)  # children first
        assert descendants(grandchild) == []
    finally:
        kill_all([shell.pid, grandchild], grace=1)
        shell.wait(timeout=10)
