"""A real `bgctl serve` killed and restarted mid-session: nothing is left standing.

SIGKILL while a session is Active and while it is Activating (a probe in flight against a
target that never answers a handshake), SIGTERM while Active, and a Pending request whose window
passes while the controller is down. After each, the request is in a final state for the right
reason, every write-ahead plane step is resolved, a teardown receipt signed by the controller is
there, and `bgctl audit verify` passes.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import run
from tests.relay import Party, audit_entries, request_row, steps, store
from tests.servers import Appliance

from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Signed, TeardownReceipt
from bgtui.protocol.timefmt import now_utc, parse_utc
from bgtui.protocol.verify import verify_receipt
from controller.home import ControllerHome

FINAL = ("ended", "rejected", "cancelled", "expired", "failed")
LIVE = ("activating", "active", "ending")

SLOW_RESOURCE = """
[[resources]]
name = "slow-service"
description = "Completes no handshake: its accept queue is full"
kind = "service"
address = "{address}"
network = "direct"
credential = "out-of-band"
privileges = ["use"]
"""


class SilentTarget:
    """A real listener whose handshakes never complete, so a TCP connect to it hangs.

    `listen(0)` leaves room for one queued connection; one connection that is never accepted
    fills the queue, and from then on the kernel drops every SYN: a client's connect waits on
    retransmissions (seconds) rather than being refused. No firewall rules, no fakes.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.filler = socket.create_connection(self.address, timeout=2)
        with socket.socket() as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(self.address)
            except TimeoutError:
                return
        self.close()
        pytest.fail("this kernel completed a handshake on a full accept queue; no slow target")

    @property
    def text(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def close(self) -> None:
        self.filler.close()
        self.sock.close()


@pytest.fixture
def unix_app(tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(tmp_path)
    try:
        yield app.setup().start()
    finally:
        app.close()


@pytest.fixture
def tcp_app(tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(tmp_path, listen="tcp")
    try:
        yield app.setup().start()
    finally:
        app.close()


def activate(app: Appliance, **fields: Any) -> tuple[Party, str]:
    """olive requests, alice approves, and the session goes Active; returns olive and the id."""
    olive, alice = Party.of(app, "olive"), Party.of(app, "alice")
    signed, req = olive.new_request(**fields)
    assert olive.submit(signed).status_code == 201
    decided = alice.decide(req.id, alice.approval(signed, req))
    assert decided.status_code == 200, decided.text
    olive.wait_state(req.id, "active")
    return olive, req.id


def controller_key(app: Appliance) -> PublicKey:
    with app.http() as client:
        info = client.get("/v1/info").json()
    key = PublicKey.parse(info["key"])
    assert key == ControllerHome(app.home).public_key()
    return key


def check_receipt(signed_json: dict[str, Any], key: PublicKey, rid: str) -> TeardownReceipt:
    verdict = verify_receipt(Signed.from_json(signed_json), "acme-prod", key)
    assert verdict.accepted, str(verdict)
    receipt: TeardownReceipt = verdict.obj
    assert receipt.session_id == rid and receipt.request_id == rid
    return receipt


def assert_nothing_standing(app: Appliance, rid: str) -> None:
    """No request is live, and every write-ahead intent of the session was resolved."""
    with store(app) as db:
        live = db.execute(
            "SELECT id, state FROM requests WHERE state IN (?, ?, ?)", list(LIVE)
        ).fetchall()
        sessions = db.execute(
            "SELECT id, state FROM sessions WHERE state IN (?, ?, ?)", list(LIVE)
        ).fetchall()
    assert live == [] and sessions == []
    unresolved = [s for s in steps(app, rid) if s["state"] == "intent"]
    assert unresolved == [], unresolved


def assert_audit_verifies(app: Appliance) -> None:
    result = run("bgctl", "--home", str(app.home), "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout


def test_sigkill_while_active_ends_the_session_on_restart(unix_app: Appliance) -> None:
    app = unix_app
    olive, rid = activate(app)
    assert app.stop(signal.SIGKILL) == -signal.SIGKILL
    assert request_row(app, rid)["state"] == "active"  # type: ignore[index]  # the crash hit it live

    app.start()
    view = olive.wait_state(rid, *FINAL)
    assert view["state"] == "ended", view
    assert view["ended_reason"] == "controller-restart"
    assert view["receipt"] is not None
    receipt = check_receipt(view["receipt"], controller_key(app), rid)
    assert receipt.ended_reason == "controller-restart"
    assert_nothing_standing(app, rid)
    events = [(e["event"], e["session"]) for e in audit_entries(app)]
    assert ("session.ending", rid) in events and ("session.receipt", rid) in events
    assert [e for e, _ in events].count("controller.start") == 2
    assert_audit_verifies(app)


def test_sigkill_while_activating_fails_the_session_on_restart(tmp_path: Path) -> None:
    app = Appliance(tmp_path, listen="tcp")
    target: SilentTarget | None = None
    try:
        app.setup()
        target = SilentTarget()
        with (app.home / "controller.toml").open("a") as catalog:
            catalog.write(SLOW_RESOURCE.format(address=target.text))
        app.start()
        olive, alice = Party.of(app, "olive"), Party.of(app, "alice")
        signed, req = olive.new_request(resource="slow-service")
        assert olive.submit(signed).status_code == 201
        decided = alice.decide(req.id, alice.approval(signed, req))
        assert decided.status_code == 200, decided.text
        assert decided.json()["state"] == "activating"

        # The network plane's intent is on disk and its probe is in flight: kill now (the
        # probe gives up after 3 s, so this must happen well within that).
        olive.wait_for(
            req.id,
            lambda v: [(p["plane"], p["state"]) for p in v["planes"]] == [("network", "intent")],
            timeout=2.0,
        )
        assert app.stop(signal.SIGKILL) == -signal.SIGKILL
        assert request_row(app, req.id)["state"] == "activating"  # type: ignore[index]
        assert [(s["plane"], s["action"], s["state"]) for s in steps(app, req.id)] == [
            ("network", "mint", "intent")
        ]

        app.start()
        view = olive.wait_state(req.id, *FINAL)
        assert view["state"] == "failed", view
        assert "restart" in view["ended_reason"], view
        assert view["receipt"] is not None
        receipt = check_receipt(view["receipt"], controller_key(app), req.id)
        assert "restart" in receipt.ended_reason
        assert not view["has_credential"]
        assert_nothing_standing(app, req.id)
        assert_audit_verifies(app)
    finally:
        app.close()
        if target is not None:
            target.close()


def test_sigterm_while_active_tears_down_before_exit(tcp_app: Appliance) -> None:
    app = tcp_app
    _, rid = activate(app)
    key = controller_key(app)
    code = app.stop(signal.SIGTERM)

    # Read what the controller left behind, with the process gone.
    row = request_row(app, rid)
    assert row is not None
    assert row["state"] == "ended", row
    assert row["ended_reason"] == "controller-restart"
    with store(app) as db:
        payload, signature = db.execute(
            "SELECT receipt_payload, receipt_signature FROM sessions WHERE id = ?", [rid]
        ).fetchone()
    assert payload is not None, "no teardown receipt was signed before exit"
    receipt = check_receipt({"payload": bytes(payload).decode(), "signature": signature}, key, rid)
    assert receipt.ended_reason == "controller-restart"
    assert_nothing_standing(app, rid)
    events = [e["event"] for e in audit_entries(app)]
    assert events[-1] == "controller.stop", events[-5:]
    assert_audit_verifies(app)
    assert code == 0, f"bgctl serve exited {code} on SIGTERM; a clean shutdown exits 0"


def test_a_pending_request_whose_window_passed_while_down_expires(tmp_path: Path) -> None:
    app = Appliance(tmp_path, window="3s")
    try:
        app.setup().start()
        olive, alice = Party.of(app, "olive"), Party.of(app, "alice")
        signed, req = olive.new_request()
        submitted = olive.submit(signed)
        assert submitted.status_code == 201, submitted.text
        window_ends = parse_utc(submitted.json()["window_ends_at"])
        assert app.stop(signal.SIGKILL) == -signal.SIGKILL
        assert request_row(app, req.id)["state"] == "pending"  # type: ignore[index]

        deadline = time.monotonic() + 10
        while now_utc() <= window_ends:  # the window passes while nobody is serving
            assert time.monotonic() < deadline
            time.sleep(0.05)

        app.start()
        view = olive.wait_state(req.id, *FINAL, timeout=5)
        assert view["state"] == "expired", view
        assert view["ended_reason"] == "request window passed"
        late = alice.decide(req.id, alice.approval(signed, req))
        assert late.status_code == 409, late.text
        assert steps(app, req.id) == [] and view["planes"] == []
        events = [(e["event"], e["session"]) for e in audit_entries(app)]
        assert ("request.expired", req.id) in events
        assert_audit_verifies(app)
    finally:
        app.close()
