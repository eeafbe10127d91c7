"""`bgtui.protocol.verify.verify`: every accept path and every refusal reason, exactly."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bgtui.protocol import sshsig
from bgtui.protocol.canonical import canonical
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import (
    Approval,
    Checkpoint,
    Payload,
    Request,
    Signed,
    TeardownReceipt,
    new_approval,
)
from bgtui.protocol.timefmt import utc_text
from bgtui.protocol.trust import TrustStore
from bgtui.protocol.verify import Reason, Verdict, verify, verify_checkpoint, verify_receipt

CTL = "ctl-prod-1"
NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)

OPERATOR = PrivateKey.generate("alice")
OPERATOR2 = PrivateKey.generate("bob")
APPROVER = PrivateKey.generate("carol")
AUDITOR = PrivateKey.generate("dave")
CONTROLLER = PrivateKey.generate("controller")
STRANGER = PrivateKey.generate("mallory")


@pytest.fixture
def trust(tmp_path: Path) -> TrustStore:
    store = TrustStore(tmp_path / "allowed_signers")
    store.add("alice", "operator", OPERATOR.public)
    store.add("bob", "operator", OPERATOR2.public)
    store.add("carol", "approver", APPROVER.public)
    store.add("dave", "auditor", AUDITOR.public)
    store.save()
    return TrustStore.load(store.path)  # as the controller reads it


def make_request(key: PrivateKey = OPERATOR, **changes: Any) -> Request:
    fields: dict[str, Any] = {
        "id": "01JJ5Q0M6Z8Y4V3T2S1R0Q9P8N",
        "controller_id": CTL,
        "resource": "db-prod",
        "privilege": "read-only",
        "credential_source": "vault",
        "network_path": "bastion",
        "command": None,
        "requested_duration": 3600,
        "reason": "INC-42: orders table is locked",
        "operator_fingerprint": key.public.fingerprint,
        "operator_key": key.public.openssh(),
        "session_key": None,
        "created_at": utc_text(NOW - timedelta(minutes=5)),
        "nonce": "a" * 32,
    }
    fields.update(changes)
    return Request(**fields)


def approve(
    request: Signed,
    key: PrivateKey = APPROVER,
    decision: str = "approve",
    **changes: Any,
) -> Signed:
    req = request.decode(Request)
    approval = new_approval(
        request,
        req,
        approver_fingerprint=key.public.fingerprint,
        decision=decision,
        reason="" if decision == "approve" else "not during the freeze",
        now=NOW - timedelta(minutes=1),
    )
    return dataclasses.replace(approval, **changes).sign(key)


def sign_raw(payload: bytes, namespace: str, key: PrivateKey = OPERATOR) -> Signed:
    """Signs bytes as they are, so a well-signed but malformed payload reaches decoding."""
    return Signed(payload, sshsig.sign(key, namespace, payload))


def check_request(signed: Any, trust: TrustStore) -> Verdict:
    return verify(signed, Request, controller_id=CTL, trust=trust)


def check_approval(
    signed: Any,
    trust: TrustStore,
    request: Signed | None,
    now: datetime = NOW,
    already_used: Callable[[str], bool] | None = None,
) -> Verdict:
    return verify(
        signed,
        Approval,
        controller_id=CTL,
        trust=trust,
        request=request,
        now=now,
        already_used=already_used,
    )


def refused(verdict: Verdict, reason: Reason, *details: str) -> None:
    assert verdict.accepted is False, verdict
    assert verdict.reason is reason, verdict
    assert verdict.obj is None and verdict.signer is None
    for detail in details:
        assert detail in verdict.detail, verdict
    assert str(verdict) == f"refused ({reason}): {verdict.detail}"


@pytest.fixture
def signed_request() -> Signed:
    return make_request().sign(OPERATOR)


# --- accept paths -------------------------------------------------------------------------


def test_request_signed_by_pinned_operator_is_accepted(
    trust: TrustStore, signed_request: Signed
) -> None:
    verdict = check_request(signed_request, trust)
    assert verdict.accepted is True
    assert verdict.reason is None and verdict.detail == ""
    assert verdict.obj == make_request()
    assert verdict.signer is not None
    assert (verdict.signer.name, verdict.signer.role) == ("alice", "operator")
    assert str(verdict) == "accepted"
    verdict.raise_if_refused()


def test_request_as_json_envelope_is_accepted(trust: TrustStore, signed_request: Signed) -> None:
    wire = json.loads(json.dumps(signed_request.to_json()))
    verdict = check_request(wire, trust)
    assert verdict.accepted is True
    assert verdict.obj == make_request()


def test_approve_approval_is_accepted(trust: TrustStore, signed_request: Signed) -> None:
    verdict = check_approval(approve(signed_request), trust, signed_request)
    assert verdict.accepted is True, verdict
    assert isinstance(verdict.obj, Approval)
    assert verdict.obj.approves is True
    assert verdict.obj.approved_duration == 3600
    assert verdict.obj.request_digest == signed_request.digest
    assert verdict.signer is not None
    assert (verdict.signer.name, verdict.signer.role) == ("carol", "approver")


def test_reject_approval_is_accepted(trust: TrustStore, signed_request: Signed) -> None:
    verdict = check_approval(approve(signed_request, decision="reject"), trust, signed_request)
    assert verdict.accepted is True, verdict
    assert verdict.obj.decision == "reject"
    assert verdict.obj.approves is False
    assert verdict.obj.approved_duration == 0
    assert verdict.obj.reason == "not during the freeze"


def test_approval_with_shorter_duration_is_accepted(
    trust: TrustStore, signed_request: Signed
) -> None:
    verdict = check_approval(approve(signed_request, approved_duration=900), trust, signed_request)
    assert verdict.accepted is True, verdict
    assert verdict.obj.approved_duration == 900


def test_approval_with_exactly_the_requested_duration_is_accepted(
    trust: TrustStore, signed_request: Signed
) -> None:
    verdict = check_approval(approve(signed_request, approved_duration=3600), trust, signed_request)
    assert verdict.accepted is True, verdict


def test_approval_is_accepted_up_to_and_at_not_after(
    trust: TrustStore, signed_request: Signed
) -> None:
    approval = approve(signed_request)
    not_after = datetime.strptime(
        approval.decode(Approval).not_after, "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=UTC)
    assert check_approval(approval, trust, signed_request, now=not_after).accepted is True
    late = check_approval(approval, trust, signed_request, now=not_after + timedelta(seconds=1))
    refused(late, Reason.EXPIRED)


def make_checkpoint(controller_id: str = CTL) -> Checkpoint:
    return Checkpoint(controller_id=controller_id, size=12, head="ab" * 32, signed_at=utc_text(NOW))


def make_receipt(controller_id: str = CTL) -> TeardownReceipt:
    artifact = {
        "plane": "credential",
        "kind": "db-user",
        "name": "bg_alice_1",
        "created_at": utc_text(NOW - timedelta(hours=1)),
        "removed_at": utc_text(NOW),
        "how": "DROP ROLE",
    }
    return TeardownReceipt(
        controller_id=controller_id,
        session_id="sess-1",
        request_id="01JJ5Q0M6Z8Y4V3T2S1R0Q9P8N",
        ended_reason="expired",
        artifacts=[artifact],
        completed_at=utc_text(NOW),
    )


@pytest.mark.parametrize(
    ("maker", "checker"),
    [(make_checkpoint, verify_checkpoint), (make_receipt, verify_receipt)],
)
def test_controller_objects_signed_by_controller_key(
    maker: Callable[..., Payload], checker: Callable[..., Verdict]
) -> None:
    obj = maker()
    verdict = checker(obj.sign(CONTROLLER), CTL, CONTROLLER.public)
    assert verdict.accepted is True, verdict
    assert verdict.obj == obj
    assert verdict.signer is None  # the controller key is not a trust-store entry

    for other in (OPERATOR, APPROVER, STRANGER):
        refused(
            checker(obj.sign(other), CTL, CONTROLLER.public),
            Reason.UNKNOWN_KEY,
            other.public.fingerprint,
            "not this controller's key",
        )
    refused(verify(obj.sign(CONTROLLER), type(obj), controller_id=CTL), Reason.UNKNOWN_KEY)
    refused(
        checker(maker("ctl-other").sign(CONTROLLER), CTL, CONTROLLER.public),
        Reason.OTHER_CONTROLLER,
        "'ctl-other'",
        repr(CTL),
    )


def test_checkpoint_signature_presented_as_receipt_is_wrong_namespace() -> None:
    verdict = verify_receipt(make_checkpoint().sign(CONTROLLER), CTL, CONTROLLER.public)
    refused(verdict, Reason.WRONG_NAMESPACE, "bgtui-checkpoint@v1", "bgtui-receipt@v1")


# --- refusals: namespace, keys, roles ------------------------------------------------------


def test_request_signature_presented_as_approval_is_wrong_namespace(
    trust: TrustStore, signed_request: Signed
) -> None:
    refused(
        check_approval(signed_request, trust, signed_request),
        Reason.WRONG_NAMESPACE,
        "'bgtui-request@v1'",
        "'bgtui-approval@v1'",
    )


def test_approval_presented_as_request_is_wrong_namespace(
    trust: TrustStore, signed_request: Signed
) -> None:
    refused(
        check_request(approve(signed_request), trust),
        Reason.WRONG_NAMESPACE,
        "'bgtui-approval@v1'",
        "'bgtui-request@v1'",
    )


def test_request_signed_by_unpinned_key_is_refused(trust: TrustStore) -> None:
    signed = make_request(STRANGER).sign(STRANGER)
    refused(
        check_request(signed, trust),
        Reason.UNKNOWN_KEY,
        STRANGER.public.fingerprint,
        "not pinned",
    )


def test_request_without_trust_store_is_unknown_key(signed_request: Signed) -> None:
    refused(verify(signed_request, Request, controller_id=CTL), Reason.UNKNOWN_KEY)


def test_approval_signed_by_unpinned_key_is_refused(
    trust: TrustStore, signed_request: Signed
) -> None:
    refused(
        check_approval(approve(signed_request, key=STRANGER), trust, signed_request),
        Reason.UNKNOWN_KEY,
        STRANGER.public.fingerprint,
    )


def test_removed_key_is_no_longer_accepted(trust: TrustStore, signed_request: Signed) -> None:
    trust.remove("alice")
    refused(check_request(signed_request, trust), Reason.UNKNOWN_KEY)


def test_operator_key_signing_an_approval_is_wrong_role(
    trust: TrustStore, signed_request: Signed
) -> None:
    refused(
        check_approval(approve(signed_request, key=OPERATOR), trust, signed_request),
        Reason.WRONG_ROLE,
        "alice",
        OPERATOR.public.fingerprint,
        "pinned as operator, not approver",
    )


def test_approver_key_signing_a_request_is_wrong_role(trust: TrustStore) -> None:
    signed = make_request(APPROVER).sign(APPROVER)
    refused(
        check_request(signed, trust),
        Reason.WRONG_ROLE,
        "carol",
        "pinned as approver, not operator",
    )


@pytest.mark.parametrize("kind", [Request, Approval])
def test_auditor_key_signs_nothing(
    trust: TrustStore, signed_request: Signed, kind: type[Payload]
) -> None:
    payload = make_request(AUDITOR).canonical() if kind is Request else signed_request.payload
    signed = sign_raw(payload, kind.NAMESPACE, AUDITOR)
    verdict = verify(signed, kind, controller_id=CTL, trust=trust, request=signed_request, now=NOW)
    refused(verdict, Reason.WRONG_ROLE, "pinned as auditor")


def test_request_naming_another_operator_is_fingerprint_mismatch(trust: TrustStore) -> None:
    # alice signs a request that claims to be bob's
    signed = make_request(OPERATOR2).sign(OPERATOR)
    refused(check_request(signed, trust), Reason.FINGERPRINT_MISMATCH, "operator")


def test_approval_naming_another_approver_is_fingerprint_mismatch(
    trust: TrustStore, signed_request: Signed
) -> None:
    signed = approve(signed_request, approver_fingerprint=STRANGER.public.fingerprint)
    refused(check_approval(signed, trust, signed_request), Reason.FINGERPRINT_MISMATCH, "approver")


# --- refusals: what the approval says --------------------------------------------------------


def test_approval_for_a_different_request_is_digest_mismatch(
    trust: TrustStore, signed_request: Signed
) -> None:
    other = make_request(resource="db-billing").sign(OPERATOR)
    approval = approve(other)
    refused(
        check_approval(approval, trust, signed_request),
        Reason.DIGEST_MISMATCH,
        other.digest[:16],
        signed_request.digest[:16],
    )


def test_approval_against_request_bytes_that_differ_is_digest_mismatch(
    trust: TrustStore, signed_request: Signed
) -> None:
    approval = approve(signed_request)
    # a relay widens the privilege in the request it shows the controller
    tampered = Signed(
        signed_request.payload.replace(b'"read-only"', b'"admin"'), signed_request.signature
    )
    assert tampered.payload != signed_request.payload
    refused(check_approval(approval, trust, tampered), Reason.DIGEST_MISMATCH)
    # and a request re-signed by its own operator with any change is another request too
    resigned = make_request(nonce="b" * 32).sign(OPERATOR)
    refused(check_approval(approval, trust, resigned), Reason.DIGEST_MISMATCH)


def test_approval_without_its_request_is_digest_mismatch(
    trust: TrustStore, signed_request: Signed
) -> None:
    refused(check_approval(approve(signed_request), trust, None), Reason.DIGEST_MISMATCH)


def test_approval_naming_another_request_id_is_digest_mismatch(
    trust: TrustStore, signed_request: Signed
) -> None:
    approval = approve(signed_request, request_id="01JJ5Q0M6Z8Y4V3T2S1R0Q9P8X")
    refused(
        check_approval(approval, trust, signed_request),
        Reason.DIGEST_MISMATCH,
        "another request id",
    )


def test_approval_for_another_controller_is_refused(
    trust: TrustStore, signed_request: Signed
) -> None:
    approval = approve(signed_request, controller_id="ctl-staging")
    refused(
        check_approval(approval, trust, signed_request),
        Reason.OTHER_CONTROLLER,
        "approval is for controller 'ctl-staging'",
        repr(CTL),
    )


def test_request_for_another_controller_is_refused(trust: TrustStore) -> None:
    signed = make_request(controller_id="ctl-staging").sign(OPERATOR)
    refused(
        check_request(signed, trust),
        Reason.OTHER_CONTROLLER,
        "request is for controller 'ctl-staging'",
    )


def test_approval_past_not_after_is_expired(trust: TrustStore, signed_request: Signed) -> None:
    approval = approve(signed_request)
    not_after = approval.decode(Approval).not_after
    refused(
        check_approval(approval, trust, signed_request, now=NOW + timedelta(days=1)),
        Reason.EXPIRED,
        not_after,
    )


def test_approval_longer_than_requested_is_refused(
    trust: TrustStore, signed_request: Signed
) -> None:
    approval = approve(signed_request, approved_duration=3601)
    refused(
        check_approval(approval, trust, signed_request),
        Reason.DURATION_TOO_LONG,
        "grants 3601s",
        "asked for 3600s",
    )


def test_second_use_of_an_approval_is_replayed(trust: TrustStore, signed_request: Signed) -> None:
    used: set[str] = set()

    def already_used(digest: str) -> bool:
        if digest in used:
            return True
        used.add(digest)
        return False

    approval = approve(signed_request)
    assert check_approval(approval, trust, signed_request, already_used=already_used).accepted
    assert used == {approval.digest}
    refused(
        check_approval(approval, trust, signed_request, already_used=already_used),
        Reason.REPLAYED,
        "already been used",
    )
    # the same bytes arriving as a JSON envelope are the same approval
    refused(
        check_approval(approval.to_json(), trust, signed_request, already_used=already_used),
        Reason.REPLAYED,
    )


def test_refused_approval_is_not_marked_used(trust: TrustStore, signed_request: Signed) -> None:
    seen: list[str] = []

    def already_used(digest: str) -> bool:
        seen.append(digest)
        return False

    late = NOW + timedelta(days=1)
    approval = approve(signed_request)
    assert not check_approval(approval, trust, signed_request, late, already_used).accepted
    assert seen == []


# --- refusals: malformed input -------------------------------------------------------------


@pytest.mark.parametrize(
    "envelope",
    [
        None,
        "not an object",
        ["payload", "signature"],
        42,
        {},
        {"signature": "x"},
        {"payload": "{}"},
        {"payload": "{}", "signature": "x", "extra": 1},
        {"payload": {"type": "request"}, "signature": "x"},
        {"payload": "{}", "signature": None},
    ],
)
def test_malformed_envelope_is_refused(trust: TrustStore, envelope: Any) -> None:
    refused(check_request(envelope, trust), Reason.MALFORMED, "malformed signed object")


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "garbage",
        "-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n",
        "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
        "-----BEGIN SSH SIGNATURE-----\n" + "QUFB" * 2000 + "\n-----END SSH SIGNATURE-----\n",
    ],
)
def test_garbage_signature_is_malformed(
    trust: TrustStore, signed_request: Signed, signature: str
) -> None:
    refused(
        check_request(Signed(signed_request.payload, signature), trust),
        Reason.MALFORMED,
        "malformed signature",
    )


def test_signature_over_other_bytes_is_bad_signature(
    trust: TrustStore, signed_request: Signed
) -> None:
    other = make_request(nonce="c" * 32).sign(OPERATOR)
    refused(
        check_request(Signed(signed_request.payload, other.signature), trust),
        Reason.BAD_SIGNATURE,
        "does not match",
    )


def test_signature_armor_must_be_exact(trust: TrustStore, signed_request: Signed) -> None:
    approval = approve(signed_request)
    armored = approval.signature
    body = armored.splitlines()[-2]
    assert body.endswith("==")  # the approval blob leaves 4 unused bits in the last symbol
    last = body[-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    same_bits = alphabet[alphabet.index(last) ^ 1]  # differs only in an unused bit
    variants = [
        armored.replace(body, body[:-3] + same_bits + "=="),
        armored.replace("\n-----END", " \n-----END"),
        armored.replace("\n", "\r\n"),
        armored.rstrip("\n"),
        armored + "\n",
        " " + armored,
    ]
    assert check_approval(approval, trust, signed_request).accepted
    for variant in variants:
        assert variant != armored
        refused(
            check_approval(Signed(approval.payload, variant), trust, signed_request),
            Reason.MALFORMED,
            "exact form",
        )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'"request"',
        b"\xff\xfe",
    ],
)
def test_payload_that_is_not_a_json_object_is_malformed(trust: TrustStore, payload: bytes) -> None:
    refused(
        check_request(sign_raw(payload, Request.NAMESPACE), trust),
        Reason.MALFORMED,
        "malformed request",
    )


def _spaced(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _reordered(value: dict[str, Any]) -> bytes:
    return json.dumps(dict(reversed(value.items())), separators=(",", ":")).encode()


def _escaped(value: dict[str, Any]) -> bytes:
    return canonical(value).replace(b'"db-prod"', b'"db\\u002dprod"')


@pytest.mark.parametrize("encode", [_spaced, _reordered, _escaped])
def test_non_canonical_payload_is_malformed(
    trust: TrustStore, encode: Callable[[dict[str, Any]], bytes]
) -> None:
    value = make_request().to_json()
    payload = encode(value)
    assert json.loads(payload) == value and payload != canonical(value)
    refused(
        check_request(sign_raw(payload, Request.NAMESPACE), trust),
        Reason.MALFORMED,
        "not in canonical form (RFC 8785)",
    )


def test_oversized_payload_is_malformed(trust: TrustStore) -> None:
    payload = make_request(reason="x" * (64 * 1024)).canonical()
    assert len(payload) > 64 * 1024
    refused(
        check_request(sign_raw(payload, Request.NAMESPACE), trust),
        Reason.MALFORMED,
        "larger than 65536 bytes",
    )


def test_unknown_field_is_malformed(trust: TrustStore) -> None:
    value = {**make_request().to_json(), "is_admin": True}
    refused(
        check_request(sign_raw(canonical(value), Request.NAMESPACE), trust),
        Reason.MALFORMED,
        "unknown field 'is_admin'",
    )


def test_missing_field_is_malformed(trust: TrustStore) -> None:
    value = make_request().to_json()
    del value["nonce"]
    refused(
        check_request(sign_raw(canonical(value), Request.NAMESPACE), trust),
        Reason.MALFORMED,
        "missing field 'nonce'",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requested_duration", "1h"),
        ("requested_duration", "3600"),
        ("requested_duration", True),
        ("requested_duration", None),
        ("resource", 7),
        ("resource", None),
        ("command", "rm -rf /"),
        ("command", [1]),
        ("session_key", 1),
        ("reason", ["x"]),
        ("nonce", False),
    ],
)
def test_wrong_field_type_in_request_is_malformed(
    trust: TrustStore, field: str, value: Any
) -> None:
    payload = canonical({**make_request().to_json(), field: value})
    refused(
        check_request(sign_raw(payload, Request.NAMESPACE), trust),
        Reason.MALFORMED,
        f"field {field!r} has the wrong type",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("approved_duration", "900"), ("approved_duration", False), ("decision", True)],
)
def test_wrong_field_type_in_approval_is_malformed(
    trust: TrustStore, signed_request: Signed, field: str, value: Any
) -> None:
    approval = approve(signed_request).decode(Approval)
    payload = canonical({**approval.to_json(), field: value})
    signed = sign_raw(payload, Approval.NAMESPACE, APPROVER)
    refused(
        check_approval(signed, trust, signed_request),
        Reason.MALFORMED,
        f"field {field!r} has the wrong type",
    )


@pytest.mark.parametrize("type_", ["approval", "checkpoint", "Request", "", None, 1])
def test_payload_type_mismatch_is_malformed(trust: TrustStore, type_: Any) -> None:
    payload = canonical({**make_request().to_json(), "type": type_})
    refused(
        check_request(sign_raw(payload, Request.NAMESPACE), trust),
        Reason.MALFORMED,
        f"type is {type_!r}, expected 'request'",
    )


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"requested_duration": 0}, "requested_duration must be positive"),
        ({"requested_duration": -60}, "requested_duration must be positive"),
        ({"reason": "  "}, "a reason is required"),
        ({"created_at": "yesterday"}, "malformed request created_at"),
        ({"created_at": "2026-02-30T00:00:00Z"}, "not a real time"),
    ],
)
def test_request_with_senseless_values_is_malformed(
    trust: TrustStore, changes: dict[str, Any], detail: str
) -> None:
    payload = canonical({**make_request().to_json(), **changes})
    refused(check_request(sign_raw(payload, Request.NAMESPACE), trust), Reason.MALFORMED, detail)


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"decision": "maybe"}, "decision 'maybe' is not approve or reject"),
        ({"approved_duration": 0}, "approved_duration must be positive"),
        ({"decision": "reject", "reason": ""}, "a rejection needs a reason"),
        ({"not_after": "2026-01-31T11:00:00Z"}, "not_after is before signed_at"),
        ({"signed_at": "noon"}, "malformed time"),
    ],
)
def test_approval_with_senseless_values_is_malformed(
    trust: TrustStore, signed_request: Signed, changes: dict[str, Any], detail: str
) -> None:
    approval = approve(signed_request).decode(Approval)
    payload = canonical({**approval.to_json(), **changes})
    signed = sign_raw(payload, Approval.NAMESPACE, APPROVER)
    refused(check_approval(signed, trust, signed_request), Reason.MALFORMED, detail)


def test_approval_against_malformed_request_is_malformed(trust: TrustStore) -> None:
    bad = sign_raw(b"[]", Request.NAMESPACE)
    signed = approve(make_request().sign(OPERATOR), request_digest=bad.digest)
    refused(check_approval(signed, trust, bad), Reason.MALFORMED, "malformed request")


def test_every_reason_is_tested() -> None:
    tested = {
        name.removeprefix("Reason.")
        for name in Path(__file__).read_text().split()
        if name.startswith("Reason.")
    }
    assert {r.name for r in Reason} <= {t.rstrip(",)") for t in tested}
