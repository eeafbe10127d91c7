"""`bgctl sweep`: find and remove minted artifacts that no live session owns.

Two sources of truth are checked. The ledger: a finished session whose mint steps have no
completed teardown (a crash between the two, say) is torn down again. The targets: providers
that can list what bgtui made (Kubernetes objects labelled with this controller's id,
PostgreSQL roles named for sessions this ledger has had) report anything whose session is not
live, whatever the ledger says about its teardown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from bgtui.protocol.timefmt import now_utc
from controller.config import Resource
from controller.home import ControllerHome
from controller.ledger import FINAL, Ledger
from controller.planes import providers_for
from controller.planes.base import PlaneError
from controller.store import open_store


@dataclass(frozen=True)
class Leftover:
    """Something minted for a session that is no longer live."""

    resource: str
    kind: str
    name: str
    session: str
    removed: bool = False
    note: str = ""

    def line(self) -> str:
        verb = "removed" if self.removed else "would remove"
        tail = f" ({self.note})" if self.note else ""
        return f"{verb} {self.kind} {self.name} on {self.resource} (session {self.session}){tail}"


class Sessions:
    """What a sweep asks the ledger about a session id, when it asks: not from a list read
    earlier.

    A provider lists what it finds on the target and only then asks about each thing's
    session. A session is live before anything is minted for it and never live again once
    final, so an answer read after the listing cannot be stale in the harmful direction: a
    session that started activating during the sweep is seen as live and its fresh artifacts
    are left alone.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def live(self, session: str) -> bool:
        return self.ledger.is_live(session)

    def known(self, session: str) -> bool:
        """Whether this controller ever had the session: a target another controller also
        uses (one PostgreSQL for two) holds artifacts of sessions this ledger never saw."""
        return self.ledger.is_known(session)


class Sweeper(Protocol):
    """A provider that can list (and remove) what bgtui minted on a target."""

    def sweep(self, resource: Resource, sessions: Sessions, dry_run: bool) -> list[Leftover]: ...


def sweep(home: ControllerHome, dry_run: bool = False) -> list[Leftover]:
    """Every leftover found, removed unless `dry_run`."""
    db = open_store(home.db_path)
    try:
        ledger = Ledger(db)
        sessions = Sessions(ledger)
        found = _ledger_leftovers(home, ledger, dry_run)
        # Several resources may share one target (two catalog entries on one cluster): report
        # each leftover once, under the first resource that found it.
        seen: set[tuple[str, str, str]] = set()
        for resource in home.config.resources:
            try:
                providers = providers_for(resource, home.config, home.path)
            except PlaneError:
                continue
            for provider in providers:
                method = getattr(provider, "sweep", None)
                if method is None:
                    continue
                for leftover in method(resource, sessions, dry_run):
                    key = (leftover.kind, leftover.name, leftover.session)
                    if key not in seen:
                        seen.add(key)
                        found.append(leftover)
        return found
    finally:
        db.close()


def _ledger_leftovers(home: ControllerHome, ledger: Ledger, dry_run: bool) -> list[Leftover]:
    from controller.orchestrator import CHECK, undone_mints

    found: list[Leftover] = []
    for rid in ledger.ids(FINAL):
        steps = [s for s in undone_mints(ledger.steps(rid)) if s.artifact_kind != CHECK]
        if not steps:
            continue
        resource = ledger.row(rid)["resource"]
        for step in steps:
            found.append(Leftover(resource, step.artifact_kind, step.artifact_name, rid, False))
        if not dry_run:
            asyncio.run(_teardown(home, ledger, rid))
            found[-len(steps) :] = [
                Leftover(f.resource, f.kind, f.name, f.session, True, "from the ledger")
                for f in found[-len(steps) :]
            ]
    return found


async def _teardown(home: ControllerHome, ledger: Ledger, rid: str) -> None:
    from controller.audit import AuditLog
    from controller.orchestrator import Orchestrator

    audit = AuditLog(ledger.db, home.config.id, home.signing_key(), home.audit_head_path)
    orchestrator = Orchestrator(
        home.path,
        ledger,
        audit,
        home.config,
        home.signing_key(),
        lambda rid: None,
        now_utc,
        lambda rid, when: None,
        (0.5, 2.0),
    )
    await asyncio.wait_for(orchestrator.sweep_session(rid), timeout=60)
