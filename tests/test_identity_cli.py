"""`bgtui keygen` / `pubkey` / `identities` as real processes, and signing with every key source.

Refusals are one line on stderr, exit 1, and leave the home exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtui.agent import AgentSigner
from bgtui.home import ClientHome
from bgtui.identity import Identity, KeySource
from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey
from helpers import run, tree_digest

NS = "bgtui-approval@v1"


def bgtui(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run("bgtui", "--home", str(home), *args, env=env)


def one_line_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bgtui: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""


def ssh_keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "x", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def ssh_public(path: Path, passphrase: str = "") -> PublicKey:
    """The public key as the real `ssh-keygen -y` reads it out of a private key file."""
    out = subprocess.run(
        ["ssh-keygen", "-y", "-P", passphrase, "-f", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return PublicKey.parse(out)


def signs_as(signer: sshsig.Signer, expected: PublicKey) -> None:
    """`signer` makes a signature that verifies, made by `expected`."""
    message = b"approve 01J000 for 15m"
    assert sshsig.verify(sshsig.sign(signer, NS, message), message, NS) == expected


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def ssh_agent() -> Iterator[str]:
    """A real ssh-agent on a private socket; yields the socket path, kills the agent after."""
    sockdir = tempfile.mkdtemp(prefix="bgagent", dir="/tmp")  # socket paths must stay short
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


# -- keygen (file source) -------------------------------------------------------------------


def test_keygen_prints_the_line_and_writes_a_0600_openssh_key(home: Path) -> None:
    result = bgtui(home, "keygen", "--role", "operator", "--name", "bob")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" bob")
    key_file = home / "identities" / "bob" / "id_ed25519"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert ssh_public(key_file) == PublicKey.parse(line)
    assert (home / "identities" / "bob" / "id_ed25519.pub").read_text().strip() == line
    identity = Identity.load(ClientHome(home))
    assert (identity.name, identity.role, str(identity.source)) == ("bob", "operator", "file")
    signs_as(identity.signer(), PublicKey.parse(line))


def test_keygen_with_passphrase_env_writes_an_encrypted_key(home: Path) -> None:
    result = bgtui(
        home,
        "keygen", "--role", "approver", "--name", "carol", "--passphrase-env", "CAROL_PASS",
        env={"CAROL_PASS": "tr0ub4dor"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    key_file = home / "identities" / "carol" / "id_ed25519"
    assert ssh_public(key_file, "tr0ub4dor") == PublicKey.parse(result.stdout)
    unlocked = subprocess.run(
        ["ssh-keygen", "-y", "-P", "", "-f", str(key_file)], capture_output=True, check=False
    )
    assert unlocked.returncode != 0, "the key was written without encryption"
    identity = Identity.load(ClientHome(home), "carol")
    signs_as(identity.signer(lambda: b"tr0ub4dor"), identity.public)
    with pytest.raises(Refused, match="wrong passphrase"):
        identity.signer(lambda: b"guess")
    with pytest.raises(Refused, match="passphrase-protected"):
        identity.signer(lambda: None)


def test_keygen_with_an_unset_passphrase_env_refuses(home: Path) -> None:
    result = bgtui(
        home, "keygen", "--role", "approver", "--name", "carol", "--passphrase-env", "NOPE_UNSET"
    )
    one_line_refusal(result, "NOPE_UNSET", "not set")
    assert not home.exists()


def test_keygen_twice_refuses_and_changes_nothing(home: Path) -> None:
    first = bgtui(home, "keygen", "--role", "operator", "--name", "bob")
    assert first.returncode == 0
    before = tree_digest(home)
    again = bgtui(home, "keygen", "--role", "approver", "--name", "bob")
    one_line_refusal(again, "already exists", "bob")
    assert tree_digest(home) == before
    assert bgtui(home, "pubkey").stdout == first.stdout


def test_keygen_refuses_a_name_that_is_not_a_plain_name(home: Path) -> None:
    result = bgtui(home, "keygen", "--role", "operator", "--name", "../escape")
    one_line_refusal(result, "bad identity name")
    assert not home.exists()
    assert not (home.parent / "escape").exists()


# -- keygen --import -------------------------------------------------------------------------


def test_import_an_ssh_keygen_key(home: Path, tmp_path: Path) -> None:
    source = ssh_keygen(tmp_path / "id_ed25519")
    result = bgtui(home, "keygen", "--role", "approver", "--name", "alice", "--import", str(source))
    assert result.returncode == 0, result.stderr
    assert PublicKey.parse(result.stdout) == ssh_public(source)
    assert result.stdout.strip().endswith(" alice")
    fingerprint = bgtui(home, "pubkey", "--fingerprint").stdout.strip()
    shown = subprocess.run(
        ["ssh-keygen", "-lf", str(source)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert fingerprint == shown


def test_import_an_encrypted_key_keeps_it_encrypted(home: Path, tmp_path: Path) -> None:
    source = ssh_keygen(tmp_path / "id_ed25519", passphrase="open sesame")
    result = bgtui(
        home,
        "keygen", "--role", "approver", "--name", "alice", "--import", str(source),
        "--passphrase-env", "PASS",
        env={"PASS": "open sesame"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stored = home / "identities" / "alice" / "id_ed25519"
    assert ssh_public(stored, "open sesame") == ssh_public(source, "open sesame")


def test_import_asks_for_the_passphrase_on_a_terminal_and_keeps_it(
    home: Path, tmp_path: Path
) -> None:
    source = ssh_keygen(tmp_path / "id_ed25519", passphrase="open sesame")
    primary, secondary = os.openpty()
    # A new session has no controlling terminal, so the prompt reads this pty, never the
    # terminal pytest may be running in.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgtui.cli", "--home", str(home), "keygen", "--role", "approver",
         "--name", "alice", "--import", str(source)],
        stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    os.close(secondary)
    try:
        # getpass flushes pending input as it turns echo off: type only once echo is off.
        deadline = time.monotonic() + 30
        while termios.tcgetattr(primary)[3] & termios.ECHO:
            assert proc.poll() is None, "bgtui exited before asking for the passphrase"
            assert time.monotonic() < deadline, "bgtui never asked for the passphrase"
            time.sleep(0.02)
        os.write(primary, b"open sesame\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(primary)
    assert proc.returncode == 0, err
    assert b"Passphrase" in err
    stored = home / "identities" / "alice" / "id_ed25519"
    assert ssh_public(stored, "open sesame") == PublicKey.parse(out.decode())
    unlocked = subprocess.run(
        ["ssh-keygen", "-y", "-P", "", "-f", str(stored)], capture_output=True, check=False
    )
    assert unlocked.returncode != 0, "an imported encrypted key was stored unencrypted"


def test_import_an_encrypted_key_without_its_passphrase_refuses(home: Path, tmp_path: Path) -> None:
    source = ssh_keygen(tmp_path / "id_ed25519", passphrase="open sesame")
    plain = bgtui(home, "keygen", "--role", "approver", "--name", "a", "--import", str(source))
    one_line_refusal(plain, str(source), "passphrase-protected")
    wrong = bgtui(
        home,
        "keygen", "--role", "approver", "--name", "a", "--import", str(source),
        "--passphrase-env", "PASS",
        env={"PASS": "guess"},
    )  # fmt: skip
    one_line_refusal(wrong, str(source), "wrong passphrase")
    assert not home.exists()


def test_import_an_openssl_pem_key(home: Path, tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "Ed25519", "-out", str(pem)],
        check=True,
        capture_output=True,
    )
    public_pem = subprocess.run(
        ["openssl", "pkey", "-in", str(pem), "-pubout"], capture_output=True, text=True, check=True
    ).stdout
    result = bgtui(home, "keygen", "--role", "operator", "--name", "dan", "--import", str(pem))
    assert result.returncode == 0, result.stderr
    assert PublicKey.parse(result.stdout) == PublicKey.parse(public_pem)
    stored = home / "identities" / "dan" / "id_ed25519"
    assert stored.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ssh_public(stored) == PublicKey.parse(public_pem)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_import_of_another_key_type_refuses_and_writes_nothing(
    home: Path, tmp_path: Path, kind: str
) -> None:
    source = ssh_keygen(tmp_path / f"id_{kind}", kind=kind)
    result = bgtui(home, "keygen", "--role", "approver", "--name", "eve", "--import", str(source))
    one_line_refusal(result, str(source), "unsupported key type", "Ed25519")
    assert not home.exists()


def test_import_into_an_existing_home_refuses_without_a_trace(home: Path, tmp_path: Path) -> None:
    assert bgtui(home, "keygen", "--role", "operator", "--name", "bob").returncode == 0
    before = tree_digest(home)
    corrupt = tmp_path / "corrupt"
    text = ssh_keygen(tmp_path / "good").read_text().splitlines()
    corrupt.write_text("\n".join([text[0], text[1][:30] + "!!" + text[1][32:], *text[2:]]))
    result = bgtui(home, "keygen", "--role", "operator", "--name", "eve", "--import", str(corrupt))
    one_line_refusal(result, str(corrupt), "corrupt")
    public = tmp_path / "good.pub"
    result = bgtui(home, "keygen", "--role", "operator", "--name", "eve", "--import", str(public))
    one_line_refusal(result, str(public), "public key")
    missing = tmp_path / "missing"
    result = bgtui(home, "keygen", "--role", "operator", "--name", "eve", "--import", str(missing))
    one_line_refusal(result, str(missing), "cannot read")
    assert tree_digest(home) == before
    assert sorted(p.name for p in (home / "identities").iterdir()) == ["bob"]


def test_conflicting_key_sources_are_bad_usage(home: Path, tmp_path: Path) -> None:
    result = bgtui(home, "keygen", "--role", "operator", "--name", "x", "--agent", "--key-env", "K")
    assert result.returncode == 2
    assert "cannot be used together" in result.stderr
    assert not home.exists()


# -- pubkey, identities, --identity ------------------------------------------------------------


def test_pubkey_with_several_identities_needs_a_choice(home: Path) -> None:
    bob = bgtui(home, "keygen", "--role", "operator", "--name", "bob").stdout
    carol = bgtui(home, "keygen", "--role", "approver", "--name", "carol").stdout
    one_line_refusal(bgtui(home, "pubkey"), "several identities", "--identity")
    assert bgtui(home, "--identity", "carol", "pubkey").stdout == carol
    assert bgtui(home, "pubkey", env={"BGTUI_IDENTITY": "bob"}).stdout == bob
    one_line_refusal(bgtui(home, "--identity", "zed", "pubkey"), "no identity named 'zed'")
    listed = json.loads(bgtui(home, "identities", "--json").stdout)
    assert [(i["name"], i["role"], i["source"]) for i in listed] == [
        ("bob", "operator", "file"),
        ("carol", "approver", "file"),
    ]
    assert listed[1]["fingerprint"] == PublicKey.parse(carol).fingerprint
    table = bgtui(home, "identities").stdout
    assert "carol" in table and PublicKey.parse(carol).fingerprint in table


def test_pubkey_in_an_empty_home_says_how_to_start(home: Path) -> None:
    one_line_refusal(bgtui(home, "pubkey"), "no identity", "bgtui keygen")
    assert not home.exists()


def test_home_comes_from_bgtui_home(tmp_path: Path) -> None:
    home = tmp_path / "from-env"
    made = run(
        "bgtui", "keygen", "--role", "auditor", "--name", "ann", env={"BGTUI_HOME": str(home)}
    )
    assert made.returncode == 0, made.stderr
    assert (home / "identities" / "ann" / "identity.toml").is_file()


def test_a_group_readable_key_file_is_refused(home: Path) -> None:
    assert bgtui(home, "keygen", "--role", "operator", "--name", "bob").returncode == 0
    key_file = home / "identities" / "bob" / "id_ed25519"
    key_file.chmod(0o644)
    with pytest.raises(Refused, match="too open; chmod 600"):
        Identity.load(ClientHome(home)).signer()


def test_a_replaced_key_file_is_not_the_enrolled_key(home: Path) -> None:
    assert bgtui(home, "keygen", "--role", "operator", "--name", "bob").returncode == 0
    identity = Identity.load(ClientHome(home))
    key_file = identity.private_path
    key_file.unlink()
    fd = os.open(key_file, os.O_CREAT | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(PrivateKey.generate().openssh())
    with pytest.raises(
        Refused, match=f"is not the enrolled key {re.escape(identity.fingerprint)}$"
    ):
        identity.signer()


# -- env and command sources -----------------------------------------------------------------


def test_env_source_signs_with_the_key_in_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = PrivateKey.generate()
    key_text = key.openssh().decode()
    result = bgtui(
        home, "keygen", "--role", "approver", "--name", "ann", "--key-env", "BG_KEY",
        env={"BG_KEY": key_text},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PublicKey.parse(result.stdout) == key.public
    directory = home / "identities" / "ann"
    assert sorted(p.name for p in directory.iterdir()) == ["id_ed25519.pub", "identity.toml"]
    assert "BG_KEY" in (directory / "identity.toml").read_text()
    identity = Identity.load(ClientHome(home))
    assert identity.source == KeySource("env", "BG_KEY")

    monkeypatch.setenv("BG_KEY", key_text)
    signs_as(identity.signer(), key.public)
    monkeypatch.setenv("BG_KEY", PrivateKey.generate().openssh().decode())
    with pytest.raises(
        Refused, match=f"env:BG_KEY .* is not the enrolled key {re.escape(key.public.fingerprint)}$"
    ):
        identity.signer()
    monkeypatch.delenv("BG_KEY")
    with pytest.raises(Refused, match=r"^env:BG_KEY: environment variable BG_KEY is not set"):
        identity.signer()


def test_env_source_with_an_unset_variable_refuses_at_enrolment(home: Path) -> None:
    result = bgtui(home, "keygen", "--role", "approver", "--name", "ann", "--key-env", "UNSET_KEY")
    one_line_refusal(result, "env:UNSET_KEY", "not set")
    assert not home.exists()


def test_command_source_signs_with_the_commands_output(home: Path, tmp_path: Path) -> None:
    key = PrivateKey.generate()
    secret = tmp_path / "secret store" / "key"
    secret.parent.mkdir()
    secret.write_bytes(key.openssh())
    command = shlex.join(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(open(sys.argv[1]).read())",
            str(secret),
        ]
    )
    result = bgtui(home, "keygen", "--role", "approver", "--name", "ann", "--key-command", command)
    assert result.returncode == 0, result.stderr
    assert PublicKey.parse(result.stdout) == key.public
    directory = home / "identities" / "ann"
    assert not (directory / "id_ed25519").exists()
    for path in directory.iterdir():
        assert key.openssh() not in path.read_bytes()
    identity = Identity.load(ClientHome(home))
    assert identity.source == KeySource("command", command)
    signs_as(identity.signer(), key.public)

    secret.write_bytes(PrivateKey.generate().openssh())
    with pytest.raises(Refused, match="is not the enrolled key"):
        identity.signer()
    secret.unlink()
    with pytest.raises(Refused, match=r"^command:.*: exited with status 1: .*No such file"):
        identity.signer()


def test_command_source_refusals_at_enrolment(home: Path) -> None:
    missing = bgtui(
        home, "keygen", "--role", "approver", "--name", "a", "--key-command", "no-such-cmd-xyz x"
    )
    one_line_refusal(missing, "command:no-such-cmd-xyz x", "not found")
    silent = bgtui(home, "keygen", "--role", "approver", "--name", "a", "--key-command", "true")
    one_line_refusal(silent, "command:true", "printed nothing")
    junk = bgtui(home, "keygen", "--role", "approver", "--name", "a", "--key-command", "echo hi")
    one_line_refusal(junk, "command:echo hi", "not a private key")
    assert not home.exists()


# -- ssh-agent source ------------------------------------------------------------------------


def test_agent_source_signs_in_the_agent(
    home: Path, tmp_path: Path, ssh_agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = ssh_keygen(tmp_path / "id_ed25519")
    env = {"SSH_AUTH_SOCK": ssh_agent}
    subprocess.run(
        ["ssh-add", str(key_file)], env={**os.environ, **env}, check=True, capture_output=True
    )
    result = bgtui(home, "keygen", "--role", "approver", "--name", "ann", "--agent", env=env)
    assert result.returncode == 0, result.stderr
    assert PublicKey.parse(result.stdout) == ssh_public(key_file)
    assert not (home / "identities" / "ann" / "id_ed25519").exists()
    identity = Identity.load(ClientHome(home))
    assert str(identity.source) == "agent"

    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent)
    signer = identity.signer()
    assert isinstance(signer, AgentSigner)
    signs_as(signer, ssh_public(key_file))
    subprocess.run(["ssh-add", "-D"], env={**os.environ, **env}, check=True, capture_output=True)
    with pytest.raises(Refused, match="refused to sign"):
        signer.sign(b"after the key left the agent")


def test_agent_with_several_keys_needs_agent_key(
    home: Path, tmp_path: Path, ssh_agent: str
) -> None:
    env = {"SSH_AUTH_SOCK": ssh_agent}
    for name in ("one", "two"):
        ssh_keygen(tmp_path / name)
        subprocess.run(
            ["ssh-add", str(tmp_path / name)],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    ambiguous = bgtui(home, "keygen", "--role", "approver", "--name", "ann", "--agent", env=env)
    one_line_refusal(ambiguous, "several Ed25519 keys", "--agent-key")
    assert not home.exists()
    wanted = ssh_public(tmp_path / "two")
    chosen = bgtui(
        home, "keygen", "--role", "approver", "--name", "ann", "--agent",
        "--agent-key", wanted.fingerprint, env=env,
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    assert PublicKey.parse(chosen.stdout) == wanted


def test_agent_source_without_an_agent_refuses(home: Path) -> None:
    result = bgtui(home, "keygen", "--role", "approver", "--name", "ann", "--agent")
    one_line_refusal(result, "SSH_AUTH_SOCK is not set")
    assert not home.exists()
