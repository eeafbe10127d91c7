"""SSH, minted by the controller's CA: a user certificate for the operator's session key.

The operator's client makes a fresh key pair per session and sends only the public half; the
CA certifies it for the principal of the approved privilege, valid until the session expires,
with the session id as key ID. OpenSSH checks a certificate's validity only when a connection
authenticates, so expiry stops new logins but does not end established ones: teardown cuts live
connections itself where it can see them (see `ssh_sessions`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey
from bgtui.protocol.objects import Request
from bgtui.protocol.sshcert import sign_user_certificate
from bgtui.protocol.timefmt import now_utc
from controller.config import Resource
from controller.planes.base import Artifact, Minted, PlaneError, SessionContext
from controller.planes.credential.ssh_sessions import terminate_sessions

CLOCK_SLACK = timedelta(minutes=1)  # valid_after a little early, for hosts whose clocks lag


def ca_key(home: Path) -> PrivateKey:
    path = home / "ssh_ca_ed25519"
    try:
        return PrivateKey.load(path.read_bytes(), None, str(path))
    except FileNotFoundError:
        raise PlaneError(f"{path}: the controller's SSH CA key is missing") from None


class SshCertificateCredential:
    """Signs the session key; at teardown ends the session's live SSH connections it can see."""

    plane: ClassVar[str] = "credential"
    name: ClassVar[str] = "ssh-ca"

    def __init__(self, home: Path) -> None:
        self.home = home

    def prepare(self, resource: Resource, request: Request | None) -> str:
        principal = (
            resource.grants.get(request.privilege, request.privilege) if request else "<privilege>"
        )
        return (
            f"the controller's SSH CA certifies the operator's session key for principal "
            f"{principal} until the session expires; live connections are cut at teardown"
        )

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        return [
            Artifact(
                self.plane,
                self.name,
                "ssh-certificate",
                ctx.session_id,
                data={"principal": ctx.grant()},
            )
        ]

    async def mint(self, ctx: SessionContext) -> Minted:
        if not ctx.request.session_key:
            raise PlaneError("the request carries no session key to certify")
        try:
            key = PublicKey.parse(ctx.request.session_key, "session_key")
        except Refused as exc:
            raise PlaneError(str(exc)) from None
        now = now_utc()
        expires = ctx.expires_at or now + timedelta(minutes=10)
        cert = sign_user_certificate(
            ca_key(self.home),
            key,
            key_id=ctx.session_id,
            principals=(ctx.grant(),),
            valid_after=now - CLOCK_SLACK,
            valid_before=expires,
        )
        host, _, port = ctx.resource.address.rpartition(":")
        user = ctx.resource.options.get("user", "root")
        secret = {
            "certificate": cert.openssh(f"bgtui-{ctx.session_id}"),
            "host": host,
            "port": port,
            "user": str(user),
            "principal": ctx.grant(),
        }
        host_key = ctx.resource.options.get("host_key")
        if isinstance(host_key, str):
            secret["known_hosts"] = f"[{host}]:{port} {host_key}"
        artifact = self.planned(ctx)[0]
        artifact.data["serial"] = cert.serial
        return Minted([artifact], secret)

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        log = ctx.resource.options.get("sshd_log")
        if not isinstance(log, str):
            return (
                "certificate expires at session end; no sshd log configured to cut live connections"
            )
        cut = await asyncio.to_thread(terminate_sessions, Path(log), artifact.name)
        return f"certificate expires at session end; cut {cut} live connection(s)"
