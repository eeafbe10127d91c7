"""SSH sessions minted by the controller's CA, end to end against real servers.

A real `bgctl serve` (tests/servers.py) with an `ssh` resource whose address is a real OpenSSH
sshd on loopback (controller.sandbox.sshd) that trusts the controller's CA
(`<home>/ssh_ca_ed25519.pub`), accepts principal bg-admin only for its login user, logs to a
file the controller reads and takes its RevokedKeys KRL from a file the controller writes. The
operator drives everything with the real `bgtui` CLI and connects with the real `ssh` and with
paramiko; nothing is mocked.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import paramiko
import pytest
from tests.helpers import ok, show
from tests.servers import Appliance

from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.sshcert import parse_certificate
from bgtui.protocol.timefmt import parse_utc
from controller.planes.credential import ssh_sessions
from controller.sandbox import sshd as sshsandbox
from controller.sandbox.sshd import LoopbackSshd

View = dict[str, Any]

RESOURCE = """
[[resources]]
name = "bastion"
description = "Production bastion host"
kind = "ssh"
address = "127.0.0.1:{port}"
network = "direct"
credential = "controller"
privileges = ["admin", "readonly"]
grants = {{ admin = "bg-admin", readonly = "bg-readonly" }}
options = {{ user = "{user}", host_key = "{host_key}", sshd_log = "{log}", revoked_keys = "{krl}" }}
"""


@dataclass
class Rig:
    app: Appliance
    sshd: LoopbackSshd
    root: Path


def bastion_resource(server: LoopbackSshd) -> str:
    """The `bastion` catalog entry for `server`: its key ID revoked and connections cut."""
    return RESOURCE.format(
        port=server.port,
        user=server.user,
        host_key=server.host_public_key,
        log=server.log_path,
        krl=server.revoked_keys_path,
    )


@contextlib.contextmanager
def bastion_appliance(root: Path) -> Iterator[tuple[Appliance, LoopbackSshd]]:
    """A running `bgctl serve` whose catalog has `bastion`, a loopback sshd trusting its CA
    (this user may log in as `bg-admin`); both stopped on the way out."""
    reason = sshsandbox.available()
    if reason is not None:
        pytest.fail(reason)  # a missing server fails the suite; it never skips
    app = Appliance(root / "appliance").setup()
    ca_line = (app.home / "ssh_ca_ed25519.pub").read_text()
    server = LoopbackSshd(
        ca_line, root / "sshd", principals={pwd.getpwuid(os.getuid()).pw_name: ["bg-admin"]}
    )
    try:
        server.start()
        with (app.home / "controller.toml").open("a") as catalog:
            catalog.write(bastion_resource(server))
        app.start()
        yield app, server
    finally:
        app.close()
        server.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("ssh-plane")
    with bastion_appliance(root) as (app, server):
        yield Rig(app, server, root)


# -- helpers ------------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def activate(rig: Rig, privilege: str, duration: str = "10m") -> str:
    """`bgtui request --wait` as olive, approved by alice from another process; the id."""
    waiting = subprocess.Popen(
        [
            *(sys.executable, "-m", "bgtui.cli", "request", "bastion"),
            *("--privilege", privilege, "--duration", duration),
            *("--reason", "INC-4711 disk full", "--wait"),
        ],
        env={**os.environ, **rig.app.env("olive")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None
    line = waiting.stdout.readline()
    assert line, waiting.stderr.read() if waiting.stderr else "no output"
    rid = line.split()[0]
    ok(rig.app.bgtui("alice", "approve", rid, "--yes"))
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, out + err
    assert out.splitlines()[-1].startswith("active  until "), out
    return rid


def ssh_dir(rig: Rig, rid: str, name: str) -> Path:
    directory = rig.root / "operator" / name
    directory.parent.mkdir(exist_ok=True)
    ok(rig.app.bgtui("olive", "creds", rid, "--ssh-dir", str(directory)))
    return directory


def ssh_argv(directory: Path, *extra: str) -> list[str]:
    return ["ssh", "-F", str(directory / "config"), "-o", "BatchMode=yes", *extra, "session"]


def ssh(directory: Path, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ssh_argv(directory, *extra), command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def live_ssh(directory: Path) -> tuple[subprocess.Popen[str], int]:
    """A connection left running; returns it and the PID of its remote `sleep`, once it runs."""
    process = subprocess.Popen(
        [*ssh_argv(directory), "echo $$; exec sleep 300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the marker: the remote shell runs, so it is logged in
    if not line.strip().isdigit():
        process.kill()
        raise AssertionError(f"ssh did not connect: {line!r} {process.communicate()}")
    return process, int(line)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def receipt_how(view: View) -> str:
    assert view["receipt"] is not None, view
    receipt = json.loads(view["receipt"]["payload"])  # the signed receipt's canonical JSON
    hows = [a["how"] for a in receipt["artifacts"] if a["kind"] == "ssh-certificate"]
    assert len(hows) == 1, receipt
    return str(hows[0])


def end_and_wait(rig: Rig, rid: str) -> View:
    ok(rig.app.bgtui("olive", "end", rid))
    assert wait_until(lambda: show(rig.app, rid)["state"] == "ended", 20)
    return show(rig.app, rid)


def stop(process: subprocess.Popen[str], remote_pid: int) -> None:
    """Cleanup even when a test failed: the client, and the remote command it left behind (a
    non-pty command outlives its dropped connection, reparented away from sshd)."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=5)
    if alive(remote_pid):
        os.kill(remote_pid, signal.SIGKILL)


# -- tests --------------------------------------------------------------------------------------


def test_admin_certificate_logs_in_with_ssh_and_paramiko(rig: Rig) -> None:
    rid = activate(rig, "admin")
    directory = ssh_dir(rig, rid, "admin")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "id_ed25519").stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [
        "config",
        "id_ed25519",
        "id_ed25519-cert.pub",
        "id_ed25519.pub",
        "known_hosts",
    ]

    hello = ssh(directory, "echo hello")
    assert hello.returncode == 0, hello.stderr + rig.sshd.log_text()
    assert hello.stdout == "hello\n"

    listed = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(directory / "id_ed25519-cert.pub")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert f'Key ID: "{rid}"' in listed
    principals = listed.split("Principals:", 1)[1].split("Critical Options:", 1)[0].split()
    assert principals == ["bg-admin"]
    cert = parse_certificate((directory / "id_ed25519-cert.pub").read_text())
    expires = parse_utc(show(rig.app, rid)["expires_at"]).timestamp()
    assert abs(cert.valid_before - expires) <= 5
    valid_to = listed.split("Valid: from ", 1)[1].split()[2]  # "from X to Y", local time
    assert abs(datetime.strptime(valid_to, "%Y-%m-%dT%H:%M:%S").timestamp() - expires) <= 5

    key = paramiko.Ed25519Key(filename=str(directory / "id_ed25519"))
    key.load_certificate(str(directory / "id_ed25519-cert.pub"))
    client = paramiko.SSHClient()
    client.load_host_keys(str(directory / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=rig.sshd.port,
            username=rig.sshd.user,
            pkey=key,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _stdin, stdout, _stderr = client.exec_command("echo from-paramiko", timeout=10)
        assert stdout.read() == b"from-paramiko\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()

    # Beyond the approved privilege: another login user has no principals at all.
    other = ssh(directory, "true", "-l", "nobody")
    assert other.returncode == 255, other.stdout + other.stderr

    ended = end_and_wait(rig, rid)
    assert "revoked key id" in receipt_how(ended)
    assert ssh(directory, "true").returncode == 255


def test_readonly_certificate_is_refused_by_an_admin_only_host(rig: Rig) -> None:
    rid = activate(rig, "readonly")
    directory = ssh_dir(rig, rid, "readonly")
    cert = parse_certificate((directory / "id_ed25519-cert.pub").read_text())
    assert cert.principals == ("bg-readonly",) and cert.key_id == rid
    refused = ssh(directory, "echo hello")
    assert refused.returncode == 255, refused.stdout + refused.stderr
    assert "hello" not in refused.stdout
    assert "Permission denied" in refused.stderr
    end_and_wait(rig, rid)


def test_end_cuts_live_connections_and_revokes_the_certificate(rig: Rig) -> None:
    rid = activate(rig, "admin")
    directory = ssh_dir(rig, rid, "cut")
    first, first_sleep = live_ssh(directory)
    second, second_sleep = live_ssh(directory)
    try:
        ended = end_and_wait(rig, rid)
        # 255: the connections were cut (the remote `sleep 60` finishing would exit 0).
        assert first.wait(timeout=30) == 255
        assert second.wait(timeout=30) == 255
        assert wait_until(lambda: not alive(first_sleep) and not alive(second_sleep), 5)
        how = receipt_how(ended)
        assert f"revoked key id {rid} in {rig.sshd.revoked_keys_path}" in how, how
        assert f"cut 2 live connection(s) to port {rig.sshd.port}" in how, how

        # The certificate is still valid for minutes, but the KRL refuses it.
        cert = parse_certificate((directory / "id_ed25519-cert.pub").read_text())
        assert cert.valid_before > time.time() + 60
        again = ssh(directory, "echo hi")
        assert again.returncode == 255, again.stdout + again.stderr
        assert "hi" not in again.stdout
        assert "revoked" in rig.sshd.log_text()
    finally:
        stop(first, first_sleep)
        stop(second, second_sleep)


def test_expiry_cuts_the_connection_and_refuses_new_logins(rig: Rig) -> None:
    rid = activate(rig, "admin", "8s")  # room for creds and a login under load
    directory = ssh_dir(rig, rid, "expiry")
    live, sleeping = live_ssh(directory)
    try:
        assert live.wait(timeout=20) == 255
        assert wait_until(lambda: show(rig.app, rid)["state"] == "ended", 10)
        view = show(rig.app, rid)
        assert view["ended_reason"] == "expired"
        assert "cut 1 live connection(s)" in receipt_how(view)
        assert wait_until(lambda: not alive(sleeping), 5)
        assert ssh(directory, "echo hi").returncode == 255
    finally:
        stop(live, sleeping)


def test_the_session_private_key_never_reaches_the_controller(rig: Rig) -> None:
    rid = activate(rig, "admin")
    directory = ssh_dir(rig, rid, "secrecy")
    private = PrivateKey.load((directory / "id_ed25519").read_bytes(), None, "session key")
    cert_blob = (directory / "id_ed25519-cert.pub").read_text().split()[1]
    pem_body = "".join(
        line
        for line in (directory / "id_ed25519").read_text().splitlines()
        if not line.startswith("-----")
    )
    secrets = {
        "seed": private.seed,
        "seed hex": private.seed.hex().encode(),
        "seed base64": base64.b64encode(private.seed).rstrip(b"="),
        "private key file": pem_body.encode(),
    }
    ok(rig.app.bgtui("olive", "end", rid))
    assert wait_until(lambda: show(rig.app, rid)["state"] == "ended", 20)

    stored = {p: p.read_bytes() for p in rig.app.home.rglob("*") if p.is_file()}
    stored[rig.app.log] = rig.app.log.read_bytes()
    assert any(p.name == "state.db" for p in stored)
    # The search sees what is there: the session's public key is in the signed request.
    public_blob = private.public.openssh().split()[1].encode()
    assert any(public_blob in data for data in stored.values())
    for path, data in stored.items():
        for what, needle in secrets.items():
            assert needle not in data, f"the session key's {what} is in {path}"
        # The certificate is sealed to the operator and kept in memory only.
        assert cert_blob.encode() not in data, f"the certificate is in {path}"
        assert base64.b64decode(cert_blob) not in data, f"the certificate is in {path}"


# -- the pieces teardown relies on, on their own --------------------------------------------------


def ends(*pairs: tuple[str, int]) -> set[ssh_sessions.Endpoint]:
    return {(ipaddress.ip_address(address), port) for address, port in pairs}


def test_source_endpoints_read_a_bare_log_and_a_shared_syslog() -> None:
    cert = "ssh2: ED25519-CERT SHA256:abc ID {id} (serial 7) CA ED25519 SHA256:def"
    bare = "\n".join(
        [
            'Connection from 127.0.0.1 port 4001 on 127.0.0.1 port 2222 rdomain ""',
            f"Accepted publickey for root from 127.0.0.1 port 4001 {cert.format(id='S1')}",
            'Connection from 127.0.0.1 port 4002 on 127.0.0.1 port 2222 rdomain ""',
            f"Accepted publickey for root from 127.0.0.1 port 4002 {cert.format(id='S2')}",
            # source port 4001 reused by a later connection of another session
            'Connection from 127.0.0.1 port 4001 on 127.0.0.1 port 2222 rdomain ""',
            f"Accepted publickey for root from 127.0.0.1 port 4001 {cert.format(id='S2')}",
        ]
    )
    assert ssh_sessions.source_endpoints(bare, 2222, "S1") == set()
    assert ssh_sessions.source_endpoints(bare, 2222, "S2") == ends(
        ("127.0.0.1", 4001), ("127.0.0.1", 4002)
    )
    # A syslog shared by two sshd instances, lines interleaved: tied by PID, filtered by port.
    shared = "\n".join(
        [
            "Dec  4 10:00:00 host sshd[11]: Connection from 10.0.0.9 port 5000 on "
            "10.0.0.1 port 2222 rdomain ",
            "Dec  4 10:00:00 host sshd[12]: Connection from 10.0.0.9 port 5000 on "
            "10.0.0.1 port 22 rdomain ",
            f"Dec  4 10:00:01 host sshd[12]: Accepted publickey for ops from 10.0.0.9 port 5000 "
            f"{cert.format(id='S3')}",
            f"Dec  4 10:00:01 host sshd[11]: Accepted publickey for ops from 10.0.0.9 port 5000 "
            f"{cert.format(id='S4')}",
        ]
    )
    assert ssh_sessions.source_endpoints(shared, 2222, "S3") == set()
    assert ssh_sessions.source_endpoints(shared, 2222, "S4") == ends(("10.0.0.9", 5000))
    assert ssh_sessions.source_endpoints(shared, 22, "S3") == ends(("10.0.0.9", 5000))


def test_two_hosts_on_one_source_port_are_two_connections() -> None:
    """Ephemeral port ranges overlap across hosts: a session's connection from one host and
    another user's from another may share a source port. Neither hides nor drags in the other."""
    cert = "ssh2: ED25519-CERT SHA256:abc ID {id} (serial 7) CA ED25519 SHA256:def"
    log = "\n".join(
        [
            'Connection from 10.0.0.1 port 50000 on 10.0.0.5 port 22 rdomain ""',
            f"Accepted publickey for ops from 10.0.0.1 port 50000 {cert.format(id='ENDING')}",
            'Connection from 2001:db8::7 port 50000 on 2001:db8::5 port 22 rdomain ""',
            f"Accepted publickey for ops from 2001:db8::7 port 50000 {cert.format(id='OTHER')}",
            'Connection from ::ffff:10.0.0.2 port 50000 on ::ffff:10.0.0.5 port 22 rdomain ""',
            "Accepted publickey for ops from ::ffff:10.0.0.2 port 50000 "
            + cert.format(id="ENDING"),
        ]
    )
    assert ssh_sessions.source_endpoints(log, 22, "ENDING") == ends(
        ("10.0.0.1", 50000), ("10.0.0.2", 50000)
    )
    assert ssh_sessions.source_endpoints(log, 22, "OTHER") == ends(("2001:db8::7", 50000))


def test_proc_net_tcp_addresses_are_read_in_host_byte_order() -> None:
    # As /proc/net/tcp and tcp6 print them on a little-endian machine.
    assert ssh_sessions._proc_address("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert ssh_sessions._proc_address("0200000A") == ipaddress.ip_address("10.0.0.2")
    assert ssh_sessions._proc_address("00000000000000000000000001000000") == (
        ipaddress.ip_address("::1")
    )
    mapped = "0000000000000000FFFF00000200000A"  # ::ffff:10.0.0.2, as a v6 socket shows it
    assert ssh_sessions._proc_address(mapped) == ipaddress.ip_address("10.0.0.2")
    assert ssh_sessions._proc_address("B80D0120000000000000000007000000") == (
        ipaddress.ip_address("2001:db8::7")
    )
    assert ssh_sessions._proc_address("zz") is None


def test_revoke_key_id_creates_then_extends_the_krl(tmp_path: Path) -> None:
    ca = PrivateKey.generate(comment="test-ca")
    ca_public = tmp_path / "ca.pub"
    ca_public.write_text(ca.public.openssh() + "\n")
    krl = tmp_path / "revoked_keys"
    ssh_sessions.revoke_key_id(krl, ca_public, "01FIRST")
    ssh_sessions.revoke_key_id(krl, ca_public, "01SECOND")
    ssh_sessions.revoke_key_id(krl, ca_public, "01SECOND")  # idempotent
    listed = subprocess.run(
        ["ssh-keygen", "-Q", "-l", "-f", str(krl)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "id: 01FIRST" in listed and "id: 01SECOND" in listed, listed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.pub",
        "revoked_keys",
        "revoked_keys.lock",
    ]
    with pytest.raises(ssh_sessions.RevocationError, match="CA public key is missing"):
        ssh_sessions.revoke_key_id(krl, tmp_path / "missing.pub", "01THIRD")
