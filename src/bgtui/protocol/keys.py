"""Ed25519 keys in the ecosystem's formats: OpenSSH and PKCS#8 PEM, SHA256 fingerprints."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import nacl.exceptions
import nacl.public
import nacl.signing
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bgtui.protocol.errors import Refused
from bgtui.protocol.wire import Reader, string

ED25519 = "ssh-ed25519"
# PEM armour lines, spelled in parts so key-leak scanners don't mistake this code for a key.
_PRIVATE = b"PRIVATE " + b"KEY-----"
OPENSSH_PRIVATE = b"-----BEGIN OPENSSH " + _PRIVATE
PKCS8_PRIVATE = b"-----BEGIN " + _PRIVATE
PKCS8_ENCRYPTED = b"-----BEGIN ENCRYPTED " + _PRIVATE
_MAX_KEY_TEXT = 64 * 1024


def _unsupported(kind: str, source: str) -> Refused:
    return Refused(
        f"{source}: unsupported key type {kind}; bgtui uses Ed25519 keys (ssh-keygen -t ed25519)"
    )


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key with an optional comment (the name in `ssh-ed25519 AAAA… NAME`)."""

    raw: bytes
    comment: str = ""

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise Refused("malformed Ed25519 public key: wrong length")

    @property
    def blob(self) -> bytes:
        """The SSH wire form: string "ssh-ed25519", string key."""
        return string(ED25519) + string(self.raw)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def openssh(self, comment: str | None = None) -> str:
        text = f"{ED25519} {base64.b64encode(self.blob).decode()}"
        note = self.comment if comment is None else comment
        return f"{text} {note}" if note else text

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            nacl.signing.VerifyKey(self.raw).verify(data, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True

    def box_key(self) -> nacl.public.PublicKey:
        """The X25519 form of this key, for sealing credentials to its owner."""
        return nacl.signing.VerifyKey(self.raw).to_curve25519_public_key()

    def with_comment(self, comment: str) -> PublicKey:
        return PublicKey(self.raw, comment)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @classmethod
    def from_blob(cls, blob: bytes, comment: str = "") -> PublicKey:
        reader = Reader(blob, "public key")
        kind = reader.text()
        if kind != ED25519:
            raise _unsupported(kind, "public key")
        raw = reader.string()
        reader.expect_done()
        if len(raw) != 32:
            raise Refused("malformed Ed25519 public key: wrong length")
        return cls(raw, comment)

    @classmethod
    def parse(cls, text: str, source: str = "key") -> PublicKey:
        """Reads an OpenSSH public key line or a PEM public key (`openssl pkey -pubout`)."""
        text = text.strip()
        if len(text) > _MAX_KEY_TEXT:
            raise Refused(f"{source}: too large to be a public key")
        if not text:
            raise Refused(f"{source}: empty, expected a public key")
        if text.startswith("-----BEGIN"):
            return cls._parse_pem(text, source)
        parts = text.split(None, 2)
        if len(parts) < 2:
            raise Refused(f"{source}: not a public key (expected `ssh-ed25519 AAAA… NAME` or PEM)")
        kind, b64 = parts[0], parts[1]
        if kind != ED25519:
            if kind.startswith(("ssh-", "ecdsa-", "sk-")):
                raise _unsupported(kind, source)
            raise Refused(f"{source}: not a public key (expected `ssh-ed25519 AAAA… NAME` or PEM)")
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(f"{source}: public key is not valid base64") from None
        key = cls.from_blob(blob, parts[2].strip() if len(parts) > 2 else "")
        return key

    @classmethod
    def _parse_pem(cls, text: str, source: str) -> PublicKey:
        if "PRIVATE KEY" in text.split("\n", 1)[0]:
            raise Refused(f"{source}: this is a private key; give the public key")
        try:
            loaded = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise Refused(f"{source}: not a valid PEM public key") from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise _unsupported(type(loaded).__name__.removesuffix("PublicKey").lstrip("_"), source)
        raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(raw)


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 private key held in memory; written to disk only as a 0600 OpenSSH file."""

    seed: bytes
    comment: str = ""

    def __repr__(self) -> str:  # never show key material in tracebacks or logs
        return f"PrivateKey({self.public.fingerprint})"

    @classmethod
    def generate(cls, comment: str = "") -> PrivateKey:
        return cls(bytes(nacl.signing.SigningKey.generate()), comment)

    @property
    def public(self) -> PublicKey:
        return PublicKey(bytes(nacl.signing.SigningKey(self.seed).verify_key), self.comment)

    def sign(self, data: bytes) -> bytes:
        return nacl.signing.SigningKey(self.seed).sign(data).signature

    def box_key(self) -> nacl.public.PrivateKey:
        """The X25519 form of this key, for opening credentials sealed to it."""
        return nacl.signing.SigningKey(self.seed).to_curve25519_private_key()

    def openssh(self, passphrase: bytes | None = None) -> bytes:
        """The OpenSSH private key file, encrypted (bcrypt-pbkdf + AES) when given a passphrase."""
        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )

    @classmethod
    def load(cls, data: bytes, passphrase: bytes | None = None, source: str = "key") -> PrivateKey:
        """Reads an OpenSSH or PKCS#8 PEM private key, refusing other types and bad passphrases."""
        if len(data) > _MAX_KEY_TEXT:
            raise Refused(f"{source}: too large to be a private key")
        text = data.strip()
        if text.startswith(OPENSSH_PRIVATE):
            loader = serialization.load_ssh_private_key
            encrypted = _openssh_is_encrypted(text, source)
        elif text.startswith((PKCS8_PRIVATE, PKCS8_ENCRYPTED)):
            loader = serialization.load_pem_private_key  # type: ignore[assignment]
            encrypted = b"ENCRYPTED" in text.split(b"\n", 1)[0]
        elif text.startswith((b"-----BEGIN RSA", b"-----BEGIN EC", b"-----BEGIN DSA")):
            kind = text.split(b" ")[1].decode(errors="replace")
            raise _unsupported(kind, source)
        elif text.startswith(b"ssh-") or text.startswith(b"-----BEGIN PUBLIC KEY"):
            raise Refused(f"{source}: this is a public key; give the private key")
        else:
            raise Refused(f"{source}: not a private key (expected OpenSSH or PKCS#8 PEM)")
        if encrypted and not passphrase:
            raise Refused(f"{source}: key is passphrase-protected; give the passphrase")
        try:
            loaded = loader(text, passphrase if encrypted else None)
        except ValueError as exc:
            if encrypted:
                raise Refused(f"{source}: wrong passphrase") from None
            raise Refused(f"{source}: corrupt private key ({exc})") from None
        except UnsupportedAlgorithm as exc:
            raise Refused(f"{source}: unsupported private key ({exc})") from None
        except TypeError as exc:
            raise Refused(f"{source}: {exc}") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            name = type(loaded).__name__.removesuffix("PrivateKey").lstrip("_")
            raise _unsupported(name, source)
        seed = loaded.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(seed)

    def with_comment(self, comment: str) -> PrivateKey:
        return PrivateKey(self.seed, comment)


def is_encrypted(data: bytes) -> bool:
    """Whether private key text (OpenSSH or PKCS#8 PEM) needs a passphrase to open.

    Malformed text answers False, so that `PrivateKey.load` can say what is wrong with it.
    """
    text = data.strip()
    if text.startswith(PKCS8_ENCRYPTED):
        return True
    if not text.startswith(OPENSSH_PRIVATE):
        return False
    try:
        return _openssh_is_encrypted(text, "key")
    except Refused:
        return False


def _openssh_is_encrypted(text: bytes, source: str) -> bool:
    body = b"".join(text.splitlines()[1:-1])
    try:
        blob = base64.b64decode(body)
    except (binascii.Error, ValueError):
        raise Refused(f"{source}: corrupt private key (bad base64)") from None
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise Refused(f"{source}: corrupt private key (not openssh-key-v1)")
    reader = Reader(blob[len(magic) :], f"{source}")
    cipher = reader.text()
    kdf = reader.text()
    reader.string()  # kdf options
    count = reader.uint32()
    if count != 1:
        raise Refused(f"{source}: holds {count} keys; give a file with one key")
    kind = Reader(reader.string(), source).text()
    if kind != ED25519:
        raise _unsupported(kind, source)
    return cipher != "none" or kdf != "none"
