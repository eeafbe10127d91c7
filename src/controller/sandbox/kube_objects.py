"""The Kubernetes API simulator's verbs on stored objects: list, get, create, update, patch,
delete, watch, plus the pod log and the ServiceAccount token subresources and the reviews.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from controller.sandbox import kube_resources as res
from controller.sandbox import kube_reviews as reviews
from controller.sandbox.kube_errors import ApiError, Invalid, not_found
from controller.sandbox.kube_rbac import RBAC_GROUP, Attributes, UserInfo
from controller.sandbox.kube_resources import Resource
from controller.sandbox.kube_store import Watch, parse_field_selector, parse_label_selector

if TYPE_CHECKING:
    from controller.sandbox.kube_api import KubeApi, Target

Obj = dict[str, Any]
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def default_log(namespace: str, pod: str, container: str, started: str) -> str:
    return (
        f"{started} INFO starting {container} in pod {namespace}/{pod}\n"
        f"{started} INFO listening on :8080\n"
        f"{started} INFO ready\n"
    )


def pod_status(pod: Obj, now: str) -> Obj:
    """A Running status for a pod, as if the kubelet had started every container."""
    containers = pod.get("spec", {}).get("containers") or []
    return {
        "phase": "Running",
        "conditions": [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "hostIP": "10.0.0.10",
        "podIP": f"10.244.0.{len(pod['metadata']['name']) % 250 + 2}",
        "startTime": now,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": f"docker-pullable://{c.get('image', '')}",
                "containerID": f"containerd://{secrets.token_hex(32)}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            }
            for c in containers
        ],
    }


def validate_name(resource: Resource, name: str, kind: str) -> None:
    if resource.group == RBAC_GROUP:
        ok = name not in (".", "..") and not any(c in name for c in "/%")
        why = "may not contain '/' or '%'"
    elif resource.plural == "namespaces":
        ok = bool(_DNS_LABEL.match(name)) and len(name) <= 63
        why = (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character"
        )
    else:
        ok = bool(_DNS_SUBDOMAIN.match(name)) and len(name) <= 253
        why = (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    if not ok:
        raise Invalid(kind, name, "metadata.name", name, why)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selectors(request: Request) -> Any:
    """One predicate for the request's labelSelector and fieldSelector (400 when malformed)."""
    try:
        labels = parse_label_selector(request.query_params.get("labelSelector", ""))
        fields = parse_field_selector(request.query_params.get("fieldSelector", ""))
    except ValueError as error:
        raise ApiError(400, "BadRequest", str(error)) from error
    return lambda obj: labels(obj) and fields(obj)


class ResourceHandler:
    """One authorised request on one resource type."""

    def __init__(self, api: KubeApi, request: Request, user: UserInfo, target: Target) -> None:
        self.api, self.request, self.user, self.target = api, request, user, target
        self.store = api.store
        self.resource: Resource = target.resource
        self.key = (self.resource.group, self.resource.plural)

    async def run(self, body: Obj) -> Response:
        verb, sub = self.target.verb, self.resource.subresource
        if sub == "log":
            return self.log()
        if sub == "token":
            return self.token(body)
        if self.resource.group in ("authentication.k8s.io", "authorization.k8s.io"):
            return self.review(body)
        handler = {
            "list": self.list,
            "watch": self.watch,
            "get": self.get,
            "create": lambda: self.create(body),
            "update": lambda: self.update(body),
            "patch": lambda: self.patch(body),
            "delete": self.delete,
            "deletecollection": self.delete_collection,
        }[verb]
        return handler()

    # -- reads ---------------------------------------------------------------------------

    def _existing(self) -> Obj:
        namespace = "" if self.target.resource.plural == "namespaces" else self.target.namespace
        obj = self.store.get(self.key, namespace, self.target.name)
        if obj is None:
            raise not_found(self.resource, self.target.name)
        return obj

    def _out(self, obj: Obj) -> Obj:
        shown = copy.deepcopy(obj)
        shown["kind"], shown["apiVersion"] = self.resource.kind, self.resource.api_version
        return shown

    def _matching(self) -> list[Obj]:
        namespace = "" if self.resource.plural == "namespaces" else self.target.namespace
        matches = selectors(self.request)
        return [self._out(o) for o in self.store.list(self.key, namespace) if matches(o)]

    def list(self) -> Response:
        items = self._matching()
        version = str(self.store.resource_version)
        if self.api.table_wanted(self.request):
            return JSONResponse(res.table(self.resource, items, version, self.store.now()))
        return JSONResponse(
            {
                "kind": f"{self.resource.kind}List",
                "apiVersion": self.resource.api_version,
                "metadata": {"resourceVersion": version},
                "items": items,
            }
        )

    def get(self) -> Response:
        obj = self._out(self._existing())
        if self.api.table_wanted(self.request):
            version = obj["metadata"]["resourceVersion"]
            return JSONResponse(res.table(self.resource, [obj], version, self.store.now()))
        return JSONResponse(obj)

    def watch(self) -> Response:
        namespace = "" if self.resource.plural == "namespaces" else self.target.namespace
        predicate = selectors(self.request)
        watch = Watch(self.key, namespace, predicate)
        table = self.resource if self.api.table_wanted(self.request) else None
        return self.api.streaming(self.request, watch, table)

    # -- writes --------------------------------------------------------------------------

    def _dry_run(self) -> bool:
        return bool(self.request.query_params.get("dryRun"))

    def _prepare(self, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, self.resource.kind):
            raise ApiError(
                400,
                "BadRequest",
                f"the kind in the data ({obj.get('kind')}) does not match the expected kind "
                f"({self.resource.kind})",
            )
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        metadata = obj.setdefault("metadata", {})
        if self.resource.namespaced:
            given = metadata.get("namespace")
            if given and given != self.target.namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request",
                )
            metadata["namespace"] = self.target.namespace
        else:
            metadata.pop("namespace", None)
        return obj

    def create(self, body: Obj) -> Response:
        obj = self._prepare(body)
        metadata = obj["metadata"]
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = self.api.generated_name(metadata["generateName"])
        name = metadata.get("name") or ""
        kind = f"{self.resource.kind}" + (f".{self.resource.group}" if self.resource.group else "")
        if not name:
            raise Invalid(kind, "", "metadata.name", "", "name or generateName is required")
        validate_name(self.resource, name, kind)
        namespace = metadata.get("namespace", "")
        if namespace and self.store.get(("", "namespaces"), "", namespace) is None:
            namespaces = res.find_resource("", "v1", "namespaces")
            assert namespaces is not None
            raise not_found(namespaces, namespace)
        if self.store.get(self.key, namespace, name) is not None:
            details = {"name": name, "group": self.resource.group, "kind": self.resource.plural}
            message = f'{self.resource.qualified} "{name}" already exists'
            raise ApiError(409, "AlreadyExists", message, details)
        self._validate(obj, kind, name)
        self._escalation_check(obj)
        self._defaults(obj)
        if self._dry_run():
            return JSONResponse(self._out(obj), status_code=201)
        stored = self.store.create(self.key, obj)
        self._after_create(stored)
        return JSONResponse(self._out(stored), status_code=201)

    def _validate(self, obj: Obj, kind: str, name: str) -> None:
        plural = self.resource.plural
        if plural == "pods":
            containers = obj.get("spec", {}).get("containers") or []
            if not containers:
                raise Invalid(kind, name, "spec.containers", [], "Required value")
            for index, container in enumerate(containers):
                if not container.get("name") or not container.get("image"):
                    field = f"spec.containers[{index}]"
                    raise Invalid(kind, name, field, "", "name and image are required")
        if plural in ("rolebindings", "clusterrolebindings"):
            ref = obj.get("roleRef") or {}
            allowed = ("Role", "ClusterRole") if plural == "rolebindings" else ("ClusterRole",)
            if ref.get("kind") not in allowed or not ref.get("name"):
                raise Invalid(
                    kind, name, "roleRef.kind", ref.get("kind", ""), f"supported values: {allowed}"
                )

    def _escalation_check(self, obj: Obj) -> None:
        """RBAC forbids granting permissions one does not hold, unless one may `bind`."""
        namespace = self.target.namespace
        if self.resource.plural in ("roles", "clusterroles"):
            rules = obj.get("rules") or []
            verb = "escalate"
            ref_kind, ref_name = self.resource.kind, obj["metadata"]["name"]
        elif self.resource.plural in ("rolebindings", "clusterrolebindings"):
            ref = obj["roleRef"]
            role = self.api._lookup_role(
                ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"]
            )
            rules = (role or {}).get("rules") or []
            verb, ref_kind, ref_name = "bind", ref["kind"], ref["name"]
        else:
            return
        if self.api.authorizer.covers(self.user, namespace, rules):
            return
        plural = "roles" if ref_kind == "Role" else "clusterroles"
        bypass = Attributes(self.user, verb, RBAC_GROUP, plural, "", namespace, ref_name)
        if self.api.authorizer.allowed(bypass):
            return
        message = (
            f'{self.resource.qualified} "{obj["metadata"]["name"]}" is forbidden: user '
            f'"{self.user.name}" is attempting to grant RBAC permissions not currently held'
        )
        raise ApiError(403, "Forbidden", message)

    def _defaults(self, obj: Obj) -> None:
        plural = self.resource.plural
        now = self.store.timestamp()
        if plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif plural == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("nodeName", "sandbox-node")
            spec.setdefault("restartPolicy", "Always")
            obj["status"] = pod_status(obj, now)
        elif plural == "secrets":
            obj["type"] = obj.get("type") or "Opaque"
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()

    def _after_create(self, stored: Obj) -> None:
        plural = self.resource.plural
        if plural == "namespaces":
            name = stored["metadata"]["name"]
            default = {"metadata": {"name": "default", "namespace": name}}
            self.store.create(("", "serviceaccounts"), default)

    def _replace(self, obj: Obj, existing: Obj) -> Response:
        wanted = obj["metadata"].get("resourceVersion")
        current = existing["metadata"]["resourceVersion"]
        if wanted and wanted != current:
            message = (
                f"Operation cannot be fulfilled on {self.resource.qualified} "
                f'"{self.target.name}": the object has been modified; please apply your changes '
                "to the latest version and try again"
            )
            raise ApiError(409, "Conflict", message)
        for kept in ("uid", "creationTimestamp", "namespace", "name"):
            if kept in existing["metadata"]:
                obj["metadata"][kept] = existing["metadata"][kept]
        if self.resource.plural in ("rolebindings", "clusterrolebindings") and obj.get(
            "roleRef"
        ) != existing.get("roleRef"):
            kind = f"{self.resource.kind}.{RBAC_GROUP}"
            raise Invalid(kind, self.target.name, "roleRef", "", "cannot change roleRef")
        if self.resource.subresource == "status":
            obj = {**copy.deepcopy(existing), "status": obj.get("status", {})}
        elif "status" in existing and self.resource.plural in ("pods", "namespaces"):
            obj["status"] = existing["status"]
        self._escalation_check(obj)
        if self._dry_run():
            return JSONResponse(self._out(obj))
        return JSONResponse(self._out(self.store.replace(self.key, obj)))

    def update(self, body: Obj) -> Response:
        existing = self._existing()
        obj = self._prepare(body)
        if obj["metadata"].get("name", self.target.name) != self.target.name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        obj["metadata"]["name"] = self.target.name
        return self._replace(obj, existing)

    def patch(self, body: Obj) -> Response:
        content_type = self.request.headers.get("content-type", "")
        if "merge-patch" not in content_type and "apply-patch" not in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the simulator supports merge and strategic merge patches, not {content_type!r}",
            )
        existing = self._existing()
        patched = merge_patch(copy.deepcopy(existing), body)
        patched.pop("kind", None)
        patched.pop("apiVersion", None)
        return self._replace(patched, existing)

    def delete(self) -> Response:
        existing = self._existing()
        if self._dry_run():
            return JSONResponse(self._out(existing))
        namespace = existing["metadata"].get("namespace", "")
        if self.resource.plural == "namespaces":
            self.store.delete_namespace_contents(self.target.name)
        gone = self.store.delete(self.key, namespace, self.target.name)
        assert gone is not None
        if self.resource.plural == "namespaces":
            gone["status"] = {"phase": "Terminating"}
        return JSONResponse(self._out(gone))

    def delete_collection(self) -> Response:
        items = self._matching()
        if not self._dry_run():
            for obj in items:
                metadata = obj["metadata"]
                self.store.delete(self.key, metadata.get("namespace", ""), metadata["name"])
        return JSONResponse(
            {
                "kind": f"{self.resource.kind}List",
                "apiVersion": self.resource.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": items,
            }
        )

    # -- subresources and reviews -----------------------------------------------------------

    def log(self) -> Response:
        pods = res.find_resource("", "v1", "pods")
        assert pods is not None
        self.resource, self.key = pods, ("", "pods")
        pod = self._existing()
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = self.request.query_params.get("container") or ""
        if not container:
            if len(names) > 1:
                message = (
                    f"a container name must be specified for pod {self.target.name}, "
                    f"choose one of: [{' '.join(names)}]"
                )
                raise ApiError(400, "BadRequest", message)
            container = names[0]
        if container not in names:
            message = f"container {container} is not valid for pod {self.target.name}"
            raise ApiError(400, "BadRequest", message)
        if self.request.query_params.get("previous") in ("true", "1"):
            message = (
                f'previous terminated container "{container}" in pod "{self.target.name}" not found'
            )
            raise ApiError(400, "BadRequest", message)
        started = pod["metadata"]["creationTimestamp"]
        text = self.store.logs.get((self.target.namespace, self.target.name, container))
        if text is None:
            text = default_log(self.target.namespace, self.target.name, container, started)
        tail = self.request.query_params.get("tailLines")
        if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - int(tail) :]) if int(tail) else ""
        return PlainTextResponse(text)

    def token(self, body: Obj) -> Response:
        accounts = res.find_resource("", "v1", "serviceaccounts")
        assert accounts is not None
        self.resource, self.key = accounts, ("", "serviceaccounts")
        account = self._existing()
        seconds, audiences = reviews.token_request_spec(body, self.target.name)
        now = int(self.store.now())
        token, expires = self.api.signer.issue(
            self.target.namespace,
            self.target.name,
            account["metadata"]["uid"],
            audiences,
            now,
            seconds,
        )
        response = reviews.token_request_response(
            self.target.namespace,
            self.target.name,
            seconds,
            audiences,
            token,
            self.store.timestamp(expires),
            self.store.timestamp(now),
        )
        return JSONResponse(response, status_code=201)

    def review(self, body: Obj) -> Response:
        plural = self.resource.plural
        if plural == "tokenreviews":
            token = str((body.get("spec") or {}).get("token", ""))
            user, audiences = self.api.authenticate_token(token)
            return JSONResponse(reviews.token_review(body, user, audiences), status_code=201)
        if plural == "selfsubjectreviews":
            return JSONResponse(reviews.self_subject_review(self.user), status_code=201)
        answer = reviews.access_review(
            self.resource.kind, body, self.user, self.api.authorizer, self.target.namespace
        )
        return JSONResponse(answer, status_code=201)
