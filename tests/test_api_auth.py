"""Authenticated calls against a real `bgctl serve` on loopback TCP (RFC 9421, Ed25519).

Unsigned, garbled, unpinned, stale, replayed or altered calls get 401; a pinned key of the
wrong role gets 403; every refusal is one line of JSON and an entry in the audit log.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from tests.helpers import run
from tests.relay import (
    JSON_TYPE,
    Party,
    approved_ids,
    audit_size,
    audited_refusal,
    count,
    encode,
    error_of,
    request_row,
    send,
)
from tests.servers import Appliance

from bgtui.protocol.httpsig import content_digest, sign_request
from bgtui.protocol.keys import PrivateKey


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    appliance = Appliance(tmp_path_factory.mktemp("auth"), listen="tcp")
    try:
        appliance.setup()
        appliance.enrol("otto", "operator")  # a second operator, to prove operators are fenced
        yield appliance.start()
    finally:
        appliance.close()


def party(app: Appliance, name: str) -> Party:
    return Party.of(app, name)


def refused_call(
    app: Appliance, status: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> str:
    response = send(app, method, path, body, headers)
    assert response.status_code == status, response.text
    return error_of(response)


def test_info_and_openapi_need_no_signature(app: Appliance) -> None:
    with app.http() as client:
        info = client.get("/v1/info")
        spec = client.get("/openapi.json")
    assert info.status_code == 200
    assert info.json()["controller_id"] == "acme-prod"
    assert info.json()["key"].startswith("ssh-ed25519 ")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for route in (
        "/v1/info",
        "/v1/resources",
        "/v1/requests",
        "/v1/requests/{rid}",
        "/v1/requests/{rid}/approvals",
        "/v1/requests/{rid}/withdraw",
        "/v1/requests/{rid}/end",
        "/v1/requests/{rid}/revoke",
        "/v1/requests/{rid}/credentials",
        "/v1/events",
    ):
        assert route in paths, route
    assert "post" in paths["/v1/requests"] and "get" in paths["/v1/requests"]
    assert "post" in paths["/v1/requests/{rid}/approvals"]


def test_a_signed_call_by_a_pinned_key_is_served(app: Appliance) -> None:
    response = party(app, "olive").call("GET", "/v1/resources")
    assert response.status_code == 200, response.text
    assert {r["name"] for r in response.json()} >= {"status-page", "dark-service"}


def test_unsigned_call_is_401_and_audited(app: Appliance) -> None:
    mark = audit_size(app)
    message = refused_call(app, 401, "GET", "/v1/resources", b"", {})
    assert "unsigned call" in message
    audited_refusal(app, mark, "api.unauthenticated", "GET /v1/resources", "unsigned call")


def test_garbage_signature_is_401_and_audited(app: Appliance) -> None:
    olive = party(app, "olive")
    headers = olive.headers("GET", "/v1/resources", b"")
    mark = audit_size(app)
    garbled = {**headers, "Signature": "sig1=:not-a-signature:"}
    assert "malformed Signature" in refused_call(app, 401, "GET", "/v1/resources", b"", garbled)
    audited_refusal(app, mark, "api.unauthenticated", "malformed Signature")

    # Well-formed, but 64 bytes that are not olive's signature over this call.
    forged = base64.b64encode(bytes(64)).decode()
    headers = olive.headers("GET", "/v1/resources", b"")
    wrong = {**headers, "Signature": f"sig1=:{forged}:"}
    assert "bad signature" in refused_call(app, 401, "GET", "/v1/resources", b"", wrong)
    audited_refusal(app, mark, "api.unauthenticated", "bad signature")


def test_unpinned_key_is_401_and_audited(app: Appliance) -> None:
    stranger = PrivateKey.generate("mallory")
    headers = {**sign_request(stranger, "GET", "/v1/resources", "", b""), **JSON_TYPE}
    mark = audit_size(app)
    message = refused_call(app, 401, "GET", "/v1/resources", b"", headers)
    assert "not pinned" in message and stranger.public.fingerprint in message
    audited_refusal(app, mark, "api.unauthenticated", "not pinned", stranger.public.fingerprint)


def test_stale_signature_is_401_and_audited(app: Appliance) -> None:
    olive = party(app, "olive")
    headers = olive.headers("GET", "/v1/resources", b"", now=time.time() - 300)
    mark = audit_size(app)
    assert "stale signature" in refused_call(app, 401, "GET", "/v1/resources", b"", headers)
    audited_refusal(app, mark, "api.unauthenticated", "stale signature")


def test_the_same_signed_call_twice_is_a_replay(app: Appliance) -> None:
    olive = party(app, "olive")
    headers = olive.headers("GET", "/v1/resources", b"")
    first = send(app, "GET", "/v1/resources", b"", headers)
    assert first.status_code == 200, first.text
    mark = audit_size(app)
    assert "replayed call" in refused_call(app, 401, "GET", "/v1/resources", b"", headers)
    audited_refusal(app, mark, "api.unauthenticated", "replayed call")


def test_body_changed_after_signing_is_401(app: Appliance) -> None:
    olive = party(app, "olive")
    signed, req = olive.new_request()
    body = encode(signed.to_json())
    headers = olive.headers("POST", "/v1/requests", body)
    tampered = body.replace(b"status-page", b"dark-service")
    assert tampered != body
    before = count(app, "requests")
    mark = audit_size(app)
    message = refused_call(app, 401, "POST", "/v1/requests", tampered, headers)
    assert "Content-Digest does not match" in message
    audited_refusal(app, mark, "api.unauthenticated", "Content-Digest")

    # A relay that also recomputes Content-Digest still can't make olive's signature cover it.
    redigested = {**headers, "Content-Digest": content_digest(tampered)}
    assert "bad signature" in refused_call(app, 401, "POST", "/v1/requests", tampered, redigested)
    audited_refusal(app, mark, "api.unauthenticated", "bad signature", "POST /v1/requests")
    assert count(app, "requests") == before
    assert request_row(app, req.id) is None


def test_path_changed_after_signing_is_401(app: Appliance) -> None:
    olive = party(app, "olive")
    headers = olive.headers("GET", "/v1/requests", b"")
    mark = audit_size(app)
    assert "bad signature" in refused_call(app, 401, "GET", "/v1/resources", b"", headers)
    audited_refusal(app, mark, "api.unauthenticated", "GET /v1/resources", "bad signature")


def test_method_changed_after_signing_is_401(app: Appliance) -> None:
    olive = party(app, "olive")
    signed, req = olive.new_request()
    body = encode(signed.to_json())
    headers = olive.headers("PUT", "/v1/requests", body)
    mark = audit_size(app)
    # Signed for PUT, relayed as POST: the signature covers @method.
    assert "bad signature" in refused_call(app, 401, "POST", "/v1/requests", body, headers)
    audited_refusal(app, mark, "api.unauthenticated", "POST /v1/requests", "bad signature")
    assert request_row(app, req.id) is None


def submitted(app: Appliance, operator: str = "olive") -> str:
    """A fresh pending request by `operator`; returns its id."""
    signed, req = party(app, operator).new_request()
    response = party(app, operator).submit(signed)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "pending"
    return req.id


def test_an_auditor_posting_an_approval_is_403_and_audited(app: Appliance) -> None:
    olive, alice, audrey = party(app, "olive"), party(app, "alice"), party(app, "audrey")
    signed, req = olive.new_request()
    assert olive.submit(signed).status_code == 201
    approval = alice.approval(signed, req)  # a valid approval, carried by the wrong caller
    mark = audit_size(app)
    response = audrey.decide(req.id, approval)
    assert response.status_code == 403, response.text
    assert "only approvers may decide" in error_of(response)
    entry = audited_refusal(app, mark, "approval.refused", "only approvers")
    assert entry["actor"] == "audrey" and entry["session"] == req.id
    assert audrey.view(req.id)["state"] == "pending"
    assert req.id not in approved_ids(app)


def test_an_operator_posting_an_approval_is_403_and_audited(app: Appliance) -> None:
    olive, alice = party(app, "olive"), party(app, "alice")
    signed, req = olive.new_request()
    assert olive.submit(signed).status_code == 201
    approval = alice.approval(signed, req)
    mark = audit_size(app)
    response = olive.decide(req.id, approval)
    assert response.status_code == 403, response.text
    assert "only approvers may decide" in error_of(response)
    entry = audited_refusal(app, mark, "approval.refused", "only approvers")
    assert entry["actor"] == "olive"
    assert olive.view(req.id)["state"] == "pending"
    assert req.id not in approved_ids(app)


def test_an_approver_submitting_a_request_is_403_and_audited(app: Appliance) -> None:
    olive, alice = party(app, "olive"), party(app, "alice")
    signed, req = olive.new_request()
    mark = audit_size(app)
    response = alice.submit(signed)  # olive's valid request, carried by an approver
    assert response.status_code == 403, response.text
    assert "only operators may submit" in error_of(response)
    entry = audited_refusal(app, mark, "request.refused", "only operators")
    assert entry["actor"] == "alice"
    assert request_row(app, req.id) is None


def test_operators_see_only_their_own_requests(app: Appliance) -> None:
    olive, otto = party(app, "olive"), party(app, "otto")
    mine = submitted(app, "olive")
    theirs = submitted(app, "otto")

    response = otto.call("GET", f"/v1/requests/{mine}")
    assert response.status_code == 404, response.text
    assert mine in error_of(response)
    listed = otto.call("GET", "/v1/requests")
    assert listed.status_code == 200
    ids = {r["id"] for r in listed.json()}
    assert theirs in ids and mine not in ids
    assert {r["operator_fingerprint"] for r in listed.json()} == {otto.fingerprint}

    # otto can't act on olive's request either (withdraw answers as if it did not exist).
    withdraw = otto.call("POST", f"/v1/requests/{mine}/withdraw")
    assert withdraw.status_code == 404, withdraw.text
    assert olive.view(mine)["state"] == "pending"

    listed = olive.call("GET", "/v1/requests")
    ids = {r["id"] for r in listed.json()}
    assert mine in ids and theirs not in ids


@pytest.mark.parametrize("name", ["alice", "audrey"])
def test_approvers_and_auditors_see_every_request(app: Appliance, name: str) -> None:
    mine = submitted(app, "olive")
    theirs = submitted(app, "otto")
    viewer = party(app, name)
    listed = viewer.call("GET", "/v1/requests")
    assert listed.status_code == 200, listed.text
    ids = {r["id"] for r in listed.json()}
    assert {mine, theirs} <= ids
    for rid in (mine, theirs):
        assert viewer.view(rid)["id"] == rid


def test_an_auditor_cannot_revoke_or_withdraw(app: Appliance) -> None:
    rid = submitted(app, "olive")
    audrey = party(app, "audrey")
    mark = audit_size(app)
    revoke = audrey.call("POST", f"/v1/requests/{rid}/revoke")
    assert revoke.status_code == 403, revoke.text
    assert "only approvers may revoke" in error_of(revoke)
    audited_refusal(app, mark, "session.revoke_refused", "only approvers")
    withdraw = audrey.call("POST", f"/v1/requests/{rid}/withdraw")
    assert withdraw.status_code == 403, withdraw.text
    audited_refusal(app, mark, "request.withdraw_refused", "only the requesting operator")
    assert party(app, "olive").view(rid)["state"] == "pending"


def test_every_refusal_leaves_the_audit_log_intact(app: Appliance) -> None:
    result = run("bgctl", "--home", str(app.home), "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout
