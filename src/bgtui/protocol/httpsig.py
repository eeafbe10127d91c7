"""Authenticated API calls: HTTP Message Signatures (RFC 9421) with Ed25519.

Every call to the controller is signed by the caller's enrolled key over its method, path,
query and body digest (RFC 9530 `Content-Digest`), with a creation time and a nonce, so a relay
can neither alter a call nor replay it. Only this one profile is produced or accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bgtui.protocol.sshsig import Signer
from bgtui.protocol.trust import TrustEntry

COMPONENTS = ('"@method"', '"@path"', '"@query"', '"content-digest"')
MAX_SKEW = 60  # seconds either side of the controller's clock
_INPUT = re.compile(
    r"sig1=\((?P<components>[^)]*)\);created=(?P<created>\d{1,12});"
    r'keyid="(?P<keyid>SHA256:[A-Za-z0-9+/]{43})";alg="ed25519";nonce="(?P<nonce>[0-9a-f]{32})"'
)
_SIGNATURE = re.compile(r"sig1=:(?P<sig>[A-Za-z0-9+/=]{86,88}):")


class AuthError(Exception):
    """A call that fails authentication (401) or authorisation (403), with a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def _params(created: int, keyid: str, nonce: str) -> str:
    return (
        f'({" ".join(COMPONENTS)});created={created};keyid="{keyid}";alg="ed25519";nonce="{nonce}"'
    )


def signature_base(method: str, path: str, query: str, digest: str, params: str) -> bytes:
    """The RFC 9421 §2.5 signature base for our fixed list of covered components."""
    lines = [
        f'"@method": {method.upper()}',
        f'"@path": {path}',
        f'"@query": ?{query}',
        f'"content-digest": {digest}',
        f'"@signature-params": {params}',
    ]
    return "\n".join(lines).encode()


def sign_request(
    signer: Signer,
    method: str,
    path: str,
    query: str,
    body: bytes,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one call: Content-Digest, Signature-Input, Signature."""
    created = int(now if now is not None else time.time())
    params = _params(created, signer.public.fingerprint, nonce or secrets.token_hex(16))
    digest = content_digest(body)
    signature = signer.sign(signature_base(method, path, query, digest, params))
    return {
        "Content-Digest": digest,
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{base64.b64encode(signature).decode()}:",
    }


class ReplayCache:
    """Nonces seen within the skew window; a second call with the same nonce is a replay."""

    def __init__(self, window: int = 2 * MAX_SKEW) -> None:
        self._window = window
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {n: t for n, t in self._seen.items() if t > now}
            expiry = self._seen.get(nonce)
            if expiry is not None and expiry > now:
                return False
            self._seen[nonce] = now + self._window
            return True


@dataclass(frozen=True)
class Caller:
    """Who made an authenticated call."""

    entry: TrustEntry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def role(self) -> str:
        return self.entry.role

    @property
    def fingerprint(self) -> str:
        return self.entry.fingerprint


def verify_request(
    headers: Mapping[str, str],
    method: str,
    path: str,
    query: str,
    body: bytes,
    *,
    lookup: Callable[[str], TrustEntry | None],
    replay: ReplayCache,
    now: float | None = None,
) -> Caller:
    """Checks a call's signature headers; returns the caller or raises AuthError(401)."""
    moment = now if now is not None else time.time()
    raw_input = headers.get("signature-input")
    raw_signature = headers.get("signature")
    if not raw_input or not raw_signature:
        raise AuthError(401, "unsigned call: every call must carry Signature-Input and Signature")
    match = _INPUT.fullmatch(raw_input.strip())
    if match is None or match["components"] != " ".join(COMPONENTS):
        raise AuthError(401, "malformed Signature-Input")
    sig_match = _SIGNATURE.fullmatch(raw_signature.strip())
    if sig_match is None:
        raise AuthError(401, "malformed Signature")
    created = int(match["created"])
    if abs(moment - created) > MAX_SKEW:
        raise AuthError(401, f"stale signature: created {int(moment - created)}s from now")
    digest = headers.get("content-digest", "")
    if digest != content_digest(body):
        raise AuthError(401, "Content-Digest does not match the body")
    entry = lookup(match["keyid"])
    if entry is None:
        raise AuthError(401, f"key {match['keyid']} is not pinned on this controller")
    try:
        signature = base64.b64decode(sig_match["sig"], validate=True)
    except binascii.Error:
        raise AuthError(401, "malformed Signature") from None
    params = raw_input.strip().removeprefix("sig1=")
    if not entry.key.verify(signature, signature_base(method, path, query, digest, params)):
        raise AuthError(401, "bad signature on the call")
    if not replay.first_use(match["nonce"], moment):
        raise AuthError(401, "replayed call: this nonce was already used")
    return Caller(entry)
