"""Bound ServiceAccount tokens for the Kubernetes API simulator: JWTs it signs and checks.

The claims follow the real API server's bound tokens (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`,
`jti`, and `kubernetes.io` naming the ServiceAccount and its uid); the signature is HMAC-SHA256
with a key that exists only in the simulator process, so a token dies with the simulator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCE = ISSUER
"""The audience the API server itself accepts, and the default for a TokenRequest."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: whose it is, for whom, and until when."""

    namespace: str
    service_account: str
    service_account_uid: str
    audiences: tuple[str, ...]
    issued_at: int
    expires_at: int
    token_id: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


class TokenSigner:
    """Issues and verifies the simulator's ServiceAccount JWTs."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self.key_id = uuid.uuid4().hex[:16]

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())

    def issue(
        self,
        namespace: str,
        name: str,
        uid: str,
        audiences: list[str],
        now: int,
        expiration_seconds: int,
    ) -> tuple[str, int]:
        """(token, expiry as a Unix time)."""
        expires = now + expiration_seconds
        header = {"alg": "HS256", "kid": self.key_id, "typ": "JWT"}
        payload: dict[str, Any] = {
            "aud": audiences,
            "exp": expires,
            "iat": now,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
            "nbf": now,
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        return f"{signing_input}.{self._sign(signing_input)}", expires

    def verify(self, token: str, now: float) -> TokenClaims | None:
        """The claims of an authentic, unexpired token of ours; None for anything else."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signing_input = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signing_input), parts[2]):
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            payload = json.loads(_unb64(parts[1]))
            if header.get("alg") != "HS256" or payload.get("iss") != ISSUER:
                return None
            k8s = payload["kubernetes.io"]
            claims = TokenClaims(
                namespace=str(k8s["namespace"]),
                service_account=str(k8s["serviceaccount"]["name"]),
                service_account_uid=str(k8s["serviceaccount"]["uid"]),
                audiences=tuple(str(a) for a in payload["aud"]),
                issued_at=int(payload["iat"]),
                expires_at=int(payload["exp"]),
                token_id=str(payload["jti"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if now >= claims.expires_at or now < int(payload.get("nbf", 0)):
            return None
        return claims
