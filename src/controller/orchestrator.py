"""Plane orchestration: set planes up in order, tear them down in reverse, never lose track.

Before a provider acts, the intent (what it is about to create, by name) is committed; after,
the result. Teardown retries with backoff until it succeeds and says so as it goes. On start,
`reconcile` finishes whatever a crash interrupted, so nothing privileged outlives a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nacl.public

from bgtui.protocol.canonical import canonical
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import TeardownReceipt
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import utc_text
from controller.audit import AuditItem, AuditLog
from controller.config import ControllerConfig
from controller.ledger import Ledger, Step
from controller.planes import CREDENTIAL_PROVIDERS, NETWORK_PROVIDERS, providers_for
from controller.planes.base import Artifact, PlaneError, Provider, SessionContext, crash_point
from controller.store import transaction

log = logging.getLogger("bgctl.planes")
CHECK = "check"  # a step that verifies something and creates nothing (e.g. a TCP probe)


def _provider_named(plane: str, name: str, home: Path) -> Provider:
    table = CREDENTIAL_PROVIDERS.values() if plane == "credential" else NETWORK_PROVIDERS.values()
    for cls in table:
        if cls.name == name:
            return cls(home)
    raise PlaneError(f"no {plane} provider named {name!r} in this controller")


def undone_mints(steps: list[Step]) -> list[Step]:
    """Mint steps (intended, done or failed) whose artifact has no completed teardown."""
    removed = {
        (s.plane, s.artifact_kind, s.artifact_name)
        for s in steps
        if s.action == "teardown" and s.state == "done"
    }
    return [
        s
        for s in steps
        if s.action == "mint" and (s.plane, s.artifact_kind, s.artifact_name) not in removed
    ]


class Orchestrator:
    """Runs activations and teardowns for sessions, and keeps minted secrets in memory only."""

    def __init__(
        self,
        home: Path,
        ledger: Ledger,
        audit: AuditLog,
        config: ControllerConfig,
        signer: Signer,
        publish: Callable[[str], None],
        clock: Callable[[], datetime],
        on_active: Callable[[str, datetime], None],
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.home = home
        self.ledger = ledger
        self.audit = audit
        self.config = config
        self.signer = signer
        self.publish = publish
        self.clock = clock
        self.on_active = on_active
        self.backoff = backoff
        self._sealed: dict[str, bytes] = {}
        self._finishing: list[tuple[str, str, str, asyncio.Future[None]]] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # secrets ----------------------------------------------------------------------------
    def sealed_credential(self, rid: str) -> bytes | None:
        """The session's credential, sealed to its operator; None if nothing was minted."""
        return self._sealed.get(rid)

    def _seal(self, operator_key: str, secret: dict[str, str]) -> bytes:
        box = nacl.public.SealedBox(PublicKey.parse(operator_key).box_key())
        return bytes(box.encrypt(canonical(secret)))

    # tasks ------------------------------------------------------------------------------
    def spawn(self, rid: str, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` for session `rid` after whatever already runs for it: one at a time."""
        prior = self._tasks.get(rid)

        async def in_turn() -> None:
            if prior is not None:
                await asyncio.wait([prior])
            await work

        task = asyncio.create_task(in_turn(), name=f"session-{rid}")
        self._tasks[rid] = task
        task.add_done_callback(lambda t: self._done(rid, t))

    def _done(self, rid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(rid) is task:
            del self._tasks[rid]
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: %s", rid, task.exception(), exc_info=task.exception())

    def cancel(self, rid: str) -> None:
        """Stops an activation in flight; its intents stay recorded for the teardown after it."""
        task = self._tasks.get(rid)
        if task is not None:
            task.cancel()

    async def wait_idle(self, timeout: float) -> bool:
        tasks = list(self._tasks.values())
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    async def cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def context(self, rid: str, expires_at: datetime | None = None) -> SessionContext:
        _, req = self.ledger.request(rid)
        resource = self.config.resource(req.resource)
        return SessionContext(rid, req, resource, self.config, self.home, expires_at)

    # activation -------------------------------------------------------------------------
    async def activate(self, rid: str, duration: int) -> None:
        """Sets up every plane in order; Active only when all are ready, else roll back: Failed."""
        ctx = self.context(rid, self.clock() + timedelta(seconds=duration))
        secret: dict[str, str] = {}
        try:
            providers = providers_for(ctx.resource, self.config, self.home)
        except PlaneError as exc:
            await self.roll_back(rid, ctx, str(exc))
            return
        for provider in providers:
            outcome = await self._mint_one(rid, ctx, provider)
            if isinstance(outcome, str):
                await self.roll_back(
                    rid, ctx, f"{provider.plane} plane ({provider.name}): {outcome}"
                )
                return
            secret.update(outcome)
            if self.ledger.state(rid) != "activating":  # ended or revoked while we worked
                return
        if secret:
            self._sealed[rid] = self._seal(ctx.request.operator_key, secret)
        now = self.clock()
        expires = now + timedelta(seconds=duration)
        with transaction(self.ledger.db):
            if self.ledger.state(rid) != "activating":
                self._sealed.pop(rid, None)
                return
            self.ledger.activate(rid, now, expires)
            self.audit.append(
                "session.active",
                "controller",
                {"expires_at": utc_text(expires), "duration": duration},
                session=rid,
            )
        self.on_active(rid, expires)
        self.publish(rid)

    async def _mint_one(
        self, rid: str, ctx: SessionContext, provider: Provider
    ) -> dict[str, str] | str:
        """Mints one plane: intents, then the provider, then results; error text on failure."""
        planned = provider.planned(ctx)
        if not planned:
            planned = [
                Artifact(
                    provider.plane,
                    provider.name,
                    CHECK,
                    provider.prepare(ctx.resource, ctx.request),
                )
            ]
        now = self.clock()
        ids = [
            self.ledger.add_step(
                rid, a.plane, a.provider, "mint", a.kind, a.name, {"artifact": a.to_json()}, now
            )
            for a in planned
        ]
        self.publish(rid)
        try:
            crash_point(f"mint:{provider.name}:before")
            minted = await provider.mint(ctx)
            crash_point(f"mint:{provider.name}:after")
        except Exception as exc:  # a provider's failure of any kind fails the session
            message = str(exc) if isinstance(exc, PlaneError) else f"{type(exc).__name__}: {exc}"
            for step_id, artifact in zip(ids, planned, strict=True):
                self.ledger.finish_step(
                    step_id,
                    "failed",
                    {"artifact": artifact.to_json(), "error": message},
                    self.clock(),
                )
            self.audit.append(
                "plane.failed",
                "controller",
                {"plane": provider.plane, "provider": provider.name, "error": message},
                session=rid,
            )
            return message
        now = self.clock()
        # One provider may mint several kinds under one name (a ServiceAccount and its
        # RoleBinding): match what was made to its intent by plane, kind and name.
        by_name = {(a.plane, a.kind, a.name): a for a in minted.artifacts}
        for step_id, artifact in zip(ids, planned, strict=True):
            made = by_name.pop((artifact.plane, artifact.kind, artifact.name), artifact)
            made.created_at = made.created_at or utc_text(now)
            self.ledger.finish_step(step_id, "done", {"artifact": made.to_json()}, now)
        for extra in by_name.values():  # minted without an announced intent: record it anyway
            extra.created_at = extra.created_at or utc_text(now)
            step_id = self.ledger.add_step(
                rid, extra.plane, extra.provider, "mint", extra.kind, extra.name, {}, now
            )
            self.ledger.finish_step(step_id, "done", {"artifact": extra.to_json()}, now)
        self.audit.append(
            "plane.ready",
            "controller",
            {
                "plane": provider.plane,
                "provider": provider.name,
                "artifacts": [f"{a.kind}/{a.name}" for a in minted.artifacts],
            },
            session=rid,
        )
        self.publish(rid)
        return dict(minted.secret or {})

    async def roll_back(self, rid: str, ctx: SessionContext, reason: str) -> None:
        self.ledger.set_state(rid, "activating", self.clock(), detail=f"rolling back: {reason}")
        self.publish(rid)
        await self._teardown_planes(rid, ctx)
        await self._finish(rid, "failed", f"failed: {reason}")

    # teardown ---------------------------------------------------------------------------
    async def teardown(self, rid: str) -> None:
        """Tears down every plane of a session already in `ending`, then signs its receipt."""
        await asyncio.sleep(0)  # let the `ending` events and API calls go first in a big batch
        self._sealed.pop(rid, None)
        ctx = self.context(rid)
        await self._teardown_planes(rid, ctx)
        reason = self.ledger.row(rid)["ended_reason"] or "ended"
        await self._finish(rid, "ended", reason)

    async def _teardown_planes(self, rid: str, ctx: SessionContext) -> None:
        for step in reversed(undone_mints(self.ledger.steps(rid))):
            if step.artifact_kind != CHECK:
                await self._remove(rid, ctx, step)

    async def sweep_session(self, rid: str) -> None:
        """Tears down what a finished session still has standing (for `bgctl sweep`)."""
        await self._teardown_planes(rid, self.context(rid))
        self.audit.append("sweep.session", "bgctl", {"session": rid}, session=rid)

    async def _remove(self, rid: str, ctx: SessionContext, step: Step) -> None:
        artifact = Artifact.from_json(
            step.detail.get("artifact")
            or {
                "plane": step.plane,
                "provider": step.provider,
                "kind": step.artifact_kind,
                "name": step.artifact_name,
            }
        )
        provider = _provider_named(step.plane, step.provider, self.home)
        # A teardown a crash interrupted is resumed, not left an intent beside a new one.
        key = (step.plane, step.artifact_kind, step.artifact_name)
        interrupted = next(
            (
                s
                for s in self.ledger.steps(rid)
                if s.action == "teardown"
                and s.state == "intent"
                and (s.plane, s.artifact_kind, s.artifact_name) == key
            ),
            None,
        )
        if interrupted is not None:
            step_id = interrupted.id
        else:
            step_id = self.ledger.add_step(
                rid,
                step.plane,
                step.provider,
                "teardown",
                step.artifact_kind,
                step.artifact_name,
                {},
                self.clock(),
            )
        delay, ceiling = self.backoff
        attempt = int(interrupted.detail.get("attempt", 0)) if interrupted is not None else 0
        while True:
            attempt += 1
            try:
                crash_point(f"teardown:{provider.name}:{artifact.kind}:before")
                how = await provider.teardown(ctx, artifact)
                crash_point(f"teardown:{provider.name}:{artifact.kind}:after")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep trying: a standing credential is the worst outcome
                error = str(exc) if isinstance(exc, PlaneError) else f"{type(exc).__name__}: {exc}"
                self.ledger.finish_step(
                    step_id,
                    "intent",
                    {"error": error, "attempt": attempt, "retry_in": round(delay, 1)},
                    self.clock(),
                )
                self.audit.append(
                    "plane.teardown_retry",
                    "controller",
                    {
                        "artifact": f"{step.artifact_kind}/{step.artifact_name}",
                        "attempt": attempt,
                        "error": error,
                        "retry_in": round(delay, 1),
                    },
                    session=rid,
                )
                self.publish(rid)
                await asyncio.sleep(delay)
                delay = min(delay * 2, ceiling)
                continue
            self.ledger.finish_step(step_id, "done", {"how": how, "attempt": attempt}, self.clock())
            self.publish(rid)
            return

    async def _finish(self, rid: str, state: str, reason: str) -> None:
        """Signs the teardown receipt, stores it, audits it, and moves to the final state.

        Sessions that finish in the same turn of the event loop (a batch expiring together)
        share one transaction and one audit checkpoint, so a thousand expiries cost one commit.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finishing.append((rid, state, reason, done))
        if len(self._finishing) == 1:
            asyncio.get_running_loop().call_soon(self._flush_finishes)
        await done

    def _flush_finishes(self) -> None:
        batch, self._finishing = self._finishing, []
        try:
            with transaction(self.ledger.db):
                items = [self._close(rid, state, reason) for rid, state, reason, _ in batch]
                self.audit.append_batch(items)
        except Exception as exc:  # every waiter learns of the failure; nothing half-written
            for *_, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for rid, _, _, done in batch:
            self.publish(rid)
            if not done.done():
                done.set_result(None)

    def _close(self, rid: str, state: str, reason: str) -> AuditItem:
        """Within the caller's transaction: receipt, final state; returns the audit entry."""
        now = self.clock()
        for step in self.ledger.steps(rid):
            if step.action == "mint" and step.state == "intent":  # a crash cut the mint short
                detail = {**step.detail, "error": f"interrupted: {reason}"}
                self.ledger.finish_step(step.id, "failed", detail, now)
        steps = self.ledger.steps(rid)
        removals = {
            (s.plane, s.artifact_kind, s.artifact_name): s
            for s in steps
            if s.action == "teardown" and s.state == "done"
        }
        artifacts: list[dict[str, Any]] = []
        for step in steps:
            if step.action != "mint" or step.artifact_kind == CHECK:
                continue
            removal = removals.get((step.plane, step.artifact_kind, step.artifact_name))
            artifacts.append(
                {
                    "plane": step.plane,
                    "provider": step.provider,
                    "kind": step.artifact_kind,
                    "name": step.artifact_name,
                    "created_at": step.detail.get("artifact", {}).get("created_at")
                    or step.created_at,
                    "removed_at": removal.updated_at if removal else None,
                    "how": removal.detail.get("how", "") if removal else "",
                }
            )
        receipt = TeardownReceipt(
            controller_id=self.config.id,
            session_id=rid,
            request_id=rid,
            ended_reason=reason,
            artifacts=artifacts,
            completed_at=utc_text(now),
        ).sign(self.signer)
        if self.ledger.session(rid) is not None:
            self.ledger.finish_session(rid, now, reason, receipt)
        self.ledger.set_state(rid, state, now, ended_reason=reason)
        record = {
            "state": state,
            "ended_reason": reason,
            "receipt": receipt.to_json(),
            "artifacts": len(artifacts),
            "request_digest": self.ledger.row(rid)["request_digest"],
        }
        return ("session.receipt", "controller", record, rid)
