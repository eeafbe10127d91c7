"""Property tests: change any signed field, or any byte, and verification refuses."""

from __future__ import annotations

import base64
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgtui.protocol import sshsig
from bgtui.protocol.canonical import canonical
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import KINDS, Approval, Payload, Request, Signed, new_approval
from bgtui.protocol.timefmt import MAX_DURATION, utc_text
from bgtui.protocol.trust import TrustStore
from bgtui.protocol.verify import Reason, Verdict, verify

CTL = "ctl-prod-1"
NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
OPERATOR = PrivateKey.generate("alice")
APPROVER = PrivateKey.generate("carol")
STRANGER = PrivateKey.generate("mallory")

TRUST = TrustStore(Path("allowed_signers"))  # in memory only; never saved
TRUST.add("alice", "operator", OPERATOR.public)
TRUST.add("carol", "approver", APPROVER.public)

REQUEST = Request(
    id="01JJ5Q0M6Z8Y4V3T2S1R0Q9P8N",
    controller_id=CTL,
    resource="db-prod",
    privilege="read-only",
    credential_source="recipe",
    network_path="bastion",
    command={"recipe": "pg-user", "sha256": "ab" * 32, "text": "create role", "inputs": {}},
    requested_duration=3600,
    reason="INC-42: orders table is locked",
    operator_fingerprint=OPERATOR.public.fingerprint,
    operator_key=OPERATOR.public.openssh(),
    session_key=PrivateKey.generate().public.openssh(),
    created_at=utc_text(NOW - timedelta(minutes=5)),
    nonce="5e" * 16,
)
SIGNED_REQUEST = REQUEST.sign(OPERATOR)
APPROVAL = new_approval(
    SIGNED_REQUEST,
    REQUEST,
    approver_fingerprint=APPROVER.public.fingerprint,
    decision="approve",
    duration=1800,
    reason="go ahead",
    now=NOW - timedelta(minutes=1),
)
SIGNED_APPROVAL = APPROVAL.sign(APPROVER)

PROPERTY = settings(max_examples=200, deadline=None)
PER_FIELD = settings(max_examples=40, deadline=None)

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(utc_text)
text = st.text(max_size=40)
optional_text = st.none() | text
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
json_leaf = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text
commands = st.none() | st.dictionaries(
    st.text(max_size=10),
    st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
    max_size=4,
)
other_types = st.sampled_from(sorted(KINDS)) | text

REQUEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": other_types,
    "id": text,
    "controller_id": text,
    "resource": text,
    "privilege": text,
    "credential_source": text,
    "network_path": text,
    "command": commands,
    "requested_duration": st.integers(1, MAX_DURATION),
    "reason": text.filter(str.strip),
    "operator_fingerprint": text,
    "operator_key": text,
    "session_key": optional_text,
    "created_at": times,
    "nonce": text,
}
APPROVAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": other_types,
    "request_digest": hex64,
    "request_id": text,
    "controller_id": text,
    "decision": st.sampled_from(["approve", "reject"]),
    "approved_duration": st.integers(0, MAX_DURATION),
    "reason": text,
    "approver_fingerprint": text,
    "signed_at": times,
    "not_after": times,
    "nonce": text,
}

CASES: dict[type[Payload], tuple[Payload, Signed, dict[str, st.SearchStrategy[Any]]]] = {
    Request: (REQUEST, SIGNED_REQUEST, REQUEST_FIELDS),
    Approval: (APPROVAL, SIGNED_APPROVAL, APPROVAL_FIELDS),
}


def check(signed: Any, kind: type[Payload]) -> Verdict:
    return verify(signed, kind, controller_id=CTL, trust=TRUST, request=SIGNED_REQUEST, now=NOW)


def test_the_untouched_objects_are_accepted() -> None:
    """The control case: without it every property below would pass vacuously."""
    for kind, (obj, signed, fields) in CASES.items():
        assert set(fields) == set(obj.to_json()), f"{kind.TYPE}: a field has no strategy"
        verdict = check(signed, kind)
        assert verdict.accepted is True, verdict
        assert verdict.obj == obj


FIELD_CASES = [(kind, name) for kind, (_, _, fields) in CASES.items() for name in fields]


@pytest.mark.parametrize(
    ("kind", "name"), FIELD_CASES, ids=[f"{k.TYPE}.{n}" for k, n in FIELD_CASES]
)
@given(data=st.data())
@PER_FIELD
def test_changing_any_signed_field_is_refused(
    kind: type[Payload], name: str, data: st.DataObject
) -> None:
    obj, signed, fields = CASES[kind]
    value = obj.to_json()
    new = data.draw(fields[name].filter(lambda v: v != value[name]), label=name)
    payload = canonical({**value, name: new})
    assert payload != signed.payload
    verdict = check(Signed(payload, signed.signature), kind)
    assert verdict.accepted is False
    assert verdict.reason is Reason.BAD_SIGNATURE, verdict


def _flip(data: bytes, index: int, mask: int) -> bytes:
    out = bytearray(data)
    out[index % len(out)] ^= mask
    return bytes(out)


byte_index = st.integers(0, 2**16)
masks = st.integers(1, 255)


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.TYPE)
@given(index=byte_index, mask=masks)
@PROPERTY
def test_flipping_any_payload_byte_is_refused(kind: type[Payload], index: int, mask: int) -> None:
    _, signed, _ = CASES[kind]
    verdict = check(Signed(_flip(signed.payload, index, mask), signed.signature), kind)
    assert verdict.accepted is False
    assert verdict.reason is Reason.BAD_SIGNATURE, verdict


def _blob(armored: str) -> bytes:
    lines = armored.strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def _armor(blob: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 70))
    return f"{sshsig.BEGIN}\n{body}\n{sshsig.END}\n"


def test_rearmoring_the_untouched_blob_is_accepted() -> None:
    for kind, (_, signed, _) in CASES.items():
        assert _armor(_blob(signed.signature)) == signed.signature
        assert check(Signed(signed.payload, _armor(_blob(signed.signature))), kind).accepted


SIGNATURE_REFUSALS = {Reason.MALFORMED, Reason.BAD_SIGNATURE, Reason.WRONG_NAMESPACE}


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.TYPE)
@given(index=byte_index, mask=masks)
@PROPERTY
def test_flipping_any_byte_of_the_signature_blob_is_refused(
    kind: type[Payload], index: int, mask: int
) -> None:
    _, signed, _ = CASES[kind]
    armored = _armor(_flip(_blob(signed.signature), index, mask))
    verdict = check(Signed(signed.payload, armored), kind)
    assert verdict.accepted is False
    assert verdict.reason in SIGNATURE_REFUSALS, verdict


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.TYPE)
@given(index=byte_index, mask=masks)
@PROPERTY
def test_flipping_any_byte_of_the_armored_text_is_refused(
    kind: type[Payload], index: int, mask: int
) -> None:
    _, signed, _ = CASES[kind]
    # latin-1 maps each byte to one character, so every flipped byte stays one character
    armored = _flip(signed.signature.encode("latin-1"), index, mask).decode("latin-1")
    verdict = check(Signed(signed.payload, armored), kind)
    assert verdict.accepted is False
    assert verdict.reason in SIGNATURE_REFUSALS, verdict


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.TYPE)
def test_flipping_every_byte_of_the_armored_text_once_is_refused(kind: type[Payload]) -> None:
    """Exhaustive over positions for the masks that keep base64 and whitespace plausible."""
    _, signed, _ = CASES[kind]
    raw = signed.signature.encode("latin-1")
    for index in range(len(raw)):
        for mask in (0x01, 0x02, 0x03, 0x20, 0x2A):
            armored = _flip(raw, index, mask).decode("latin-1")
            verdict = check(Signed(signed.payload, armored), kind)
            assert verdict.accepted is False, (index, mask)


@given(data=st.data())
@PROPERTY
def test_modified_request_resigned_by_unpinned_key_is_refused(data: st.DataObject) -> None:
    value = REQUEST.to_json()
    name = data.draw(st.sampled_from(sorted(set(REQUEST_FIELDS) - {"type"})), label="field")
    new = data.draw(REQUEST_FIELDS[name].filter(lambda v: v != value[name]), label=name)
    payload = canonical({**value, name: new})
    signed = Signed(payload, sshsig.sign(STRANGER, Request.NAMESPACE, payload))
    verdict = check(signed, Request)
    assert verdict.accepted is False
    assert verdict.reason is Reason.UNKNOWN_KEY, verdict
    assert STRANGER.public.fingerprint in verdict.detail


@given(data=st.data())
@PROPERTY
def test_modified_approval_resigned_by_operator_is_refused(data: st.DataObject) -> None:
    value = APPROVAL.to_json()
    name = data.draw(st.sampled_from(sorted(set(APPROVAL_FIELDS) - {"type"})), label="field")
    new = data.draw(APPROVAL_FIELDS[name].filter(lambda v: v != value[name]), label=name)
    payload = canonical({**value, name: new})
    signed = Signed(payload, sshsig.sign(OPERATOR, Approval.NAMESPACE, payload))
    verdict = check(signed, Approval)
    assert verdict.accepted is False
    assert verdict.reason is Reason.WRONG_ROLE, verdict
