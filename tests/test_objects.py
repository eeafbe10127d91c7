"""Signed objects, canonical bytes, digests, durations, the trust store and real ssh-keygen."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgtui.protocol import sshsig
from bgtui.protocol.canonical import MAX_OBJECT, canonical, parse_canonical
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import (
    KINDS,
    Approval,
    Checkpoint,
    Payload,
    Request,
    Signed,
    TeardownReceipt,
    new_approval,
)
from bgtui.protocol.timefmt import (
    MAX_DURATION,
    format_duration,
    parse_duration,
    parse_utc,
    utc_text,
)
from bgtui.protocol.trust import HEADER, TrustStore

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
OPERATOR = PrivateKey.generate("alice")
APPROVER = PrivateKey.generate("carol")
CONTROLLER = PrivateKey.generate("controller")
SESSION = PrivateKey.generate()


def make_request(**changes: Any) -> Request:
    fields: dict[str, Any] = {
        "id": "01JJ5Q0M6Z8Y4V3T2S1R0Q9P8N",
        "controller_id": "ctl-1",
        "resource": "db-prod",
        "privilege": "read-only",
        "credential_source": "recipe",
        "network_path": "bastion",
        "command": {"recipe": "pg-user", "sha256": "00" * 32, "text": "echo é", "inputs": {}},
        "requested_duration": 5400,
        "reason": "INC-42 — orders locked",
        "operator_fingerprint": OPERATOR.public.fingerprint,
        "operator_key": OPERATOR.public.openssh(),
        "session_key": SESSION.public.openssh(),
        "created_at": utc_text(NOW),
        "nonce": "0f" * 16,
    }
    fields.update(changes)
    return Request(**fields)


def make_approval(signed: Signed, **changes: Any) -> Approval:
    approval = new_approval(
        signed,
        signed.decode(Request),
        approver_fingerprint=APPROVER.public.fingerprint,
        decision="approve",
        now=NOW,
    )
    return dataclasses.replace(approval, **changes)


def all_objects() -> list[Payload]:
    signed = make_request().sign(OPERATOR)
    return [
        make_request(),
        make_approval(signed),
        make_approval(signed, decision="reject", approved_duration=0, reason="freeze"),
        Checkpoint(controller_id="ctl-1", size=3, head="ff" * 32, signed_at=utc_text(NOW)),
        TeardownReceipt(
            controller_id="ctl-1",
            session_id="s-1",
            request_id="01JJ5Q0M6Z8Y4V3T2S1R0Q9P8N",
            ended_reason="revoked",
            artifacts=[{"plane": "network", "kind": "route", "name": "r1", "how": "deleted"}],
            completed_at=utc_text(NOW),
        ),
    ]


# --- objects -----------------------------------------------------------------------------


def test_kinds_and_namespaces_are_as_designed() -> None:
    assert {k: v.NAMESPACE for k, v in KINDS.items()} == {
        "request": "bgtui-request@v1",
        "approval": "bgtui-approval@v1",
        "checkpoint": "bgtui-checkpoint@v1",
        "receipt": "bgtui-receipt@v1",
    }


def test_fields_are_as_design_section_4_lists_them() -> None:
    def names(cls: type[Payload]) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    assert names(Request) == [
        "id",
        "controller_id",
        "resource",
        "privilege",
        "credential_source",
        "network_path",
        "command",
        "requested_duration",
        "reason",
        "operator_fingerprint",
        "operator_key",
        "session_key",
        "created_at",
        "nonce",
    ]
    assert names(Approval) == [
        "request_digest",
        "request_id",
        "controller_id",
        "decision",
        "approved_duration",
        "reason",
        "approver_fingerprint",
        "signed_at",
        "not_after",
        "nonce",
    ]
    assert names(Checkpoint) == ["controller_id", "size", "head", "signed_at"]
    assert names(TeardownReceipt) == [
        "controller_id",
        "session_id",
        "request_id",
        "ended_reason",
        "artifacts",
        "completed_at",
    ]


@pytest.mark.parametrize("obj", all_objects(), ids=lambda o: type(o).__name__)
def test_json_round_trip(obj: Payload) -> None:
    value = obj.to_json()
    assert value["type"] == obj.TYPE
    again = type(obj).from_json(json.loads(json.dumps(value)))
    assert again == obj
    assert again.canonical() == obj.canonical()


@pytest.mark.parametrize("obj", all_objects(), ids=lambda o: type(o).__name__)
def test_sign_decode_round_trip(obj: Payload) -> None:
    signed = obj.sign(CONTROLLER)
    assert signed.payload == obj.canonical()
    assert signed.decode(type(obj)) == obj
    assert sshsig.verify(signed.signature, signed.payload, obj.NAMESPACE) == CONTROLLER.public
    wire = Signed.from_json(json.loads(json.dumps(signed.to_json())))
    assert wire == signed


@pytest.mark.parametrize("obj", all_objects(), ids=lambda o: type(o).__name__)
def test_decode_as_another_kind_is_refused(obj: Payload) -> None:
    signed = obj.sign(CONTROLLER)
    for kind in KINDS.values():
        if kind is not type(obj):
            with pytest.raises(Refused, match=f"type is '{obj.TYPE}', expected '{kind.TYPE}'"):
                signed.decode(kind)


def test_canonical_bytes_are_sorted_and_compact() -> None:
    checkpoint = Checkpoint(controller_id="c", size=3, head="ab", signed_at="2026-01-31T12:00:00Z")
    assert checkpoint.canonical() == (
        b'{"controller_id":"c","head":"ab","signed_at":"2026-01-31T12:00:00Z",'
        b'"size":3,"type":"checkpoint"}'
    )
    request = make_request()
    assert request.canonical() == json.dumps(
        request.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert "é".encode() in request.canonical()  # UTF-8, not \\u escapes


def test_canonical_follows_rfc8785() -> None:
    # RFC 8785 §3.2.3: keys sort by UTF-16 code units, so U+1F600 sorts before U+FB33
    value = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7}
    keys = list(json.loads(canonical(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert canonical({"b": [True, None, -0, 10**15], "a": '\u2028\n"\\'}) == (
        b'{"a":"\xe2\x80\xa8\\n\\"\\\\","b":[true,null,0,1000000000000000]}'
    )


def test_parse_canonical_accepts_only_canonical_bytes() -> None:
    value = make_request().to_json()
    assert parse_canonical(canonical(value)) == value
    assert parse_canonical(canonical(value).decode()) == value
    for bad in (
        json.dumps(value).encode(),
        canonical(value) + b"\n",
        b" " + canonical(value),
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),  # \u escapes
    ):
        with pytest.raises(Refused, match="not in canonical form"):
            parse_canonical(bad)
    with pytest.raises(Refused, match="not JSON"):
        parse_canonical(b"{")
    with pytest.raises(Refused, match="not a JSON object"):
        parse_canonical(b"[1]")
    with pytest.raises(Refused, match=f"larger than {MAX_OBJECT} bytes"):
        parse_canonical(canonical({"x": "y" * MAX_OBJECT}))


def test_digests_are_stable() -> None:
    checkpoint = Checkpoint(controller_id="c", size=3, head="ab", signed_at="2026-01-31T12:00:00Z")
    expected = hashlib.sha256(checkpoint.canonical()).hexdigest()
    assert checkpoint.digest() == expected
    assert (
        expected == "0fc702e81e464ebfd3307e61f26b8ccfaf09a50ddffcc7921eb4c3f8de46dead"
    )  # fixed bytes, fixed digest: a format change shows up here
    request = make_request()
    by_operator = request.sign(OPERATOR)
    by_other = request.sign(APPROVER)
    assert by_operator.digest == by_other.digest == request.digest()
    assert make_request().digest() == request.digest()
    assert make_request(nonce="1f" * 16).digest() != request.digest()


def test_new_approval_fills_fields_from_the_request() -> None:
    signed = make_request().sign(OPERATOR)
    req = signed.decode(Request)
    approval = new_approval(
        signed, req, approver_fingerprint="SHA256:x", decision="approve", now=NOW, validity=300
    )
    assert approval.request_digest == signed.digest
    assert (approval.request_id, approval.controller_id) == (req.id, req.controller_id)
    assert approval.approved_duration == 5400
    assert approval.signed_at == "2026-01-31T12:00:00Z"
    assert approval.not_after == "2026-01-31T12:05:00Z"
    assert len(approval.nonce) == 32
    shorter = new_approval(signed, req, approver_fingerprint="f", decision="approve", duration=60)
    assert shorter.approved_duration == 60
    rejected = new_approval(
        signed, req, approver_fingerprint="f", decision="reject", duration=60, reason="no"
    )
    assert rejected.approved_duration == 0
    assert new_approval(signed, req, approver_fingerprint="f", decision="approve").nonce != (
        approval.nonce
    )


# --- durations and times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1d2h3m4s", 93784),
        (" 15m ", 900),
        ("366d", MAX_DURATION),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "  ", "15", "m", "1.5h", "-5m", "0s", "0h0m", "1m1h", "15 m", "1H", "367d", "2x", "h1"],
)
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(Refused, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "1m30s"), (900, "15m"), (7200, "2h"), (5400, "1h30m"), (86400, "1d"), (0, "0s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(1, MAX_DURATION))
@settings(max_examples=200, deadline=None)
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_utc_text_round_trip() -> None:
    moment = datetime(2026, 1, 31, 13, 0, 0, tzinfo=UTC)
    assert utc_text(moment) == "2026-01-31T13:00:00Z"
    assert utc_text(moment.astimezone(timezone(timedelta(hours=-5)))) == "2026-01-31T13:00:00Z"
    assert parse_utc("2026-01-31T13:00:00Z") == moment
    for bad in ("2026-01-31 13:00:00", "2026-01-31T13:00:00+00:00", "2026-13-01T00:00:00Z", 5):
        with pytest.raises(Refused, match="malformed time"):
            parse_utc(bad)  # type: ignore[arg-type]


# --- trust store ---------------------------------------------------------------------------


def test_trust_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "allowed_signers"
    store = TrustStore(path)
    alice = store.add("alice", "operator", OPERATOR.public)
    store.add("carol@customer", "approver", APPROVER.public)
    store.add("audit.1", "auditor", PrivateKey.generate().public)
    store.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    text = path.read_text()
    assert text.startswith(HEADER)
    assert (
        f'alice namespaces="bgtui-request@v1,bgtui-api@v1" '
        f"{OPERATOR.public.openssh('')} role=operator\n"
    ) in text

    loaded = TrustStore.load(path)
    assert [(e.name, e.role, e.key) for e in loaded.entries] == [
        (e.name, e.role, e.key) for e in store.entries
    ]
    assert loaded.find(OPERATOR.public) == alice
    assert loaded.by_fingerprint(APPROVER.public.fingerprint) is not None
    assert loaded.find(CONTROLLER.public) is None

    removed = loaded.remove("carol@customer")
    assert removed.key == APPROVER.public
    loaded.save()
    again = TrustStore.load(path)
    assert [e.name for e in again.entries] == ["alice", "audit.1"]
    assert again.find(APPROVER.public) is None
    with pytest.raises(Refused, match="no pinned key named 'carol@customer'"):
        again.remove("carol@customer")


def test_trust_store_refuses_duplicates_and_bad_input(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "allowed_signers")
    store.add("alice", "operator", OPERATOR.public)
    with pytest.raises(Refused, match="name 'alice' is already pinned"):
        store.add("alice", "approver", APPROVER.public)
    with pytest.raises(
        Refused, match=re.escape(f"key {OPERATOR.public.fingerprint} is already pinned as 'alice'")
    ):
        store.add("alice2", "approver", OPERATOR.public)
    with pytest.raises(Refused, match="unknown role 'admin'"):
        store.add("bob", "admin", APPROVER.public)
    for name in ("*", "a,b", "", "-x", "a b", "x" * 65):
        with pytest.raises(Refused, match="bad name"):
            store.add(name, "approver", APPROVER.public)
    assert [e.name for e in store.entries] == ["alice"]


def _write(path: Path, *lines: str) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def _line(name: str, role: str, namespaces: str, key: PrivateKey) -> str:
    return f'{name} namespaces="{namespaces}" {key.public.openssh("")} role={role}'


def test_trust_file_with_unknown_role_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "allowed_signers",
        _line("alice", "operator", "bgtui-request@v1,bgtui-api@v1", OPERATOR),
        "",
        _line("carol", "admin", "bgtui-approval@v1,bgtui-api@v1", APPROVER),
    )
    header_lines = HEADER.count("\n")
    with pytest.raises(Refused, match=rf"{path}:{header_lines + 3}: unknown role 'admin'"):
        TrustStore.load(path)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [
                _line("alice", "operator", "bgtui-request@v1,bgtui-api@v1", OPERATOR),
                _line("alice", "approver", "bgtui-approval@v1,bgtui-api@v1", APPROVER),
            ],
            "pinned twice",
        ),
        (
            [
                _line("alice", "operator", "bgtui-request@v1,bgtui-api@v1", OPERATOR),
                _line("alice2", "approver", "bgtui-approval@v1,bgtui-api@v1", OPERATOR),
            ],
            "pinned twice",
        ),
        (
            [_line("alice", "operator", "bgtui-approval@v1,bgtui-api@v1", OPERATOR)],
            'role=operator needs namespaces="bgtui-request@v1,bgtui-api@v1"',
        ),
        (
            [_line("*", "operator", "bgtui-request@v1,bgtui-api@v1", OPERATOR)],
            "bad name '\\*'",
        ),
        (["alice ssh-ed25519 AAAA role=operator"], "not a trust entry"),
        (
            ['alice namespaces="bgtui-request@v1,bgtui-api@v1" ssh-ed25519 AAAA role=operator'],
            "malformed public key: truncated",
        ),
    ],
)
def test_bad_trust_file_lines_are_refused(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path / "allowed_signers", *lines)
    with pytest.raises(Refused, match=rf"{path}:{HEADER.count(chr(10)) + len(lines)}: "):
        TrustStore.load(path)
    with pytest.raises(Refused, match=message):
        TrustStore.load(path)


def test_missing_trust_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Refused, match="trust store not found"):
        TrustStore.load(tmp_path / "nope")


# --- interop with stock ssh-keygen -----------------------------------------------------------

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen (OpenSSH) is not installed"
)


def _ssh_verify(trust: Path, name: str, namespace: str, data: Path, sig: Path) -> int:
    with data.open("rb") as stdin:
        done = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(trust), "-I", name, "-n", namespace,
             "-s", str(sig)],
            stdin=stdin,
            capture_output=True,
            timeout=30,
            check=False,
        )  # fmt: skip
    return done.returncode


@needs_ssh_keygen
def test_ssh_keygen_accepts_trust_file_and_enforces_roles(tmp_path: Path) -> None:
    trust = tmp_path / "allowed_signers"
    store = TrustStore(trust)
    store.add("alice", "operator", OPERATOR.public)
    store.add("carol", "approver", APPROVER.public)
    store.save()

    signed = make_request().sign(OPERATOR)
    data = tmp_path / "request.json"
    data.write_bytes(signed.payload)
    sig = tmp_path / "request.sig"
    sig.write_text(signed.signature)
    assert _ssh_verify(trust, "alice", "bgtui-request@v1", data, sig) == 0
    assert _ssh_verify(trust, "carol", "bgtui-request@v1", data, sig) != 0  # not carol's key

    # the operator's key signing under the approval namespace: stock tools refuse it too
    as_approval = tmp_path / "approval.sig"
    as_approval.write_text(sshsig.sign(OPERATOR, "bgtui-approval@v1", signed.payload))
    assert _ssh_verify(trust, "alice", "bgtui-approval@v1", data, as_approval) != 0

    approval = make_approval(signed).sign(APPROVER)
    adata, asig = tmp_path / "a.json", tmp_path / "a.sig"
    adata.write_bytes(approval.payload)
    asig.write_text(approval.signature)
    assert _ssh_verify(trust, "carol", "bgtui-approval@v1", adata, asig) == 0
    assert _ssh_verify(trust, "carol", "bgtui-request@v1", adata, asig) != 0

    # one changed byte: ssh-keygen refuses it as well
    data.write_bytes(signed.payload.replace(b"read-only", b"read-writ"))
    assert _ssh_verify(trust, "alice", "bgtui-request@v1", data, sig) != 0


@needs_ssh_keygen
def test_signature_made_by_ssh_keygen_is_read_in_process(tmp_path: Path) -> None:
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(OPERATOR.openssh())
    key_file.chmod(0o600)
    payload = make_request().canonical()
    data = tmp_path / "request.json"
    data.write_bytes(payload)
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key_file), "-n", "bgtui-request@v1", str(data)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    armored = (tmp_path / "request.json.sig").read_text()
    assert armored == sshsig.sign(OPERATOR, "bgtui-request@v1", payload)  # same bytes exactly
    assert sshsig.verify(armored, payload, "bgtui-request@v1") == OPERATOR.public
    assert Signed(payload, armored).decode(Request) == make_request()
