"""RBAC for the Kubernetes API simulator: the real evaluation rules over the stored objects.

A request is allowed iff a ClusterRoleBinding, or a RoleBinding in the request's namespace, binds
one of the user's identities (user name, groups, ServiceAccount) to a Role or ClusterRole with a
rule that matches. There is no deny and no default allow, as in Kubernetes. The seeded
ClusterRoles are flattened copies of the real bootstrap policy (the real `view`, `edit` and
`admin` are aggregated from several roles; the simulator keeps only the core API parts it serves).
For the groups it serves ("", discovery.k8s.io, authorization.k8s.io, rbac.authorization.k8s.io)
they were checked triple by triple (group, resource, verb) against upstream's
plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata/cluster-roles.yaml (kubernetes commit
025f2834): view 63, edit 154, admin 171, nothing more or less on either side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

RBAC_GROUP = "rbac.authorization.k8s.io"
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity, as a TokenReview reports it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, in the terms RBAC rules are written in."""

    user: UserInfo
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Obj:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


_VIEW_CORE = [
    "configmaps",
    "endpoints",
    "persistentvolumeclaims",
    "persistentvolumeclaims/status",
    "pods",
    "replicationcontrollers",
    "replicationcontrollers/scale",
    "serviceaccounts",
    "services",
    "services/status",
]
_VIEW_STATUS = [
    "bindings",
    "events",
    "limitranges",
    "namespaces/status",
    "pods/log",
    "pods/status",
    "replicationcontrollers/status",
    "resourcequotas",
    "resourcequotas/status",
]
_EDIT_CORE = [
    "replicationcontrollers",
    "replicationcontrollers/scale",
    "serviceaccounts",
    "services",
    "services/proxy",
    "persistentvolumeclaims",
    "configmaps",
    "secrets",
    "events",
]
_POD_WRITE = ["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]

VIEW_RULES = [
    _rule([""], _VIEW_CORE, READ),
    _rule([""], _VIEW_STATUS, READ),
    _rule([""], ["namespaces"], READ),
    _rule(["discovery.k8s.io"], ["endpointslices"], READ),
]
EDIT_RULES = [
    *VIEW_RULES,
    _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets"], READ),
    _rule([""], ["services/proxy"], READ),
    _rule([""], ["serviceaccounts"], ["impersonate"]),
    _rule([""], _POD_WRITE, WRITE),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], _EDIT_CORE, WRITE),
    _rule([""], ["serviceaccounts/token"], ["create"]),
]
ADMIN_RULES = [
    *EDIT_RULES,
    _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    _rule([RBAC_GROUP], ["rolebindings", "roles"], [*READ, *WRITE]),
]


def seeded_cluster_roles() -> list[tuple[str, list[Obj], dict[str, str]]]:
    """(name, rules, labels) of the ClusterRoles every simulator starts with."""
    bootstrap = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    return [
        (
            "cluster-admin",
            [_rule(["*"], ["*"], ["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}],
            bootstrap,
        ),
        ("admin", ADMIN_RULES, bootstrap),
        ("edit", EDIT_RULES, bootstrap),
        ("view", VIEW_RULES, bootstrap),
        (
            "system:discovery",
            [
                {
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/openapi",
                        "/openapi/*",
                        "/readyz",
                        "/version",
                        "/version/",
                    ],
                    "verbs": ["get"],
                }
            ],
            bootstrap,
        ),
        (
            "system:basic-user",
            [
                _rule(["authorization.k8s.io"], ["selfsubjectaccessreviews"], ["create"]),
                _rule(["authorization.k8s.io"], ["selfsubjectrulesreviews"], ["create"]),
                _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"]),
            ],
            bootstrap,
        ),
    ]


def seeded_cluster_role_bindings() -> list[tuple[str, str, Obj]]:
    """(binding name, ClusterRole name, subject) bound at start, as a fresh cluster has them."""
    group = {"apiGroup": RBAC_GROUP, "kind": "Group"}
    return [
        ("cluster-admin", "cluster-admin", {**group, "name": "system:masters"}),
        ("system:discovery", "system:discovery", {**group, "name": "system:authenticated"}),
        ("system:basic-user", "system:basic-user", {**group, "name": "system:authenticated"}),
    ]


def _has(values: Iterable[str], wanted: str) -> bool:
    return any(value in ("*", wanted) for value in values)


def _resource_matches(rule_resources: Iterable[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for item in rule_resources:
        if item in ("*", combined):
            return True
        if subresource and item == f"*/{subresource}":
            return True
    return False


def _path_matches(patterns: Iterable[str], path: str) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == path:
            return True
        if pattern.endswith("*") and path.startswith(pattern[:-1]):
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    """One PolicyRule against one request, with Kubernetes' matching (wildcards, subresources)."""
    if not _has(rule.get("verbs") or [], attrs.verb):
        return False
    if not attrs.resource_request:
        return _path_matches(rule.get("nonResourceURLs") or [], attrs.path)
    if not _has(rule.get("apiGroups") or [], attrs.api_group):
        return False
    if not _resource_matches(rule.get("resources") or [], attrs.resource, attrs.subresource):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def subject_matches(subject: Obj, user: UserInfo, binding_namespace: str) -> bool:
    """Does a binding subject name this user (directly, by group, or as its ServiceAccount)?"""
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{name}"
    return False


RoleLookup = Callable[[str, str, str], Obj | None]
"""(kind, namespace, name) -> the Role or ClusterRole object, or None."""


@dataclass
class Authorizer:
    """Evaluates requests against the RoleBindings and ClusterRoleBindings of a store."""

    cluster_role_bindings: Callable[[], Iterable[Obj]]
    role_bindings: Callable[[str], Iterable[Obj]]
    lookup_role: RoleLookup

    def _rules_for(self, user: UserInfo, namespace: str) -> Iterator[Obj]:
        for binding in self.cluster_role_bindings():
            if any(subject_matches(s, user, "") for s in binding.get("subjects") or []):
                role = self.lookup_role("ClusterRole", "", binding["roleRef"]["name"])
                yield from (role or {}).get("rules") or []
        if not namespace:
            return
        for binding in self.role_bindings(namespace):
            if any(subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                ref = binding["roleRef"]
                role_ns = namespace if ref.get("kind") == "Role" else ""
                role = self.lookup_role(ref.get("kind", ""), role_ns, ref["name"])
                yield from (role or {}).get("rules") or []

    def allowed(self, attrs: Attributes) -> bool:
        """True iff some bound rule grants the request."""
        return any(
            rule_allows(rule, attrs) for rule in self._rules_for(attrs.user, attrs.namespace)
        )

    def covers(self, user: UserInfo, namespace: str, rules: Iterable[Obj]) -> bool:
        """Does `user` already hold every permission in `rules`? (RBAC's escalation check.)

        A wildcard in `rules` is only covered by a wildcard the user holds, as in Kubernetes.
        """
        held = list(self._rules_for(user, namespace))
        for rule in rules:
            for verb in rule.get("verbs") or []:
                if rule.get("nonResourceURLs"):
                    for path in rule["nonResourceURLs"]:
                        wanted = Attributes(user, verb, path=path, resource_request=False)
                        if not any(rule_allows(h, wanted) for h in held):
                            return False
                    continue
                for group in rule.get("apiGroups") or []:
                    for combined in rule.get("resources") or []:
                        resource, _, sub = combined.partition("/")
                        for name in rule.get("resourceNames") or [""]:
                            wanted = Attributes(user, verb, group, resource, sub, namespace, name)
                            if not any(_covers(h, wanted) for h in held):
                                return False
        return True


def _covers(held: Obj, wanted: Attributes) -> bool:
    # Like rule_allows, but an empty wanted name stands for "any name", which only a rule without
    # resourceNames covers.
    if not wanted.name and held.get("resourceNames"):
        return False
    return rule_allows(held, wanted)


def forbidden_message(attrs: Attributes, qualified: str) -> str:
    """The exact wording of the API server's 403, which kubectl prints as it is."""
    who = f'User "{attrs.user.name}"'
    if not attrs.resource_request:
        return f'forbidden: {who} cannot {attrs.verb} path "{attrs.path}"'
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    return (
        f"{subject} is forbidden: {who} cannot {attrs.verb} resource "
        f'"{combined}" in API group "{attrs.api_group}" {scope}'
    )
