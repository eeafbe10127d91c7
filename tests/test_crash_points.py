"""SIGKILL at every provider step, then a restart: nothing of the session is left standing.

`BGCTL_CRASH_AT` (controller.planes.base.crash_point) makes a real `bgctl serve` kill itself
with SIGKILL at one named step of a provider: before or after a mint, between the objects of a
Kubernetes mint, before or after one artifact's teardown. Each test requests and approves with
the real CLIs, waits for the controller to die at that step, checks the target holds what the
crash left there, restarts the controller without the variable and waits for the request to
become final. Then: the target holds nothing of the session (no labelled ServiceAccount or
binding, no `bg_<session>` role, the certificate's key id in sshd's KRL and its live connection
cut), `bgctl sweep --dry-run` finds nothing, `bgctl audit verify` passes, and the session has a
receipt signed by the controller that lists every artifact as removed, with no plane step left
as a bare intent.

One Kubernetes simulator, one PostgreSQL and one sshd serve the module; every test runs its own
controller, cloned from one `Appliance.setup()` (identities, keys and the SSH CA the sshd
trusts), to keep the file fast.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.helpers import ok, run
from tests.relay import Party, approved_ids, request_row, steps
from tests.servers import CATALOG, Appliance, Identity, TcpTarget, free_port
from tests.test_ssh_plane import bastion_resource

from bgtui.protocol.objects import Signed, TeardownReceipt
from bgtui.protocol.verify import verify_receipt
from controller.home import ControllerHome
from controller.planes.base import CRASH_ENV
from controller.sandbox import postgres as pgsandbox
from controller.sandbox import sshd as sshsandbox
from controller.sandbox.kube import KubeSimulator
from controller.sandbox.postgres import ThrowawayPostgres
from controller.sandbox.sshd import LoopbackSshd

pytestmark = pytest.mark.timeout(60)

View = dict[str, Any]
FINAL = ("ended", "rejected", "cancelled", "expired", "failed")
RBAC = "/apis/rbac.authorization.k8s.io/v1"
NOTHING = "nothing to sweep"

KUBE_RESOURCE = """
[[resources]]
name = "orders-k8s"
description = "Orders namespace, production cluster"
kind = "kubernetes"
address = "{url}"
network = "direct"
credential = "controller"
privileges = ["readonly"]
grants = {{ readonly = "view" }}
options = {{ kubeconfig = "secrets/kube-admin.kubeconfig", namespace = "orders" }}
"""

PG_RESOURCE = """
[[resources]]
name = "orders-db"
description = "Orders database, production"
kind = "postgres"
address = "127.0.0.1:{port}"
network = "direct"
credential = "command"
recipe = "postgres-role"
privileges = ["readonly"]
grants = {{ readonly = "bg_readonly" }}
options = {{ database = "orders", admin_dsn_file = "secrets/pg-admin.dsn" }}
"""


# -- servers and controllers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """One controller home with enrolled identities (never started), cloned for each test."""
    app = Appliance(tmp_path_factory.mktemp("crash-template"))
    try:
        with pytest.MonkeyPatch.context() as env:  # module scope: isolate like conftest does
            env.setenv("HOME", str(app.root / "user"))
            for name in ("BGTUI_HOME", "BGCTL_HOME", "BGTUI_CONTROLLER", "SSH_AUTH_SOCK"):
                env.delenv(name, raising=False)
            app.setup()
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeSimulator]:
    with KubeSimulator(tmp_path_factory.mktemp("kube") / "state", seed="demo") as simulator:
        yield simulator


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayPostgres]:
    reason = pgsandbox.available()
    if reason is not None:
        pytest.fail(reason)
    with ThrowawayPostgres() as server:
        server.seed()
        yield server


@pytest.fixture(scope="module")
def sshd(template: Appliance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    reason = sshsandbox.available()
    if reason is not None:
        pytest.fail(reason)
    ca_line = (template.home / "ssh_ca_ed25519.pub").read_text()
    user = pwd.getpwuid(os.getuid()).pw_name
    server = LoopbackSshd(ca_line, tmp_path_factory.mktemp("sshd"), principals={user: ["bg-admin"]})
    try:
        yield server.start()
    finally:
        server.stop()


def clone(
    template: Appliance, root: Path, extra_catalog: str = "", secrets: dict[str, str] | None = None
) -> Appliance:
    """A fresh, not yet started controller: the template's homes copied, its own catalog."""
    shutil.copytree(template.home, root / "controller")
    shutil.copytree(template.root / "clients", root / "clients")
    app = Appliance(root, extra_catalog=extra_catalog)
    app.target = TcpTarget()
    catalog = CATALOG.format(
        window="1h", approvals=1, webhooks="[]", target=app.target.address, closed=free_port()
    )
    (app.home / "controller.toml").write_text(catalog + extra_catalog)
    for relative, text in (secrets or {}).items():
        path = app.home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    app.identities = {
        name: Identity(name, i.role, root / "clients" / name, i.public_line)
        for name, i in template.identities.items()
    }
    return app


@pytest.fixture
def kube_app(template: Appliance, sim: KubeSimulator, tmp_path: Path) -> Iterator[Appliance]:
    admin = sim.admin_kubeconfig(tmp_path / "admin.kubeconfig").read_text()
    app = clone(
        template,
        tmp_path / "appliance",
        KUBE_RESOURCE.format(url=sim.url),
        {"secrets/kube-admin.kubeconfig": admin},
    )
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def pg_app(template: Appliance, pg: ThrowawayPostgres, tmp_path: Path) -> Iterator[Appliance]:
    app = clone(
        template,
        tmp_path / "appliance",
        PG_RESOURCE.format(port=pg.port),
        {"secrets/pg-admin.dsn": pg.admin_dsn},
    )
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def ssh_app(template: Appliance, sshd: LoopbackSshd, tmp_path: Path) -> Iterator[Appliance]:
    resource = bastion_resource(sshd)
    app = clone(template, tmp_path / "appliance", resource)
    try:
        yield app
    finally:
        app.close()


# -- the crash and the restart ----------------------------------------------------------------


def wait_state(app: Appliance, rid: str, *states: str, timeout: float = 20.0) -> View:
    return Party.of(app, "audrey").wait_state(rid, *states, timeout=timeout)


def crash(
    app: Appliance,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    resource: str,
    privilege: str,
    while_active: Callable[[str], None] | None = None,
) -> str:
    """Starts the controller with BGCTL_CRASH_AT=`point`, drives a session into that step (for
    a teardown point: active, then `bgtui end`) and waits for the SIGKILL; returns the id."""
    monkeypatch.setenv(CRASH_ENV, point)
    app.start()
    args = ["request", resource, "--privilege", privilege, "--duration", "10m", "--json"]
    view = json.loads(ok(app.bgtui("olive", *args, "--reason", "INC-4711 crash drill")))
    rid: str = view["id"]
    teardown = point.startswith("teardown:")
    # A crash in the activation may cut the approver's answer short; the store says what held.
    approved = app.bgtui("alice", "approve", rid, "--yes")
    if teardown:
        ok(approved)
        active = wait_state(app, rid, "active", *FINAL)
        assert active["state"] == "active", active
        if while_active is not None:
            while_active(rid)
        app.bgtui("olive", "end", rid)  # its answer, too, may be lost to the crash
    assert app.process is not None
    try:
        code = app.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the controller did not die at {point}: {app.log.read_text()[-2000:]}")
    assert code == -signal.SIGKILL, (code, app.log.read_text()[-2000:])
    app.process = None
    monkeypatch.delenv(CRASH_ENV)
    assert rid in approved_ids(app)
    row = request_row(app, rid)
    assert row is not None
    assert row["state"] == ("ending" if teardown else "activating"), row
    if teardown:  # the crash hit one artifact's teardown between its intent and its result
        cut = [s for s in steps(app, rid) if s["action"] == "teardown" and s["state"] == "intent"]
        assert len(cut) == 1, steps(app, rid)
    return rid


def restart_until_final(app: Appliance, rid: str, point: str) -> View:
    """Restarts without the crash point; the request's final view, checked on the controller's
    side: final state, signed receipt of every artifact removed, no step left an intent, and
    neither a sweep nor the audit log finds anything amiss."""
    app.start()
    view = wait_state(app, rid, *FINAL)
    if point.startswith("teardown:"):
        assert (view["state"], view["ended_reason"]) == ("ended", "ended by operator"), view
    else:
        assert view["state"] == "failed", view
        assert "controller restarted during activation" in view["ended_reason"], view
    assert not view["has_credential"]

    assert view["receipt"] is not None, view
    key = ControllerHome(app.home).public_key()
    verdict = verify_receipt(Signed.from_json(view["receipt"]), "acme-prod", key)
    assert verdict.accepted, str(verdict)
    receipt: TeardownReceipt = verdict.obj
    assert receipt.session_id == rid and receipt.ended_reason == view["ended_reason"]
    for artifact in receipt.artifacts:
        assert artifact["removed_at"], artifact

    planes = [(p["action"], p["kind"], p["name"], p["state"]) for p in view["planes"]]
    assert [p for p in view["planes"] if p["state"] == "intent"] == [], planes
    assert {p["state"] for p in view["planes"] if p["action"] == "mint"} <= {"done", "failed"}
    teardowns = [(p["kind"], p["name"]) for p in view["planes"] if p["action"] == "teardown"]
    assert len(teardowns) == len(set(teardowns)), planes  # an interrupted one was resumed

    swept = run("bgctl", "--home", str(app.home), "sweep", "--dry-run")
    assert swept.returncode == 0, swept.stderr
    assert NOTHING in swept.stdout, swept.stdout
    verified = run("bgctl", "--home", str(app.home), "audit", "verify")
    assert verified.returncode == 0, verified.stderr + verified.stdout
    return view


def receipt_kinds(view: View) -> list[str]:
    return sorted(a["kind"] for a in json.loads(view["receipt"]["payload"])["artifacts"])


# -- network plane ----------------------------------------------------------------------------


def test_direct_after_its_probe(
    template: Appliance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = clone(template, tmp_path / "appliance")
    try:
        point = "mint:direct:after"
        rid = crash(app, monkeypatch, point, "status-page", "use")
        # The probe's write-ahead step is on disk as an intent, its result never written.
        assert [(s["plane"], s["action"], s["state"]) for s in steps(app, rid)] == [
            ("network", "mint", "intent")
        ]
        view = restart_until_final(app, rid, point)
        assert receipt_kinds(view) == []
        assert [(p["plane"], p["action"], p["state"]) for p in view["planes"]] == [
            ("network", "mint", "failed")
        ]
    finally:
        app.close()


# -- Kubernetes -------------------------------------------------------------------------------


def labelled(sim: KubeSimulator, path: str, rid: str) -> list[str]:
    answer = sim.admin_request("GET", f"{path}?labelSelector=bgtui.dev/session%3D{rid.lower()}")
    assert answer.status_code == 200, answer.text
    return [item["metadata"]["name"] for item in answer.json()["items"]]


def kube_objects(sim: KubeSimulator, rid: str) -> dict[str, list[str]]:
    """Every object of the session anywhere in the cluster, by kind."""
    return {
        "serviceaccount": labelled(sim, "/api/v1/serviceaccounts", rid),
        "rolebinding": labelled(sim, f"{RBAC}/rolebindings", rid),
        "clusterrolebinding": labelled(sim, f"{RBAC}/clusterrolebindings", rid),
    }


# point -> the kinds standing on the cluster right after the crash
KUBE_POINTS = {
    "mint:kubernetes:before": (),
    "mint:kubernetes:serviceaccount": ("serviceaccount",),
    "mint:kubernetes:binding": ("serviceaccount", "rolebinding"),
    "mint:kubernetes:after": ("serviceaccount", "rolebinding"),
    "teardown:kubernetes:rolebinding:before": ("serviceaccount", "rolebinding"),
    "teardown:kubernetes:serviceaccount:after": (),
}


@pytest.mark.parametrize("point", list(KUBE_POINTS))
def test_kubernetes(
    point: str, kube_app: Appliance, sim: KubeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = crash(kube_app, monkeypatch, point, "orders-k8s", "readonly")
    name = f"bg-{rid.lower()}"
    standing = kube_objects(sim, rid)
    expected = {kind: [name] if kind in KUBE_POINTS[point] else [] for kind in standing}
    assert standing == expected, f"the crash at {point} left {standing}"

    view = restart_until_final(kube_app, rid, point)
    assert kube_objects(sim, rid) == {
        "serviceaccount": [],
        "rolebinding": [],
        "clusterrolebinding": [],
    }
    assert receipt_kinds(view) == ["rolebinding", "serviceaccount"]


# -- PostgreSQL -------------------------------------------------------------------------------


def role_exists(pg: ThrowawayPostgres, rid: str) -> bool:
    with psycopg.connect(pg.dsn(pg.user, pg.password, "postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (f"bg_{rid.lower()}",)
        ).fetchone()
    return row is not None and row[0] == 1


PG_POINTS = {
    "mint:recipe:before": False,
    "mint:recipe:after": True,
    "teardown:recipe:postgres-role:before": True,
}


@pytest.mark.parametrize("point", list(PG_POINTS))
def test_postgres(
    point: str, pg_app: Appliance, pg: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    live: list[psycopg.Connection[Any]] = []

    def connect(rid: str) -> None:  # the operator is connected when the session ends
        creds = json.loads(ok(pg_app.bgtui("olive", "creds", rid, "--json")))
        conn = psycopg.connect(creds["dsn"], autocommit=True)
        live.append(conn)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() is not None

    try:
        rid = crash(pg_app, monkeypatch, point, "orders-db", "readonly", connect)
        assert role_exists(pg, rid) is PG_POINTS[point], point
        for conn in live:  # the crash cut nothing: the role's connection still works
            assert conn.execute("SELECT 1").fetchone() == (1,)

        view = restart_until_final(pg_app, rid, point)
        assert not role_exists(pg, rid)
        for conn in live:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert receipt_kinds(view) == ["postgres-role"]
    finally:
        for conn in live:
            conn.close()


# -- SSH --------------------------------------------------------------------------------------


def revoked_ids(krl: Path) -> set[str]:
    """The key ids sshd's KRL revokes (none while it does not exist)."""
    if not krl.exists():
        return set()
    listed = subprocess.run(
        ["ssh-keygen", "-Q", "-l", "-f", str(krl)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return {line.split("id: ", 1)[1].strip() for line in listed.splitlines() if "id: " in line}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


SSH_POINTS = ("mint:ssh-ca:after", "teardown:ssh-ca:ssh-certificate:before")


@pytest.mark.parametrize("point", SSH_POINTS)
def test_ssh(
    point: str,
    ssh_app: Appliance,
    sshd: LoopbackSshd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connections: list[tuple[subprocess.Popen[str], int]] = []

    def connect(rid: str) -> None:  # a live login with the session's certificate
        directory = tmp_path / "ssh"
        ok(ssh_app.bgtui("olive", "creds", rid, "--ssh-dir", str(directory)))
        ssh = ["ssh", "-F", str(directory / "config"), "-o", "BatchMode=yes"]
        process = subprocess.Popen(
            [*ssh, "session", "echo $$; exec sleep 300"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            process.kill()
            raise AssertionError(f"ssh did not connect: {line!r} {process.communicate()}")
        connections.append((process, int(line)))

    try:
        rid = crash(ssh_app, monkeypatch, point, "bastion", "admin", connect)
        assert rid not in revoked_ids(sshd.revoked_keys_path)
        for process, sleeping in connections:  # the crash cut nothing
            assert process.poll() is None and alive(sleeping)

        view = restart_until_final(ssh_app, rid, point)
        assert rid in revoked_ids(sshd.revoked_keys_path)
        for process, sleeping in connections:
            assert process.wait(timeout=10) == 255
            deadline = time.monotonic() + 5
            while alive(sleeping) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(sleeping)
        assert receipt_kinds(view) == ["ssh-certificate"]
    finally:
        for process, sleeping in connections:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=5)
            if alive(sleeping):
                os.kill(sleeping, signal.SIGKILL)
