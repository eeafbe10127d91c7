"""A hostile relay between client and controller (DESIGN §1: the transport is untrusted).

The relay sees every signed request and approval on its way to a real `bgctl serve` (Unix
socket) and tries to change, replay, retarget, widen, lengthen or forge them. Each attempt is
refused with a specific reason in one line, nothing is minted (no request row for a refused
request; the target request stays `pending` with no plane steps for a refused approval), and
the refusal is in the audit log. At the end the log still verifies and the honest request,
attacked all along, is approved and goes Active.

Two layers are shown. Changing bytes in flight breaks the per-call signature (401). To prove
the object signatures hold on their own, the relay also "launders" a tampered object: it hands
it to an honest, enrolled client that posts it in a correctly signed call, as a compromised
portal would; the controller must still refuse it on the object's own signature.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from tests.helpers import run
from tests.relay import (
    Party,
    approved_ids,
    audit_entries,
    audit_size,
    audited_refusal,
    count,
    encode,
    error_of,
    request_row,
    send,
    steps,
)
from tests.servers import Appliance
from ulid import ULID

from bgtui.protocol import sshsig
from bgtui.protocol.canonical import canonical
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Approval, Request, Signed, new_approval, new_nonce
from bgtui.protocol.timefmt import now_utc, utc_text

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    appliance = Appliance(tmp_path_factory.mktemp("relay"))  # Unix socket
    try:
        yield appliance.setup().start()
    finally:
        appliance.close()


@pytest.fixture(scope="module")
def olive(app: Appliance) -> Party:
    return Party.of(app, "olive")


@pytest.fixture(scope="module")
def alice(app: Appliance) -> Party:
    return Party.of(app, "alice")


@pytest.fixture(scope="module")
def honest(olive: Party) -> tuple[Signed, Request]:
    """olive's honest request, pending all through the attacks; approved in the last test."""
    signed, req = olive.new_request(reason="honest request the relay keeps attacking")
    response = olive.submit(signed)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "pending"
    return signed, req


def tamper(signed: Signed, **changes: Any) -> Signed:
    """The relay's edit: new canonical payload bytes, the original signature kept."""
    payload = json.loads(signed.payload)
    payload.update(changes)
    return Signed(canonical(payload), signed.signature)


# -- requests ----------------------------------------------------------------------------


def request_mutations(alice: Party) -> dict[str, Any]:
    """A plausible hostile value for every field of a Request (and its type tag)."""
    later = utc_text(now_utc() + timedelta(seconds=30))
    return {
        "type": "approval",
        "id": str(ULID()),
        "controller_id": "other-ctl",
        "resource": "dark-service",
        "privilege": "admin",
        "credential_source": "controller",
        "network_path": "tailscale",
        "command": {"recipe": "r.toml", "sha256": "0" * 64, "text": "DROP ROLE x", "inputs": {}},
        "requested_duration": 4 * 3600,
        "reason": "routine maintenance",
        "operator_fingerprint": alice.fingerprint,
        "operator_key": alice.signer.public.openssh(),
        "session_key": PrivateKey.generate().public.openssh(),
        "created_at": later,
        "nonce": new_nonce(),
    }


REQUEST_FIELDS = ["type", *(f.name for f in dataclasses.fields(Request))]


def test_the_field_list_covers_every_request_field(alice: Party) -> None:
    assert set(request_mutations(alice)) == set(REQUEST_FIELDS)


def assert_request_refused(
    app: Appliance, response: Any, mark: int, reason: str, *ids: str, status: int = 422
) -> str:
    """Refused with `reason`, audited as request.refused, and no request row was written."""
    assert response.status_code == status, response.text
    message = error_of(response)
    assert f"({reason})" in message, message
    audited_refusal(app, mark, "request.refused", f"({reason})")
    for rid in ids:
        assert request_row(app, rid) is None, rid
    return message


@pytest.mark.parametrize("field", REQUEST_FIELDS)
def test_a_request_changed_in_flight_is_refused(
    app: Appliance, olive: Party, alice: Party, field: str
) -> None:
    signed, req = olive.new_request()
    value = request_mutations(alice)[field]
    assert json.loads(signed.payload)[field] != value
    forged = tamper(signed, **{field: value})
    before = count(app, "requests")

    # In flight: olive's call was signed over the original body.
    body = encode(signed.to_json())
    headers = olive.headers("POST", "/v1/requests", body)
    mark = audit_size(app)
    response = send(app, "POST", "/v1/requests", encode(forged.to_json()), headers)
    assert response.status_code == 401, response.text
    assert "Content-Digest does not match" in error_of(response)
    audited_refusal(app, mark, "api.unauthenticated", "POST /v1/requests", "Content-Digest")

    # Laundered through an honest client's signed call: the request's own signature fails.
    mark = audit_size(app)
    response = olive.submit(forged)
    assert_request_refused(app, response, mark, "bad-signature", req.id)
    if field == "id":
        assert request_row(app, value) is None
    assert count(app, "requests") == before


def test_a_request_for_another_controller_is_refused(app: Appliance, olive: Party) -> None:
    signed, req = olive.new_request(controller_id="other-ctl")  # genuinely signed by olive
    mark = audit_size(app)
    message = assert_request_refused(app, olive.submit(signed), mark, "other-controller", req.id)
    assert "other-ctl" in message


def test_a_request_signed_by_one_operator_cannot_claim_another(
    app: Appliance, olive: Party, alice: Party
) -> None:
    # olive signs a request that names alice's fingerprint as its operator.
    signed, req = olive.new_request(operator_fingerprint=alice.fingerprint)
    mark = audit_size(app)
    assert_request_refused(app, olive.submit(signed), mark, "fingerprint-mismatch", req.id)


def test_a_request_signed_by_a_non_operator_key_is_refused(
    app: Appliance, olive: Party, alice: Party
) -> None:
    # alice (an approver) signs a request in olive's name; olive's client posts it.
    _, req = olive.new_request()
    signed = req.sign(alice.signer)
    mark = audit_size(app)
    assert_request_refused(app, olive.submit(signed), mark, "wrong-role", req.id)


def test_a_request_signed_by_an_unpinned_key_is_refused(app: Appliance, olive: Party) -> None:
    _, req = olive.new_request()
    signed = req.sign(PrivateKey.generate("mallory"))
    mark = audit_size(app)
    assert_request_refused(app, olive.submit(signed), mark, "unknown-key", req.id)


def test_a_request_signature_under_another_namespace_is_refused(
    app: Appliance, olive: Party
) -> None:
    _, req = olive.new_request()
    data = req.canonical()
    signed = Signed(data, sshsig.sign(olive.signer, Approval.NAMESPACE, data))
    mark = audit_size(app)
    assert_request_refused(app, olive.submit(signed), mark, "wrong-namespace", req.id)


def test_a_request_in_non_canonical_bytes_is_refused(app: Appliance, olive: Party) -> None:
    _, req = olive.new_request()
    data = json.dumps(req.to_json(), indent=1).encode()  # signed, but not RFC 8785
    signed = Signed(data, sshsig.sign(olive.signer, Request.NAMESPACE, data))
    mark = audit_size(app)
    assert_request_refused(app, olive.submit(signed), mark, "malformed", req.id)


def test_a_replayed_request_is_refused(
    app: Appliance, olive: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    before = count(app, "requests")

    # The same signed request in a fresh call: the request is spent.
    body = encode(signed.to_json())
    headers = olive.headers("POST", "/v1/requests", body)
    mark = audit_size(app)
    response = send(app, "POST", "/v1/requests", body, headers)
    assert response.status_code == 422, response.text
    assert "replayed" in error_of(response)
    audited_refusal(app, mark, "request.refused", "replayed")

    # That exact call again: the call's own nonce is spent too.
    mark = audit_size(app)
    again = send(app, "POST", "/v1/requests", body, headers)
    assert again.status_code == 401, again.text
    assert "replayed call" in error_of(again)
    audited_refusal(app, mark, "api.unauthenticated", "replayed call")

    # A new request that reuses the id.
    same_id, _ = olive.new_request(id=req.id, reason="same id, new content")
    mark = audit_size(app)
    response = olive.submit(same_id)
    assert response.status_code == 422, response.text
    assert "replayed" in error_of(response)
    audited_refusal(app, mark, "request.refused", "replayed")

    assert count(app, "requests") == before
    assert olive.view(req.id)["state"] == "pending"


# -- approvals ---------------------------------------------------------------------------


def assert_nothing_minted(app: Appliance, party: Party, rid: str) -> None:
    view = party.view(rid)
    assert view["state"] == "pending", view
    assert view["planes"] == [] and steps(app, rid) == []
    assert view["approvals"] == [] and rid not in approved_ids(app)


def assert_approval_refused(
    app: Appliance, response: Any, mark: int, reason: str, rid: str, status: int = 422
) -> str:
    assert response.status_code == status, response.text
    message = error_of(response)
    assert f"({reason})" in message, message
    entry = audited_refusal(app, mark, "approval.refused", f"({reason})")
    assert entry["session"] == rid
    return message


def approval_mutations(approval: Approval) -> dict[str, Any]:
    return {
        "type": "request",
        "request_digest": "0" * 64,
        "request_id": str(ULID()),
        "controller_id": "other-ctl",
        "decision": "reject",
        "approved_duration": approval.approved_duration + 3600,
        "reason": "relay says so",
        "approver_fingerprint": "SHA256:" + "A" * 43,
        "signed_at": utc_text(now_utc() - timedelta(seconds=5)),
        "not_after": utc_text(now_utc() + timedelta(days=365)),
        "nonce": new_nonce(),
    }


APPROVAL_FIELDS = ["type", *(f.name for f in dataclasses.fields(Approval))]


@pytest.mark.parametrize("field", APPROVAL_FIELDS)
def test_an_approval_changed_in_flight_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request], field: str
) -> None:
    signed, req = honest
    approval = alice.approval(signed, req)
    value = approval_mutations(approval.decode(Approval))[field]
    assert json.loads(approval.payload)[field] != value
    forged = tamper(approval, **{field: value})
    path = f"/v1/requests/{req.id}/approvals"

    body = encode(approval.to_json())
    headers = alice.headers("POST", path, body)
    mark = audit_size(app)
    response = send(app, "POST", path, encode(forged.to_json()), headers)
    assert response.status_code == 401, response.text
    audited_refusal(app, mark, "api.unauthenticated", path, "Content-Digest")

    mark = audit_size(app)
    assert_approval_refused(app, alice.decide(req.id, forged), mark, "bad-signature", req.id)
    assert_nothing_minted(app, olive, req.id)


def test_an_approval_for_another_controller_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    approval = new_approval(signed, req, approver_fingerprint=alice.fingerprint, decision="approve")
    elsewhere = dataclasses.replace(approval, controller_id="other-ctl").sign(alice.signer)
    mark = audit_size(app)
    message = assert_approval_refused(
        app, alice.decide(req.id, elsewhere), mark, "other-controller", req.id
    )
    assert "other-ctl" in message
    assert_nothing_minted(app, olive, req.id)


def test_an_approval_longer_than_requested_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    longer = alice.approval(signed, req, duration=req.requested_duration + 60)
    mark = audit_size(app)
    assert_approval_refused(app, alice.decide(req.id, longer), mark, "duration-too-long", req.id)
    assert_nothing_minted(app, olive, req.id)


def test_an_approval_signed_by_an_operator_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    by_operator = olive.approval(signed, req)  # olive approves her own request...
    mark = audit_size(app)
    response = alice.decide(req.id, by_operator)  # ...and the relay has alice's client post it
    message = assert_approval_refused(app, response, mark, "wrong-role", req.id)
    assert "operator" in message
    assert_nothing_minted(app, olive, req.id)


def test_an_approval_signed_by_an_unpinned_key_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    mallory = Party(app, "mallory", PrivateKey.generate("mallory"))
    forged = mallory.approval(signed, req)
    mark = audit_size(app)
    assert_approval_refused(app, alice.decide(req.id, forged), mark, "unknown-key", req.id)
    assert_nothing_minted(app, olive, req.id)


def test_an_approval_naming_another_approver_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    arne = Party.of(app, "arne")
    claims_arne = alice.approval(signed, req, approver_fingerprint=arne.fingerprint)
    mark = audit_size(app)
    response = alice.decide(req.id, claims_arne)
    assert_approval_refused(app, response, mark, "fingerprint-mismatch", req.id)
    assert_nothing_minted(app, olive, req.id)


def test_an_expired_approval_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    stale = alice.approval(signed, req, now=now_utc() - timedelta(minutes=10), validity=1)
    mark = audit_size(app)
    message = assert_approval_refused(app, alice.decide(req.id, stale), mark, "expired", req.id)
    assert "valid until" in message
    assert_nothing_minted(app, olive, req.id)


def test_an_approval_presented_for_another_request_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    # The relay holds two of olive's requests: "use" (which alice approves) and "admin".
    # Presenting the approval of "use" for "admin" would widen the privilege.
    signed, req = honest
    admin_signed, admin = olive.new_request(privilege="admin", reason="also needs admin")
    assert olive.submit(admin_signed).status_code == 201
    approval = alice.approval(signed, req)
    mark = audit_size(app)
    response = alice.decide(admin.id, approval)
    assert_approval_refused(app, response, mark, "digest-mismatch", admin.id)
    assert_nothing_minted(app, olive, admin.id)
    assert_nothing_minted(app, olive, req.id)

    # Nor can the relay rewrite the "use" request to "admin" and keep the approval's digest:
    # the rewritten request is refused outright, so there is nothing to approve.
    widened = tamper(signed, privilege="admin", id=str(ULID()))
    mark = audit_size(app)
    response = olive.submit(widened)
    assert_request_refused(app, response, mark, "bad-signature", json.loads(widened.payload)["id"])


def test_an_approval_used_once_cannot_be_used_again(
    app: Appliance, olive: Party, alice: Party
) -> None:
    signed, req = olive.new_request(reason="first, to be approved")
    other_signed, other = olive.new_request(reason="second, to stay pending")
    assert olive.submit(signed).status_code == 201
    assert olive.submit(other_signed).status_code == 201
    approval = alice.approval(signed, req)
    accepted = alice.decide(req.id, approval)
    assert accepted.status_code == 200, accepted.text
    olive.wait_state(req.id, "active")
    made = steps(app, req.id)

    mark = audit_size(app)
    response = alice.decide(req.id, approval)
    assert_approval_refused(app, response, mark, "replayed", req.id)
    assert steps(app, req.id) == made  # nothing minted a second time
    assert olive.view(req.id)["state"] == "active"
    assert approved_ids(app).count(req.id) == 1

    # The used approval, and a fresh approval of the first request, at the second one's URL.
    for carried in (approval, alice.approval(signed, req)):
        mark = audit_size(app)
        response = alice.decide(other.id, carried)
        assert_approval_refused(app, response, mark, "digest-mismatch", other.id)
        assert_nothing_minted(app, olive, other.id)

    ended = olive.call("POST", f"/v1/requests/{req.id}/end")
    assert ended.status_code == 200, ended.text
    assert olive.wait_state(req.id, "ended")["ended_reason"] == "ended by operator"


# -- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_413_and_audited(app: Appliance, olive: Party, chunked: bool) -> None:
    signed, req = olive.new_request(reason="x" * (MAX_BODY + 1024))
    body = encode(signed.to_json())
    assert len(body) > MAX_BODY
    headers = olive.headers("POST", "/v1/requests", body)
    before = count(app, "requests")
    mark = audit_size(app)
    content: Any = (
        iter([body[i : i + 8192] for i in range(0, len(body), 8192)]) if chunked else body
    )
    with app.http() as client:
        response = client.post("/v1/requests", content=content, headers=headers)
    assert response.status_code == 413, response.text
    assert "larger than" in error_of(response)
    audited_refusal(app, mark, "api.refused", "POST /v1/requests", "larger than")
    assert count(app, "requests") == before
    assert request_row(app, req.id) is None


@pytest.mark.parametrize("target", ["request", "approval"])
def test_malformed_json_is_400_and_audited(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request], target: str
) -> None:
    caller, path = (
        (olive, "/v1/requests")
        if target == "request"
        else (alice, f"/v1/requests/{honest[1].id}/approvals")
    )
    before = count(app, "requests")
    mark = audit_size(app)
    response = caller.call("POST", path, b'{"payload": "{\\"type\\": ')
    assert response.status_code == 400, response.text
    assert "not JSON" in error_of(response)
    assert count(app, "requests") == before
    assert_nothing_minted(app, olive, honest[1].id)
    refusals = [
        e
        for e in audit_entries(app, mark)
        if e["event"].endswith("refused") and "not JSON" in e["data"].get("reason", "")
    ]
    assert len(refusals) == 1, audit_entries(app, mark)


@pytest.mark.parametrize(
    "body",
    [
        {"hello": "world"},
        [1, 2, 3],
        "just text",
        {"payload": 1, "signature": 2},
        {"payload": "{}", "signature": "-----BEGIN SSH SIGNATURE-----\nAAAA\n"},
    ],
    ids=["object", "array", "string", "wrong-types", "bad-armor"],
)
def test_json_that_is_not_a_signed_envelope_is_refused(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request], body: Any
) -> None:
    before = count(app, "requests")
    mark = audit_size(app)
    assert_request_refused(app, olive.call("POST", "/v1/requests", body), mark, "malformed")
    assert count(app, "requests") == before
    rid = honest[1].id
    mark = audit_size(app)
    response = alice.call("POST", f"/v1/requests/{rid}/approvals", body)
    assert_approval_refused(app, response, mark, "malformed", rid)
    assert_nothing_minted(app, olive, rid)


# -- after all of that -------------------------------------------------------------------


def test_after_the_attacks_the_log_verifies_and_the_honest_request_still_works(
    app: Appliance, olive: Party, alice: Party, honest: tuple[Signed, Request]
) -> None:
    signed, req = honest
    verified = run("bgctl", "--home", str(app.home), "audit", "verify")
    assert verified.returncode == 0, verified.stderr

    assert_nothing_minted(app, olive, req.id)
    response = alice.decide(req.id, alice.approval(signed, req, duration=300))
    assert response.status_code == 200, response.text
    view = olive.wait_state(req.id, "active")
    assert view["approved_duration"] == 300
    assert view["privilege"] == "use" and view["resource"] == "status-page"
    assert view["request"] == signed.to_json()  # the bytes olive signed, untouched
    assert [(p["plane"], p["state"]) for p in view["planes"]] == [
        ("network", "done"),
        ("credential", "done"),
    ]
    assert olive.call("POST", f"/v1/requests/{req.id}/end").status_code == 200
    olive.wait_state(req.id, "ended")
    verified = run("bgctl", "--home", str(app.home), "audit", "verify")
    assert verified.returncode == 0, verified.stderr
