"""bgctl init / trust / audit through the real command line, including every refusal."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from tests.helpers import run, tree_digest

from bgtui.protocol.keys import PrivateKey
from controller.config import load_config
from controller.home import ControllerHome


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "ctl"
    result = run("bgctl", "--home", str(path), "init", "--id", "acme-prod")
    assert result.returncode == 0, result.stderr
    return path


def bgctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("bgctl", "--home", str(home), *args)


def audit_events(home: Path) -> list[str]:
    from controller.store import open_store

    db = open_store(home / "state.db")
    return [row["event"] for row in db.query("select event from audit_entries order by seq")]


def test_init_lays_out_a_home_with_private_keys_0600(home: Path) -> None:
    layout = ControllerHome(home)
    for key in (layout.key_path, layout.ca_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (
            PrivateKey.load(key.read_bytes()).public == layout.public_key() or key == layout.ca_path
        )
    assert layout.ca_key().public != layout.public_key()
    assert layout.trust().entries == []
    assert layout.db_path.exists()
    config = load_config(layout.config_path)
    assert config.id == "acme-prod"
    assert config.request_window == 3600
    assert audit_events(home) == ["controller.init"]


def test_init_refuses_an_existing_home_and_changes_nothing(home: Path) -> None:
    before = tree_digest(home)
    result = bgctl(home, "init", "--id", "other")
    assert result.returncode == 1
    assert "already holds a controller" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_digest(home) == before


def test_init_refuses_a_bad_id(tmp_path: Path) -> None:
    result = run("bgctl", "--home", str(tmp_path / "x"), "init", "--id", "Bad Id!")
    assert result.returncode == 1
    assert "bad id" in result.stderr
    assert not (tmp_path / "x").exists()


def test_trust_add_accepts_openssh_pem_and_key_text(home: Path, tmp_path: Path) -> None:
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "alice",
            "-f",
            str(tmp_path / "alice"),
        ],
        check=True,
    )
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "Ed25519", "-out", str(tmp_path / "bob.pem")],
        check=True,
    )
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(tmp_path / "bob.pem"),
            "-pubout",
            "-out",
            str(tmp_path / "bob.pub.pem"),
        ],
        check=True,
    )
    carol = PrivateKey.generate("carol")

    assert (
        bgctl(
            home,
            "trust",
            "add",
            "--role",
            "operator",
            "--name",
            "alice",
            str(tmp_path / "alice.pub"),
        ).returncode
        == 0
    )
    assert (
        bgctl(
            home,
            "trust",
            "add",
            "--role",
            "approver",
            "--name",
            "bob",
            str(tmp_path / "bob.pub.pem"),
        ).returncode
        == 0
    )
    added = bgctl(
        home, "trust", "add", "--role", "auditor", "--name", "carol", carol.public.openssh()
    )
    assert added.returncode == 0, added.stderr
    assert carol.public.fingerprint in added.stdout

    listing = bgctl(home, "trust", "list").stdout.splitlines()
    alice_fp = subprocess.run(
        ["ssh-keygen", "-lf", str(tmp_path / "alice.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert listing[0].split() == ["operator", "alice", alice_fp]
    assert listing[1].split()[:2] == ["approver", "bob"]
    assert listing[2].split() == ["auditor", "carol", carol.public.fingerprint]
    assert audit_events(home) == ["controller.init", "trust.add", "trust.add", "trust.add"]

    removed = bgctl(home, "trust", "remove", "bob")
    assert removed.returncode == 0
    assert [line.split()[1] for line in bgctl(home, "trust", "list").stdout.splitlines()] == [
        "alice",
        "carol",
    ]
    assert audit_events(home)[-1] == "trust.remove"
    assert bgctl(home, "audit", "verify").returncode == 0


@pytest.mark.parametrize(
    ("keytype", "expected"),
    [
        ("rsa", "unsupported key type ssh-rsa"),
        ("ecdsa", "unsupported key type ecdsa-sha2-nistp256"),
    ],
)
def test_trust_add_refuses_other_key_types_and_changes_nothing(
    home: Path, tmp_path: Path, keytype: str, expected: str
) -> None:
    key = tmp_path / keytype
    subprocess.run(["ssh-keygen", "-q", "-t", keytype, "-N", "", "-f", str(key)], check=True)
    before = tree_digest(home)
    result = bgctl(home, "trust", "add", "--role", "approver", "--name", "x", f"{key}.pub")
    assert result.returncode == 1
    assert expected in result.stderr and str(key) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_digest(home) == before


def test_trust_refusals_are_one_line_and_change_nothing(home: Path) -> None:
    key = PrivateKey.generate().public.openssh()
    assert bgctl(home, "trust", "add", "--role", "approver", "--name", "alice", key).returncode == 0
    before = tree_digest(home)
    cases = [
        (
            [
                "trust",
                "add",
                "--role",
                "approver",
                "--name",
                "alice",
                PrivateKey.generate().public.openssh(),
            ],
            "already pinned",
        ),
        (
            ["trust", "add", "--role", "operator", "--name", "other", key],
            "already pinned as 'alice'",
        ),
        (
            ["trust", "add", "--role", "approver", "--name", "x", "ssh-ed25519 AAAAnotbase64!"],
            "not valid base64",
        ),
        (
            [
                "trust",
                "add",
                "--role",
                "approver",
                "--name",
                "bad name",
                PrivateKey.generate().public.openssh(),
            ],
            "bad name",
        ),
        (["trust", "remove", "nobody"], "no pinned key named 'nobody'"),
    ]
    for args, expected in cases:
        result = bgctl(home, *args)
        assert result.returncode == 1, args
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert tree_digest(home) == before
    assert bgctl(home, "trust", "add", "--role", "root", "--name", "y", key).returncode == 2


def test_trust_store_with_an_unknown_role_is_refused_naming_file_and_line(home: Path) -> None:
    layout = ControllerHome(home)
    key = PrivateKey.generate().public.openssh("")
    with layout.trust_path.open("a") as handle:
        handle.write(f'eve namespaces="bgtui-api@v1" {key} role=superuser\n')
    result = bgctl(home, "trust", "list")
    assert result.returncode == 1
    assert f"{layout.trust_path}:5: unknown role 'superuser'" in result.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + 'colour = "blue"\n', ":32: colour: unknown key"),
        (
            lambda t: t.replace("approvals_required = 1", 'approvals_required = "one"'),
            ":8: approvals_required: expected an integer",
        ),
        (
            lambda t: t.replace('request_window = "1h"', 'request_window = "soon"'),
            ":6: request_window: bad duration 'soon'",
        ),
        (
            lambda t: (
                t
                + '[[resources]]\nname = "db"\nkind = "oracle"\nnetwork = "direct"\n'
                + 'credential = "out-of-band"\nprivileges = ["ro"]\n'
            ),
            ":34: resources[0].kind: 'oracle' is not one of",
        ),
        (
            lambda t: (
                t
                + '[[resources]]\nname = "db"\nkind = "postgres"\nnetwork = "direct"\n'
                + 'credential = "command"\nprivileges = ["ro"]\n'
            ),
            "resources[0].recipe: required",
        ),
        (lambda t: t + "id = [", "not valid TOML"),
    ],
)
def test_bad_controller_toml_is_refused_naming_file_line_and_key(
    home: Path, edit, expected: str
) -> None:  # type: ignore[no-untyped-def]
    config = ControllerHome(home).config_path
    config.write_text(edit(config.read_text()))
    before = tree_digest(home)
    result = bgctl(
        home,
        "trust",
        "add",
        "--role",
        "operator",
        "--name",
        "z",
        PrivateKey.generate().public.openssh(),
    )
    assert result.returncode == 1
    assert str(config) in result.stderr
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_digest(home) == before


def test_commands_on_a_missing_home_say_to_run_init(tmp_path: Path) -> None:
    result = run("bgctl", "--home", str(tmp_path / "none"), "trust", "list")
    assert result.returncode == 1
    assert "bgctl init" in result.stderr


def test_private_key_readable_by_others_is_refused(home: Path) -> None:
    layout = ControllerHome(home)
    layout.key_path.chmod(0o644)
    result = bgctl(home, "audit", "verify")
    assert result.returncode == 1
    assert "chmod 600" in result.stderr
