"""Raw API calls for integration tests: sign as an enrolled identity, send as is or tampered.

`Party` signs calls (RFC 9421) and objects (SSHSIG) with an identity enrolled in an
`Appliance`; `send` puts exact bytes and headers on the wire, so a test can play the untrusted
relay between client and controller. The store readers open state.db read-only, to see what
the controller recorded (rows, plane steps, audit entries) without going through its API.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from tests.servers import Appliance
from ulid import ULID

from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.protocol.httpsig import sign_request
from bgtui.protocol.objects import Request, Signed, new_approval, new_nonce
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import now_utc, utc_text

CONTROLLER_ID = "acme-prod"
JSON_TYPE = {"content-type": "application/json"}


def encode(body: Any) -> bytes:
    """Bytes as a client would send them: bytes verbatim, anything else as JSON."""
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


def send(app: Appliance, method: str, path: str, content: bytes, headers: dict[str, str]) -> Any:
    """Puts exactly these bytes and headers on the wire (socket or TCP); returns the response."""
    with app.http() as client:
        response: httpx.Response = client.request(method, path, content=content, headers=headers)
    return response


@dataclass
class Party:
    """An enrolled identity that signs calls and objects, as `bgtui` would on its behalf."""

    app: Appliance
    name: str
    signer: Signer

    @classmethod
    def of(cls, app: Appliance, name: str) -> Party:
        identity = Identity.load(ClientHome(app.identities[name].home))
        return cls(app, name, identity.signer())

    @property
    def fingerprint(self) -> str:
        return self.signer.public.fingerprint

    def headers(
        self, method: str, path: str, body: bytes, *, now: float | None = None
    ) -> dict[str, str]:
        """The signature headers for one call (plus a JSON content type)."""
        return {**sign_request(self.signer, method, path, "", body, now=now), **JSON_TYPE}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One honest, freshly signed call."""
        data = encode(body)
        return send(self.app, method, path, data, self.headers(method, path, data))

    def new_request(self, **fields: Any) -> tuple[Signed, Request]:
        """A request for status-page signed by this (operator) key; `fields` override."""
        values: dict[str, Any] = {
            "id": str(ULID()),
            "controller_id": CONTROLLER_ID,
            "resource": "status-page",
            "privilege": "use",
            "credential_source": "out-of-band",
            "network_path": "direct",
            "command": None,
            "requested_duration": 600,
            "reason": "incident 42: status page is down",
            "operator_fingerprint": self.fingerprint,
            "operator_key": self.signer.public.openssh(),
            "session_key": None,
            "created_at": utc_text(now_utc()),
            "nonce": new_nonce(),
        }
        values.update(fields)
        req = Request(**values)
        return req.sign(self.signer), req

    def approval(self, signed: Signed, req: Request, **options: Any) -> Signed:
        """An approval (or, with decision="reject", a rejection) signed by this key."""
        options.setdefault("decision", "approve")
        options.setdefault("approver_fingerprint", self.fingerprint)
        return new_approval(signed, req, **options).sign(self.signer)

    def submit(self, signed: Signed) -> Any:
        return self.call("POST", "/v1/requests", signed.to_json())

    def decide(self, rid: str, approval: Signed) -> Any:
        return self.call("POST", f"/v1/requests/{rid}/approvals", approval.to_json())

    def view(self, rid: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/requests/{rid}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def wait_for(
        self, rid: str, done: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Polls the request's view until `done(view)`; fails with the last view at the deadline."""
        deadline = time.monotonic() + timeout
        view = self.view(rid)
        while not done(view):
            assert time.monotonic() < deadline, f"timed out waiting on {rid}: {view}"
            time.sleep(0.05)
            view = self.view(rid)
        return view

    def wait_state(self, rid: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_for(rid, lambda v: v["state"] in states, timeout)


def error_of(response: Any) -> str:
    """The refusal's reason: the body must be exactly {"error": "<one line>"}."""
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message and "\n" not in message, body
    return message


# -- the store, read-only ----------------------------------------------------------------


@contextmanager
def store(app: Appliance) -> Iterator[sqlite3.Connection]:
    """state.db opened read-only (works while `bgctl serve` runs and after it exits)."""
    uri = f"file:{app.home / 'state.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        yield db


def request_row(app: Appliance, rid: str) -> dict[str, Any] | None:
    with store(app) as db:
        cursor = db.execute("SELECT * FROM requests WHERE id = ?", [rid])
        values = cursor.fetchone()
        if values is None:
            return None
        return dict(zip([c[0] for c in cursor.description], values, strict=True))


def count(app: Appliance, table: str) -> int:
    assert table in {"requests", "approvals", "sessions", "plane_steps"}
    with store(app) as db:
        found: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        return found


def steps(app: Appliance, rid: str) -> list[dict[str, Any]]:
    """The plane steps (write-ahead intents and results) recorded for a session."""
    with store(app) as db:
        cursor = db.execute("SELECT * FROM plane_steps WHERE session_id = ? ORDER BY id", [rid])
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def audit_entries(app: Appliance, after: int = 0) -> list[dict[str, Any]]:
    """Audit entries with seq > `after`, decoded from their hashed bytes."""
    with store(app) as db:
        rows = db.execute(
            "SELECT entry FROM audit_entries WHERE seq > ? ORDER BY seq", [after]
        ).fetchall()
    return [json.loads(bytes(row[0])) for row in rows]


def audit_size(app: Appliance) -> int:
    with store(app) as db:
        size: int | None = db.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]
        return size or 0


def audited_refusal(app: Appliance, after: int, event: str, *words: str) -> dict[str, Any]:
    """The one audit entry after `after` for `event` whose reason holds every word."""
    found = [
        e
        for e in audit_entries(app, after)
        if e["event"] == event and all(w in (e.get("data") or {}).get("reason", "") for w in words)
    ]
    assert len(found) == 1, (event, words, audit_entries(app, after))
    return found[0]


def approved_ids(app: Appliance) -> list[str]:
    """The request ids that any approval (or rejection) has been recorded for."""
    with store(app) as db:
        return [row[0] for row in db.execute("SELECT request_id FROM approvals").fetchall()]
