"""Whole break-glass sessions driven with the real `bgtui` CLI against a real `bgctl serve`.

Each test runs its own controller process (tests/servers.py) with enrolled identities olive
(operator), alice and arne (approvers) and audrey (auditor), and drives the lifecycle of DESIGN
§3 the way a user would: separate `bgtui` processes, state read back with `show --json`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers import ok, poll, refused, run, show, state_is
from tests.servers import Appliance, appliance, free_port

View = dict[str, Any]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Appliance]:
    yield from appliance(tmp_path)


def submit(app: Appliance, resource: str = "status-page", *extra: str, who: str = "olive") -> View:
    args = ["request", resource, "--reason", "INC-4711 checkout errors", "--json"]
    if "--duration" not in extra:
        args += ["--duration", "10m"]
    if resource == "status-page" and "--privilege" not in extra:
        args += ["--privilege", "use"]
    view: View = json.loads(ok(app.bgtui(who, *args, *extra)))
    return view


def approve(app: Appliance, rid: str, *extra: str, who: str = "alice") -> str:
    return ok(app.bgtui(who, "approve", rid, "--yes", *extra))


def spawn(app: Appliance, who: str, *args: str) -> subprocess.Popen[str]:
    """A `bgtui` process left running (for --wait), reading its output as it comes."""
    return subprocess.Popen(
        [sys.executable, "-m", "bgtui.cli", *args],
        env={**os.environ, **app.env(who)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line_id(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    return line.split()[0]


def audit_events(app: Appliance, event: str) -> list[str]:
    db = sqlite3.connect(f"file:{app.home / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT entry FROM audit_entries WHERE event = ?", (event,)).fetchall()
    finally:
        db.close()
    return [bytes(row[0]).decode() for row in rows]


# -- the whole session ----------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["unix", "tcp"])
def test_request_wait_approve_end_leaves_receipt_and_intact_audit(
    tmp_path: Path, listen: str
) -> None:
    for app in appliance(tmp_path, listen=listen):
        waiting = spawn(
            app, "olive", "request", "status-page", "--privilege", "use",
            "--duration", "10m", "--reason", "INC-4711", "--wait",
        )  # fmt: skip
        rid = first_line_id(waiting)
        assert show(app, rid)["state"] == "pending"
        approve(app, rid)
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, err
        assert out.splitlines()[-1].startswith("active  until "), out

        active = show(app, rid)
        assert active["state"] == "active" and active["expires_at"]
        assert active["approved_duration"] == 600
        creds = ok(app.bgtui("olive", "creds", rid))
        assert "out of band: break glass supplies none" in creds
        assert json.loads(ok(app.bgtui("olive", "creds", rid, "--json")))["credential"] is None

        assert ok(app.bgtui("olive", "end", rid)).split()[1] in ("ending", "ended")
        ended = poll(app, rid, state_is("ended"))
        assert ended["ended_reason"] == "ended by operator"
        assert ended["receipt"] is not None
        text = ok(app.bgtui("olive", "show", rid))
        assert "ended by operator" in text
        assert "receipt: signed by acme-prod" in text
        # Credentials exist only while active.
        refused(app.bgtui("olive", "creds", rid), "only while it is active")
        app.stop()
    verified = run("bgctl", "--home", str(tmp_path / "controller"), "audit", "verify")
    assert verified.returncode == 0, verified.stderr


def test_rejection_reason_reaches_the_waiting_operator(app: Appliance) -> None:
    waiting = spawn(
        app, "olive", "request", "status-page", "--privilege", "use",
        "--duration", "10m", "--reason", "INC-4711", "--wait",
    )  # fmt: skip
    rid = first_line_id(waiting)
    ok(app.bgtui("alice", "reject", rid, "--reason", "use the read replica", "--yes"))
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1, out + err
    assert err.count("\n") == 1 and "rejected" in err and "use the read replica" in err, err
    view = show(app, rid)
    assert view["state"] == "rejected"
    assert "use the read replica" in view["ended_reason"]
    assert "use the read replica" in ok(app.bgtui("olive", "show", rid))
    # A decided request cannot be approved afterwards.
    refused(app.bgtui("arne", "approve", rid, "--yes"), "rejected")


def test_withdraw_cancels_once(app: Appliance) -> None:
    rid = submit(app)["id"]
    assert ok(app.bgtui("olive", "withdraw", rid)).split()[1] == "cancelled"
    assert show(app, rid)["state"] == "cancelled"
    refused(app.bgtui("olive", "withdraw", rid), "cancelled")


def test_approver_revokes_an_active_session(app: Appliance) -> None:
    rid = submit(app)["id"]
    approve(app, rid)
    poll(app, rid, state_is("active"))
    refused(app.bgtui("olive", "revoke", rid), "only approvers may revoke")
    ok(app.bgtui("arne", "revoke", rid))
    ended = poll(app, rid, state_is("ended"))
    assert ended["ended_reason"] == "revoked by customer"


def test_controller_ends_the_session_at_expiry(app: Appliance) -> None:
    rid = submit(app, "status-page", "--duration", "3s")["id"]
    approve(app, rid)
    active = poll(app, rid, state_is("active"))
    assert active["approved_duration"] == 3
    # `show --wait` follows the live stream until the session is over.
    ended = json.loads(ok(app.bgtui("olive", "show", rid, "--wait", "--json")))
    assert ended["state"] == "ended" and ended["ended_reason"] == "expired"


def test_pending_request_expires_after_the_window(tmp_path: Path) -> None:
    for app in appliance(tmp_path, window="2s"):
        rid = submit(app)["id"]
        view = poll(app, rid, state_is("expired", "rejected", "cancelled"), timeout=10)
        assert view["state"] == "expired"
        refused(app.bgtui("alice", "approve", rid, "--yes"), "expired")


def test_two_distinct_approvers_are_needed(tmp_path: Path) -> None:
    for app in appliance(tmp_path, approvals=2):
        rid = submit(app)["id"]
        out = approve(app, rid)
        assert "1 more needed after this one" in out
        view = show(app, rid)
        assert view["state"] == "pending" and view["approvals_needed"] == 1
        refused(app.bgtui("alice", "approve", rid, "--yes"), "alice has already decided")
        assert show(app, rid)["approvals_needed"] == 1
        approve(app, rid, who="arne")
        assert poll(app, rid, state_is("active", "failed"))["state"] == "active"


def test_approver_may_shorten_but_never_lengthen(app: Appliance) -> None:
    rid = submit(app)["id"]
    line = refused(app.bgtui("alice", "approve", rid, "--yes", "--duration", "20m"))
    assert "longer than the 10m requested" in line
    assert show(app, rid)["approvals"] == []
    out = approve(app, rid, "--duration", "1m")
    # What the approver signs is printed first, from the operator-signed request.
    olive = ok(app.bgtui("olive", "pubkey", "--fingerprint")).strip()
    for shown in ("acme-prod", "status-page", "use", "direct", "out-of-band", olive):
        assert shown in out
    assert "INC-4711 checkout errors" in out
    assert "1m (shortened from 10m)" in out
    assert poll(app, rid, state_is("active"))["approved_duration"] == 60


def test_unreachable_resource_fails_with_the_reason(app: Appliance) -> None:
    rid = submit(app, "dark-service")["id"]
    approve(app, rid)
    failed = poll(app, rid, state_is("failed", "active"))
    assert failed["state"] == "failed"
    assert "not reachable" in failed["ended_reason"]
    assert "not reachable" in ok(app.bgtui("olive", "show", rid))


def test_operators_see_only_their_own_requests(tmp_path: Path) -> None:
    app = Appliance(tmp_path).setup()
    try:
        app.enrol("oscar", "operator")
        app.start()
        mine = submit(app)["id"]
        theirs = submit(app, who="oscar")["id"]
        listed = {v["id"] for v in json.loads(ok(app.bgtui("olive", "list", "--json")))}
        assert listed == {mine}
        assert {v["id"] for v in json.loads(ok(app.bgtui("oscar", "list", "--json")))} == {theirs}
        refused(app.bgtui("oscar", "show", mine), "no request")
        refused(app.bgtui("oscar", "withdraw", mine), "no request")
        for who in ("alice", "audrey"):
            everyone = {v["id"] for v in json.loads(ok(app.bgtui(who, "list", "--json")))}
            assert everyone == {mine, theirs}
        assert mine in ok(app.bgtui("alice", "list"))
        refused(app.bgtui("audrey", "approve", mine, "--yes"), "only approvers may decide")
        assert show(app, mine)["state"] == "pending"
    finally:
        app.close()


def test_approval_link_from_the_notification_is_accepted(app: Appliance) -> None:
    view = submit(app)
    link = view["approval_link"]
    assert link.endswith(f"/requests/{view['id']}/approve")
    approve(app, link)
    assert poll(app, view["id"], state_is("active"))["approvals"][0]["approver"] == "alice"
    refused(app.bgtui("alice", "approve", "https://portal.example/acme/x", "--yes"), "link")
    other = f"bgtui://other-prod/requests/{view['id']}/approve"
    refused(app.bgtui("alice", "approve", other, "--yes"), "other-prod")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webhooks_notify_and_a_dead_one_never_blocks(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    good = f"http://127.0.0.1:{server.server_port}/hook"
    dead = f"http://127.0.0.1:{free_port()}/hook"
    try:
        for app in appliance(tmp_path, webhooks=[good, dead]):
            view = submit(app)
            approve(app, view["id"])
            assert poll(app, view["id"], state_is("active"))["state"] == "active"
            deadline = time.monotonic() + 10
            while not (received and audit_events(app, "webhook.failed")):
                assert time.monotonic() < deadline, (received, "no webhook.failed")
                time.sleep(0.2)
            assert len(received) == 1
            assert received[0]["approval_link"] == view["approval_link"]
            assert view["id"] in received[0]["text"]
            failures = audit_events(app, "webhook.failed")
            assert len(failures) == 1 and dead in failures[0]
    finally:
        server.shutdown()


# -- refusals before any controller is involved ---------------------------------------------


def test_missing_or_unreachable_controller_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "olive"
    ok(run("bgtui", "--home", str(home), "keygen", "--role", "operator", "--name", "olive"))
    nowhere = run("bgtui", "--home", str(home), "list")
    refused(nowhere, "no controller given", "BGTUI_CONTROLLER")
    sock = f"unix:{tmp_path / 'no.sock'}"
    gone = run("bgtui", "--home", str(home), "--controller", sock, "resources")
    refused(gone, f"cannot reach the controller at {sock}", "bgctl serve")
    port = free_port()
    closed = run("bgtui", "--home", str(home), "--controller", f"http://127.0.0.1:{port}", "list")
    refused(closed, "cannot reach the controller")
    bad = run("bgtui", "--home", str(home), "--controller", sock, "show", "not-an-id")
    refused(bad, "not a request id")
    (home / "config.toml").write_text(f'controller = "{sock}"\n')
    refused(run("bgtui", "--home", str(home), "list"), f"cannot reach the controller at {sock}")


def test_request_refuses_what_the_catalog_does_not_offer(app: Appliance) -> None:
    base = ("request", "--reason", "INC-1", "--duration", "10m")
    refused(app.bgtui("olive", *base[:1], "nope", *base[1:]), "no resource 'nope'")
    refused(app.bgtui("olive", *base[:1], "status-page", *base[1:]), "use, admin", "--privilege")
    wrong = app.bgtui("olive", *base[:1], "status-page", *base[1:], "--privilege", "root")
    refused(wrong, "does not offer privilege 'root'")
    source = app.bgtui(
        "olive", *base[:1], "dark-service", *base[1:], "--credential-source", "controller"
    )
    refused(source, "does not offer credential source 'controller'")
    bad_duration = app.bgtui("olive", "request", "status-page", "--reason", "x", "--duration", "5x")
    assert bad_duration.returncode == 2
    assert json.loads(ok(app.bgtui("olive", "list", "--json"))) == []


class TlsAppliance(Appliance):
    """The appliance on loopback HTTPS, with a certificate from a throwaway CA (openssl)."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    trust_ca = False

    @property
    def ca(self) -> Path:
        return self.root / "tls" / "ca.pem"

    def env(self, name: str) -> dict[str, str]:
        extra = {"BGTUI_CA_CERT": str(self.ca)} if self.trust_ca else {}
        return {**super().env(name), **extra}

    def start(self) -> Appliance:
        tls = self.root / "tls"
        tls.mkdir()
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
        for args in (
            ["-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test CA"],
            [
                "-x509", *ec, "-CA", "ca.pem", "-CAkey", "ca.key", "-keyout", "srv.key",
                "-out", "srv.pem", "-subj", "/CN=bgctl", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
        ):  # fmt: skip
            subprocess.run(["openssl", "req", *args], cwd=tls, check=True, capture_output=True)
        self.port = free_port()
        args = [
            sys.executable, "-m", "controller.cli", "--home", str(self.home), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--tls-cert", str(tls / "srv.pem"), "--tls-key", str(tls / "srv.key"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready()
        return self

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca))


def test_https_controller_is_checked_against_the_given_ca(tmp_path: Path) -> None:
    app = TlsAppliance(tmp_path, listen="tcp")
    try:
        app.setup()
        app.start()
        refused(app.bgtui("olive", "resources"), "cannot reach the controller", "CERTIFICATE")
        ok(app.bgtui("olive", "--ca-cert", str(app.ca), "resources"))
        app.trust_ca = True  # from here on through BGTUI_CA_CERT
        waiting = spawn(
            app, "olive", "request", "status-page", "--privilege", "use",
            "--duration", "10m", "--reason", "INC-4711", "--wait",
        )  # fmt: skip
        rid = first_line_id(waiting)
        approve(app, rid)
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0 and "active  until" in out, out + err
    finally:
        app.close()


def test_connect_opens_the_session_in_a_shell_and_refuses_when_not_active(app: Appliance) -> None:
    rid = submit(app)["id"]
    refused(app.bgtui("olive", "connect", rid), "only an active session connects")
    approve(app, rid)
    assert poll(app, rid, state_is("active", "failed"))["state"] == "active"
    done = app.bgtui("olive", "connect", rid, input='echo "in $BGTUI_SESSION"; exit 3\n')
    assert f"in {rid}" in done.stdout
    assert "shell closed (exit 3)" in done.stderr


def test_sweep_asks_the_ledger_about_a_session_when_it_finds_its_artifact(app: Appliance) -> None:
    """A sweep lists a target's artifacts first and asks about their sessions after: a session
    that started activating in between is live to it, so its fresh artifacts stay. A session
    the ledger never had is another controller's, never this one's leftover."""
    from controller.ledger import Ledger
    from controller.store import open_store
    from controller.sweep import Sessions

    rid = submit(app)["id"]
    db = open_store(app.home / "state.db")
    try:
        sessions = Sessions(Ledger(db))  # made while the session only waits for approval
        assert not sessions.live(rid.lower()) and not sessions.live(rid)
        assert sessions.known(rid.lower())  # labels and role names carry the id lowercased
        assert not sessions.known("01jd2v6xkq8zj3m4n5p6q7r8s9")
        approve(app, rid)
        poll(app, rid, state_is("active"))
        assert sessions.live(rid.lower())
        ok(app.bgtui("olive", "end", rid))
        poll(app, rid, state_is("ended"))
        assert not sessions.live(rid.lower()) and sessions.known(rid.lower())
    finally:
        db.close()
