"""The Kubernetes API simulator, driven by real kubectl and the official Python client.

One simulator process serves the whole module. Each test mints its own ServiceAccount token the
way the credential plane will (ServiceAccount + RoleBinding + TokenRequest, with the admin
token), then uses it as an operator would.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from controller.sandbox.kube import KubeSimulator

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")

ORDERS_API = "orders-api-7c9d8f6b5-k2x4p"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeSimulator]:
    with KubeSimulator(tmp_path_factory.mktemp("kube") / "state", seed="demo") as simulator:
        yield simulator


@pytest.fixture(scope="module")
def admin(sim: KubeSimulator, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    kubeconfig = sim.admin_kubeconfig(tmp_path_factory.mktemp("admin") / "kubeconfig")
    return config.new_client_from_config(config_file=str(kubeconfig))


def grant(admin: client.ApiClient, namespace: str, role: str, seconds: int = 600) -> str:
    """ServiceAccount + RoleBinding to ClusterRole `role` + TokenRequest; returns the token."""
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    name = f"bg-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)],
        ),
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    answer = core.create_namespaced_service_account_token(name, namespace, request)
    token: str = answer.status.token
    return token


def account_of(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    name: str = claims["kubernetes.io"]["serviceaccount"]["name"]
    return name


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def session_client(sim: KubeSimulator, token: str, tmp_path: Path) -> client.CoreV1Api:
    kubeconfig = sim.kubeconfig(tmp_path / "session-py.kubeconfig", token)
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def test_view_session_reads_pods_and_logs_but_cannot_delete_or_read_secrets(
    sim: KubeSimulator, admin: client.ApiClient, tmp_path: Path
) -> None:
    token = grant(admin, "orders", "view")
    kc = sim.kubeconfig(tmp_path / "session.kubeconfig", token)

    listed = kubectl(kc, "get", "pods", "-n", "orders")
    assert listed.returncode == 0, listed.stderr
    assert ORDERS_API in listed.stdout and "Running" in listed.stdout
    assert listed.stdout.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]

    logs = kubectl(kc, "logs", ORDERS_API, "-n", "orders")
    assert logs.returncode == 0, logs.stderr
    assert "payment callback timed out for order 48213" in logs.stdout

    described = kubectl(kc, "describe", "pod", ORDERS_API, "-n", "orders")
    assert described.returncode == 0, described.stderr
    assert "Status:           Running" in described.stdout

    deleted = kubectl(kc, "delete", "pod", ORDERS_API, "-n", "orders")
    assert deleted.returncode != 0
    assert "Forbidden" in deleted.stderr
    user = f"system:serviceaccount:orders:{account_of(token)}"
    assert (
        f'pods "{ORDERS_API}" is forbidden: User "{user}" cannot delete resource "pods" '
        'in API group "" in the namespace "orders"'
    ) in deleted.stderr

    can_delete = kubectl(kc, "auth", "can-i", "delete", "pods", "-n", "orders")
    assert can_delete.stdout.strip() == "no"
    can_list = kubectl(kc, "auth", "can-i", "list", "pods", "-n", "orders")
    assert can_list.stdout.strip() == "yes"

    secrets = kubectl(kc, "get", "secrets", "-n", "orders")
    assert secrets.returncode != 0 and "Forbidden" in secrets.stderr
    elsewhere = kubectl(kc, "get", "pods", "-n", "payments")
    assert elsewhere.returncode != 0 and "Forbidden" in elsewhere.stderr

    still_there = client.CoreV1Api(admin).read_namespaced_pod(ORDERS_API, "orders")
    assert still_there.status.phase == "Running"


def test_edit_session_deletes_a_pod(
    sim: KubeSimulator, admin: client.ApiClient, tmp_path: Path
) -> None:
    admin_kc = sim.admin_kubeconfig(tmp_path / "admin.kubeconfig")
    created = kubectl(admin_kc, "create", "namespace", "team-edit")
    assert created.returncode == 0, created.stderr
    core = client.CoreV1Api(admin)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="doomed", labels={"app": "doomed"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox")]),
    )
    core.create_namespaced_pod("team-edit", pod)
    kc = sim.kubeconfig(tmp_path / "edit.kubeconfig", grant(admin, "team-edit", "edit"))

    assert kubectl(kc, "auth", "can-i", "delete", "pods", "-n", "team-edit").stdout.strip() == "yes"
    deleted = kubectl(kc, "delete", "pod", "doomed", "-n", "team-edit")
    assert deleted.returncode == 0, deleted.stderr
    gone = kubectl(kc, "get", "pod", "doomed", "-n", "team-edit")
    assert gone.returncode != 0 and 'pods "doomed" not found' in gone.stderr


def test_token_shorter_than_ten_minutes_is_refused(admin: client.ApiClient) -> None:
    with pytest.raises(client.ApiException) as refused:
        grant(admin, "orders", "view", seconds=599)
    assert refused.value.status == 422
    assert "may not specify a duration less than 10 minutes" in str(refused.value.body)


def test_expired_token_is_refused(
    sim: KubeSimulator, admin: client.ApiClient, tmp_path: Path
) -> None:
    kc = sim.kubeconfig(tmp_path / "session.kubeconfig", grant(admin, "orders", "view"))
    assert kubectl(kc, "get", "pods", "-n", "orders").returncode == 0
    sim.advance_clock(590)
    assert kubectl(kc, "get", "pods", "-n", "orders").returncode == 0
    sim.advance_clock(11)
    expired = kubectl(kc, "get", "pods", "-n", "orders")
    assert expired.returncode != 0 and "Unauthorized" in expired.stderr


def test_deleting_the_service_account_revokes_its_token_at_once(
    sim: KubeSimulator, admin: client.ApiClient, tmp_path: Path
) -> None:
    token = grant(admin, "orders", "view")
    kc = sim.kubeconfig(tmp_path / "session.kubeconfig", token)
    assert kubectl(kc, "get", "pods", "-n", "orders").returncode == 0
    core = client.CoreV1Api(admin)
    core.delete_namespaced_service_account(account_of(token), "orders")
    refused = kubectl(kc, "get", "pods", "-n", "orders")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr

    # A new ServiceAccount of the same name has a new uid: the old token stays dead.
    core.create_namespaced_service_account(
        "orders", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account_of(token)))
    )
    assert kubectl(kc, "get", "pods", "-n", "orders").returncode != 0


def test_altered_token_and_missing_token_are_unauthorized(
    sim: KubeSimulator, admin: client.ApiClient
) -> None:
    token = grant(admin, "orders", "view")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 3600
    longer = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    verify = ssl.create_default_context(cafile=str(sim.ca_path))
    with httpx.Client(base_url=sim.url, verify=verify) as http:
        pods = "/api/v1/namespaces/orders/pods"
        ok = http.get(pods, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["kind"] == "PodList"
        for bad in (f"{header}.{longer}.{signature}", f"{header}.{payload}.{flipped}", "junk"):
            answer = http.get(pods, headers={"Authorization": f"Bearer {bad}"})
            assert answer.status_code == 401
            assert answer.json()["reason"] == "Unauthorized"
        anonymous = http.get(pods)
        assert anonymous.status_code == 401 and anonymous.json()["kind"] == "Status"


def test_official_client_lists_with_session_token_and_gets_403_on_delete(
    sim: KubeSimulator, admin: client.ApiClient, tmp_path: Path
) -> None:
    core = session_client(sim, grant(admin, "orders", "view"), tmp_path)
    names = [pod.metadata.name for pod in core.list_namespaced_pod("orders").items]
    assert ORDERS_API in names
    backend = core.list_namespaced_pod("orders", label_selector="tier=backend,app!=orders-worker")
    assert [pod.metadata.name for pod in backend.items] == [ORDERS_API]
    assert core.list_namespaced_pod("orders", label_selector="tier").items
    assert not core.list_namespaced_pod("orders", label_selector="!tier").items
    with pytest.raises(client.ApiException) as refused:
        core.delete_namespaced_pod(ORDERS_API, "orders")
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["reason"] == "Forbidden"


def test_token_review_follows_the_service_account(admin: client.ApiClient) -> None:
    token = grant(admin, "orders", "view")
    reviews = client.AuthenticationV1Api(admin)
    review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    answer = reviews.create_token_review(review)
    assert answer.status.authenticated is True
    assert answer.status.user.username == f"system:serviceaccount:orders:{account_of(token)}"
    assert "system:serviceaccounts:orders" in answer.status.user.groups
    client.CoreV1Api(admin).delete_namespaced_service_account(account_of(token), "orders")
    assert reviews.create_token_review(review).status.authenticated is False


def test_status_objects_for_missing_and_duplicate_objects(admin: client.ApiClient) -> None:
    core = client.CoreV1Api(admin)
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod("no-such-pod", "orders")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'pods "no-such-pod" not found'
    with pytest.raises(client.ApiException) as duplicate:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="orders")))
    assert duplicate.value.status == 409
    assert json.loads(duplicate.value.body)["reason"] == "AlreadyExists"


def test_all_namespaces_and_service_accounts_with_kubectl(
    sim: KubeSimulator, tmp_path: Path
) -> None:
    kc = sim.admin_kubeconfig(tmp_path / "admin.kubeconfig")
    everywhere = kubectl(kc, "get", "pods", "-A", "-l", "tier=backend")
    assert everywhere.returncode == 0, everywhere.stderr
    assert "payments-api-5f6c7d8b9-q4w7e" in everywhere.stdout and ORDERS_API in everywhere.stdout
    assert "orders-db-0" not in everywhere.stdout
    accounts = kubectl(kc, "get", "sa", "-n", "payments")
    assert accounts.returncode == 0 and "default" in accounts.stdout


def test_private_keys_and_admin_token_are_private(sim: KubeSimulator) -> None:
    for name in ("ca.key", "server.key", "admin.token"):
        assert stat.S_IMODE((sim.state_dir / name).stat().st_mode) == 0o600
    assert sim.ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_namespace_admin_may_bind_view_but_not_cluster_admin(
    sim: KubeSimulator, admin: client.ApiClient, tmp_path: Path
) -> None:
    kubeconfig = sim.kubeconfig(tmp_path / "ns-admin.kubeconfig", grant(admin, "payments", "admin"))
    rbac = client.RbacAuthorizationV1Api(config.new_client_from_config(config_file=str(kubeconfig)))

    def binding(name: str, role: str) -> client.V1RoleBinding:
        return client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default")],
        )

    rbac.create_namespaced_role_binding("payments", binding("default-view", "view"))
    with pytest.raises(client.ApiException) as escalation:
        rbac.create_namespaced_role_binding("payments", binding("default-root", "cluster-admin"))
    assert escalation.value.status == 403
    assert "attempting to grant RBAC permissions not currently held" in escalation.value.body
