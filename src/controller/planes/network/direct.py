"""Direct: the resource is already reachable; prove it with a TCP connect before going Active."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import ClassVar

from bgtui.protocol.objects import Request
from controller.config import Resource
from controller.planes.base import Artifact, Minted, PlaneError, SessionContext

PROBE_TIMEOUT = 3.0


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` or of a URL such as `https://HOST:PORT/path`."""
    if "://" in address:
        scheme, _, rest = address.partition("://")
        address = rest.split("/", 1)[0]
        if ":" not in address.rpartition("]")[2]:
            address += ":443" if scheme == "https" else ":80"
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise PlaneError(f"address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class Direct:
    """Opens nothing; checks the target answers on its address (policy may forbid direct)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home

    plane: ClassVar[str] = "network"
    name: ClassVar[str] = "direct"

    def prepare(self, resource: Resource, request: Request | None) -> str:
        host, port = split_address(resource.address)
        return f"direct: no tunnel; {host}:{port} must answer a TCP connect"

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        return []

    async def mint(self, ctx: SessionContext) -> Minted:
        if not ctx.config.allow_direct:
            raise PlaneError("policy forbids direct network paths (allow_direct = false)")
        host, port = split_address(ctx.resource.address)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise PlaneError(f"{host}:{port} is not reachable ({reason})") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Minted()

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        return "nothing to remove"
