"""The Kubernetes credential plane end to end: real `bgtui`, real `bgctl serve`, real `kubectl`.

The cluster is the sandbox's Kubernetes API simulator (DESIGN §8: the one test double, a real
HTTPS server with RBAC, TokenRequest and revocation by ServiceAccount deletion). One simulator
serves the module; each test runs its own controller (tests/servers.py) whose catalog points at
it, and drives sessions the way an operator and an approver would.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import ok, poll, run, show, state_is
from tests.servers import Appliance

from controller.sandbox.kube import KubeSimulator

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")

View = dict[str, Any]
ORDERS_API = "orders-api-7c9d8f6b5-k2x4p"
SEEDED_ORDERS = (ORDERS_API, "orders-worker-6b7d5c4f9-m8n3q", "orders-db-0")
ADMIN_KUBECONFIG = "secrets/kube-admin.kubeconfig"
CONTROLLER_KUBECONFIG = "secrets/kube-controller.kubeconfig"
RBAC = "/apis/rbac.authorization.k8s.io/v1"

CATALOG = """
[[resources]]
name = "orders-k8s"
description = "Orders namespace, production cluster"
kind = "kubernetes"
address = "{url}"
network = "direct"
credential = "controller"
privileges = ["readonly", "readwrite"]
grants = {{ readonly = "view", readwrite = "edit" }}
options = {{ kubeconfig = "{kubeconfig}", namespace = "orders" }}

[[resources]]
name = "cluster-k8s"
description = "The whole production cluster, read only"
kind = "kubernetes"
address = "{url}"
network = "direct"
credential = "controller"
privileges = ["view"]
options = {{ kubeconfig = "{kubeconfig}", namespace = "orders", scope = "cluster" }}

[[resources]]
name = "orders-db-secret"
description = "The orders database password, from its Kubernetes Secret"
kind = "service"
address = "{url}"
network = "direct"
credential = "command"
recipe = "recipes/orders-db-password.toml"
privileges = ["read"]
options = {{ kubeconfig = "{kubeconfig}" }}
"""

SECRET_RECIPE = """\
# orders-db-password: reads the orders database password from its Kubernetes Secret.
name = "orders-db-password"
description = "Read key `password` of Secret orders/orders-db with the controller's credential"
kind = "kubernetes-secret"
namespace = "orders"
secret = "orders-db"
key = "password"
"""


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeSimulator]:
    with KubeSimulator(tmp_path_factory.mktemp("kube") / "state", seed="demo") as simulator:
        yield simulator


@pytest.fixture(scope="module")
def admin_kubeconfig(sim: KubeSimulator, tmp_path_factory: pytest.TempPathFactory) -> str:
    return sim.admin_kubeconfig(tmp_path_factory.mktemp("admin") / "kubeconfig").read_text()


def make_appliance(
    tmp_path: Path, sim: KubeSimulator, files: dict[str, str], kubeconfig: str = ADMIN_KUBECONFIG
) -> Appliance:
    app = Appliance(
        tmp_path,
        extra_catalog=CATALOG.format(url=sim.url, kubeconfig=kubeconfig),
        secret_files={"recipes/orders-db-password.toml": SECRET_RECIPE, **files},
    )
    return app.setup().start()


@pytest.fixture
def app(tmp_path: Path, sim: KubeSimulator, admin_kubeconfig: str) -> Iterator[Appliance]:
    appliance = make_appliance(tmp_path, sim, {ADMIN_KUBECONFIG: admin_kubeconfig})
    try:
        yield appliance
    finally:
        appliance.close()


def start_session(app: Appliance, resource: str, privilege: str, duration: str = "10m") -> str:
    """request → alice approves → active; returns the session id."""
    args = ["request", resource, "--privilege", privilege, "--duration", duration]
    view = json.loads(ok(app.bgtui("olive", *args, "--reason", "INC-4711 orders stuck", "--json")))
    rid: str = view["id"]
    ok(app.bgtui("alice", "approve", rid, "--yes"))
    active = poll(app, rid, state_is("active", "failed"))
    assert active["state"] == "active", active
    return rid


def end_session(app: Appliance, rid: str) -> View:
    ok(app.bgtui("olive", "end", rid))
    return poll(app, rid, state_is("ended"))


def fetch_kubeconfig(app: Appliance, rid: str, path: Path) -> Path:
    result = app.bgtui("olive", "creds", rid, "--kubeconfig", str(path))
    ok(result)
    assert "mode 0600" in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path


def token_of(kubeconfig: Path) -> str:
    import yaml

    document = yaml.safe_load(kubeconfig.read_text())
    token: str = document["users"][0]["user"]["token"]
    return token


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def labelled(sim: KubeSimulator, path: str, rid: str) -> list[str]:
    """Names of the objects at list path `path` labelled with session `rid`."""
    answer = sim.admin_request("GET", f"{path}?labelSelector=bgtui.dev/session%3D{rid.lower()}")
    assert answer.status_code == 200, answer.text
    return [item["metadata"]["name"] for item in answer.json()["items"]]


def status(sim: KubeSimulator, path: str) -> int:
    return sim.admin_request("GET", path).status_code


def audit_events(app: Appliance, event: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{app.home / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT entry FROM audit_entries WHERE event = ?", (event,)).fetchall()
    finally:
        db.close()
    return [json.loads(bytes(row[0])) for row in rows]


def receipt_artifacts(view: View) -> dict[str, dict[str, Any]]:
    payload = json.loads(view["receipt"]["payload"])
    return {a["kind"]: a for a in payload["artifacts"]}


def files_containing(roots: list[Path], needle: str) -> list[Path]:
    """Every file under `roots` whose bytes contain `needle`."""
    found = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in paths:
            if path.is_file() and needle.encode() in path.read_bytes():
                found.append(path)
    return found


# -- the session ------------------------------------------------------------------------------


def test_view_session_lists_pods_is_refused_beyond_view_and_dies_at_end(
    app: Appliance, sim: KubeSimulator, tmp_path: Path
) -> None:
    resources = {r["name"]: r for r in json.loads(ok(app.bgtui("olive", "resources", "--json")))}
    assert resources["orders-k8s"]["address"] == sim.url
    does = {p["plane"]: p["does"] for p in resources["orders-k8s"]["planes"]}
    assert does["network"] == f"direct: no tunnel; 127.0.0.1:{sim.port} must answer a TCP connect"
    assert does["credential"].startswith("ServiceAccount in orders + RoleBinding in orders")
    cluster = {p["plane"]: p["does"] for p in resources["cluster-k8s"]["planes"]}
    assert "ClusterRoleBinding to ClusterRole" in cluster["credential"]
    rid = start_session(app, "orders-k8s", "readonly", duration="1m")
    kc = fetch_kubeconfig(app, rid, tmp_path / "session.kubeconfig")

    # Real kubectl uses the kubeconfig as is: its context already names namespace orders.
    listed = kubectl(kc, "get", "pods")
    assert listed.returncode == 0, listed.stderr
    for pod in SEEDED_ORDERS:
        assert pod in listed.stdout
    deleted = kubectl(kc, "delete", "pod", ORDERS_API)
    assert deleted.returncode != 0 and "Forbidden" in deleted.stderr
    assert f"system:serviceaccount:orders:bg-{rid.lower()}" in deleted.stderr
    assert kubectl(kc, "auth", "can-i", "delete", "pods").stdout.strip() == "no"
    assert kubectl(kc, "auth", "can-i", "list", "pods").stdout.strip() == "yes"
    elsewhere = kubectl(kc, "get", "pods", "-n", "payments")
    assert elsewhere.returncode != 0 and "Forbidden" in elsewhere.stderr

    # The minted objects are labelled with the session (and the controller) for sweep.
    name = f"bg-{rid.lower()}"
    assert labelled(sim, "/api/v1/namespaces/orders/serviceaccounts", rid) == [name]
    assert labelled(sim, f"{RBAC}/namespaces/orders/rolebindings", rid) == [name]
    binding = sim.admin_request("GET", f"{RBAC}/namespaces/orders/rolebindings/{name}").json()
    assert binding["metadata"]["labels"]["bgtui.dev/controller"] == "acme-prod"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "view",
    }

    # A 1-minute session still gets a token of the API's 10-minute minimum; the end revokes it.
    token = token_of(kc)
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] >= 600
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == name

    ended = end_session(app, rid)
    refused = kubectl(kc, "get", "pods")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr
    assert status(sim, f"/api/v1/namespaces/orders/serviceaccounts/{name}") == 404
    assert status(sim, f"{RBAC}/namespaces/orders/rolebindings/{name}") == 404
    artifacts = receipt_artifacts(ended)
    assert set(artifacts) == {"serviceaccount", "rolebinding"}
    for kind, artifact in artifacts.items():
        assert artifact["name"] == name and artifact["removed_at"], artifact
        assert artifact["how"] == f"deleted {kind} orders/{name}", artifact

    # No secret at rest: the token is nowhere in the controller's or the operator's home.
    homes = [app.home, app.log, *(i.home for i in app.identities.values())]
    assert (app.home / "state.db").exists()
    assert files_containing(homes, token) == []
    assert files_containing(homes, token.split(".")[2]) == []


def test_edit_session_may_delete_a_pod(app: Appliance, sim: KubeSimulator, tmp_path: Path) -> None:
    pod = {
        "metadata": {"name": "scratch-edit", "namespace": "orders"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }
    made = sim.admin_request("POST", "/api/v1/namespaces/orders/pods", pod)
    assert made.status_code == 201, made.text
    rid = start_session(app, "orders-k8s", "readwrite")
    kc = fetch_kubeconfig(app, rid, tmp_path / "edit.kubeconfig")
    assert kubectl(kc, "auth", "can-i", "delete", "pods").stdout.strip() == "yes"
    deleted = kubectl(kc, "delete", "pod", "scratch-edit")
    assert deleted.returncode == 0, deleted.stderr
    assert status(sim, "/api/v1/namespaces/orders/pods/scratch-edit") == 404
    # edit is still bound to one namespace.
    assert kubectl(kc, "get", "pods", "-n", "payments").returncode != 0
    end_session(app, rid)
    assert kubectl(kc, "get", "pods").returncode != 0


def test_cluster_scope_makes_and_removes_a_cluster_role_binding(
    app: Appliance, sim: KubeSimulator, tmp_path: Path
) -> None:
    rid = start_session(app, "cluster-k8s", "view")
    name = f"bg-{rid.lower()}"
    assert labelled(sim, f"{RBAC}/clusterrolebindings", rid) == [name]
    assert labelled(sim, f"{RBAC}/rolebindings", rid) == []
    kc = fetch_kubeconfig(app, rid, tmp_path / "cluster.kubeconfig")
    everywhere = kubectl(kc, "get", "pods", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert ORDERS_API in everywhere.stdout and "payments-api-5f6c7d8b9-q4w7e" in everywhere.stdout
    assert kubectl(kc, "auth", "can-i", "delete", "pods", "-n", "payments").stdout.strip() == "no"

    ended = end_session(app, rid)
    assert status(sim, f"{RBAC}/clusterrolebindings/{name}") == 404
    assert labelled(sim, "/api/v1/serviceaccounts", rid) == []
    artifacts = receipt_artifacts(ended)
    assert set(artifacts) == {"serviceaccount", "clusterrolebinding"}
    assert all(a["removed_at"] for a in artifacts.values())
    assert kubectl(kc, "get", "pods", "-A").returncode != 0


def test_expiry_revokes_the_kubeconfig_without_any_client_action(
    app: Appliance, sim: KubeSimulator, tmp_path: Path
) -> None:
    rid = start_session(app, "orders-k8s", "readonly", duration="5s")
    kc = fetch_kubeconfig(app, rid, tmp_path / "short.kubeconfig")
    assert kubectl(kc, "get", "pods").returncode == 0
    ended = poll(app, rid, state_is("ended"), timeout=20)
    assert ended["ended_reason"] == "expired"
    refused = kubectl(kc, "get", "pods")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr
    assert labelled(sim, "/api/v1/serviceaccounts", rid) == []


# -- teardown that has to wait for the cluster ------------------------------------------------


def controller_identity(sim: KubeSimulator, tmp_path: Path) -> str:
    """A kubeconfig for a ServiceAccount `bgtui-controller`, cluster-admin through a binding
    the test can take away (and give back) to make the API refuse the controller."""
    account = {"metadata": {"name": "bgtui-controller"}}
    made = sim.admin_request("POST", "/api/v1/namespaces/kube-system/serviceaccounts", account)
    assert made.status_code in (201, 409), made.text
    grant_controller(sim)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    path = "/api/v1/namespaces/kube-system/serviceaccounts/bgtui-controller/token"
    answer = sim.admin_request("POST", path, request)
    assert answer.status_code == 201, answer.text
    kubeconfig = sim.kubeconfig(
        tmp_path / "controller.kubeconfig", answer.json()["status"]["token"]
    )
    return kubeconfig.read_text()


def grant_controller(sim: KubeSimulator) -> None:
    binding = {
        "metadata": {"name": "bgtui-controller"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": "bgtui-controller", "namespace": "kube-system"}
        ],
    }
    made = sim.admin_request("POST", f"{RBAC}/clusterrolebindings", binding)
    assert made.status_code == 201, made.text


def test_teardown_retries_visibly_until_the_api_lets_it_delete(
    tmp_path: Path, sim: KubeSimulator
) -> None:
    text = controller_identity(sim, tmp_path)
    app = make_appliance(tmp_path, sim, {CONTROLLER_KUBECONFIG: text}, CONTROLLER_KUBECONFIG)
    try:
        rid = start_session(app, "orders-k8s", "readonly")
        name = f"bg-{rid.lower()}"
        kc = fetch_kubeconfig(app, rid, tmp_path / "session.kubeconfig")
        assert kubectl(kc, "get", "pods").returncode == 0

        # The cluster stops letting the controller delete anything.
        gone = sim.admin_request("DELETE", f"{RBAC}/clusterrolebindings/bgtui-controller")
        assert gone.status_code == 200, gone.text
        ok(app.bgtui("olive", "end", rid))

        def retried(view: View) -> bool:
            return any(
                p["action"] == "teardown" and (p["attempt"] or 0) >= 2 for p in view["planes"]
            )

        ending = poll(app, rid, retried, timeout=10)
        assert ending["state"] == "ending"
        step = next(p for p in ending["planes"] if p["action"] == "teardown")
        assert step["state"] == "intent" and "403" in step["error"], step
        assert step["retry_in"] >= 1.0
        retries = audit_events(app, "plane.teardown_retry")
        assert len(retries) >= 2
        assert [r["data"]["attempt"] for r in retries[:2]] == [1, 2]
        assert [r["data"]["retry_in"] for r in retries[:2]] == [0.5, 1.0]
        assert "retry in" in ok(app.bgtui("olive", "show", rid))
        # Meanwhile the session's objects still stand: nothing pretends they are gone.
        assert status(sim, f"/api/v1/namespaces/orders/serviceaccounts/{name}") == 200

        grant_controller(sim)  # the cluster relents; the next retry deletes for real
        ended = poll(app, rid, state_is("ended"), timeout=15)
        assert status(sim, f"/api/v1/namespaces/orders/serviceaccounts/{name}") == 404
        assert status(sim, f"{RBAC}/namespaces/orders/rolebindings/{name}") == 404
        artifacts = receipt_artifacts(ended)
        assert all(a["removed_at"] and "deleted" in a["how"] for a in artifacts.values())
        refused = kubectl(kc, "get", "pods")
        assert refused.returncode != 0 and "Unauthorized" in refused.stderr
    finally:
        app.close()
        sim.admin_request("DELETE", f"{RBAC}/clusterrolebindings/bgtui-controller")
        sim.admin_request(
            "DELETE", "/api/v1/namespaces/kube-system/serviceaccounts/bgtui-controller"
        )


# -- sweep ------------------------------------------------------------------------------------


def test_sweep_removes_labelled_leftovers_but_not_a_live_sessions_objects(
    app: Appliance, sim: KubeSimulator
) -> None:
    orphan = "01jd2v6xkq8zj3m4n5p6q7r8s9"
    labels = {"bgtui.dev/controller": "acme-prod", "bgtui.dev/session": orphan}
    name = f"bg-{orphan}"
    account = {"metadata": {"name": name, "labels": labels}}
    made = sim.admin_request("POST", "/api/v1/namespaces/orders/serviceaccounts", account)
    assert made.status_code == 201, made.text
    binding = {
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "orders"}],
    }
    made = sim.admin_request("POST", f"{RBAC}/namespaces/orders/rolebindings", binding)
    assert made.status_code == 201, made.text
    live = start_session(app, "orders-k8s", "readonly")

    dry = ok(run("bgctl", "--home", str(app.home), "sweep", "--dry-run"))
    # Two catalog entries share this cluster: each leftover is still listed once.
    assert sorted(line for line in dry.splitlines() if orphan in line) == [
        f"would remove rolebinding orders/{name} on orders-k8s (session {orphan})",
        f"would remove serviceaccount orders/{name} on orders-k8s (session {orphan})",
    ]
    assert live.lower() not in dry and "removed " not in dry
    assert status(sim, f"/api/v1/namespaces/orders/serviceaccounts/{name}") == 200

    swept = ok(run("bgctl", "--home", str(app.home), "sweep"))
    assert f"removed serviceaccount orders/{name}" in swept
    assert f"removed rolebinding orders/{name}" in swept
    assert live.lower() not in swept
    assert status(sim, f"/api/v1/namespaces/orders/serviceaccounts/{name}") == 404
    assert status(sim, f"{RBAC}/namespaces/orders/rolebindings/{name}") == 404
    assert labelled(sim, "/api/v1/serviceaccounts", live) == [f"bg-{live.lower()}"]
    assert show(app, live)["state"] == "active"
    end_session(app, live)
    # Once ended, the session itself left nothing behind for a sweep to find.
    assert labelled(sim, "/api/v1/serviceaccounts", live) == []
    assert labelled(sim, f"{RBAC}/rolebindings", live) == []


# -- a Secret read by a recipe ----------------------------------------------------------------


def test_kubernetes_secret_recipe_hands_over_the_value_sealed(
    app: Appliance, sim: KubeSimulator
) -> None:
    value = "orders-db-pw-7f3a9c2e1b"
    secret = {
        "metadata": {"name": "orders-db", "namespace": "orders"},
        "type": "Opaque",
        "data": {"password": base64.b64encode(value.encode()).decode()},
    }
    made = sim.admin_request("POST", "/api/v1/namespaces/orders/secrets", secret)
    assert made.status_code in (201, 409), made.text
    try:
        rid = start_session(app, "orders-db-secret", "read")
        creds = json.loads(ok(app.bgtui("olive", "creds", rid, "--json")))
        assert creds == {"value": value}
        assert f"value: {value}" in ok(app.bgtui("olive", "creds", rid))
        denied = app.bgtui("alice", "creds", rid)  # sealed to the operator; nobody else
        assert denied.returncode != 0 and value not in denied.stdout + denied.stderr
        ended = end_session(app, rid)
        assert json.loads(ended["receipt"]["payload"])["artifacts"] == []
        homes = [app.home, app.log, *(i.home for i in app.identities.values())]
        assert files_containing(homes, value) == []
    finally:
        sim.admin_request("DELETE", "/api/v1/namespaces/orders/secrets/orders-db")


def test_connect_runs_kubectl_in_a_subshell_and_removes_its_kubeconfig(app: Appliance) -> None:
    """`bgtui connect` (the TUI's launcher, without the TUI) gives a shell whose KUBECONFIG works
    for the approved privilege, and deletes that 0600 file when the shell exits."""
    rid = start_session(app, "orders-k8s", "readonly")
    script = (
        'stat -c %a "$KUBECONFIG"; echo "file=$KUBECONFIG"; kubectl get pods -o name;'
        " kubectl delete pod checkout-0 2>&1 | head -1; exit\n"
    )
    done = app.bgtui("olive", "connect", rid, input=script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("KUBECONFIG=") and "removed when this shell exits" in lines[0]
    assert lines[1] == "600"
    path = Path(next(line for line in lines if line.startswith("file=")).removeprefix("file="))
    assert not path.exists()
    assert any(line.startswith("pod/") for line in lines), done.stdout
    assert "Forbidden" in done.stdout
    end_session(app, rid)
