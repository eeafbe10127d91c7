"""SSHSIG: the signature format of `ssh-keygen -Y sign`, made and checked in-process.

The layout follows OpenSSH's PROTOCOL.sshsig: a signature binds a namespace and a hash of the
message, so a signature made for one kind of object can never stand for another.
"""

from __future__ import annotations

import base64
import hashlib
import textwrap
from dataclasses import dataclass
from typing import Protocol

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import ED25519, PublicKey
from bgtui.protocol.wire import Reader, string, uint32

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
MAX_ARMOR = 4096


class Signer(Protocol):
    """Anything that holds (or reaches) an Ed25519 private key: a key in memory, ssh-agent."""

    @property
    def public(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class SshSig:
    """A parsed SSHSIG signature."""

    public: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes

    def armor(self) -> str:
        blob = (
            MAGIC
            + uint32(VERSION)
            + string(self.public.blob)
            + string(self.namespace)
            + string(b"")
            + string(self.hash_algorithm)
            + string(string(ED25519) + string(self.signature))
        )
        body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 70))
        return f"{BEGIN}\n{body}\n{END}\n"


def signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    """The bytes an SSHSIG signature is computed over."""
    digest = _HASHES[hash_algorithm](message).digest()
    return MAGIC + string(namespace) + string(b"") + string(hash_algorithm) + string(digest)


def sign(signer: Signer, namespace: str, message: bytes) -> str:
    """Signs `message` under `namespace` and returns the armored signature ssh-keygen reads."""
    if not namespace:
        raise ValueError("an SSHSIG namespace must not be empty")
    sig = signer.sign(signed_data(namespace, "sha512", message))
    return SshSig(signer.public, namespace, "sha512", sig).armor()


def parse(armored: str) -> SshSig:
    """Reads an armored SSHSIG, refusing anything malformed, oversized or not Ed25519."""
    if not isinstance(armored, str):
        raise Refused("malformed signature: not text")
    if len(armored) > MAX_ARMOR:
        raise Refused("malformed signature: too large")
    text = armored.strip()
    if not (text.startswith(BEGIN) and text.endswith(END)):
        raise Refused("malformed signature: not an SSH SIGNATURE block")
    body = "".join(text[len(BEGIN) : -len(END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character in the text
        raise Refused("malformed signature: bad base64") from None
    reader = Reader(blob, "signature")
    if reader.raw(6) != MAGIC:
        raise Refused("malformed signature: not SSHSIG")
    version = reader.uint32()
    if version != VERSION:
        raise Refused(f"malformed signature: unsupported SSHSIG version {version}")
    public = PublicKey.from_blob(reader.string())
    namespace = reader.text()
    reader.string()  # reserved
    hash_algorithm = reader.text()
    if hash_algorithm not in _HASHES:
        raise Refused(f"malformed signature: unsupported hash {hash_algorithm}")
    inner = Reader(reader.string(), "signature")
    reader.expect_done()
    kind = inner.text()
    if kind != ED25519:
        raise Refused(f"malformed signature: unsupported signature type {kind}")
    raw = inner.string()
    inner.expect_done()
    if len(raw) != 64:
        raise Refused("malformed signature: wrong Ed25519 signature length")
    sig = SshSig(public, namespace, hash_algorithm, raw)
    # One encoding per signature, as for payloads: base64 padding bits and whitespace could
    # otherwise be changed without changing what the signature says.
    if sig.armor() != armored:
        raise Refused("malformed signature: not in the exact form `ssh-keygen -Y sign` writes")
    return sig


def verify(armored: str, message: bytes, namespace: str) -> PublicKey:
    """Checks an armored SSHSIG over `message`; returns the signing key or raises Refused.

    The caller still decides whether that key is trusted; this only proves it signed.
    """
    sig = parse(armored)
    if sig.namespace != namespace:
        raise Refused(
            f"wrong namespace: signature is for {sig.namespace!r}, expected {namespace!r}"
        )
    if not sig.public.verify(sig.signature, signed_data(namespace, sig.hash_algorithm, message)):
        raise Refused("bad signature: it does not match the signed bytes")
    return sig.public
