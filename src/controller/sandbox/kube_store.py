"""The Kubernetes API simulator's in-memory object store, its clock, selectors and watches.

Everything lives in the simulator process and dies with it. The clock can be moved forward (never
back) through the simulator-only `/sandbox/advance` control, so tests can expire tokens without
waiting.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]
"""(API group, plural resource name)."""

Predicate = Callable[[Obj], bool]


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


_SET_TERM = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_LABEL_KEY = re.compile(r"^([a-z0-9A-Z]([\w.-]*[a-zA-Z0-9])?/)?[a-zA-Z0-9]([\w.-]*[a-zA-Z0-9])?$")


def labels(obj: Obj) -> dict[str, str]:
    found: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    return found


def _field(obj: Obj, path: str) -> str | None:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return None if current is None else str(current)


@dataclass(frozen=True)
class Requirement:
    """One selector term: `key op values`, on labels or (for field selectors) on a field path."""

    key: str
    op: str
    values: frozenset[str]
    on_field: bool = False

    def __call__(self, obj: Obj) -> bool:
        value = _field(obj, self.key) if self.on_field else labels(obj).get(self.key)
        if self.on_field and value is None:
            value = ""
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("in", "="):
            return value in self.values
        return value not in self.values  # "notin" and "!="


def _selector(requirements: list[Requirement]) -> Predicate:
    return lambda obj: all(requirement(obj) for requirement in requirements)


def parse_label_selector(text: str) -> Predicate:
    """`app=x,tier!=db,env in (a,b),!legacy,gpu`; raises ValueError on a malformed selector."""
    found: list[Requirement] = []
    for term in _split_terms(text):
        if match := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in match[3].split(","))
            found.append(Requirement(match[1], match[2], values))
            continue
        for op in ("!=", "==", "="):
            if op in term:
                key, _, value = (part.strip() for part in term.partition(op))
                if not _LABEL_KEY.match(key):
                    raise ValueError(f"unable to parse requirement: invalid label key {key!r}")
                found.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
                break
        else:
            negate = term.startswith("!")
            key = term.removeprefix("!").strip()
            if not _LABEL_KEY.match(key):
                raise ValueError(f"unable to parse requirement: invalid label key {key!r}")
            found.append(Requirement(key, "!exists" if negate else "exists", frozenset()))
    return _selector(found)


def parse_field_selector(text: str) -> Predicate:
    """`metadata.name=x,status.phase!=Running` (only equality, as the API server allows)."""
    found: list[Requirement] = []
    for term in _split_terms(text):
        for op in ("!=", "==", "="):
            if op in term:
                path, _, value = (part.strip() for part in term.partition(op))
                op_name = "!=" if op == "!=" else "="
                found.append(Requirement(path, op_name, frozenset([value]), on_field=True))
                break
        else:
            raise ValueError(f"invalid field selector: {term!r}")
    return _selector(found)


@dataclass
class Watch:
    """One open watch: which objects it wants, and the queue its stream reads from."""

    key: Key
    namespace: str
    matches: Predicate
    queue: asyncio.Queue[tuple[str, Obj]] = field(default_factory=asyncio.Queue)


class Store:
    """Objects by (group, plural) -> (namespace, name), with resourceVersions and watches."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[tuple[str, str], Obj]] = {}
        self.resource_version = 1
        self.clock_offset = 0.0
        self.watches: list[Watch] = []
        self.logs: dict[tuple[str, str, str], str] = {}

    def now(self) -> float:
        return time.time() + self.clock_offset

    def timestamp(self, at: float | None = None) -> str:
        moment = dt.datetime.fromtimestamp(self.now() if at is None else at, dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def bump(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def list(self, key: Key, namespace: str = "") -> list[Obj]:
        """Objects of one type, in one namespace or (empty namespace) everywhere, sorted."""
        found = [
            obj
            for (ns, _), obj in self.objects.get(key, {}).items()
            if not namespace or ns == namespace
        ]
        return sorted(
            found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        return self.objects.get(key, {}).get((namespace, name))

    def create(self, key: Key, obj: Obj) -> Obj:
        """Stores a new object, filling the server-set metadata; the caller checks for clashes."""
        metadata = obj.setdefault("metadata", {})
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = self.timestamp()
        metadata["resourceVersion"] = self.bump()
        for server_set in ("deletionTimestamp", "selfLink"):
            metadata.pop(server_set, None)
        self.objects.setdefault(key, {})[(metadata.get("namespace", ""), metadata["name"])] = obj
        self._notify(key, "ADDED", obj)
        return obj

    def replace(self, key: Key, obj: Obj) -> Obj:
        metadata = obj["metadata"]
        metadata["resourceVersion"] = self.bump()
        self.objects.setdefault(key, {})[(metadata.get("namespace", ""), metadata["name"])] = obj
        self._notify(key, "MODIFIED", obj)
        return obj

    def delete(self, key: Key, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get(key, {}).pop((namespace, name), None)
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["deletionTimestamp"] = self.timestamp()
        obj["metadata"]["resourceVersion"] = self.bump()
        self._notify(key, "DELETED", obj)
        if key == ("", "pods"):
            for log_key in [k for k in self.logs if k[:2] == (namespace, name)]:
                del self.logs[log_key]
        return obj

    def delete_namespace_contents(self, namespace: str) -> None:
        for key, objects in list(self.objects.items()):
            for ns, name in [k for k in objects if k[0] == namespace]:
                self.delete(key, ns, name)

    def _notify(self, key: Key, kind: str, obj: Obj) -> None:
        namespace = obj["metadata"].get("namespace", "")
        for watch in self.watches:
            if watch.key != key or (watch.namespace and watch.namespace != namespace):
                continue
            if watch.matches(obj):
                watch.queue.put_nowait((kind, copy.deepcopy(obj)))
