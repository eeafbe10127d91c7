"""Out of band: break glass supplies no credential; the operator already holds one."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from bgtui.protocol.objects import Request
from controller.config import Resource
from controller.planes.base import Artifact, Minted, SessionContext


class OutOfBand:
    """Mints nothing and tears down nothing; only the network path is opened."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home

    plane: ClassVar[str] = "credential"
    name: ClassVar[str] = "out-of-band"

    def prepare(self, resource: Resource, request: Request | None) -> str:
        return "no credential is minted: the operator brings their own"

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        return []

    async def mint(self, ctx: SessionContext) -> Minted:
        return Minted()

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        return "nothing to remove"
