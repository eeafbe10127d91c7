"""OpenSSH user certificates (PROTOCOL.certkeys), signed in-process by an Ed25519 CA.

The controller's SSH CA certifies an operator's per-session public key for one principal,
valid until the session expires, with the session id as key ID so sshd logs name the session.
"""

from __future__ import annotations

import base64
import secrets
import struct
from dataclasses import dataclass
from datetime import datetime

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import ED25519, PrivateKey, PublicKey
from bgtui.protocol.wire import Reader, string, uint32

CERT_TYPE = "ssh-ed25519-cert-v01@openssh.com"
USER_CERT = 1
# What an interactive shell needs; port and agent forwarding stay off for break-glass sessions.
DEFAULT_EXTENSIONS = ("permit-pty",)


def _uint64(value: int) -> bytes:
    return struct.pack(">Q", value)


@dataclass(frozen=True)
class Certificate:
    """A parsed or freshly signed user certificate."""

    key: PublicKey
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    extensions: tuple[str, ...]
    ca: PublicKey
    blob: bytes

    def openssh(self, comment: str = "") -> str:
        """The `*-cert.pub` line that `ssh -i` and paramiko load."""
        line = f"{CERT_TYPE} {base64.b64encode(self.blob).decode()}"
        return f"{line} {comment}" if comment else line


def sign_user_certificate(
    ca: PrivateKey,
    key: PublicKey,
    *,
    key_id: str,
    principals: tuple[str, ...],
    valid_after: datetime,
    valid_before: datetime,
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    serial: int | None = None,
) -> Certificate:
    """Certifies `key` for `principals` between the two times (seconds resolution)."""
    if not principals:
        raise Refused("a certificate needs at least one principal")
    after, before = int(valid_after.timestamp()), int(valid_before.timestamp())
    if before <= after:
        raise Refused("certificate valid_before must be after valid_after")
    serial = secrets.randbits(63) if serial is None else serial
    body = (
        string(CERT_TYPE)
        + string(secrets.token_bytes(32))
        + string(key.raw)
        + _uint64(serial)
        + uint32(USER_CERT)
        + string(key_id)
        + string(b"".join(string(p) for p in principals))
        + _uint64(after)
        + _uint64(before)
        + string(b"")  # no critical options
        + string(b"".join(string(e) + string(b"") for e in sorted(extensions)))
        + string(b"")  # reserved
        + string(ca.public.blob)
    )
    signature = string(ED25519) + string(ca.sign(body))
    blob = body + string(signature)
    return Certificate(key, serial, key_id, principals, after, before, extensions, ca.public, blob)


def parse_certificate(line: str) -> Certificate:
    """Reads a `ssh-ed25519-cert-v01@openssh.com AAAA…` line and checks the CA's signature."""
    parts = line.strip().split()
    if len(parts) < 2 or parts[0] != CERT_TYPE:
        raise Refused("not an Ed25519 OpenSSH certificate")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise Refused("certificate is not valid base64") from None
    reader = Reader(blob, "certificate")
    if reader.text() != CERT_TYPE:
        raise Refused("not an Ed25519 OpenSSH certificate")
    reader.string()  # nonce
    key = PublicKey(reader.string())
    serial = int.from_bytes(reader.raw(8), "big")
    if reader.uint32() != USER_CERT:
        raise Refused("not a user certificate")
    key_id = reader.text()
    names = Reader(reader.string(), "principals")
    principals: list[str] = []
    while not names.done():
        principals.append(names.text())
    after = int.from_bytes(reader.raw(8), "big")
    before = int.from_bytes(reader.raw(8), "big")
    reader.string()  # critical options
    ext_reader = Reader(reader.string(), "extensions")
    extensions: list[str] = []
    while not ext_reader.done():
        extensions.append(ext_reader.text())
        ext_reader.string()
    reader.string()  # reserved
    ca = PublicKey.from_blob(reader.string())
    signed_len = len(blob) - len(reader.rest())
    sig_reader = Reader(reader.string(), "certificate signature")
    reader.expect_done()
    if sig_reader.text() != ED25519 or not ca.verify(sig_reader.string(), blob[:signed_len]):
        raise Refused("certificate signature does not verify")
    return Certificate(
        key, serial, key_id, tuple(principals), after, before, tuple(extensions), ca, blob
    )
