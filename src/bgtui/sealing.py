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
