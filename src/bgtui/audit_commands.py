"""`bgtui audit …`: the audit log from the local mirror, synced first when the controller answers.

Every command copies what the controller added since the last sync (checking the hash chain
and the controller's signature on its newest checkpoint), then works on the local copy, so
they also work offline. A controller whose history no longer extends the local copy is named
loudly, and the local copy is left as it was.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bgtui.client import ApiRefused, ControllerClient, Unreachable, request_id
from bgtui.clikit import print_json
from bgtui.mirror import AuditFilter, AuditRow, Mirror, SyncResult, mirror_path
from bgtui.protocol.errors import Refused
from bgtui.protocol.evidence import summary_line
from bgtui.protocol.keys import PublicKey

if TYPE_CHECKING:
    from bgtui.cli import ClientContext

OFFLINE = "(offline: showing the local copy)"


@dataclass
class Opened:
    """The mirror of the chosen controller, and the client when the controller answered."""

    mirror: Mirror
    key: PublicKey
    client: ControllerClient | None
    synced: SyncResult | None = None
    refused: ApiRefused | None = None  # the controller would not let us read the whole log


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        click.echo(f"\rsyncing the audit log: {done}/{total}", err=True, nl=done >= total)


@contextmanager
def opened(obj: ClientContext, *, warn: bool = True) -> Iterator[Opened]:
    """Opens the mirror; syncs it first when the controller answers, else says it is offline.

    `warn`: print a rewrite warning (False when the caller refuses with it instead).
    """
    home = obj.home
    path = mirror_path(home)
    url = _configured(obj)
    client: ControllerClient | None = None
    reason = "no controller given"
    if url is not None:
        client = obj.client(obj.signer())
        try:
            info = client.info()
        except Unreachable as exc:
            client.close()
            client, reason = None, str(exc)
        except BaseException:
            client.close()
            raise
    if client is None:
        controller_id = Mirror.known_controller(path, url)
        if controller_id is None:
            raise Refused(f"{reason}; and there is no local copy of its audit log yet")
        mirror = Mirror(path, controller_id)
        key = mirror.controller_key()
        if key is None:
            mirror.close()
            raise Refused(
                f"{reason}; and there is no local copy of its audit log yet (no sync pinned "
                "its key)"
            )
        click.echo(OFFLINE, err=True)
        try:
            yield Opened(mirror, key, None)
        finally:
            mirror.close()
        return
    try:
        key = PublicKey.parse(str(info.get("key")), "the controller's key")
        home.ensure()
        mirror = Mirror(path, str(info.get("controller_id")))
        try:
            state = Opened(mirror, key, client)
            try:
                state.synced = mirror.sync(client, key, _progress)
            except ApiRefused as exc:
                if exc.status != 403:
                    raise
                state.refused = exc
            _report(state, warn)
            yield state
        finally:
            mirror.close()
    finally:
        client.close()


def _configured(obj: ClientContext) -> str | None:
    try:
        return obj.controller()
    except Refused:
        return None


def _report(state: Opened, warn: bool) -> None:
    result = state.synced
    if result is None:
        return
    if result.rewritten:
        if warn:
            click.echo(f"bgtui: {result.rewritten}", err=True)
    elif result.fetched:
        click.echo(
            f"synced {result.fetched} new audit entries from {state.mirror.controller_id}; "
            f"verified to its checkpoint at size {result.verified_size}",
            err=True,
        )


@click.group("audit")
def audit() -> None:
    """The controller's signed, hash-chained audit log, mirrored locally.

    Each command syncs the local copy first when the controller answers (checking the chain
    and the controller's signature), and works on the local copy when it does not.
    """


@audit.command("verify")
@click.pass_obj
def verify_command(obj: ClientContext) -> None:
    """Sync, then recompute the whole local chain and check every kept checkpoint.

    Exits 1 naming the first bad entry, or when the controller's history no longer extends
    the local copy (rewritten or truncated). Example:

    \b
        bgtui audit verify
    """
    with opened(obj, warn=False) as state:
        if state.refused is not None:
            raise Refused(f"{state.refused}; verifying needs the whole log (approver or auditor)")
        if state.synced is not None and state.synced.rewritten:
            raise Refused(state.synced.rewritten)
        verdict = state.mirror.verify(state.key, _progress)
        if not verdict.ok:
            raise Refused(str(verdict))
        click.echo(str(verdict))
        last = state.mirror.last_verified()
        if last is not None:
            click.echo(
                f"newest checkpoint: size {last[0]}, head {last[1]}, signed by "
                f"{state.mirror.controller_id} {state.key.fingerprint}"
            )


def _row_json(row: AuditRow) -> dict[str, Any]:
    return asdict(row)


def _table(rows: list[AuditRow]) -> list[str]:
    header = ("SEQ", "AT", "EVENT", "ACTOR", "SESSION", "DETAIL")
    table = [header] + [
        (str(r.seq), r.at, r.event, r.actor, r.session or "-", summary_line(r.data)) for r in rows
    ]
    widths = [max(len(line[col]) for line in table) for col in range(len(header) - 1)]
    return [
        "  ".join(
            [*(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)), line[-1]]
        ).rstrip()
        for line in table
    ]


@audit.command("log")
@click.option("--session", metavar="ID", help="Only this session's entries (oldest first).")
@click.option("--actor", metavar="NAME", help="Only entries by this actor.")
@click.option("--event", metavar="E", help="Only this event; `approval.*` for a prefix.")
@click.option("--since", metavar="T", help="From this time: 2026-01-31, …T12:00:00Z or 2h ago.")
@click.option("--until", metavar="T", help="Up to this time (a date: that whole day).")
@click.option("--search", metavar="TEXT", help="Entries holding every word of TEXT.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.pass_obj
def log_command(
    obj: ClientContext,
    session: str | None,
    actor: str | None,
    event: str | None,
    since: str | None,
    until: str | None,
    search: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show audit entries, newest first (a session's: oldest first), from the local copy.

    Syncs first when the controller answers; offline it reads the local copy. An operator may
    read only their own session's entries, straight from the controller. Examples:

    \b
        bgtui audit log --event 'session.*' --since 24h
        bgtui audit log --session 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9 --json
        bgtui audit log --search "INC-4711"
    """
    rid = request_id(session) if session else None
    chosen = AuditFilter(rid, actor, event, since, until, search)
    with opened(obj) as state:
        if state.refused is not None:
            rows = _own_session(state, rid)
            total = len(rows)
        else:
            rows = state.mirror.audit_rows(0, limit, chosen)
            total = state.mirror.audit_count(chosen)
            if rid is not None:
                rows.reverse()  # a session reads as a timeline
        if as_json:
            print_json([_row_json(r) for r in rows])
        elif rows:
            for line in _table(rows):
                click.echo(line)
        if state.refused is None:
            click.echo(
                f"{len(rows)} of {total} matching entries; the local copy holds "
                f"{state.mirror.audit_size()}",
                err=True,
            )


def _own_session(state: Opened, rid: str | None) -> list[AuditRow]:
    """An operator's view: their session's entries as the controller serves them."""
    assert state.refused is not None and state.client is not None
    if rid is None:
        raise Refused(f"{state.refused}; give --session ID for a session of yours")
    client = state.client
    rows, after = [], 0
    while True:
        page = client.audit_entries(after, session=rid).get("entries") or []
        for item in page:
            value = json.loads(item["entry"])
            rows.append(
                AuditRow(
                    seq=item["seq"],
                    at=value.get("at", ""),
                    event=value.get("event", ""),
                    actor=value.get("actor", ""),
                    session=value.get("session"),
                    data=value.get("data") or {},
                    hash=item["hash"],
                )
            )
        if len(page) == 0:
            break
        after = page[-1]["seq"]
    click.echo(
        "(your session's entries from the controller; checking their chain needs the whole "
        "log, which approvers and auditors can verify)",
        err=True,
    )
    return rows


@audit.command("export")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="A new or empty directory for the bundle.",
)
@click.option("--session", metavar="ID", help="Only this session's span of the log.")
@click.pass_obj
def export_command(obj: ClientContext, out: Path, session: str | None) -> None:
    """Write an evidence bundle anyone can check with ssh-keygen -Y verify and sha256sum.

    With --session: the session's entries (and those written in between), the signed
    checkpoint right after its last one, and its recordings. Example:

    \b
        bgtui audit export --session 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9 --out evidence/
    """
    rid = request_id(session) if session else None
    with opened(obj) as state:
        if state.refused is not None:
            raise Refused(f"{state.refused}; exporting needs the whole log (approver or auditor)")
        mirror = state.mirror
        rewritten = state.synced is not None and state.synced.rewritten
        if rid is None:
            written = mirror.export_log(out, state.key)
        else:
            timeline = mirror.timeline(rid)
            if state.client is not None and timeline and not rewritten:
                mirror.fetch_checkpoint(state.client, state.key, timeline[-1].seq)
                mirror.fetch_recordings(state.client, rid)
            written = mirror.export_session(rid, out, state.key)
    click.echo(f"wrote evidence bundle to {written}; see {written / 'README.md'}")
