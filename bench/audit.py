"""Audit log throughput: append and verify rates beside raw SHA-256 and Ed25519 rates.

    python bench/audit.py [--entries 1000000] [--batch 1000]

Builds a fresh log in a temporary directory and prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing

from bgtui.protocol.keys import PrivateKey
from controller.audit import GENESIS, AuditItem, AuditLog
from controller.store import open_store


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}/s"


def timed(work: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = work()
    return count, time.perf_counter() - start


def raw_sha256(entry: bytes, seconds: float = 2.0) -> tuple[int, float]:
    """How many chain steps (sha256 over prev hex + newline + entry) run in `seconds`."""
    data = GENESIS.encode() + b"\n" + entry
    sha256 = hashlib.sha256
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10_000):
            sha256(data).hexdigest()
        count += 10_000
    return count, time.perf_counter() - start


def raw_ed25519(seconds: float = 2.0) -> tuple[int, float]:
    """How many Ed25519 signature checks PyNaCl makes in `seconds`."""
    key = nacl.signing.SigningKey.generate()
    signed = key.sign(b"x" * 200)
    verify = key.verify_key.verify
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1_000):
            verify(signed)
        count += 1_000
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()

    key = PrivateKey.generate("bench")
    with tempfile.TemporaryDirectory(prefix="bgtui-bench-") as tmp:
        home = Path(tmp)
        db = open_store(home / "state.db")
        log = AuditLog(db, "bench", key, head_file=home / "audit-head.json")

        def append() -> int:
            done = 0
            while done < args.entries:
                size = min(args.batch, args.entries - done)
                batch: list[AuditItem] = [
                    (
                        "session.active",
                        "alice",
                        {"request": f"01J{n:023d}", "resource": "orders-db", "privilege": "ro"},
                        f"01S{n:023d}",
                    )
                    for n in range(done, done + size)
                ]
                log.append_batch(batch)
                done += size
            return done

        appended, append_s = timed(append)
        verdict = None

        def verify() -> int:
            nonlocal verdict
            verdict = log.verify(key.public)
            return verdict.size

        verified, verify_s = timed(verify)
        sample = bytes(db.conn.execute("SELECT entry FROM audit_entries LIMIT 1").fetchone()[0])
        db.close()  # folds the WAL back into state.db, so its size is the store's
        db_bytes = (home / "state.db").stat().st_size

    hashes, hash_s = raw_sha256(sample)
    checks, check_s = raw_ed25519()
    print(f"entries {appended:,} in batches of {args.batch:,}; entry {len(sample)} bytes")
    print(f"append           {rate(appended, append_s)}  ({append_s:.1f} s)")
    print(f"verify           {rate(verified, verify_s)}  ({verify_s:.1f} s)  {verdict}")
    print(f"raw sha256       {rate(hashes, hash_s)}  (one chain step on an entry-sized input)")
    print(f"raw ed25519      {rate(checks, check_s)}  (PyNaCl signature verifications)")
    print(f"state.db         {db_bytes / 1e6:>12,.0f} MB  ({db_bytes / appended:,.0f} bytes/entry)")


if __name__ == "__main__":
    main()
