"""Opening a session credential the controller sealed to the operator's key, and writing it out.

The controller seals the minted secret (canonical JSON of string fields) in a NaCl sealed box
to the X25519 form of the operator's Ed25519 key; only that key opens it. An opened credential
goes to stdout or to one new 0600 file the operator names, never anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shlex
from pathlib import Path

import nacl.exceptions
import nacl.public

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey

Credential = dict[str, str]


def open_sealed(sealed: str, key: PrivateKey) -> Credential:
    """The credential inside `sealed` (base64 of a sealed box), opened with `key`."""
    try:
        box = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("the sealed credential is not valid base64") from None
    try:
        plain = nacl.public.SealedBox(key.box_key()).decrypt(box)
    except nacl.exceptions.CryptoError:
        raise Refused(
            f"the sealed credential does not open with {key.public.fingerprint}; "
            "it was sealed to another key"
        ) from None
    try:
        value = json.loads(plain)
    except (ValueError, UnicodeDecodeError):
        raise Refused("the opened credential is not JSON") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise Refused("the opened credential is not an object of text fields")
    return value


def credential_text(credential: Credential) -> str:
    """The credential as `name: value` lines (multi-line values indented under their name)."""
    lines = []
    for name in sorted(credential):
        value = credential[name]
        if "\n" in value:
            lines.append(f"{name}: |")
            lines.extend(f"  {line}" for line in value.splitlines())
        else:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"


def credential_json(credential: Credential) -> str:
    """The credential as a JSON object."""
    return json.dumps(credential, indent=2, sort_keys=True) + "\n"


def write_private(path: Path, text: str) -> None:
    """Writes `text` to a new file readable by the user alone; never overwrites anything."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise Refused(f"{path}: already exists; bgtui never overwrites a credential file") from None
    except OSError as exc:
        raise Refused(f"{path}: cannot create ({exc.strerror or exc})") from None
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but be explicit
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise Refused(f"{path}: cannot write ({exc.strerror or exc})") from None


def env_exports(credential: Credential) -> str:
    """`export NAME='value'` lines for the credential's libpq-style (UPPER_CASE) fields."""
    names = sorted(n for n in credential if n.isupper() and n.replace("_", "").isalnum())
    if not names:
        raise Refused("--env: this session's credential has no environment variables")
    return "".join(f"export {name}={shlex.quote(credential[name])}\n" for name in names)


def write_ssh_dir(directory: Path, key: PrivateKey, credential: Credential, rid: str) -> list[str]:
    """Session key (0600), certificate, known_hosts and an ssh config in a new 0700 directory."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        if any(directory.iterdir()):
            raise Refused(f"{directory}: not empty; give a new directory") from None
    os.chmod(directory, 0o700)
    write_private(directory / "id_ed25519", key.openssh().decode())
    (directory / "id_ed25519-cert.pub").write_text(credential["certificate"] + "\n")
    (directory / "id_ed25519.pub").write_text(key.public.openssh(f"bgtui-session-{rid}") + "\n")
    written = ["id_ed25519", "id_ed25519-cert.pub", "id_ed25519.pub"]
    host, port, user = (
        credential.get("host", ""),
        credential.get("port", "22"),
        credential.get("user", ""),
    )
    known = credential.get("known_hosts")
    if known:
        (directory / "known_hosts").write_text(known + "\n")
        written.append("known_hosts")
    config = [
        "Host session",
        f"  HostName {host}",
        f"  Port {port}",
        f"  User {user}",
        f"  IdentityFile {directory / 'id_ed25519'}",
        f"  CertificateFile {directory / 'id_ed25519-cert.pub'}",
        "  IdentitiesOnly yes",
    ]
    if known:
        config += [
            f"  UserKnownHostsFile {directory / 'known_hosts'}",
            "  StrictHostKeyChecking yes",
        ]
    (directory / "config").write_text("\n".join(config) + "\n")
    written.append("config")
    return written
