"""SSHSIG made by bgtui checks with real `ssh-keygen -Y verify`, and the other way round.

Also signs through a real ssh-agent, so approvers' agent-held keys produce signatures any
third party can check with stock OpenSSH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtui.agent import AgentClient, AgentSigner, find_key
from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey
from bgtui.protocol.objects import Request, new_nonce
from bgtui.protocol.timefmt import now_utc, utc_text

NS = "bgtui-test@v1"


def ssh_keygen_verify(
    tmp: Path, public: PublicKey, signature: str, message: bytes, namespace: str
) -> subprocess.CompletedProcess[bytes]:
    """Runs the real `ssh-keygen -Y verify` with an allowed_signers file holding `public`."""
    allowed = tmp / "allowed_signers"
    allowed.write_text(f"signer@example {public.openssh('')}\n")
    sig = tmp / "message.sig"
    sig.write_text(signature)
    verify = ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "signer@example"]
    return subprocess.run(
        [*verify, "-n", namespace, "-s", str(sig)],
        input=message,
        capture_output=True,
        check=False,
    )


def make_ssh_key(path: Path, passphrase: str = "") -> PublicKey:
    """A key made by the real `ssh-keygen -t ed25519`; returns its public key."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return PublicKey.parse(path.with_suffix(".pub").read_text())


@pytest.fixture
def ssh_agent() -> Iterator[str]:
    """A real ssh-agent on a private socket; yields the socket path, kills the agent after."""
    # Unix socket paths are short (108 bytes): keep it out of the deep pytest tmp dir.
    sockdir = tempfile.mkdtemp(prefix="bgagent", dir="/tmp")
    sock = os.path.join(sockdir, "agent.sock")
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None, "ssh-agent exited at start"
            assert time.monotonic() < deadline, "ssh-agent did not create its socket"
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(sockdir, ignore_errors=True)


def ssh_add(sock: str, key: Path) -> None:
    subprocess.run(
        ["ssh-add", str(key)],
        env={**os.environ, "SSH_AUTH_SOCK": sock},
        check=True,
        capture_output=True,
    )


# -- (a) bgtui signs, ssh-keygen verifies ------------------------------------------------


def test_ssh_keygen_accepts_a_bgtui_signature(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    message = b"approve request 01J0000000000000000000000\n"
    signature = sshsig.sign(key, NS, message)
    result = ssh_keygen_verify(tmp_path, key.public, signature, message, NS)
    assert result.returncode == 0, result.stderr
    assert b"Good" in result.stdout + result.stderr


def test_ssh_keygen_rejects_a_bgtui_signature_under_another_namespace(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    signature = sshsig.sign(key, NS, b"hello")
    result = ssh_keygen_verify(tmp_path, key.public, signature, b"hello", "bgtui-approval@v1")
    assert result.returncode != 0


def test_ssh_keygen_rejects_a_bgtui_signature_over_other_bytes(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    signature = sshsig.sign(key, NS, b"duration=900")
    result = ssh_keygen_verify(tmp_path, key.public, signature, b"duration=9000", NS)
    assert result.returncode != 0


# -- (b) ssh-keygen signs, bgtui verifies ------------------------------------------------


def ssh_keygen_sign(key: Path, message_path: Path, namespace: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", namespace, str(message_path)],
        check=True,
        capture_output=True,
    )
    return message_path.with_name(message_path.name + ".sig").read_text()


def test_bgtui_accepts_an_ssh_keygen_signature_and_names_the_key(tmp_path: Path) -> None:
    public = make_ssh_key(tmp_path / "key")
    message = tmp_path / "msg"
    message.write_bytes(b"the exact bytes\x00\xff")
    signature = ssh_keygen_sign(tmp_path / "key", message, NS)
    signer = sshsig.verify(signature, message.read_bytes(), NS)
    assert signer == public
    assert signer.fingerprint == public.fingerprint


def test_bgtui_refuses_an_ssh_keygen_signature_for_a_changed_message(tmp_path: Path) -> None:
    make_ssh_key(tmp_path / "key")
    message = tmp_path / "msg"
    message.write_bytes(b"resource=orders-db")
    signature = ssh_keygen_sign(tmp_path / "key", message, NS)
    with pytest.raises(Refused, match="bad signature"):
        sshsig.verify(signature, b"resource=billing-db", NS)
    with pytest.raises(Refused, match="wrong namespace"):
        sshsig.verify(signature, message.read_bytes(), "bgtui-approval@v1")


def test_bgtui_refuses_a_mangled_ssh_keygen_signature(tmp_path: Path) -> None:
    make_ssh_key(tmp_path / "key")
    message = tmp_path / "msg"
    message.write_bytes(b"x")
    signature = ssh_keygen_sign(tmp_path / "key", message, NS)
    lines = signature.splitlines()
    body = lines[1]
    lines[1] = body[:20] + ("A" if body[20] != "A" else "B") + body[21:]
    with pytest.raises(Refused):
        sshsig.verify("\n".join(lines), b"x", NS)
    with pytest.raises(Refused, match="malformed signature"):
        sshsig.verify(signature.replace("SSH SIGNATURE", "PGP SIGNATURE"), b"x", NS)


# -- (c) a key held by a real ssh-agent --------------------------------------------------


def test_agent_signature_verifies_with_ssh_keygen(tmp_path: Path, ssh_agent: str) -> None:
    public = make_ssh_key(tmp_path / "key")
    ssh_add(ssh_agent, tmp_path / "key")
    assert find_key(ssh_agent) == public
    signer = AgentSigner(public, ssh_agent)
    message = b"approval payload"
    signature = sshsig.sign(signer, NS, message)
    result = ssh_keygen_verify(tmp_path, public, signature, message, NS)
    assert result.returncode == 0, result.stderr
    assert sshsig.verify(signature, message, NS) == public


def test_agent_signer_finds_the_socket_in_ssh_auth_sock(
    tmp_path: Path, ssh_agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = make_ssh_key(tmp_path / "key")
    ssh_add(ssh_agent, tmp_path / "key")
    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent)
    signature = sshsig.sign(AgentSigner(public), NS, b"m")
    assert sshsig.verify(signature, b"m", NS) == public


def test_agent_refuses_a_key_it_does_not_hold(ssh_agent: str) -> None:
    stranger = PrivateKey.generate().public
    with pytest.raises(Refused, match=re.escape(f"refused to sign with {stranger.fingerprint}")):
        AgentSigner(stranger, ssh_agent).sign(b"data")
    with pytest.raises(Refused, match="holds no Ed25519 key"):
        find_key(ssh_agent)


def test_agent_with_several_keys_needs_a_fingerprint(tmp_path: Path, ssh_agent: str) -> None:
    first = make_ssh_key(tmp_path / "one")
    second = make_ssh_key(tmp_path / "two")
    ssh_add(ssh_agent, tmp_path / "one")
    ssh_add(ssh_agent, tmp_path / "two")
    assert {k.fingerprint for k in AgentClient(ssh_agent).ed25519_keys()} == {
        first.fingerprint,
        second.fingerprint,
    }
    with pytest.raises(Refused, match="several Ed25519 keys"):
        find_key(ssh_agent)
    assert find_key(ssh_agent, second.fingerprint) == second
    assert find_key(ssh_agent, second.fingerprint.removeprefix("SHA256:")) == second
    with pytest.raises(Refused, match="holds no Ed25519 key SHA256:nope"):
        find_key(ssh_agent, "SHA256:nope")


def test_agent_skips_keys_of_other_types(tmp_path: Path, ssh_agent: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "ec")],
        check=True,
        capture_output=True,
    )
    ssh_add(ssh_agent, tmp_path / "ec")
    assert len(AgentClient(ssh_agent).identities()) == 1
    assert AgentClient(ssh_agent).ed25519_keys() == []


def test_no_agent_is_a_one_line_refusal(tmp_path: Path) -> None:
    key = PrivateKey.generate().public
    with pytest.raises(Refused, match="SSH_AUTH_SOCK is not set"):
        AgentSigner(key).sign(b"x")
    with pytest.raises(Refused, match="cannot connect"):
        AgentSigner(key, tmp_path / "no-such.sock").sign(b"x")


# -- (d) a signed protocol object ---------------------------------------------------------


def test_signed_request_verifies_with_ssh_keygen(tmp_path: Path) -> None:
    operator = PrivateKey.generate("bob")
    request = Request(
        id="01J00000000000000000000000",
        controller_id="acme-prod",
        resource="orders-db",
        privilege="readonly",
        credential_source="command",
        network_path="direct",
        command=None,
        requested_duration=900,
        reason="INC-42: orders stuck",
        operator_fingerprint=operator.public.fingerprint,
        operator_key=operator.public.openssh(),
        session_key=None,
        created_at=utc_text(now_utc()),
        nonce=new_nonce(),
    )
    signed = request.sign(operator)
    result = ssh_keygen_verify(
        tmp_path, operator.public, signed.signature, signed.payload, "bgtui-request@v1"
    )
    assert result.returncode == 0, result.stderr
    wrong = ssh_keygen_verify(
        tmp_path, operator.public, signed.signature, signed.payload, "bgtui-approval@v1"
    )
    assert wrong.returncode != 0
