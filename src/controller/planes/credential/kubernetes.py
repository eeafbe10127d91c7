"""Kubernetes, minted by the controller: a per-session ServiceAccount, a binding, a token.

The ServiceAccount and its RoleBinding (or ClusterRoleBinding) carry labels naming the
session, so `bgctl sweep` finds leftovers. The TokenRequest asks for the session's remaining
time, floored at the API's 10-minute minimum; deleting the ServiceAccount at teardown is what
ends the token early (the API server rejects tokens whose ServiceAccount is gone).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from bgtui.protocol.objects import Request
from bgtui.protocol.timefmt import now_utc
from controller.config import Resource
from controller.planes.base import Artifact, Minted, PlaneError, SessionContext, crash_point

if TYPE_CHECKING:
    from controller.sweep import Leftover, Sessions

MIN_TOKEN_SECONDS = 600  # the TokenRequest API refuses shorter expirations
SESSION_LABEL = "bgtui.dev/session"
CONTROLLER_LABEL = "bgtui.dev/controller"


def api_clients(resource: Resource, home: Path) -> Any:
    """(ApiClient, CoreV1Api, RbacAuthorizationV1Api) for the resource's admin kubeconfig."""
    from kubernetes import client, config

    path = resource.options.get("kubeconfig")
    if not isinstance(path, str):
        raise PlaneError(
            f"{resource.name}: set options.kubeconfig (the controller's admin kubeconfig)"
        )
    try:
        api = config.new_client_from_config(config_file=str(home / path))  # type: ignore[no-untyped-call]
    except Exception as exc:  # the client raises many kinds for a bad file
        raise PlaneError(f"{resource.name}: cannot load kubeconfig {path}: {exc}") from None
    return api, client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)


def _api_error(exc: Exception) -> PlaneError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or str(exc)
    return PlaneError(f"kubernetes API: {status} {reason}".strip())


def resource_controller(resource: Resource, home: Path) -> str:
    """The controller id labels name: read from the home's controller.toml."""
    from controller.config import load_config

    return load_config(home / "controller.toml").id


def read_secret(ctx: SessionContext, home: Path, namespace: str, name: str, key: str) -> str:
    """Reads one key of a Secret with the controller's credential (for secret-store recipes)."""
    from kubernetes.client.exceptions import ApiException

    api, core, _ = api_clients(ctx.resource, home)
    with api:
        try:
            secret = core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise _api_error(exc) from None
    data = (secret.data or {}).get(key)
    if data is None:
        raise PlaneError(f"secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(data).decode()


class KubernetesCredential:
    """ServiceAccount + (Cluster)RoleBinding to the privilege's ClusterRole + TokenRequest."""

    plane: ClassVar[str] = "credential"
    name: ClassVar[str] = "kubernetes"

    def __init__(self, home: Path) -> None:
        self.home = home

    @staticmethod
    def _scope(resource: Resource) -> tuple[str, bool]:
        namespace = resource.options.get("namespace", "default")
        cluster = resource.options.get("scope") == "cluster"
        if not isinstance(namespace, str):
            raise PlaneError(f"{resource.name}: options.namespace must be a string")
        return namespace, cluster

    def prepare(self, resource: Resource, request: Request | None) -> str:
        namespace, cluster = self._scope(resource)
        role = (
            resource.grants.get(request.privilege, request.privilege) if request else "<privilege>"
        )
        binding = "ClusterRoleBinding" if cluster else f"RoleBinding in {namespace}"
        return (
            f"ServiceAccount in {namespace} + {binding} to ClusterRole {role} + a token "
            "expiring with the session; all deleted at teardown"
        )

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        namespace, cluster = self._scope(ctx.resource)
        name = ctx.label
        binding_kind = "clusterrolebinding" if cluster else "rolebinding"
        return [
            Artifact(self.plane, self.name, "serviceaccount", name, data={"namespace": namespace}),
            Artifact(self.plane, self.name, binding_kind, name, data={"namespace": namespace}),
        ]

    async def mint(self, ctx: SessionContext) -> Minted:
        return await asyncio.to_thread(self._mint, ctx)

    def _mint(self, ctx: SessionContext) -> Minted:
        from kubernetes.client.exceptions import ApiException

        namespace, cluster = self._scope(ctx.resource)
        name = ctx.label
        labels = {SESSION_LABEL: ctx.session_id.lower(), CONTROLLER_LABEL: ctx.config.id}
        role = ctx.grant()
        remaining = MIN_TOKEN_SECONDS
        if ctx.expires_at is not None:
            remaining = int((ctx.expires_at - now_utc()).total_seconds())
        api, core, rbac = api_clients(ctx.resource, self.home)
        with api:
            try:
                core.create_namespaced_service_account(
                    namespace, {"metadata": {"name": name, "labels": labels}}
                )
                crash_point("mint:kubernetes:serviceaccount")
                binding = {
                    "metadata": {"name": name, "labels": labels},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                }
                if cluster:
                    rbac.create_cluster_role_binding(binding)
                else:
                    rbac.create_namespaced_role_binding(namespace, binding)
                crash_point("mint:kubernetes:binding")
                token = core.create_namespaced_service_account_token(
                    name,
                    namespace,
                    {"spec": {"expirationSeconds": max(MIN_TOKEN_SECONDS, remaining)}},
                )
            except ApiException as exc:
                raise _api_error(exc) from None
            host = api.configuration.host
            ca_file = api.configuration.ssl_ca_cert
        kubeconfig = self._kubeconfig(ctx, host, ca_file, token.status.token, namespace)
        return Minted(self.planned(ctx), {"kubeconfig": kubeconfig, "namespace": namespace})

    @staticmethod
    def _kubeconfig(
        ctx: SessionContext, server: str, ca_file: str | None, token: str, namespace: str
    ) -> str:
        cluster: dict[str, Any] = {"server": server}
        if ca_file:
            cluster["certificate-authority-data"] = base64.b64encode(
                Path(ca_file).read_bytes()
            ).decode()
        name = f"{ctx.config.id}-{ctx.resource.name}"
        user = f"bgtui-{ctx.session_id.lower()}"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": user, "namespace": namespace}}
            ],
            "current-context": name,
        }
        return yaml.safe_dump(document, sort_keys=False)

    def sweep(self, resource: Resource, sessions: Sessions, dry_run: bool) -> list[Leftover]:
        """Objects labelled as this controller's whose session is not live."""
        from kubernetes.client.exceptions import ApiException

        from controller.sweep import Leftover

        api, core, rbac = api_clients(resource, self.home)
        selector = f"{CONTROLLER_LABEL}={resource_controller(resource, self.home)}"
        found: list[Leftover] = []
        with api:
            try:
                listings = [
                    (
                        "rolebinding",
                        rbac.list_role_binding_for_all_namespaces(label_selector=selector).items,
                    ),
                    (
                        "clusterrolebinding",
                        rbac.list_cluster_role_binding(label_selector=selector).items,
                    ),
                    (
                        "serviceaccount",
                        core.list_service_account_for_all_namespaces(label_selector=selector).items,
                    ),
                ]
                for kind, items in listings:
                    for item in items:
                        session = (item.metadata.labels or {}).get(SESSION_LABEL, "")
                        if sessions.live(session):
                            continue
                        namespace = item.metadata.namespace or ""
                        name = item.metadata.name
                        if not dry_run:
                            if kind == "serviceaccount":
                                core.delete_namespaced_service_account(name, namespace)
                            elif kind == "rolebinding":
                                rbac.delete_namespaced_role_binding(name, namespace)
                            else:
                                rbac.delete_cluster_role_binding(name)
                        where = f"{namespace}/{name}" if namespace else name
                        found.append(Leftover(resource.name, kind, where, session, not dry_run))
            except ApiException as exc:
                raise _api_error(exc) from None
        return found

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        return await asyncio.to_thread(self._teardown, ctx, artifact)

    def _teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        from kubernetes.client.exceptions import ApiException

        namespace = artifact.data.get("namespace", "default")
        api, core, rbac = api_clients(ctx.resource, self.home)
        with api:
            try:
                if artifact.kind == "serviceaccount":
                    core.delete_namespaced_service_account(artifact.name, namespace)
                elif artifact.kind == "rolebinding":
                    rbac.delete_namespaced_role_binding(artifact.name, namespace)
                elif artifact.kind == "clusterrolebinding":
                    rbac.delete_cluster_role_binding(artifact.name)
                else:
                    return "nothing to remove"
            except ApiException as exc:
                if exc.status == 404:
                    return f"{artifact.kind} {artifact.name} was already gone"
                raise _api_error(exc) from None
        return f"deleted {artifact.kind} {namespace}/{artifact.name}"
