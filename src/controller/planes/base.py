"""The provider interface every plane implements (DESIGN §5).

A provider says what it will do (`prepare`, shown to the approver), makes it (`mint`) and
removes it (`teardown`). Teardown must be idempotent: it is called again after a crash, for
artifacts that may or may not exist, and must succeed when there is nothing left to remove.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bgtui.protocol.objects import Request
from controller.config import ControllerConfig, Resource

CRASH_ENV = "BGCTL_CRASH_AT"


def crash_point(name: str) -> None:
    """Dies here, as SIGKILL would, when BGCTL_CRASH_AT names this point.

    The crash tests use it to stop the controller between any two steps of a provider and
    prove that restart and sweep leave nothing standing; unset, it does nothing.
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class PlaneError(Exception):
    """A provider could not do what it was asked; the message is shown to people as is."""


@dataclass
class Artifact:
    """One thing a provider created for a session, named so a sweep can find it."""

    plane: str
    provider: str
    kind: str
    name: str
    created_at: str = ""
    removed_at: str | None = None
    how: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # non-secret facts teardown needs

    def to_json(self) -> dict[str, Any]:
        return {
            "plane": self.plane,
            "provider": self.provider,
            "kind": self.kind,
            "name": self.name,
            "created_at": self.created_at,
            "removed_at": self.removed_at,
            "how": self.how,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Artifact:
        return cls(**value)


@dataclass
class Minted:
    """What `mint` made: the artifacts to tear down later, and the secret for the operator."""

    artifacts: list[Artifact] = field(default_factory=list)
    secret: dict[str, str] | None = None  # never stored: sealed to the operator, kept in memory


@dataclass(frozen=True)
class SessionContext:
    """Everything a provider may know about the session it serves."""

    session_id: str
    request: Request
    resource: Resource
    config: ControllerConfig
    home: Path
    expires_at: datetime | None = None

    @property
    def privilege(self) -> str:
        return self.request.privilege

    def grant(self) -> str:
        """The target-side name of the approved privilege (ClusterRole, group role, principal)."""
        return self.resource.grants.get(self.privilege, self.privilege)

    @property
    def label(self) -> str:
        """A name fragment that ties minted artifacts to this session (lowercase, DNS-safe)."""
        return "bg-" + self.session_id.lower()


class Provider(Protocol):
    """One way of resolving one plane; made with the controller's home directory."""

    plane: ClassVar[str]
    name: ClassVar[str]

    def __init__(self, home: Path) -> None: ...

    def prepare(self, resource: Resource, request: Request | None) -> str:
        """Checks config and says in one line what mint will do; PlaneError if it can't."""
        ...

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        """The artifacts mint is about to create, written down as intents before it acts."""
        ...

    async def mint(self, ctx: SessionContext) -> Minted: ...

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        """Removes one artifact (idempotently) and says how."""
        ...
