"""One entry point that accepts or refuses a signed object, with a precise reason.

Every check the controller makes before it acts on a signature lives here, in the order a
careful reader would make them: form, namespace, signature, who signed, for what role, and
then what the object says (controller, request digest, validity window, duration, reuse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Approval, Checkpoint, Payload, Request, Signed, TeardownReceipt
from bgtui.protocol.timefmt import now_utc, parse_utc
from bgtui.protocol.trust import TrustEntry, TrustStore

SIGNER_ROLE: dict[type[Payload], str] = {Request: "operator", Approval: "approver"}


class Reason(StrEnum):
    MALFORMED = "malformed"
    WRONG_NAMESPACE = "wrong-namespace"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_KEY = "unknown-key"
    WRONG_ROLE = "wrong-role"
    FINGERPRINT_MISMATCH = "fingerprint-mismatch"
    DIGEST_MISMATCH = "digest-mismatch"
    OTHER_CONTROLLER = "other-controller"
    EXPIRED = "expired"
    DURATION_TOO_LONG = "duration-too-long"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class Verdict:
    """Accept (with the decoded object and who signed it) or refuse (with reason and detail)."""

    accepted: bool
    reason: Reason | None = None
    detail: str = ""
    obj: Any = None
    signer: TrustEntry | None = None

    def __str__(self) -> str:
        return "accepted" if self.accepted else f"refused ({self.reason}): {self.detail}"

    def raise_if_refused(self) -> None:
        if not self.accepted:
            raise Refused(f"refused ({self.reason}): {self.detail}")


def _refuse(reason: Reason, detail: str) -> Verdict:
    return Verdict(False, reason, detail)


def verify(
    signed: Signed | Any,
    kind: type[Payload],
    *,
    controller_id: str,
    trust: TrustStore | None = None,
    controller_key: PublicKey | None = None,
    now: datetime | None = None,
    request: Signed | None = None,
    already_used: Callable[[str], bool] | None = None,
) -> Verdict:
    """Checks `signed` as an object of `kind` for this controller.

    Requests and approvals must be signed by a key pinned in `trust` for the operator or
    approver role; checkpoints and receipts by `controller_key`. An approval is also checked
    against the `request` it names, against `now`, and against `already_used` (single use).
    """
    try:
        envelope = signed if isinstance(signed, Signed) else Signed.from_json(signed)
        key = sshsig.verify(envelope.signature, envelope.payload, kind.NAMESPACE)
    except Refused as exc:
        message = str(exc)
        if message.startswith("wrong namespace"):
            return _refuse(Reason.WRONG_NAMESPACE, message)
        if message.startswith("bad signature"):
            return _refuse(Reason.BAD_SIGNATURE, message)
        return _refuse(Reason.MALFORMED, message)

    signer: TrustEntry | None = None
    if kind in SIGNER_ROLE:
        signer = trust.find(key) if trust else None
        if signer is None:
            return _refuse(
                Reason.UNKNOWN_KEY, f"key {key.fingerprint} is not pinned on this controller"
            )
        wanted = SIGNER_ROLE[kind]
        if signer.role != wanted:
            return _refuse(
                Reason.WRONG_ROLE,
                f"{signer.name} ({key.fingerprint}) is pinned as {signer.role}, not {wanted}",
            )
    elif controller_key is None or key != controller_key:
        return _refuse(Reason.UNKNOWN_KEY, f"key {key.fingerprint} is not this controller's key")

    try:
        obj = envelope.decode(kind)
    except Refused as exc:
        return _refuse(Reason.MALFORMED, str(exc))

    if obj.controller_id != controller_id:
        return _refuse(
            Reason.OTHER_CONTROLLER,
            f"{kind.TYPE} is for controller {obj.controller_id!r}, this is {controller_id!r}",
        )
    if isinstance(obj, Request) and obj.operator_fingerprint != key.fingerprint:
        return _refuse(Reason.FINGERPRINT_MISMATCH, "request names another operator's key")
    if isinstance(obj, Approval):
        verdict = _check_approval(obj, envelope, key, now, request, already_used)
        if verdict is not None:
            return verdict
    return Verdict(True, obj=obj, signer=signer)


def _check_approval(
    approval: Approval,
    envelope: Signed,
    key: PublicKey,
    now: datetime | None,
    request: Signed | None,
    already_used: Callable[[str], bool] | None,
) -> Verdict | None:
    now = now or now_utc()
    if approval.approver_fingerprint != key.fingerprint:
        return _refuse(Reason.FINGERPRINT_MISMATCH, "approval names another approver's key")
    if request is None:
        return _refuse(Reason.DIGEST_MISMATCH, "no request given to check the approval against")
    if approval.request_digest != request.digest:
        return _refuse(
            Reason.DIGEST_MISMATCH,
            f"approval signs request digest {approval.request_digest[:16]}…, "
            f"the request's is {request.digest[:16]}…",
        )
    try:
        req: Request = request.decode(Request)
    except Refused as exc:
        return _refuse(Reason.MALFORMED, str(exc))
    if approval.request_id != req.id:
        return _refuse(Reason.DIGEST_MISMATCH, "approval names another request id")
    if now > parse_utc(approval.not_after):
        return _refuse(Reason.EXPIRED, f"approval was valid until {approval.not_after}")
    if approval.approves and approval.approved_duration > req.requested_duration:
        return _refuse(
            Reason.DURATION_TOO_LONG,
            f"approval grants {approval.approved_duration}s, "
            f"the request asked for {req.requested_duration}s",
        )
    if already_used is not None and already_used(envelope.digest):
        return _refuse(Reason.REPLAYED, "this approval has already been used")
    return None


def verify_checkpoint(signed: Signed, controller_id: str, controller_key: PublicKey) -> Verdict:
    return verify(signed, Checkpoint, controller_id=controller_id, controller_key=controller_key)


def verify_receipt(signed: Signed, controller_id: str, controller_key: PublicKey) -> Verdict:
    return verify(
        signed, TeardownReceipt, controller_id=controller_id, controller_key=controller_key
    )
