"""The client's own checks, without a controller: ids and links, the approver's signature check
on a request, the event-stream parser, and opening sealed credentials."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import nacl.public
import pytest
from ulid import ULID

from bgtui.client import ControllerClient, _parse_sse, link_controller, request_id, verified_request
from bgtui.protocol.canonical import canonical
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Request, Signed, new_nonce
from bgtui.protocol.timefmt import now_utc, utc_text
from bgtui.sealing import credential_text, open_sealed, write_private
from bgtui.sessionview import outcome, state_line

RID = "01JD2V6XKQ8ZJ3M4N5P6Q7R8S9"  # fixed: parametrize ids must match across xdist workers


def make_request(operator: PrivateKey, **changes: object) -> Request:
    req = Request(
        id=RID,
        controller_id="acme-prod",
        resource="status-page",
        privilege="use",
        credential_source="out-of-band",
        network_path="direct",
        command=None,
        requested_duration=600,
        reason="INC-4711",
        operator_fingerprint=operator.public.fingerprint,
        operator_key=operator.public.openssh(),
        session_key=None,
        created_at=utc_text(now_utc()),
        nonce=new_nonce(),
    )
    return dataclasses.replace(req, **changes)


def view_of(signed: Signed, rid: str = RID) -> dict[str, object]:
    return {"id": rid, "request": signed.to_json(), "resource": "status-page", "state": "pending"}


# -- ids and links ---------------------------------------------------------------------------


def test_request_id_accepts_ids_and_both_link_forms() -> None:
    assert request_id(RID) == RID
    assert request_id(RID.lower()) == RID
    assert request_id(f"https://portal.example/acme/requests/{RID}/approve") == RID
    assert request_id(f"https://portal.example/acme/requests/{RID}/approve?from=slack") == RID
    assert request_id(f"bgtui://acme-prod/requests/{RID}/approve") == RID
    assert link_controller(f"bgtui://acme-prod/requests/{RID}/approve") == "acme-prod"
    assert link_controller(f"https://portal.example/acme/requests/{RID}/approve") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "../../v1/resources",
        f"https://x/requests/{RID}/reject",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV/x",
    ],
)
def test_request_id_refuses_anything_else(text: str) -> None:
    with pytest.raises(Refused):
        request_id(text)


@pytest.mark.parametrize("url", ["bgctl.sock", "unix:", "ftp://host", "https://host:1/prefix"])
def test_client_refuses_unusable_controller_urls(url: str) -> None:
    with pytest.raises(Refused, match="bad controller"):
        ControllerClient(url, PrivateKey.generate())


# -- the approver's check of the operator's signature ----------------------------------------


def test_verified_request_returns_the_signed_payload() -> None:
    operator = PrivateKey.generate()
    signed = make_request(operator).sign(operator)
    got_signed, req = verified_request(view_of(signed))
    assert got_signed == signed and req.reason == "INC-4711"


def test_verified_request_refuses_a_changed_payload() -> None:
    operator = PrivateKey.generate()
    signed = make_request(operator).sign(operator)
    widened = signed.payload.replace(b'"privilege":"use"', b'"privilege":"admin"')
    assert widened != signed.payload
    with pytest.raises(Refused, match="does not carry a valid signature"):
        verified_request(view_of(Signed(widened, signed.signature)))


def test_verified_request_refuses_a_request_signed_by_someone_else() -> None:
    operator, relay = PrivateKey.generate(), PrivateKey.generate()
    signed = make_request(operator).sign(relay)  # names the operator, signed by the relay
    with pytest.raises(Refused, match="not by the operator it names"):
        verified_request(view_of(signed))


def test_verified_request_refuses_a_request_under_another_id() -> None:
    operator = PrivateKey.generate()
    signed = make_request(operator).sign(operator)
    with pytest.raises(Refused, match="answered for"):
        verified_request(view_of(signed, rid=str(ULID())))


def test_verified_request_refuses_a_missing_signature() -> None:
    with pytest.raises(Refused):
        verified_request({"id": RID, "request": None})


# -- the event stream ------------------------------------------------------------------------


def test_sse_parser_yields_data_objects_and_skips_comments() -> None:
    lines = [
        ": connected",
        "",
        "event: request",
        'data: {"type": "request", "request": {"id": "A"}}',
        "",
        ": keepalive",
        "",
        "event: request",
        "data: not json",
        "",
        "data: [1, 2]",
        "",
        'data: {"type": "request",',
        'data:  "request": {"id": "B"}}',
        "",
    ]
    events = list(_parse_sse(iter(lines)))
    assert [e["request"]["id"] for e in events] == ["A", "B"]


# -- sealed credentials ----------------------------------------------------------------------


def seal(key: PrivateKey, secret: dict[str, str]) -> str:
    box = nacl.public.SealedBox(key.public.box_key()).encrypt(canonical(secret))
    return base64.b64encode(bytes(box)).decode()


def test_sealed_credential_opens_with_the_operator_key_only() -> None:
    operator, other = PrivateKey.generate(), PrivateKey.generate()
    sealed = seal(operator, {"dsn": "postgres://u:p@h/db", "kubeconfig": "a\nb"})
    assert open_sealed(sealed, operator) == {"dsn": "postgres://u:p@h/db", "kubeconfig": "a\nb"}
    with pytest.raises(Refused, match="sealed to another key"):
        open_sealed(sealed, other)
    with pytest.raises(Refused, match="base64"):
        open_sealed("not base64!", operator)
    assert (
        credential_text({"kubeconfig": "a\nb", "dsn": "x"}) == "dsn: x\nkubeconfig: |\n  a\n  b\n"
    )


def test_credential_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    write_private(path, json.dumps({"token": "t"}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(Refused, match="already exists"):
        write_private(path, "other")
    assert json.loads(path.read_text()) == {"token": "t"}


# -- one-line states -------------------------------------------------------------------------


def test_state_lines_say_why() -> None:
    rejected = {"state": "rejected", "ended_reason": "rejected: use the replica"}
    assert state_line(rejected) == "rejected: use the replica"
    assert outcome(rejected) == "rejected: use the replica"
    expired = {"state": "expired", "ended_reason": "request window passed"}
    assert outcome(expired) == "expired: request window passed"
    assert (
        state_line({"state": "pending", "approvals_needed": 2}) == "pending  2 approval(s) needed"
    )
    active = {"state": "active", "expires_at": "2030-01-01T00:10:00Z"}
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert state_line(active, now) == "active  until 2030-01-01T00:10:00Z (10m left)"
