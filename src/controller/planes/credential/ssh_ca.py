"""SSH, minted by the controller's CA: a user certificate for the operator's session key.

The operator's client makes a fresh key pair per session and sends only the public half; the
CA certifies it for the principal of the approved privilege, valid until the session expires,
with the session id as key ID. OpenSSH checks a certificate only when a connection
authenticates, so expiry stops new logins but does not end established ones. Teardown therefore
does what the resource's options let it (see `ssh_sessions` and docs/ssh-teardown.md):

- `revoked_keys`: path of sshd's `RevokedKeys` KRL, writable by the controller: the session's
  key ID is revoked there, so the certificate cannot log in again even before it expires;
- `sshd_log`: path of sshd's log (LogLevel VERBOSE), readable by the controller on sshd's own
  host: the session's live connections to the address's port are cut.

Other options: `user` (the login user, default root) and `host_key` (sshd's host public key,
`ssh-ed25519 AAAA…`, handed to the operator as known_hosts).
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey
from bgtui.protocol.objects import Request
from bgtui.protocol.sshcert import sign_user_certificate
from bgtui.protocol.timefmt import now_utc, parse_utc, utc_text
from controller.config import Resource
from controller.planes.base import Artifact, Minted, PlaneError, SessionContext
from controller.planes.credential.ssh_sessions import revoke_key_id, terminate_sessions
from controller.planes.network.direct import split_address

CLOCK_SLACK = timedelta(minutes=1)  # valid_after a little early, for hosts whose clocks lag
_TEXT_OPTIONS = ("user", "host_key", "sshd_log", "revoked_keys")


def ca_key(home: Path) -> PrivateKey:
    path = home / "ssh_ca_ed25519"
    try:
        return PrivateKey.load(path.read_bytes(), None, str(path))
    except FileNotFoundError:
        raise PlaneError(f"{path}: the controller's SSH CA key is missing") from None


def ca_public_path(home: Path) -> Path:
    return home / "ssh_ca_ed25519.pub"


def _option(resource: Resource, name: str) -> str | None:
    value = resource.options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PlaneError(f"{resource.name}: options.{name} must be a non-empty string")
    return value


class SshCertificateCredential:
    """Signs the session key; at teardown revokes its key ID and cuts its live connections."""

    plane: ClassVar[str] = "credential"
    name: ClassVar[str] = "ssh-ca"

    def __init__(self, home: Path) -> None:
        self.home = home

    def prepare(self, resource: Resource, request: Request | None) -> str:
        split_address(resource.address)
        for name in _TEXT_OPTIONS:
            _option(resource, name)
        principal = (
            resource.grants.get(request.privilege, request.privilege) if request else "<privilege>"
        )
        ends = []
        if _option(resource, "revoked_keys") is not None:
            ends.append("its key ID is revoked in sshd's KRL")
        if _option(resource, "sshd_log") is not None:
            ends.append("its live connections are cut")
        at_end = (
            "; at teardown " + " and ".join(ends)
            if ends
            else "; live connections are not cut at teardown (no sshd log configured)"
        )
        return (
            f"the controller's SSH CA certifies the operator's session key for principal "
            f"{principal} until the session expires{at_end}"
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
        host, port = split_address(ctx.resource.address)
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
        secret = {
            "certificate": cert.openssh(f"bgtui-{ctx.session_id}"),
            "host": host,
            "port": str(port),
            "user": _option(ctx.resource, "user") or "root",
            "principal": ctx.grant(),
        }
        host_key = _option(ctx.resource, "host_key")
        if host_key is not None:
            known_host = f"[{host}]:{port}" if port != 22 else host
            secret["known_hosts"] = f"{known_host} {host_key.strip()}"
        artifact = self.planned(ctx)[0]
        artifact.data["serial"] = cert.serial
        artifact.data["valid_before"] = utc_text(expires)
        return Minted([artifact], secret)

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        return await asyncio.to_thread(self._teardown, ctx, artifact)

    def _teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        """Revokes, then cuts (so a cut connection cannot come back); idempotent. Raises, for
        the orchestrator to retry, only when the KRL cannot be written."""
        key_id = artifact.name
        said: list[str] = []
        valid_before = artifact.data.get("valid_before")
        if isinstance(valid_before, str):
            expired = parse_utc(valid_before) <= now_utc()
            said.append(f"certificate {'expired' if expired else 'expires'} at {valid_before}")
        else:
            said.append("certificate expires at the session's end")
        krl = _option(ctx.resource, "revoked_keys")
        if krl is None:
            said.append("no revoked_keys configured, key id not revoked")
        else:
            try:
                revoke_key_id(Path(krl), ca_public_path(self.home), key_id)
            except (OSError, RuntimeError, ValueError) as exc:
                raise PlaneError(f"could not revoke key id {key_id} in {krl}: {exc}") from None
            said.append(f"revoked key id {key_id} in {krl}")
        log = _option(ctx.resource, "sshd_log")
        if log is None:
            said.append("no sshd log configured, live connections not cut")
        else:
            _, port = split_address(ctx.resource.address)
            if not os.access(log, os.R_OK):
                said.append(f"sshd log {log} not readable here, live connections not cut")
            else:
                cut = terminate_sessions(Path(log), port, key_id)
                said.append(f"cut {cut} live connection(s) to port {port}")
        return "; ".join(said)
