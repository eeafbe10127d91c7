"""A minimal ssh-agent client (draft-miller-ssh-agent): list keys and sign with an Ed25519 key.

This is how an approver signs with a key that never leaves the agent, including keys the agent
keeps on hardware (gpg-agent with an OpenPGP card, for instance).
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import ED25519, PublicKey
from bgtui.protocol.wire import Reader, string, uint32

SOCKET_ENV = "SSH_AUTH_SOCK"

FAILURE = 5
REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12
SIGN_REQUEST = 13
SIGN_RESPONSE = 14
EXTENSION_FAILURE = 28

_MAX_MESSAGE = 256 * 1024
# Long enough for an agent that asks the user to confirm (ssh-add -c) or to touch a token.
TIMEOUT = 60.0


def agent_socket(path: str | Path | None = None) -> str:
    """The agent socket to use: `path` if given, else $SSH_AUTH_SOCK, else refuses."""
    if path:
        return str(path)
    found = os.environ.get(SOCKET_ENV)
    if not found:
        raise Refused(
            f"ssh-agent: {SOCKET_ENV} is not set; start ssh-agent and add the key with ssh-add"
        )
    return found


class AgentClient:
    """One conversation per call with the ssh-agent listening on a Unix socket."""

    def __init__(self, socket_path: str | Path | None = None, timeout: float = TIMEOUT) -> None:
        self.socket_path = agent_socket(socket_path)
        self.timeout = timeout

    def _call(self, message_type: int, body: bytes) -> tuple[int, bytes]:
        payload = bytes([message_type]) + body
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.timeout)
                conn.connect(self.socket_path)
                conn.sendall(uint32(len(payload)) + payload)
                (length,) = struct.unpack(">I", self._recv(conn, 4))
                if length == 0 or length > _MAX_MESSAGE:
                    raise Refused(f"ssh-agent at {self.socket_path}: malformed reply")
                reply = self._recv(conn, length)
        except TimeoutError:
            raise Refused(f"ssh-agent at {self.socket_path}: no answer in time") from None
        except OSError as exc:
            raise Refused(
                f"ssh-agent at {self.socket_path}: cannot connect ({exc.strerror or exc})"
            ) from None
        return reply[0], reply[1:]

    def _recv(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise Refused(f"ssh-agent at {self.socket_path}: connection closed mid-reply")
            data += chunk
        return data

    def identities(self) -> list[tuple[bytes, str]]:
        """Every key the agent holds, as (key blob, comment), whatever its type."""
        kind, body = self._call(REQUEST_IDENTITIES, b"")
        if kind != IDENTITIES_ANSWER:
            raise Refused(f"ssh-agent at {self.socket_path}: refused to list keys")
        reader = Reader(body, "ssh-agent reply")
        count = reader.uint32()
        keys = []
        for _ in range(count):
            blob = reader.string()
            comment = reader.string().decode(errors="replace")
            keys.append((blob, comment))
        reader.expect_done()
        return keys

    def ed25519_keys(self) -> list[PublicKey]:
        """The plain Ed25519 keys the agent holds (certificates and other types are skipped)."""
        found = []
        for blob, comment in self.identities():
            if Reader(blob, "agent key").text() == ED25519:
                found.append(PublicKey.from_blob(blob, comment))
        return found

    def sign(self, public: PublicKey, data: bytes) -> bytes:
        """Asks the agent to sign `data` with `public`'s private key; returns the raw signature."""
        kind, body = self._call(SIGN_REQUEST, string(public.blob) + string(data) + uint32(0))
        if kind in (FAILURE, EXTENSION_FAILURE):
            raise Refused(
                f"ssh-agent at {self.socket_path}: refused to sign with {public.fingerprint} "
                "(is the key added? ssh-add -l lists the agent's keys)"
            )
        if kind != SIGN_RESPONSE:
            raise Refused(f"ssh-agent at {self.socket_path}: unexpected reply type {kind}")
        reader = Reader(body, "ssh-agent signature")
        inner = Reader(reader.string(), "ssh-agent signature")
        reader.expect_done()
        algorithm = inner.text()
        raw = inner.string()
        inner.expect_done()
        if algorithm != ED25519 or len(raw) != 64:
            raise Refused(f"ssh-agent at {self.socket_path}: returned a malformed signature")
        if not public.verify(raw, data):
            raise Refused(f"ssh-agent at {self.socket_path}: returned a signature that fails")
        return raw


def find_key(socket_path: str | Path | None = None, fingerprint: str | None = None) -> PublicKey:
    """The agent's one Ed25519 key, or the one with `fingerprint`; refuses when ambiguous."""
    client = AgentClient(socket_path)
    keys = client.ed25519_keys()
    where = f"ssh-agent at {client.socket_path}"
    if fingerprint is not None:
        wanted = fingerprint if fingerprint.startswith("SHA256:") else f"SHA256:{fingerprint}"
        for key in keys:
            if key.fingerprint == wanted:
                return key
        raise Refused(f"{where}: holds no Ed25519 key {wanted}; ssh-add -l lists its keys")
    if not keys:
        raise Refused(f"{where}: holds no Ed25519 key; add one with ssh-add")
    if len(keys) > 1:
        listed = ", ".join(key.fingerprint for key in keys)
        raise Refused(f"{where}: holds several Ed25519 keys ({listed}); pick one with --agent-key")
    return keys[0]


class AgentSigner:
    """A Signer whose private key stays in ssh-agent; the socket is looked up at signing time."""

    def __init__(self, public_key: PublicKey, socket_path: str | Path | None = None) -> None:
        self._public = public_key
        self._socket_path = socket_path

    @property
    def public(self) -> PublicKey:
        """The enrolled public key this signer signs with."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """Signs `data` in the agent; the signature is checked before it is returned."""
        return AgentClient(self._socket_path).sign(self._public, data)

    def __repr__(self) -> str:
        return f"AgentSigner({self._public.fingerprint})"
