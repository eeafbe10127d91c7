"""The signed objects of DESIGN §4: Request, Approval, Checkpoint and TeardownReceipt.

Each is a frozen dataclass whose fields are exactly the signed payload; `Signed` carries the
canonical payload bytes with their armored SSHSIG, as they travel and as they are stored.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, cast

from bgtui.protocol import sshsig
from bgtui.protocol.canonical import MAX_OBJECT, canonical, parse_canonical
from bgtui.protocol.errors import Refused
from bgtui.protocol.timefmt import now_utc, parse_utc, utc_text

JSON = dict[str, Any]


class Payload:
    """Shared behaviour of signed payloads: strict decoding, canonical bytes, signing."""

    TYPE: ClassVar[str]
    NAMESPACE: ClassVar[str]

    def to_json(self) -> JSON:
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"type": self.TYPE, **body}

    def canonical(self) -> bytes:
        return canonical(self.to_json())

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def sign(self, signer: sshsig.Signer) -> Signed:
        data = self.canonical()
        return Signed(data, sshsig.sign(signer, self.NAMESPACE, data))

    @classmethod
    def from_json(cls, value: JSON) -> Self:
        what = cls.TYPE
        if value.get("type") != cls.TYPE:
            raise Refused(f"malformed {what}: type is {value.get('type')!r}, expected {what!r}")
        hints = _hints(cast(Hashable, cls))
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        extra = set(value) - fields - {"type"}
        if extra:
            raise Refused(f"malformed {what}: unknown field {sorted(extra)[0]!r}")
        kwargs: dict[str, Any] = {}
        for name in fields:
            if name not in value:
                raise Refused(f"malformed {what}: missing field {name!r}")
            if not _matches(value[name], hints[name]):
                raise Refused(f"malformed {what}: field {name!r} has the wrong type")
            kwargs[name] = value[name]
        obj = cls(**kwargs)
        obj.check()
        return obj

    def check(self) -> None:
        """Field-level rules beyond types; subclasses refuse values that make no sense."""


@functools.cache
def _hints(cls: Hashable) -> dict[str, Any]:
    """Resolved field types of a payload class (resolving them on every decode is slow)."""
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    return False


def new_nonce() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Request(Payload):
    """What an operator asks for, signed by the operator's key."""

    TYPE: ClassVar[str] = "request"
    NAMESPACE: ClassVar[str] = "bgtui-request@v1"

    id: str
    controller_id: str
    resource: str
    privilege: str
    credential_source: str
    network_path: str
    command: dict[str, Any] | None  # {"recipe", "sha256", "text", "inputs"} when a recipe mints
    requested_duration: int
    reason: str
    operator_fingerprint: str
    operator_key: str  # OpenSSH public key line; credentials are sealed to it
    session_key: str | None  # for SSH: the per-session public key the CA certifies
    created_at: str
    nonce: str

    def check(self) -> None:
        if self.requested_duration <= 0:
            raise Refused("malformed request: requested_duration must be positive")
        if not self.reason.strip():
            raise Refused("malformed request: a reason is required")
        parse_utc(self.created_at, "request created_at")


@dataclass(frozen=True)
class Approval(Payload):
    """A customer's signed decision on one request: approve (maybe shorter) or reject."""

    TYPE: ClassVar[str] = "approval"
    NAMESPACE: ClassVar[str] = "bgtui-approval@v1"

    request_digest: str
    request_id: str
    controller_id: str
    decision: str  # "approve" | "reject"
    approved_duration: int  # seconds; 0 for a rejection
    reason: str
    approver_fingerprint: str
    signed_at: str
    not_after: str
    nonce: str

    def check(self) -> None:
        if self.decision not in ("approve", "reject"):
            raise Refused(
                f"malformed approval: decision {self.decision!r} is not approve or reject"
            )
        if self.decision == "approve" and self.approved_duration <= 0:
            raise Refused("malformed approval: approved_duration must be positive")
        if self.decision == "reject" and not self.reason.strip():
            raise Refused("malformed approval: a rejection needs a reason")
        if self.decision == "reject" and self.approved_duration != 0:
            raise Refused("malformed approval: a rejection grants no duration")
        if parse_utc(self.not_after, "approval not_after") < parse_utc(self.signed_at):
            raise Refused("malformed approval: not_after is before signed_at")

    @property
    def approves(self) -> bool:
        return self.decision == "approve"


@dataclass(frozen=True)
class Checkpoint(Payload):
    """The controller's signed statement of the audit log's size and head hash."""

    TYPE: ClassVar[str] = "checkpoint"
    NAMESPACE: ClassVar[str] = "bgtui-checkpoint@v1"

    controller_id: str
    size: int
    head: str
    signed_at: str


@dataclass(frozen=True)
class TeardownReceipt(Payload):
    """The controller's signed list of everything a session minted and when each was removed."""

    TYPE: ClassVar[str] = "receipt"
    NAMESPACE: ClassVar[str] = "bgtui-receipt@v1"

    controller_id: str
    session_id: str
    request_id: str
    ended_reason: str
    artifacts: list[dict[str, Any]]  # {"plane", "kind", "name", "created_at", "removed_at", "how"}
    completed_at: str


KINDS: dict[str, type[Payload]] = {
    cls.TYPE: cls for cls in (Request, Approval, Checkpoint, TeardownReceipt)
}


@dataclass(frozen=True)
class Signed:
    """Canonical payload bytes and the armored SSHSIG over them, as they travel and are stored."""

    payload: bytes
    signature: str

    def to_json(self) -> JSON:
        return {"payload": self.payload.decode(), "signature": self.signature}

    @classmethod
    def from_json(cls, value: Any) -> Signed:
        if not isinstance(value, dict) or set(value) != {"payload", "signature"}:
            raise Refused("malformed signed object: expected {payload, signature}")
        payload, signature = value["payload"], value["signature"]
        if not isinstance(payload, str) or not isinstance(signature, str):
            raise Refused("malformed signed object: payload and signature must be text")
        if len(payload) > MAX_OBJECT or len(signature) > sshsig.MAX_ARMOR:
            raise Refused("malformed signed object: too large")
        return cls(payload.encode(), signature)

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical payload bytes: how approvals name requests."""
        return hashlib.sha256(self.payload).hexdigest()

    def decode(self, kind: type[Payload]) -> Any:
        return kind.from_json(parse_canonical(self.payload, kind.TYPE))


def new_approval(
    request: Signed,
    req: Request,
    *,
    approver_fingerprint: str,
    decision: str,
    duration: int | None = None,
    reason: str = "",
    validity: int = 600,
    now: datetime | None = None,
) -> Approval:
    """An approval (or rejection) of `request`, valid for `validity` seconds from now."""
    moment = now or now_utc()
    approved = 0 if decision == "reject" else (duration or req.requested_duration)
    return Approval(
        request_digest=request.digest,
        request_id=req.id,
        controller_id=req.controller_id,
        decision=decision,
        approved_duration=approved,
        reason=reason,
        approver_fingerprint=approver_fingerprint,
        signed_at=utc_text(moment),
        not_after=utc_text(moment + timedelta(seconds=validity)),
        nonce=new_nonce(),
    )
