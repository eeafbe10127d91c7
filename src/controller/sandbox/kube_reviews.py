"""The Kubernetes API simulator's non-stored objects: TokenRequest and the review APIs.

TokenRequest mints a bound ServiceAccount token; TokenReview says who a token belongs to;
SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview and
LocalSubjectAccessReview run the same RBAC evaluation as every request; SelfSubjectReview is
`kubectl auth whoami`.
"""

from __future__ import annotations

from typing import Any

from controller.sandbox.kube_errors import Invalid
from controller.sandbox.kube_rbac import Attributes, Authorizer, UserInfo
from controller.sandbox.kube_tokens import API_AUDIENCE

Obj = dict[str, Any]

MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32


def token_request_spec(body: Obj, name: str) -> tuple[int, list[str]]:
    """(expirationSeconds, audiences) of a TokenRequest, validated as the API server does."""
    spec = body.get("spec") or {}
    seconds = spec.get("expirationSeconds")
    seconds = 3600 if seconds is None else seconds
    kind = "TokenRequest.authentication.k8s.io"
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise Invalid(kind, name, "spec.expirationSeconds", seconds, "must be an integer")
    if seconds < MIN_EXPIRATION:
        why = "may not specify a duration less than 10 minutes"
        raise Invalid(kind, name, "spec.expirationSeconds", seconds, why)
    if seconds > MAX_EXPIRATION:
        why = "may not specify a duration larger than 2^32 seconds"
        raise Invalid(kind, name, "spec.expirationSeconds", seconds, why)
    audiences = [str(a) for a in spec.get("audiences") or []] or [API_AUDIENCE]
    return seconds, audiences


def token_request_response(
    namespace: str, name: str, seconds: int, audiences: list[str], token: str, expiry: str, now: str
) -> Obj:
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now},
        "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
        "status": {"token": token, "expirationTimestamp": expiry},
    }


def user_json(user: UserInfo) -> Obj:
    result: Obj = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        result["uid"] = user.uid
    if user.extra:
        result["extra"] = user.extra
    return result


def token_review(body: Obj, user: UserInfo | None, token_audiences: tuple[str, ...]) -> Obj:
    """Fills `status` of a TokenReview for the user the token authenticated as (or None)."""
    spec = body.get("spec") or {}
    wanted = [str(a) for a in spec.get("audiences") or []] or [API_AUDIENCE]
    matched = [a for a in wanted if a in token_audiences]
    status: Obj
    if user is None:
        status = {"authenticated": False, "user": {}, "error": "invalid bearer token"}
    elif not matched:
        status = {"authenticated": False, "user": {}, "error": "token audiences is invalid"}
    else:
        status = {"authenticated": True, "user": user_json(user), "audiences": matched}
    return {
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }


def _attributes(spec: Obj, user: UserInfo, namespace: str | None = None) -> Attributes:
    if "nonResourceAttributes" in spec and spec["nonResourceAttributes"] is not None:
        attrs = spec["nonResourceAttributes"]
        return Attributes(
            user, attrs.get("verb", ""), path=attrs.get("path", ""), resource_request=False
        )
    attrs = spec.get("resourceAttributes") or {}
    return Attributes(
        user,
        verb=attrs.get("verb", ""),
        api_group=attrs.get("group", ""),
        resource=attrs.get("resource", ""),
        subresource=attrs.get("subresource", ""),
        namespace=attrs.get("namespace", "") if namespace is None else namespace,
        name=attrs.get("name", ""),
    )


def access_review(
    kind: str, body: Obj, requester: UserInfo, authorizer: Authorizer, namespace: str = ""
) -> Obj:
    """Answers a (Self|Local)SubjectAccessReview with the same RBAC evaluation as requests."""
    spec = body.get("spec") or {}
    if kind == "SelfSubjectAccessReview":
        subject = requester
    else:
        subject = UserInfo(
            name=spec.get("user", ""),
            uid=spec.get("uid", ""),
            groups=tuple(spec.get("groups") or ()),
            extra=spec.get("extra") or {},
        )
    attrs = _attributes(spec, subject, namespace or None)
    allowed = authorizer.allowed(attrs)
    status: Obj = {"allowed": allowed}
    if allowed:
        status["reason"] = "RBAC: allowed by a binding"
    return {
        "kind": kind,
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None, **({"namespace": namespace} if namespace else {})},
        "spec": spec,
        "status": status,
    }


def self_subject_review(user: UserInfo) -> Obj:
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user_json(user)},
    }
