"""Session lifecycle: approval-to-Active latency and how late teardown starts after expiry.

    python bench/lifecycle.py [--sessions 1000] [--latency-samples 50] [--operators N]

Runs a real `bgctl serve` child process (a controller home built with `bgctl init`, keys made
with `bgtui keygen` and pinned with `bgctl trust add`, via tests/servers.py) on a Unix socket in
a temporary directory, with one resource reached over the `direct` network plane: a real
loopback TCP listener in this process, probed by the controller on every activation. Every call
is signed (RFC 9421) exactly as a client makes it, and every state change is observed on the
controller's SSE stream (/v1/events), subscribed before anything is approved, so the figures are
the controller's, not a polling interval's. Prints figures only; it asserts nothing.

1. Approval-to-Active latency: N sequential sessions; the time from sending the signed approval
   to receiving the session's `active` event. Includes verifying the approval, the write-ahead
   plane steps (SQLite, synchronous=FULL), the direct plane's real TCP probe, the audit entries
   and their signed checkpoints, and SSE delivery.
2. Expiry with many active sessions: S sessions are approved with durations chosen so that all
   of them expire at (nearly) the same wall-clock second, then for each session the bench
   records when teardown began (the `ending` event), relative to its `expires_at`. expires_at is
   RFC 3339 text with second resolution, but the controller's clock is truncated to whole
   seconds too (activated_at + approved duration), so expires_at is the exact instant its
   deadline scheduler fires at; lateness is measured against it with this machine's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import runpy
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from ulid import ULID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import Appliance  # noqa: E402

from bgtui.home import ClientHome  # noqa: E402
from bgtui.identity import Identity  # noqa: E402
from bgtui.protocol.httpsig import sign_request  # noqa: E402
from bgtui.protocol.objects import Request, Signed, new_approval, new_nonce  # noqa: E402
from bgtui.protocol.sshsig import Signer  # noqa: E402
from bgtui.protocol.timefmt import now_utc, parse_utc, utc_text  # noqa: E402

CONTROLLER_ID = "acme-prod"  # as tests/servers.py lays it out
RESOURCE = "status-page"  # direct network plane to the Appliance's loopback TcpTarget
REQUESTED = 3 * 3600  # under the catalog's max_duration (4h); approvers shorten it
SSE_LIMIT = 1000  # the controller's per-subscriber queue (controller/events.py)


@dataclass
class Client:
    """One enrolled identity: its signer and its signed calls over the Unix socket."""

    name: str
    ident: Any
    signer: Signer
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        headers = sign_request(self.signer, method, path, "", data)
        headers["content-type"] = "application/json"
        response = await self.http.request(method, path, content=data, headers=headers)
        return response.status_code, response.json()


@dataclass
class Seen:
    """What one session did, as the SSE streams told it (wall-clock receive times)."""

    states: dict[str, float] = field(default_factory=dict)  # first receive time of each state
    expires_at: str | None = None
    ending_updated_at: str | None = None  # the controller's own (second) time of the flip


class Watcher:
    """SSE readers: every event is timestamped on receipt and kept per session."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = defaultdict(Seen)
        self.events = 0
        self.cut_off: dict[str, tuple[int, float]] = {}  # stream -> (events read, when it ended)
        self.waiters: list[tuple[str, str, asyncio.Future[float]]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.ready: list[asyncio.Event] = []

    def wait_for(self, rid: str, state: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if state in self.seen[rid].states:
            future.set_result(self.seen[rid].states[state])
        else:
            self.waiters.append((rid, state, future))
        return future

    def count(self, state: str, ids: list[str]) -> int:
        return sum(1 for rid in ids if state in self.seen[rid].states)

    def watch(self, client: Client, name: str) -> None:
        ready = asyncio.Event()
        self.ready.append(ready)
        self.tasks.append(asyncio.create_task(self._read(client, name, ready)))

    async def _read(self, client: Client, name: str, ready: asyncio.Event) -> None:
        headers = sign_request(client.signer, "GET", "/v1/events", "", b"")
        read = 0
        async with client.http.stream("GET", "/v1/events", headers=headers) as response:
            data = ""
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    ready.set()
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and data:
                    received = time.time()
                    read += 1
                    self._record(json.loads(data), received)
                    data = ""
        self.cut_off[name] = (read, time.time())

    def _record(self, event: dict[str, Any], received: float) -> None:
        self.events += 1
        view = event.get("request") or {}
        rid, state = view.get("id"), view.get("state")
        if not rid or not state:
            return
        seen = self.seen[rid]
        if state not in seen.states:
            seen.states[state] = received
            if state == "ending":
                seen.ending_updated_at = view.get("updated_at")
        if view.get("expires_at"):
            seen.expires_at = view["expires_at"]
        if self.waiters:
            keep = []
            for wrid, wstate, future in self.waiters:
                if wrid == rid and wstate == state and not future.done():
                    future.set_result(received)
                else:
                    keep.append((wrid, wstate, future))
            self.waiters = keep

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


def load_client(app: Appliance, name: str, http: httpx.AsyncClient) -> Client:
    ident = Identity.load(ClientHome(app.identities[name].home))
    return Client(name, ident, ident.signer(), http)


async def submit(operator: Client, reason: str) -> tuple[Signed, Request]:
    req = Request(
        id=str(ULID()),
        controller_id=CONTROLLER_ID,
        resource=RESOURCE,
        privilege="use",
        credential_source="out-of-band",
        network_path="direct",
        command=None,
        requested_duration=REQUESTED,
        reason=reason,
        operator_fingerprint=operator.ident.fingerprint,
        operator_key=operator.ident.public.openssh(),
        session_key=None,
        created_at=utc_text(now_utc()),
        nonce=new_nonce(),
    )
    signed = req.sign(operator.signer)
    status, body = await operator.call("POST", "/v1/requests", signed.to_json())
    if status != 201:
        raise RuntimeError(f"submit refused ({status}): {body}")
    return signed, req


async def approve(approver: Client, signed: Signed, req: Request, duration: int) -> None:
    approval = new_approval(
        signed,
        req,
        approver_fingerprint=approver.ident.fingerprint,
        decision="approve",
        duration=duration,
    )
    body = approval.sign(approver.signer).to_json()
    status, reply = await approver.call("POST", f"/v1/requests/{req.id}/approvals", body)
    if status != 200:
        raise RuntimeError(f"approval refused ({status}): {reply}")


def summary(values: list[float], unit: str = "ms") -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (
        f"min {ordered[0]:8.1f}  median {statistics.median(ordered):8.1f}  "
        f"p95 {p95:8.1f}  max {ordered[-1]:8.1f} {unit}  (n={len(ordered)})"
    )


def stamp(text: str) -> float:
    return parse_utc(text).timestamp()


async def gather_limited(limit: int, jobs: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


async def latency(approver: Client, operator: Client, watcher: Watcher, samples: int) -> None:
    approval_rtt: list[float] = []
    to_active: list[float] = []
    for i in range(samples):
        signed, req = await submit(operator, f"latency sample {i}")
        active = watcher.wait_for(req.id, "active")
        sent = time.time()
        await approve(approver, signed, req, 600)
        approval_rtt.append((time.time() - sent) * 1000)
        to_active.append((await asyncio.wait_for(active, 30) - sent) * 1000)
    print(f"approval POST round trip  {summary(approval_rtt)}")
    print(f"approval -> active event  {summary(to_active)}")


async def expiry(
    app: Appliance,
    approver: Client,
    operators: list[Client],
    watcher: Watcher,
    sessions: int,
    concurrency: int,
    rate_hint: float,
) -> None:
    # Submit every request first (round-robin over operators).
    start = time.monotonic()
    made = await gather_limited(
        concurrency,
        [submit(operators[i % len(operators)], f"expiry load {i}") for i in range(sessions)],
    )
    submit_s = time.monotonic() - start
    ids = [req.id for _, req in made]
    print(
        f"submitted {sessions} requests in {submit_s:.1f} s ({sessions / submit_s:,.0f}/s, "
        f"{concurrency} concurrent)"
    )

    # One common expiry second, far enough ahead that every approval lands before it.
    planned = sessions / rate_hint * 1.5 + 20
    target = math.ceil(time.time() + planned)
    durations: dict[str, int] = {}
    lag = [0.0]  # latest approval-send -> active-event time: activation's clock lands there

    async def approve_for_target(signed: Signed, req: Request) -> None:
        sent = time.time()
        duration = max(10, target - math.floor(sent + lag[0]))
        durations[req.id] = duration
        active = watcher.wait_for(req.id, "active")
        await approve(approver, signed, req, duration)
        lag[0] = await asyncio.wait_for(active, 60) - sent

    start = time.monotonic()
    await gather_limited(concurrency, [approve_for_target(s, r) for s, r in made])
    approve_s = time.monotonic() - start
    deadline = time.monotonic() + 120
    while watcher.count("active", ids) < sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    all_active_s = time.monotonic() - start
    active = watcher.count("active", ids)
    print(
        f"approved {sessions} in {approve_s:.1f} s ({sessions / approve_s:,.0f}/s); "
        f"{active} active {all_active_s:.1f} s after the first approval; "
        f"target expiry {utc_text(datetime.fromtimestamp(target, UTC))}"
        f" ({target - time.time():.1f} s ahead)"
    )
    expiries = [watcher.seen[rid].expires_at for rid in ids]
    spread = sorted({e for e in expiries if e})
    print(
        f"expires_at values: {len(spread)} distinct second(s), "
        + ", ".join(f"{e} x{expiries.count(e)}" for e in spread[:4])
        + (" ..." if len(spread) > 4 else "")
    )

    # Wait for every session to end (or give up 120 s after the last expiry), meanwhile timing
    # an unauthenticated GET /v1/info every 50 ms from 2 s before the first expiry: how long
    # the controller stops answering while it expires the batch.
    first = min(stamp(e) for e in spread) if spread else float(target)
    last_expiry = max(stamp(e) for e in spread) if spread else float(target)
    await asyncio.sleep(max(0.0, first - 2 - time.time()))
    probes: list[tuple[float, float]] = []  # (sent, round trip s)
    give_up = last_expiry + 120
    while watcher.count("ended", ids) < sessions and time.time() < give_up:
        sent = time.time()
        await approver.http.get("/v1/info")
        probes.append((sent, time.time() - sent))
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let any straggling events arrive

    late_ending: list[float] = []
    late_ended: list[float] = []
    flip_seconds: list[float] = []
    missing_ending = 0
    for rid in ids:
        seen = watcher.seen[rid]
        if not seen.expires_at:
            continue
        expires = stamp(seen.expires_at)
        if "ending" in seen.states:
            late_ending.append((seen.states["ending"] - expires) * 1000)
        else:
            missing_ending += 1
        if "ended" in seen.states:
            late_ended.append((seen.states["ended"] - expires) * 1000)
        if seen.ending_updated_at:
            flip_seconds.append(stamp(seen.ending_updated_at) - expires)

    # The controller's own record: the audit log's `session.expired` second, the session's
    # ended_at and ended_reason (read from state.db after the fact, read-only).
    db = sqlite3.connect(f"file:{app.home / 'state.db'}?mode=ro", uri=True)
    try:
        audited = dict(
            db.execute(
                "SELECT session, at FROM audit_entries WHERE event = 'session.expired'"
            ).fetchall()
        )
        rows = {
            r[0]: r[1:]
            for r in db.execute(
                "SELECT id, expires_at, ended_at, ended_reason FROM sessions"
            ).fetchall()
        }
    finally:
        db.close()
    audit_late = [
        stamp(audited[rid]) - stamp(rows[rid][0]) for rid in ids if rid in audited and rid in rows
    ]
    ended_late = [
        stamp(rows[rid][1]) - stamp(rows[rid][0]) for rid in ids if rid in rows and rows[rid][1]
    ]
    reasons: dict[str, int] = defaultdict(int)
    for rid in ids:
        if rid in rows:
            reasons[str(rows[rid][2])] += 1

    print()
    print(f"sessions active at expiry          {active}")
    print(
        f"'ending' events received           {len(late_ending)}"
        + (
            f"  ({missing_ending} superseded: the stream sends each request's newest state, and "
            "'ended' came before the stream flushed, so teardown began no later than 'ended')"
            if missing_ending
            else ""
        )
    )
    print(f"teardown began (SSE 'ending' receive time - expires_at)\n    {summary(late_ending)}")
    print(f"session ended (SSE 'ended' receive time - expires_at)\n    {summary(late_ended)}")
    print(
        "controller's flip time (view updated_at at 'ending', whole s) - expires_at: "
        + histogram(flip_seconds)
    )
    print("audit 'session.expired' at (whole s) - expires_at: " + histogram(audit_late))
    print("sessions.ended_at (whole s) - expires_at:          " + histogram(ended_late))
    print("ended_reason: " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
    ended_times = [
        watcher.seen[rid].states["ended"] for rid in ids if "ended" in watcher.seen[rid].states
    ]
    if ended_times:
        print(
            f"all {len(ended_times)} ended {max(ended_times) - first:.3f} s after the first "
            f"expires_at ({max(ended_times) - last_expiry:.3f} s after the last)"
        )
    if probes:
        worst_sent, worst = max(probes, key=lambda p: p[1])
        print(
            f"GET /v1/info during expiry: {len(probes)} probes, median "
            f"{statistics.median(p[1] for p in probes) * 1000:.1f} ms, worst {worst * 1000:.0f} ms"
            f" (sent {worst_sent - first:+.3f} s from the first expires_at)"
        )
    for name, (read, when) in sorted(watcher.cut_off.items()):
        print(
            f"SSE stream of {name} cut off by the controller after {read} events,"
            f" {when - first:+.3f} s from the first expires_at"
        )
    if not watcher.cut_off:
        print("SSE streams cut off by the controller: none")
    print(f"durations granted: {min(durations.values())}..{max(durations.values())} s")


def histogram(values: list[float]) -> str:
    if not values:
        return "no samples"
    counts: dict[int, int] = defaultdict(int)
    for value in values:
        counts[int(value)] += 1
    return ", ".join(f"{k:+d} s x{v}" for k, v in sorted(counts.items()))


async def run(app: Appliance, args: argparse.Namespace) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(app.socket))
    limits = httpx.Limits(max_connections=args.concurrency + args.operators + 4)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://bgctl",
        timeout=httpx.Timeout(60.0, read=None),
        limits=limits,
    ) as http:
        approver = load_client(app, "alice", http)
        operators = [load_client(app, name, http) for name in operator_names(args.operators)]
        watcher = Watcher()
        # Each operator's stream carries only that operator's sessions; an approver's stream
        # carries all of them (it is what the approver TUI watches): watch both kinds.
        for operator in operators:
            watcher.watch(operator, operator.name)
        watcher.watch(approver, "approver alice")
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in watcher.ready)), 10)

        print(f"\n== approval -> Active, {args.latency_samples} sequential sessions")
        start = time.monotonic()
        await latency(approver, operators[0], watcher, args.latency_samples)
        per_session = (time.monotonic() - start) / max(1, args.latency_samples)

        print(f"\n== expiry with {args.sessions} concurrently active sessions")
        await expiry(
            app,
            approver,
            operators,
            watcher,
            args.sessions,
            args.concurrency,
            rate_hint=1 / per_session,
        )
        await watcher.close()


def operator_names(count: int) -> list[str]:
    return ["olive"] + [f"op{i}" for i in range(1, count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8, help="client calls in flight")
    parser.add_argument(
        "--operators",
        type=int,
        default=0,
        help=f"operator identities (default: one per {SSE_LIMIT // 4} sessions)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temp home goes")
    parser.add_argument(
        "--providers",
        action="store_true",
        help="then approval-to-Active per credential provider (runs bench/providers.py)",
    )
    args = parser.parse_args()
    if args.operators <= 0:
        args.operators = max(1, math.ceil(args.sessions / (SSE_LIMIT // 4)))

    root = Path(tempfile.mkdtemp(prefix="bench-lifecycle-", dir=args.dir))
    print(
        f"machine: {os.cpu_count()} cpus, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(
        f"parameters: sessions={args.sessions} latency_samples={args.latency_samples} "
        f"concurrency={args.concurrency} operators={args.operators} home={root}"
    )
    app = Appliance(root)
    try:
        start = time.monotonic()
        app.setup()
        for name in operator_names(args.operators)[1:]:
            app.enrol(name, "operator")
        app.start()
        print(f"controller up in {time.monotonic() - start:.1f} s (bgctl init, keygen, serve)")
        asyncio.run(run(app, args))
    finally:
        with contextlib.suppress(Exception):
            if app.process is not None:
                app.stop(signal.SIGTERM, timeout=30)
        app.close()
        shutil.rmtree(root, ignore_errors=True)
    if args.providers:
        run_providers()


def run_providers() -> None:
    """Per-provider figures, from the sibling script (same appliance the demo uses)."""
    print()
    sys.argv = [str(Path(__file__).with_name("providers.py"))]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
