"""A Kubernetes API simulator for the sandbox appliance, the demo and the tests.

This is a simulator of the Kubernetes API, not Kubernetes: nothing is scheduled and no container
runs. It is a real HTTPS server (with its own CA) in its own process that speaks the Kubernetes
REST wire format for what bgtui uses and what `kubectl get/describe/logs/delete/auth can-i`
need: discovery (`/api`, `/apis`, `/version`), namespaces, pods (seeded as Running, with canned
logs), serviceaccounts and their `token` subresource (TokenRequest), secrets, configmaps,
services, events, roles, clusterroles (`view`, `edit`, `admin`, `cluster-admin` seeded),
rolebindings, clusterrolebindings, tokenreviews, selfsubjectreviews and (self/local)
subjectaccessreviews, with server-side Tables for `kubectl get`, label and field selectors, and
watches. It authenticates bearer tokens (no anonymous access), rejects expired tokens, altered
tokens and tokens whose ServiceAccount is gone (or was recreated), and authorises every request
with real RBAC evaluation, so a `view` session can list pods and cannot delete them. State lives
in memory and dies with the process. No real cluster can run where bgtui's tests run, so this is
the project's one test double (DESIGN §8).

Simulator-only controls, outside the Kubernetes API and for the admin token only:
`POST /sandbox/advance?seconds=N` moves the simulator's clock forward (to expire tokens without
waiting) and `PUT /sandbox/logs/NAMESPACE/POD[/CONTAINER]` sets a pod's canned log.

Run it alone with `python -m controller.sandbox.kube --state-dir DIR [--port N] [--seed demo]`;
the admin token is in `DIR/admin.token`, the CA in `DIR/ca.crt`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from controller.sandbox.kube_api import KubeApi
from controller.sandbox.kube_rbac import (
    RBAC_GROUP,
    seeded_cluster_role_bindings,
    seeded_cluster_roles,
)
from controller.sandbox.kube_store import Store
from controller.sandbox.kube_tls import SimulatorFiles, ensure_pki
from controller.sandbox.ports import SandboxServer, die_with_parent

Obj = dict[str, Any]

BASE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

DEMO_SEED: Obj = {
    "namespaces": {
        "default": {
            "pods": [
                {"name": "web-5d8f7c9b6d-x2kqp", "labels": {"app": "web"}, "image": "nginx:1.27"}
            ]
        },
        "orders": {
            "pods": [
                {
                    "name": "orders-api-7c9d8f6b5-k2x4p",
                    "labels": {"app": "orders-api", "tier": "backend"},
                    "image": "registry.example/orders-api:2.14.1",
                    "log": (
                        "2025-01-01T09:00:00Z INFO orders-api 2.14.1 starting\n"
                        "2025-01-01T09:00:01Z INFO connected to orders-db:5432\n"
                        "2025-01-01T09:00:01Z INFO listening on :8080\n"
                        "2025-01-01T09:12:44Z WARN slow query: SELECT * FROM orders WHERE "
                        "status='pending' (2.3s)\n"
                        "2025-01-01T09:13:02Z ERROR payment callback timed out for order 48213\n"
                    ),
                },
                {
                    "name": "orders-worker-6b7d5c4f9-m8n3q",
                    "labels": {"app": "orders-worker", "tier": "backend"},
                    "image": "registry.example/orders-worker:2.14.1",
                },
                {
                    "name": "orders-db-0",
                    "labels": {"app": "orders-db", "tier": "db"},
                    "image": "postgres:16",
                },
            ]
        },
        "payments": {
            "pods": [
                {
                    "name": "payments-api-5f6c7d8b9-q4w7e",
                    "labels": {"app": "payments-api", "tier": "backend"},
                    "image": "registry.example/payments-api:1.8.0",
                    "log": (
                        "2025-01-01T09:00:00Z INFO payments-api 1.8.0 starting\n"
                        "2025-01-01T09:00:02Z INFO provider gateway reachable\n"
                        "2025-01-01T09:13:01Z WARN upstream latency 4.1s for charge 99120\n"
                    ),
                },
                {
                    "name": "payments-gateway-8d9e7f6a5-z3x5c",
                    "labels": {"app": "payments-gateway", "tier": "edge"},
                    "image": "registry.example/payments-gateway:1.8.0",
                },
            ]
        },
    }
}


# -- the simulator process -------------------------------------------------------------------


def _create(api: KubeApi, group: str, plural: str, obj: Obj) -> Obj:
    return api.store.create((group, plural), obj)


def seed_cluster(api: KubeApi, seed: Obj) -> None:
    """A fresh cluster's namespaces, roles and bindings, then the namespaces and pods of `seed`."""
    from controller.sandbox.kube_objects import pod_status

    for name, rules, labels in seeded_cluster_roles():
        obj = {"metadata": {"name": name, "labels": labels}, "rules": rules}
        _create(api, RBAC_GROUP, "clusterroles", obj)
    for name, role, subject in seeded_cluster_role_bindings():
        ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role}
        obj = {"metadata": {"name": name}, "roleRef": ref, "subjects": [subject]}
        _create(api, RBAC_GROUP, "clusterrolebindings", obj)
    namespaces: dict[str, Obj] = {name: {} for name in BASE_NAMESPACES}
    namespaces.update(seed.get("namespaces") or {})
    for namespace, content in namespaces.items():
        _create(
            api,
            "",
            "namespaces",
            {
                "metadata": {
                    "name": namespace,
                    "labels": {"kubernetes.io/metadata.name": namespace},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )
        _create(
            api, "", "serviceaccounts", {"metadata": {"name": "default", "namespace": namespace}}
        )
        for pod in (content or {}).get("pods") or []:
            containers = pod.get("containers") or [
                {"name": pod.get("container", "main"), "image": pod.get("image", "busybox:1.36")}
            ]
            obj = {
                "metadata": {
                    "name": pod["name"],
                    "namespace": namespace,
                    "labels": pod.get("labels") or {},
                },
                "spec": {
                    "containers": containers,
                    "serviceAccountName": "default",
                    "nodeName": "sandbox-node",
                    "restartPolicy": "Always",
                },
            }
            stored = _create(api, "", "pods", obj)
            stored["status"] = pod_status(stored, stored["metadata"]["creationTimestamp"])
            if pod.get("log") is not None:
                for container in containers:
                    api.store.logs[(namespace, pod["name"], container["name"])] = pod["log"]


def load_seed(seed: str) -> Obj:
    """`demo`, `none`, or a YAML/JSON file `{namespaces: {NAME: {pods: [{name, labels, image,
    log}]}}}`."""
    if seed == "demo":
        return DEMO_SEED
    if seed in ("none", ""):
        return {}
    loaded = yaml.safe_load(Path(seed).read_text())
    if not isinstance(loaded, dict):
        raise SystemExit(f"seed file {seed}: expected a mapping with 'namespaces'")
    return loaded


def serve(state_dir: Path, port: int = 0, seed: str = "demo") -> None:
    """Runs the simulator in this process until SIGTERM/SIGINT."""
    files = ensure_pki(state_dir)
    api = KubeApi(Store(), files.admin_token.read_text().strip())
    seed_cluster(api, load_seed(seed))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.set_inheritable(True)
    pending = files.port.with_suffix(".tmp")
    pending.write_text(str(sock.getsockname()[1]))
    pending.replace(files.port)
    config = uvicorn.Config(
        api.app,
        ssl_certfile=str(files.server_cert),
        ssl_keyfile=str(files.server_key),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m controller.sandbox.kube",
        description="A Kubernetes API simulator (not Kubernetes) for the bgtui sandbox.",
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", default="demo", help="demo, none, or a YAML file")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    serve(args.state_dir, args.port, args.seed)


# -- the handle the demo and the tests hold ------------------------------------------------------


def write_kubeconfig(
    path: Path, server: str, ca_path: Path, token: str, user: str, namespace: str | None = None
) -> Path:
    """A kubeconfig (mode 0600: it holds the token) for one bearer token against one server."""
    context: Obj = {"cluster": "sandbox", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {"server": server, "certificate-authority": str(ca_path)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": context}],
        "current-context": "sandbox",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


class KubeSimulator(SandboxServer):
    """Starts and stops the Kubernetes API simulator as a child process (see the module doc)."""

    def __init__(self, state_dir: Path, port: int = 0, *, seed: str | Path = "demo") -> None:
        self.state_dir = Path(state_dir)
        self.requested_port = port
        self.seed = str(seed)
        self.files = SimulatorFiles(self.state_dir)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.files.ca_cert

    @property
    def admin_token(self) -> str:
        return self.files.admin_token.read_text().strip()

    @property
    def log_path(self) -> Path:
        return self.files.log

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> KubeSimulator:
        """Starts the server process and returns once `/version` answers over verified TLS."""
        if self.running:
            return self
        ensure_pki(self.state_dir)
        self.files.port.unlink(missing_ok=True)
        command = [sys.executable, "-m", "controller.sandbox.kube"]
        command += ["--state-dir", str(self.state_dir), "--port", str(self.requested_port)]
        command += ["--seed", self.seed]
        with self.files.log.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"kube simulator exited: {self.files.log.read_text()[-2000:]}")
            if self.files.port.exists():
                self.port = int(self.files.port.read_text())
                with contextlib.suppress(httpx.HTTPError):
                    if self.admin_request("GET", "/version").status_code == 200:
                        return
            time.sleep(0.05)
        raise TimeoutError(f"kube simulator not ready after {timeout}s: see {self.files.log}")

    def stop(self) -> None:
        """Stops the server process (its state goes with it); safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def admin_request(
        self, method: str, path: str, body: Obj | None = None, content: bytes | None = None
    ) -> httpx.Response:
        """One request with the admin token, verified against the simulator's CA."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        verify = ssl.create_default_context(cafile=str(self.ca_path))
        with httpx.Client(base_url=self.url, verify=verify, timeout=10) as client:
            if body is not None:
                return client.request(method, path, headers=headers, content=json.dumps(body))
            return client.request(method, path, headers=headers, content=content)

    def admin_kubeconfig(self, path: Path) -> Path:
        """Writes a kubeconfig for the admin (cluster-admin) token and returns its path."""
        return write_kubeconfig(path, self.url, self.ca_path, self.admin_token, "sandbox-admin")

    def kubeconfig(self, path: Path, token: str, namespace: str | None = None) -> Path:
        """Writes a kubeconfig for any bearer token (e.g. a session's ServiceAccount token)."""
        return write_kubeconfig(path, self.url, self.ca_path, token, "session", namespace)

    def advance_clock(self, seconds: float) -> None:
        """Moves the simulator's clock forward (simulator-only control, not Kubernetes)."""
        response = self.admin_request("POST", f"/sandbox/advance?seconds={seconds}")
        response.raise_for_status()

    def set_log(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        """Sets a pod's canned log (simulator-only control, not Kubernetes)."""
        path = f"/sandbox/logs/{namespace}/{pod}" + (f"/{container}" if container else "")
        self.admin_request("PUT", path, content=text.encode()).raise_for_status()


if __name__ == "__main__":
    main()
