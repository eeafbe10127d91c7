"""Keys from the real tools (ssh-keygen, openssl) load; keys bgtui writes open in ssh-keygen.

Every refusal names the file and says what is wrong with it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bgtui.identity import load_private, read_key_file
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey, is_encrypted


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=True, capture_output=True, text=True)


def ssh_keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    run("ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "someone", "-f", str(path))
    return path


def openssl_key(path: Path, algorithm: str = "Ed25519") -> Path:
    run("openssl", "genpkey", "-algorithm", algorithm, "-out", str(path))
    return path


def never_asked() -> bytes | None:
    raise AssertionError("asked for a passphrase for a key that has none")


# -- OpenSSH keys from ssh-keygen ---------------------------------------------------------


def test_loads_an_unencrypted_ssh_keygen_key(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id")
    key, used = read_key_file(path, never_asked)
    assert used is None
    assert key.public == PublicKey.parse(path.with_suffix(".pub").read_text())


def test_fingerprint_matches_ssh_keygen_l(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id")
    key, _ = read_key_file(path)
    shown = run("ssh-keygen", "-l", "-E", "sha256", "-f", str(path) + ".pub").stdout.split()
    assert shown[1] == key.public.fingerprint
    assert key.public.fingerprint.startswith("SHA256:") and "=" not in key.public.fingerprint


def test_loads_a_passphrase_protected_ssh_keygen_key(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id", passphrase="correct horse")
    assert is_encrypted(path.read_bytes())
    key, used = read_key_file(path, lambda: b"correct horse")
    assert used == b"correct horse"
    assert key.public == PublicKey.parse(path.with_suffix(".pub").read_text())


def test_wrong_passphrase_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id", passphrase="correct horse")
    with pytest.raises(Refused, match=f"^{re.escape(str(path))}: wrong passphrase$"):
        read_key_file(path, lambda: b"battery staple")


def test_missing_passphrase_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id", passphrase="correct horse")
    with pytest.raises(Refused, match=f"^{re.escape(str(path))}: key is passphrase-protected"):
        read_key_file(path, lambda: None)
    with pytest.raises(Refused, match="passphrase-protected"):
        read_key_file(path)


# -- PKCS#8 PEM from openssl ---------------------------------------------------------------


def openssl_raw_public(pem: Path) -> bytes:
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return der[-32:]  # an Ed25519 SubjectPublicKeyInfo ends with the 32 raw key bytes


def test_loads_an_openssl_pkcs8_key(tmp_path: Path) -> None:
    pem = openssl_key(tmp_path / "key.pem")
    key, used = read_key_file(pem, never_asked)
    assert used is None
    assert key.public.raw == openssl_raw_public(pem)


def test_openssl_public_pem_parses_to_the_same_key(tmp_path: Path) -> None:
    pem = openssl_key(tmp_path / "key.pem")
    public_pem = run("openssl", "pkey", "-in", str(pem), "-pubout").stdout
    key, _ = read_key_file(pem)
    assert PublicKey.parse(public_pem) == key.public


def test_loads_an_encrypted_openssl_pkcs8_key(tmp_path: Path) -> None:
    pem = openssl_key(tmp_path / "key.pem")
    encrypted = tmp_path / "enc.pem"
    run(
        "openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:s3cret",
        "-in", str(pem), "-out", str(encrypted),
    )  # fmt: skip
    assert is_encrypted(encrypted.read_bytes())
    key, _ = read_key_file(encrypted, lambda: b"s3cret")
    assert key.public.raw == openssl_raw_public(pem)
    with pytest.raises(Refused, match=f"^{re.escape(str(encrypted))}: wrong passphrase$"):
        read_key_file(encrypted, lambda: b"not it")


# -- keys bgtui writes open in ssh-keygen ----------------------------------------------------


def test_bgtui_encrypted_key_opens_in_ssh_keygen(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(key.openssh(b"pass phrase"))
    path.chmod(0o600)
    shown = run("ssh-keygen", "-y", "-P", "pass phrase", "-f", str(path)).stdout
    assert PublicKey.parse(shown) == key.public
    wrong = subprocess.run(
        ["ssh-keygen", "-y", "-P", "wrong", "-f", str(path)], capture_output=True, check=False
    )
    assert wrong.returncode != 0, "the key bgtui wrote was not actually encrypted"


def test_bgtui_plain_key_opens_in_ssh_keygen(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(key.openssh())
    path.chmod(0o600)
    assert not is_encrypted(path.read_bytes())
    shown = run("ssh-keygen", "-y", "-P", "", "-f", str(path)).stdout
    assert PublicKey.parse(shown) == key.public


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_other_ssh_key_types_are_refused(tmp_path: Path, kind: str) -> None:
    path = ssh_keygen(tmp_path / kind, kind=kind)
    with pytest.raises(Refused, match=f"^{re.escape(str(path))}: unsupported key type .*Ed25519"):
        read_key_file(path)


def test_an_rsa_pkcs8_key_is_refused(tmp_path: Path) -> None:
    pem = openssl_key(tmp_path / "rsa.pem", "RSA")
    with pytest.raises(Refused, match=f"^{re.escape(str(pem))}: unsupported key type RSA"):
        read_key_file(pem)


def test_an_rsa_public_key_is_refused() -> None:
    with pytest.raises(Refused, match="unsupported key type ssh-rsa"):
        PublicKey.parse("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x", "alice.pub")


def test_a_corrupt_openssh_key_is_refused(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id")
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:10] + "!!!!" + lines[3][14:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Refused, match=f"^{re.escape(str(path))}: corrupt private key"):
        read_key_file(path)


def test_a_truncated_openssh_key_is_refused(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], lines[-1]]) + "\n")
    with pytest.raises(Refused, match=f"^{re.escape(str(path))}: "):
        read_key_file(path)


def test_a_public_key_given_as_private_is_refused(tmp_path: Path) -> None:
    path = ssh_keygen(tmp_path / "id")
    public = path.with_suffix(".pub")
    with pytest.raises(
        Refused, match=f"^{re.escape(str(public))}: this is a public key; give the private key"
    ):
        read_key_file(public)
    pem = openssl_key(tmp_path / "key.pem")
    (tmp_path / "pub.pem").write_text(run("openssl", "pkey", "-in", str(pem), "-pubout").stdout)
    with pytest.raises(Refused, match="this is a public key"):
        read_key_file(tmp_path / "pub.pem")


def test_a_private_key_given_as_public_is_refused(tmp_path: Path) -> None:
    pem = openssl_key(tmp_path / "key.pem")
    with pytest.raises(Refused, match="this is a private key"):
        PublicKey.parse(pem.read_text(), str(pem))


@pytest.mark.parametrize("content", [b"", b"hello\n", b"\x00\xff" * 50])
def test_not_a_key_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(Refused, match=f"^{re.escape(str(path))}: not a private key"):
        read_key_file(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=f"^{re.escape(str(tmp_path / 'nope'))}: cannot read"):
        read_key_file(tmp_path / "nope")


def test_key_text_from_elsewhere_names_its_source() -> None:
    with pytest.raises(Refused, match=r"^env:BG_KEY: not a private key"):
        load_private(b"garbage", "env:BG_KEY")
