"""Local mirror at scale: page fetches, filters, search and verify over a large audit copy.

    python bench/mirror.py [--entries 1000000] [--dir DIR]

Builds a mirror.db of synthetic but correctly chained entries (bulk-inserted: signing real
ones through a controller would take far longer) with one signed checkpoint at the end, then
prints how long the TUI's typical reads take. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgtui.mirror import AuditFilter, Mirror
from bgtui.protocol.evidence import GENESIS, chain_hash
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Checkpoint

EVENTS = [
    "request.submitted",
    "approval.approve",
    "session.activating",
    "plane.ready",
    "session.active",
    "credentials.fetched",
    "recording.uploaded",
    "session.ended_by_operator",
    "session.ended",
    "session.receipt",
]
WORDS = [
    "checkout",
    "payments",
    "orders",
    "latency",
    "outage",
    "rollback",
    "deploy",
    "hotfix",
    "replica",
    "index",
]


def build(mirror: Mirror, count: int, batch: int = 50_000) -> PrivateKey:
    """Inserts `count` chained entries in sessions of ten, and one checkpoint over them all."""
    rng = random.Random(7)
    prev, rows = GENESIS, []
    actors = [f"operator{i}" for i in range(40)] + ["alice", "arne", "controller"]
    session = ""
    conn = mirror.db.conn
    conn.execute("BEGIN")
    for seq in range(1, count + 1):
        step = (seq - 1) % len(EVENTS)
        if step == 0:
            session = f"01J{seq:023d}"
            reason = f"INC-{rng.randrange(100_000)} {' '.join(rng.sample(WORDS, 3))}"
        data: dict[str, Any] = {"reason": reason} if step == 0 else {"step": step}
        entry = json.dumps(
            {
                "actor": rng.choice(actors),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + seq * 7)),
                "data": data,
                "event": EVENTS[step],
                "seq": seq,
                "session": session,
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        digest = chain_hash(prev, entry.encode())
        rows.append((mirror.controller_id, seq, entry, prev, digest))
        prev = digest
        if len(rows) == batch:
            conn.executemany(
                "INSERT INTO audit_entries (controller, seq, entry, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            rows = []
    conn.executemany(
        "INSERT INTO audit_entries (controller, seq, entry, prev_hash, hash) VALUES (?,?,?,?,?)",
        rows,
    )
    key = PrivateKey.generate()
    signed = Checkpoint(mirror.controller_id, count, prev, "2026-01-01T00:00:00Z").sign(key)
    conn.execute(
        "INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?, ?)",
        (mirror.controller_id, count, prev, signed.payload.decode(), signed.signature, "now"),
    )
    conn.execute(
        "INSERT INTO controllers (id, key) VALUES (?, ?)",
        (mirror.controller_id, key.public.openssh()),
    )
    conn.execute("COMMIT")
    return key


def timed(label: str, work: Callable[[], Any], repeat: int = 5) -> Any:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    shown = f"{len(result)} rows" if isinstance(result, list) else str(result)
    print(f"  {label:<52} {best * 1000:>9.2f} ms   ({shown})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary mirror goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "mirror.db"
        mirror = Mirror(path, "acme-prod")
        start = time.perf_counter()
        key = build(mirror, args.entries)
        built = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        print(f"built {args.entries:,} entries in {built:.1f}s ({size_mb:,.0f} MB with indexes)")
        n = args.entries
        sid = f"01J{(n // 2 // 10) * 10 + 1:023d}"
        moment = 1_767_225_600 + n // 2 * 7
        middle = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
        hour_later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment + 3600))
        print("page fetches (50 rows, newest first):")
        timed("first page", lambda: mirror.audit_rows(0, 50))
        timed("page at offset n/2", lambda: mirror.audit_rows(n // 2, 50))
        timed("last page", lambda: mirror.audit_rows(n - 50, 50))
        timed("audit_count()", mirror.audit_count)
        timed("audit_entry(n/2)", lambda: mirror.audit_entry(n // 2))
        print("filters (pages of 50; cold: the first call, which also counts the matches):")
        filters = {
            "event=session.active": AuditFilter(event="session.active"),
            "event=session.* (prefix)": AuditFilter(event="session.*"),
            "actor=alice": AuditFilter(actor="alice"),
            "session=<one>": AuditFilter(session=sid),
            "since/until: a 1-hour window": AuditFilter(since=middle, until=hour_later),
            "text 'rollback hotfix' (FTS5)": AuditFilter(text="rollback hotfix"),
            "text 'INC-4242' (rare)": AuditFilter(text="INC-4242"),
            "event + actor": AuditFilter(event="approval.approve", actor="alice"),
        }
        for label, chosen in filters.items():
            mirror._counts.clear()  # the first page of a new filter also counts its matches
            timed(f"{label}: count (cold)", lambda c=chosen: mirror.audit_count(c), repeat=1)
            mirror._counts.clear()
            timed(f"{label}: page 1 (cold)", lambda c=chosen: mirror.audit_rows(0, 50, c), 1)
            timed(f"{label}: page 1", lambda c=chosen: mirror.audit_rows(0, 50, c))
            timed(f"{label}: offset 10,000", lambda c=chosen: mirror.audit_rows(10_000, 50, c))
        timed("timeline(<one session>)", lambda: mirror.timeline(sid))
        print("verify (whole chain + checkpoint signature):")
        start = time.perf_counter()
        verdict = mirror.verify(key.public)
        seconds = time.perf_counter() - start
        print(f"  {verdict} in {seconds:.1f}s ({n / seconds:,.0f} entries/s)")
        mirror.close()


if __name__ == "__main__":
    main()
