"""The Kubernetes API simulator's HTTP surface: a Starlette app speaking the REST wire format.

Every request is authenticated (bearer tokens only; anonymous requests get 401) and authorised by
RBAC before anything else happens, so a missing object the caller may not see is a 403, as on a
real API server. Errors are `Status` objects worded like the real ones, because kubectl prints
their messages as they are.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from controller.sandbox import kube_objects as objects
from controller.sandbox import kube_resources as res
from controller.sandbox.kube_errors import ApiError, Invalid
from controller.sandbox.kube_protobuf import ProtobufError, decode_body
from controller.sandbox.kube_rbac import (
    RBAC_GROUP,
    Attributes,
    Authorizer,
    UserInfo,
    forbidden_message,
)
from controller.sandbox.kube_resources import Resource
from controller.sandbox.kube_store import Store, Watch
from controller.sandbox.kube_tokens import API_AUDIENCE, TokenSigner

Obj = dict[str, Any]

ADMIN_USER = UserInfo("sandbox-admin", groups=("system:masters", "system:authenticated"))
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass
class Target:
    """A resource request parsed from its URL."""

    resource: Resource
    namespace: str
    name: str
    verb: str


def _http_verb(method: str, has_name: bool, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        return "watch" if watch else ("get" if has_name else "list")
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if has_name else "deletecollection",
    }.get(method, method.lower())


def parse_resource_path(path: str, method: str, watch: bool) -> Target | None:
    """The resource, namespace, name and verb of a `/api/...` or `/apis/...` URL (None: other)."""
    segments = [s for s in path.split("/") if s]
    if len(segments) >= 3 and segments[0] == "api":
        group, version, rest = "", segments[1], segments[2:]
    elif len(segments) >= 4 and segments[0] == "apis":
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        if len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if len(rest) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    plural, name, sub = [*rest, "", ""][:3]
    resource = res.find_resource(group, version, plural, sub)
    if resource is None or (resource.namespaced and not namespace and method != "GET"):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if sub and not name:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if not resource.namespaced and plural != "namespaces":
        namespace = ""
    return Target(resource, namespace, name, _http_verb(method, bool(name), watch))


class KubeApi:
    """The simulator's state and request handling; `app` is the ASGI application."""

    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self.signer = TokenSigner()
        self.admin_token = admin_token
        self.authorizer = Authorizer(
            cluster_role_bindings=lambda: self.store.list((RBAC_GROUP, "clusterrolebindings")),
            role_bindings=lambda ns: self.store.list((RBAC_GROUP, "rolebindings"), ns),
            lookup_role=self._lookup_role,
        )
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self.handle,
                    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )

    def _lookup_role(self, kind: str, namespace: str, name: str) -> Obj | None:
        plural = "roles" if kind == "Role" else "clusterroles"
        return self.store.get((RBAC_GROUP, plural), namespace, name)

    # -- authentication ------------------------------------------------------------------

    def authenticate_token(self, token: str) -> tuple[UserInfo | None, tuple[str, ...]]:
        """(user, token audiences) for a bearer token; (None, ()) when it is not valid now."""
        if secrets.compare_digest(token.encode(), self.admin_token.encode()):
            return ADMIN_USER, (API_AUDIENCE,)
        claims = self.signer.verify(token, self.store.now())
        if claims is None:
            return None, ()
        account = self.store.get(("", "serviceaccounts"), claims.namespace, claims.service_account)
        # A bound token dies with its ServiceAccount, even if one of the same name comes back.
        if account is None or account["metadata"]["uid"] != claims.service_account_uid:
            return None, ()
        user = UserInfo(
            claims.username,
            uid=claims.service_account_uid,
            groups=(
                "system:serviceaccounts",
                f"system:serviceaccounts:{claims.namespace}",
                "system:authenticated",
            ),
            extra={"authentication.kubernetes.io/credential-id": [f"JTI={claims.token_id}"]},
        )
        return user, claims.audiences

    def _authenticate(self, request: Request) -> UserInfo:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user, audiences = self.authenticate_token(token.strip())
            if user is not None and API_AUDIENCE in audiences:
                return user
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _authorize(self, attrs: Attributes, resource: Resource | None = None) -> None:
        if not self.authorizer.allowed(attrs):
            qualified = resource.qualified if resource else ""
            details: Obj = {"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}
            raise ApiError(403, "Forbidden", forbidden_message(attrs, qualified), details)

    # -- dispatch ------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Every request: authenticate, authorise, serve; one access-log line on stdout."""
        who = "-"
        try:
            user = self._authenticate(request)
            who = user.name
            response = await self._dispatch(request, user, request.url.path)
        except ApiError as error:
            response = error.response()
        except Invalid as error:
            cause = {"reason": "FieldValueInvalid", "message": error.cause, "field": error.field}
            details = {"name": error.name, "kind": error.kind.split(".")[0], "causes": [cause]}
            response = ApiError(422, "Invalid", str(error), details).response()
        query = f"?{request.url.query}" if request.url.query else ""
        print(f"{request.method} {request.url.path}{query} {who} {response.status_code}")
        return response

    async def _dispatch(self, request: Request, user: UserInfo, path: str) -> Response:
        if path.startswith("/sandbox/"):
            return await self._sandbox(request, user, path)
        watch = request.query_params.get("watch") in ("true", "1")
        target = parse_resource_path(path, request.method, watch)
        if target is None:
            verb = "get" if request.method == "HEAD" else request.method.lower()
            self._authorize(Attributes(user, verb, path=path, resource_request=False))
            return self._non_resource(path)
        resource = target.resource
        self._authorize(
            Attributes(
                user,
                target.verb,
                resource.group,
                resource.plural,
                resource.subresource,
                target.namespace,
                target.name,
            ),
            resource,
        )
        body: Obj = {}
        if request.method in ("POST", "PUT", "PATCH"):
            body = read_body(await request.body(), request.headers.get("content-type", ""))
        return await self._resource(request, user, target, body)

    def _non_resource(self, path: str) -> Response:
        trimmed = path.rstrip("/") or "/"
        if trimmed == "/version":
            return JSONResponse(res.SERVER_VERSION)
        if trimmed in ("/healthz", "/livez", "/readyz"):
            return PlainTextResponse("ok")
        if trimmed == "/api":
            return JSONResponse(res.api_versions())
        if trimmed == "/apis":
            return JSONResponse(res.api_group_list())
        parts = trimmed.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            found = res.resource_list("", parts[1])
        elif parts[0] == "apis" and len(parts) == 2 and parts[1] in res.groups():
            return JSONResponse(res.api_group(parts[1]))
        elif parts[0] == "apis" and len(parts) == 3:
            found = res.resource_list(parts[1], parts[2])
        else:
            found = None
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return JSONResponse(found)

    async def _sandbox(self, request: Request, user: UserInfo, path: str) -> Response:
        """Simulator-only controls (not Kubernetes API): for the admin token only."""
        if user.name != ADMIN_USER.name:
            raise ApiError(403, "Forbidden", "the sandbox controls are for the admin token only")
        if path == "/sandbox/advance" and request.method == "POST":
            try:
                seconds = float(request.query_params.get("seconds", "0"))
            except ValueError:
                seconds = -1
            if seconds < 0:
                raise ApiError(
                    400, "BadRequest", "seconds must be a number >= 0: the clock only moves forward"
                )
            self.store.clock_offset += seconds
            return JSONResponse({"now": self.store.timestamp(), "offset": self.store.clock_offset})
        match = re.fullmatch(r"/sandbox/logs/([^/]+)/([^/]+)(?:/([^/]+))?", path)
        if match and request.method == "PUT":
            pod = self.store.get(("", "pods"), match[1], match[2])
            if pod is None:
                raise ApiError(404, "NotFound", f'pods "{match[2]}" not found')
            containers = [match[3]] if match[3] else [c["name"] for c in pod["spec"]["containers"]]
            for container in containers:
                self.store.logs[(match[1], match[2], container)] = (await request.body()).decode()
            return JSONResponse({"containers": containers})
        raise ApiError(404, "NotFound", "no such sandbox control")

    # -- resources -----------------------------------------------------------------------

    async def _resource(
        self, request: Request, user: UserInfo, target: Target, body: Obj
    ) -> Response:
        handler = objects.ResourceHandler(self, request, user, target)
        return await handler.run(body)

    def table_wanted(self, request: Request) -> bool:
        return "as=Table" in request.headers.get("accept", "")

    def generated_name(self, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        return prefix + "".join(secrets.choice(alphabet) for _ in range(5))

    async def watch_stream(
        self, request: Request, watch: Watch, table: Resource | None, timeout: float
    ) -> AsyncIterator[bytes]:
        """Newline-delimited watch events until the timeout or the client goes away."""
        self.store.watches.append(watch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            yield b""
            while (left := deadline - loop.time()) > 0:
                try:
                    kind, obj = await asyncio.wait_for(watch.queue.get(), timeout=min(left, 5))
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if table is not None:
                    rv = obj["metadata"].get("resourceVersion", "")
                    obj = res.table(table, [obj], rv, self.store.now())
                yield json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        finally:
            self.store.watches.remove(watch)

    def streaming(self, request: Request, watch: Watch, table: Resource | None) -> Response:
        timeout = float(request.query_params.get("timeoutSeconds") or 1800)
        return StreamingResponse(
            self.watch_stream(request, watch, table, min(timeout, 1800)),
            media_type="application/json",
        )


def read_body(data: bytes, content_type: str) -> Obj:
    """A request body as JSON-shaped data: JSON, or the protobuf kubectl's typed clients send."""
    if "protobuf" in content_type:
        try:
            return decode_body(data)
        except ProtobufError as error:
            raise ApiError(415, "UnsupportedMediaType", str(error)) from error
    try:
        body = json.loads(data or b"{}")
    except ValueError as error:
        raise ApiError(400, "BadRequest", f"invalid JSON body: {error}") from error
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body
