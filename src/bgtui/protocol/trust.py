"""The controller's trust store: pinned public keys with a role each, in allowed_signers form.

The file is an OpenSSH `allowed_signers` file (ssh-keygen(1), ALLOWED SIGNERS) that a person can
read and that `ssh-keygen -Y verify -f` accepts as is. Each line pins one key for one role; the
role is spelled twice: in `namespaces=`, so stock ssh-keygen enforces it too, and as a trailing
`role=` comment that bgtui reads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey

API_NAMESPACE = "bgtui-api@v1"
ROLE_NAMESPACES: dict[str, tuple[str, ...]] = {
    "operator": ("bgtui-request@v1", API_NAMESPACE),
    "approver": ("bgtui-approval@v1", API_NAMESPACE),
    "auditor": (API_NAMESPACE,),
}
ROLES = tuple(ROLE_NAMESPACES)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_LINE = re.compile(
    r'(?P<name>\S+)\s+namespaces="(?P<ns>[^"]*)"\s+(?P<key>ssh-\S+\s+\S+)\s+role=(?P<role>\S+)\s*'
)
HEADER = """\
# bgtui trust store: the keys this controller accepts, one per line.
# OpenSSH allowed_signers format (see ssh-keygen(1)); check any signature with
#   ssh-keygen -Y verify -f allowed_signers -I NAME -n NAMESPACE -s FILE.sig < FILE
# Manage it with `bgctl trust add|list|remove`; the role is the trailing role= field.
"""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise Refused(
            f"bad name {name!r}: use letters, digits and . _ @ + - "
            "(up to 64, starting alphanumeric)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLE_NAMESPACES:
        raise Refused(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class TrustEntry:
    """One pinned key: who it is, what role it has."""

    name: str
    role: str
    key: PublicKey

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    def line(self) -> str:
        namespaces = ",".join(ROLE_NAMESPACES[self.role])
        return f'{self.name} namespaces="{namespaces}" {self.key.openssh("")} role={self.role}'


class TrustStore:
    """The pinned keys, read from and written to one allowed_signers file."""

    def __init__(self, path: Path, entries: list[TrustEntry] | None = None) -> None:
        self.path = path
        self.entries: list[TrustEntry] = entries or []

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise Refused(f"{path}: trust store not found; run `bgctl init` first") from None
        entries: list[TrustEntry] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{number}"
            match = _LINE.fullmatch(line)
            if match is None:
                raise Refused(f'{where}: not a trust entry (NAME namespaces="…" KEY role=ROLE)')
            name, role = match["name"], match["role"]
            if role not in ROLE_NAMESPACES:
                raise Refused(f"{where}: unknown role {role!r}; use one of {', '.join(ROLES)}")
            if not _NAME.fullmatch(name):
                raise Refused(f"{where}: bad name {name!r} (letters, digits and . _ @ + -)")
            # ssh-keygen reads namespaces=, bgtui reads role=: both must say the same thing.
            expected = ",".join(ROLE_NAMESPACES[role])
            if match["ns"] != expected:
                raise Refused(f'{where}: role={role} needs namespaces="{expected}"')
            try:
                key = PublicKey.parse(match["key"], where)
            except Refused as exc:  # some key errors do not name their source
                message = str(exc)
                if not message.startswith(where):
                    message = f"{where}: {message}"
                raise Refused(message) from None
            for entry in entries:
                if entry.name == name or entry.key == key:
                    raise Refused(f"{where}: {name!r} ({key.fingerprint}) is pinned twice")
            entries.append(TrustEntry(name, role, key.with_comment(name)))
        return cls(path, entries)

    def save(self) -> None:
        body = HEADER + "".join(entry.line() + "\n" for entry in self.entries)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def add(self, name: str, role: str, key: PublicKey) -> TrustEntry:
        check_name(name)
        check_role(role)
        for entry in self.entries:
            if entry.name == name:
                raise Refused(
                    f"name {name!r} is already pinned ({entry.role}, {entry.fingerprint})"
                )
            if entry.key == key:
                raise Refused(f"key {key.fingerprint} is already pinned as {entry.name!r}")
        entry = TrustEntry(name, role, key.with_comment(name))
        self.entries.append(entry)
        return entry

    def remove(self, name: str) -> TrustEntry:
        for entry in self.entries:
            if entry.name == name:
                self.entries.remove(entry)
                return entry
        raise Refused(f"no pinned key named {name!r}; `bgctl trust list` shows them")

    def find(self, key: PublicKey) -> TrustEntry | None:
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None

    def by_fingerprint(self, fingerprint: str) -> TrustEntry | None:
        for entry in self.entries:
            if entry.fingerprint == fingerprint:
                return entry
        return None
