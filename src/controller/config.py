"""controller.toml: the resource catalog and policy, read strictly into typed settings.

Every error names the file, the line and the key, so an operator of the controller can fix it
without guessing; unknown keys are refused rather than ignored, since a misspelt policy key
silently ignored is a policy not enforced.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgtui.protocol.errors import Refused
from bgtui.protocol.timefmt import parse_duration

KINDS = ("kubernetes", "postgres", "ssh", "service")
NETWORKS = ("direct", "tailscale", "twingate", "ssh-jump")
CREDENTIALS = ("controller", "command", "out-of-band")
_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")


@dataclass(frozen=True)
class Resource:
    """One named resource an operator may ask for, and how its two planes are resolved."""

    name: str
    kind: str
    address: str
    network: str
    credential: str
    privileges: tuple[str, ...]
    recipe: str | None = None
    description: str = ""
    grants: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "address": self.address,
            "network": self.network,
            "credential_sources": [self.credential],
            "privileges": list(self.privileges),
            "description": self.description,
        }


@dataclass(frozen=True)
class ControllerConfig:
    """Policy and catalog of one controller."""

    id: str
    request_window: int = 3600
    max_duration: int = 4 * 3600
    approvals_required: int = 1
    allow_direct: bool = True
    webhooks: tuple[str, ...] = ()
    public_url: str = ""
    resources: tuple[Resource, ...] = ()

    def resource(self, name: str) -> Resource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise Refused(f"unknown resource {name!r}; `bgtui resources` lists them")


class _Reader:
    """Pulls typed values out of a TOML table, naming file, line and key on any error."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, key: str, table: str | None = None, index: int = 0) -> int:
        start = 0
        if table is not None:
            headers = [
                n
                for n, line in enumerate(self.lines)
                if line.strip() in (f"[[{table}]]", f"[{table}]")
            ]
            if index < len(headers):
                start = headers[index]
        pattern = re.compile(rf"\s*{re.escape(key)}\s*=")
        for number in range(start, len(self.lines)):
            if pattern.match(self.lines[number]):
                return number + 1
        return start + 1

    def fail(self, key: str, message: str, table: str | None = None, index: int = 0) -> Refused:
        where = f"{self.path}:{self.line_of(key.split('.')[-1], table, index)}"
        return Refused(f"{where}: {key}: {message}")

    def take(
        self,
        data: dict[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        *,
        table: str | None = None,
        index: int = 0,
        label: str | None = None,
    ) -> Any:
        label = label or key
        if key not in data:
            if default is ...:
                raise self.fail(label, "missing (required)", table, index)
            return default
        value = data[key]
        bad_bool = isinstance(value, bool) and kind is int
        if bad_bool or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(label, f"expected {_TOML_NAMES.get(names, names)}", table, index)
        return value


_TOML_NAMES = {"str": "a string", "int": "an integer", "bool": "true or false", "list": "a list"}
_TOP_KEYS = {
    "id",
    "request_window",
    "max_duration",
    "approvals_required",
    "allow_direct",
    "webhooks",
    "public_url",
    "resources",
}
_RESOURCE_KEYS = {
    "name",
    "kind",
    "address",
    "network",
    "credential",
    "recipe",
    "privileges",
    "description",
    "grants",
    "options",
}


def load_config(path: Path) -> ControllerConfig:
    """Reads and validates controller.toml; raises Refused naming file, line and key."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise Refused(f"{path}: not found; run `bgctl init --id ID` first") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path, text)


def parse_config(data: dict[str, Any], path: Path, text: str = "") -> ControllerConfig:
    reader = _Reader(path, text)
    for key in data:
        if key not in _TOP_KEYS:
            raise reader.fail(key, f"unknown key; known keys: {', '.join(sorted(_TOP_KEYS))}")
    controller_id = reader.take(data, "id", str)
    if not _ID.fullmatch(controller_id):
        raise reader.fail("id", "use lowercase letters, digits, '.' and '-'")

    def duration(key: str, default: str) -> int:
        value = reader.take(data, key, str, default)
        try:
            return parse_duration(value)
        except Refused as exc:
            raise reader.fail(key, str(exc)) from None

    approvals = reader.take(data, "approvals_required", int, 1)
    if approvals < 1:
        raise reader.fail("approvals_required", "must be at least 1")
    webhooks = reader.take(data, "webhooks", list, [])
    for url in webhooks:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise reader.fail("webhooks", "each webhook must be an http(s) URL")
    raw_resources = reader.take(data, "resources", list, [])
    resources = tuple(_resource(reader, raw, index) for index, raw in enumerate(raw_resources))
    names = [r.name for r in resources]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise reader.fail("name", f"resource {name!r} is defined twice", "resources", index)
    return ControllerConfig(
        id=controller_id,
        request_window=duration("request_window", "1h"),
        max_duration=duration("max_duration", "4h"),
        approvals_required=approvals,
        allow_direct=reader.take(data, "allow_direct", bool, True),
        webhooks=tuple(webhooks),
        public_url=reader.take(data, "public_url", str, ""),
        resources=resources,
    )


def _resource(reader: _Reader, raw: Any, index: int) -> Resource:
    if not isinstance(raw, dict):
        raise reader.fail("resources", "each resource must be a [[resources]] table")

    def fail(key: str, message: str) -> Refused:
        return reader.fail(f"resources[{index}].{key}", message, "resources", index)

    for key in raw:
        if key not in _RESOURCE_KEYS:
            raise fail(key, f"unknown key; known: {', '.join(sorted(_RESOURCE_KEYS))}")

    def take(key: str, kind: type, default: Any = ...) -> Any:
        label = f"resources[{index}].{key}"
        return reader.take(raw, key, kind, default, table="resources", index=index, label=label)

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        value: str = take(key, str)
        if value not in allowed:
            raise fail(key, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    name = take("name", str)
    privileges = take("privileges", list)
    if not privileges or not all(isinstance(p, str) and p for p in privileges):
        raise fail("privileges", "must be a non-empty list of names")
    credential = choice("credential", CREDENTIALS)
    recipe = take("recipe", str, None)
    if credential == "command" and recipe is None:
        raise fail("recipe", 'required when credential = "command"')
    grants = take("grants", dict, {})
    if not all(isinstance(v, str) for v in grants.values()):
        raise fail("grants", "values must be strings")
    return Resource(
        name=name,
        kind=choice("kind", KINDS),
        address=take("address", str, ""),
        network=choice("network", NETWORKS),
        credential=credential,
        privileges=tuple(privileges),
        recipe=recipe,
        description=take("description", str, ""),
        grants=dict(grants),
        options=dict(take("options", dict, {})),
    )


EXAMPLE = """\
# controller.toml: this controller's policy and the resources operators may ask for.
# Durations read 90s, 15m, 2h or 1h30m. Unknown keys are refused, so typos can't hide.

id = "{id}"                  # this controller's id; every approval is bound to it

request_window = "1h"        # a Pending request expires after this long without approval
max_duration = "4h"          # no session may be approved for longer than this
approvals_required = 1       # distinct approvers that must sign before a session activates
allow_direct = true          # false forces every resource through a tunnel
webhooks = []                # URLs that get a JSON POST (with a Slack-style `text`) per request
public_url = ""              # base of the approval links sent in notifications

# One [[resources]] table per resource. Uncomment and adapt:
#
# [[resources]]
# name = "orders-db"
# description = "Orders PostgreSQL, production"
# kind = "postgres"          # kubernetes | postgres | ssh | service
# address = "127.0.0.1:5432"
# network = "direct"         # direct | tailscale | twingate | ssh-jump
# credential = "command"     # controller | command | out-of-band
# recipe = "recipes/pg-role.toml"
# privileges = ["readonly", "readwrite"]
#
# [[resources]]
# name = "status-page"
# kind = "service"
# address = "10.0.0.12:443"
# network = "direct"
# credential = "out-of-band" # break glass opens the path; the operator brings the secret
# privileges = ["use"]
"""
