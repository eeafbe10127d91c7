"""Reads the protobuf request bodies kubectl sends for built-in types, into their JSON form.

kubectl's typed clients (`create namespace`, `auth can-i`, `auth whoami`, `create token`,
`create serviceaccount|rolebinding|secret|configmap`) send `application/vnd.kubernetes.protobuf`
and have no JSON fallback, so the simulator decodes the envelope (`k8s\\0` + runtime.Unknown) and
the few message types below, by their field numbers in Kubernetes' generated.proto files. Other
types are answered with 415. Responses are always JSON, which every client accepts.
"""

from __future__ import annotations

import base64
from typing import Any

Obj = dict[str, Any]
MAGIC = b"k8s\x00"

# Field number -> (JSON name, type). Types: "str", "int", "bool", "bytes", "strs" (repeated
# string), "map" (string -> string), "bmap" (string -> bytes, base64 in JSON), a message name,
# or "[Message]" for a repeated message.
_SCHEMAS: dict[str, dict[int, tuple[str, str]]] = {
    "ObjectMeta": {
        1: ("name", "str"),
        2: ("generateName", "str"),
        3: ("namespace", "str"),
        6: ("resourceVersion", "str"),
        11: ("labels", "map"),
        12: ("annotations", "map"),
        14: ("finalizers", "strs"),
    },
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "strs")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 3: ("automountServiceAccountToken", "bool")},
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "bmap"),
        3: ("type", "str"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map"), 4: ("immutable", "bool")},
    "PolicyRule": {
        1: ("verbs", "strs"),
        2: ("apiGroups", "strs"),
        3: ("resources", "strs"),
        4: ("resourceNames", "strs"),
        5: ("nonResourceURLs", "strs"),
    },
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]")},
    "ClusterRole": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]")},
    "Subject": {
        1: ("kind", "str"),
        2: ("apiGroup", "str"),
        3: ("name", "str"),
        4: ("namespace", "str"),
    },
    "RoleRef": {1: ("apiGroup", "str"), 2: ("kind", "str"), 3: ("name", "str")},
    "RoleBinding": {
        1: ("metadata", "ObjectMeta"),
        2: ("subjects", "[Subject]"),
        3: ("roleRef", "RoleRef"),
    },
    "ClusterRoleBinding": {
        1: ("metadata", "ObjectMeta"),
        2: ("subjects", "[Subject]"),
        3: ("roleRef", "RoleRef"),
    },
    "BoundObjectReference": {
        1: ("kind", "str"),
        2: ("apiVersion", "str"),
        3: ("name", "str"),
        4: ("uid", "str"),
    },
    "TokenRequestSpec": {
        1: ("audiences", "strs"),
        3: ("boundObjectRef", "BoundObjectReference"),
        4: ("expirationSeconds", "int"),
    },
    "TokenRequest": {1: ("metadata", "ObjectMeta"), 2: ("spec", "TokenRequestSpec")},
    "TokenReviewSpec": {1: ("token", "str"), 2: ("audiences", "strs")},
    "TokenReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "TokenReviewSpec")},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta")},
    "ResourceAttributes": {
        1: ("namespace", "str"),
        2: ("verb", "str"),
        3: ("group", "str"),
        4: ("version", "str"),
        5: ("resource", "str"),
        6: ("subresource", "str"),
        7: ("name", "str"),
    },
    "NonResourceAttributes": {1: ("path", "str"), 2: ("verb", "str")},
    "SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes"),
        2: ("nonResourceAttributes", "NonResourceAttributes"),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "SelfSubjectAccessReviewSpec"),
    },
    "SubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes"),
        2: ("nonResourceAttributes", "NonResourceAttributes"),
        3: ("user", "str"),
        4: ("groups", "strs"),
        6: ("uid", "str"),
    },
    "SubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SubjectAccessReviewSpec")},
    "LocalSubjectAccessReview": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "SubjectAccessReviewSpec"),
    },
}


class ProtobufError(ValueError):
    """A body the simulator cannot read (malformed, or a type it does not know)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message; value is an int or raw bytes."""
    found: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            found.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            found.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            found.append((number, int.from_bytes(data[pos : pos + 8], "little")))
            pos += 8
        elif wire == 5:
            found.append((number, int.from_bytes(data[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return found


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a string")
    return value.decode()


def _map_entry(value: int | bytes) -> tuple[str, bytes]:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a map entry")
    key, item = "", b""
    for number, part in fields(value):
        if number == 1:
            key = _text(part)
        elif number == 2 and isinstance(part, bytes):
            item = part
    return key, item


def decode_message(schema_name: str, data: bytes) -> Obj:
    """One message of a known type, as the dict its JSON form would parse to."""
    schema = _SCHEMAS[schema_name]
    result: Obj = {}
    for number, value in fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "str":
            result[name] = _text(value)
        elif kind == "int":
            result[name] = int(value) if isinstance(value, int) else 0
        elif kind == "bool":
            result[name] = bool(value)
        elif kind == "strs":
            result.setdefault(name, []).append(_text(value))
        elif kind in ("map", "bmap"):
            key, item = _map_entry(value)
            shown = base64.b64encode(item).decode() if kind == "bmap" else item.decode()
            result.setdefault(name, {})[key] = shown
        elif kind.startswith("["):
            if not isinstance(value, bytes):
                raise ProtobufError(f"expected a message for {name}")
            result.setdefault(name, []).append(decode_message(kind.strip("[]"), value))
        else:
            if not isinstance(value, bytes):
                raise ProtobufError(f"expected a message for {name}")
            result[name] = decode_message(kind, value)
    return result


def decode_body(data: bytes) -> Obj:
    """A `k8s\\0`-enveloped protobuf object as JSON-shaped data with its apiVersion and kind."""
    if not data.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    api_version = kind = ""
    raw = b""
    for number, value in fields(data[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            for part_number, part in fields(value):
                if part_number == 1:
                    api_version = _text(part)
                elif part_number == 2:
                    kind = _text(part)
        elif number == 2 and isinstance(value, bytes):
            raw = value
    if kind not in _SCHEMAS:
        raise ProtobufError(f"the simulator cannot read a protobuf {kind or 'object'}; send JSON")
    return {"apiVersion": api_version, "kind": kind, **decode_message(kind, raw)}
