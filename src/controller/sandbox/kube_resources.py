"""What the Kubernetes API simulator serves: its resource types, discovery documents and tables.

Discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`) is what kubectl reads to map
`po`, `sa` or `clusterroles` to a URL; server-side Tables are what `kubectl get` prints.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

CRUD = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-sandbox-simulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Resource:
    """One REST resource (or subresource, when `subresource` is set) of one group/version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = tuple(CRUD)
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresource: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`pods` or `roles.rbac.authorization.k8s.io`, as the API server names it in errors."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> Obj:
        name = f"{self.plural}/{self.subresource}" if self.subresource else self.plural
        entry: Obj = {
            "name": name,
            "singularName": "" if self.subresource else self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        if self.subresource == "token":
            entry.update(group="authentication.k8s.io", version="v1")
        return entry


_RBAC = "rbac.authorization.k8s.io"
_AUTHN = "authentication.k8s.io"
_AUTHZ = "authorization.k8s.io"
_C = ("create",)

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, tuple(CRUD), ("ns",)),
    Resource("", "v1", "pods", "Pod", True, tuple(CRUD), ("po",), ("all",)),
    Resource("", "v1", "pods", "Pod", True, ("get",), subresource="log"),
    Resource("", "v1", "pods", "Pod", True, ("get", "patch", "update"), subresource="status"),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, tuple(CRUD), ("sa",)),
    Resource(
        "", "v1", "serviceaccounts", "TokenRequest", True, ("create",), subresource="token"
    ),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "configmaps", "ConfigMap", True, tuple(CRUD), ("cm",)),
    Resource("", "v1", "services", "Service", True, tuple(CRUD), ("svc",), ("all",)),
    Resource("", "v1", "events", "Event", True, tuple(CRUD), ("ev",)),
    Resource(_RBAC, "v1", "roles", "Role", True),
    Resource(_RBAC, "v1", "clusterroles", "ClusterRole", False),
    Resource(_RBAC, "v1", "rolebindings", "RoleBinding", True),
    Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource(_AUTHN, "v1", "tokenreviews", "TokenReview", False, ("create",)),
    Resource(_AUTHN, "v1", "selfsubjectreviews", "SelfSubjectReview", False, _C),
    Resource(_AUTHZ, "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, _C),
    Resource(_AUTHZ, "v1", "subjectaccessreviews", "SubjectAccessReview", False, _C),
    Resource(_AUTHZ, "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", True, _C),
)  # fmt: skip


def find_resource(group: str, version: str, plural: str, subresource: str = "") -> Resource | None:
    """The served resource for a URL's group, version, plural and subresource."""
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural) and (
            resource.subresource == subresource
        ):
            return resource
    return None


def api_versions() -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def groups() -> list[str]:
    return sorted({r.group for r in RESOURCES if r.group})


def api_group(name: str) -> Obj:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": [version],
        "preferredVersion": version,
    }


def api_group_list() -> Obj:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{k: v for k, v in api_group(g).items() if k != "apiVersion"} for g in groups()],
    }


def resource_list(group: str, version: str) -> Obj | None:
    served = [r for r in RESOURCES if (r.group, r.version) == (group, version)]
    if not served:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [r.discovery() for r in served],
    }


def human_duration(seconds: float) -> str:
    """Kubernetes' `duration.HumanDuration`, the AGE column's format."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def parse_time(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def _age(obj: Obj, now: float) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    return human_duration(now - parse_time(created)) if created else "<unknown>"


def _column(name: str, kind: str = "string", description: str = "", fmt: str = "") -> Obj:
    return {"name": name, "type": kind, "format": fmt, "description": description, "priority": 0}


_NAME = _column("Name", fmt="name", description="Name must be unique within a namespace.")
_AGE = _column("Age", description="CreationTimestamp is a timestamp representing the server time.")


def _pod_cells(pod: Obj) -> list[Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    containers = pod.get("spec", {}).get("containers") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = pod.get("status", {}).get("phase", "Pending")
    if pod.get("metadata", {}).get("deletionTimestamp"):
        phase = "Terminating"
    return [f"{ready}/{len(containers)}", phase, str(restarts)]


def _table_shape(resource: Resource) -> tuple[list[Obj], Any]:
    if resource.plural == "pods":
        return [
            _column("Ready", description="The aggregate readiness state of this pod."),
            _column("Status", description="The aggregate status of the containers in this pod."),
            _column("Restarts", description="The number of times the containers restarted."),
        ], _pod_cells
    if resource.plural == "namespaces":
        return [_column("Status", description="The status of the namespace")], lambda o: [
            o.get("status", {}).get("phase", "Active")
        ]
    if resource.plural == "secrets":
        return [_column("Type"), _column("Data", "integer")], lambda o: [
            o.get("type", "Opaque"),
            len(o.get("data") or {}),
        ]
    if resource.plural in ("rolebindings", "clusterrolebindings"):
        return [_column("Role")], lambda o: [
            f"{o.get('roleRef', {}).get('kind', '')}/{o.get('roleRef', {}).get('name', '')}"
        ]
    return [], lambda o: []


def table(resource: Resource, objects: list[Obj], resource_version: str, now: float) -> Obj:
    """A meta.k8s.io/v1 Table, the server-side printing `kubectl get` asks for."""
    extra, cells = _table_shape(resource)
    rows = []
    for obj in objects:
        metadata = obj.get("metadata", {})
        rows.append(
            {
                "cells": [metadata.get("name", ""), *cells(obj), _age(obj, now)],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [_NAME, *extra, _AGE],
        "rows": rows,
    }
