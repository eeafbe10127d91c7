"""Per-provider session figures: approval-to-Active latency and teardown time.

    python bench/providers.py [--sessions 20] [--warmup 1] [--duration 600] [--dir DIR]

Starts a SandboxAppliance (controller/sandbox/appliance.py: a real `bgctl serve` child process
with a Kubernetes API simulator, a throwaway PostgreSQL, a loopback sshd trusting the
controller's SSH CA and a loopback HTTP service) and, for each resource it offers, runs N
sessions one at a time:

- `cluster`      kubernetes, controller credential: ServiceAccount + RoleBinding + token
- `orders-db`    postgres, command credential (`postgres-role` recipe): a login role
- `bastion`      ssh, controller credential: an SSH certificate for the session key
- `status-page`  service, out-of-band credential: nothing minted, a direct TCP probe only

Each session: the operator submits a signed request; the approver's SSE stream (`/v1/events`,
subscribed before anything is approved) is watched for the session; the approver's signed
approval is sent and the time from sending it to receiving the `active` event is taken; then the
operator's signed `end` is sent and the time to the `ended` event is taken (teardown: revoking
or deleting what was minted, and the signed receipt). Calls are signed in this process (RFC
9421, keys loaded with bgtui.identity.Identity from the appliance's client homes), so no CLI
start-up is in the figures. Requests are built as `bgtui request` builds them, from the
controller's catalog: a recipe resource's command, an SSH resource's derived session key.
Providers are interleaved (round-robin), so a slow drift in the store affects them alike.
Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ulid import ULID

from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.protocol.httpsig import sign_request
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Request, Signed, new_approval, new_nonce
from bgtui.protocol.timefmt import now_utc, utc_text
from bgtui.session_keys import session_key
from controller.sandbox.appliance import SandboxAppliance

PRIVILEGES = {"cluster": "view", "orders-db": "readonly", "bastion": "ops", "status-page": "use"}
PROVIDERS = {
    "cluster": "kubernetes: ServiceAccount + RoleBinding + token",
    "orders-db": "postgres: recipe `postgres-role` (login role)",
    "bastion": "ssh: certificate from the controller's CA",
    "status-page": "service: out-of-band credential, direct TCP probe",
}
WAIT = 60.0  # seconds to wait for one event before giving up on a sample


@dataclass
class Client:
    """One enrolled identity: its private key and its signed calls over the Unix socket."""

    name: str
    ident: Identity
    key: PrivateKey
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        headers = sign_request(self.key, method, path, "", data)
        if body is not None:
            headers["content-type"] = "application/json"
        response = await self.http.request(method, path, content=data, headers=headers)
        return response.status_code, response.json() if response.content else None


class Watcher:
    """One SSE stream; every event is timestamped on receipt (perf_counter) per request/state."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.last: dict[str, dict[str, Any]] = {}
        self.waiters: list[tuple[str, str, asyncio.Future[float]]] = []
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closed: str | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    def wait_for(self, rid: str, state: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if state in self.seen[rid]:
            future.set_result(self.seen[rid][state])
        else:
            self.waiters.append((rid, state, future))
        return future

    async def _read(self) -> None:
        headers = sign_request(self.client.key, "GET", "/v1/events", "", b"")
        try:
            async with self.client.http.stream("GET", "/v1/events", headers=headers) as response:
                data = ""
                async for line in response.aiter_lines():
                    if line.startswith(": connected"):
                        self.ready.set()
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif not line and data:
                        self._record(json.loads(data), time.perf_counter())
                        data = ""
            self.closed = "closed by the controller"
        except httpx.HTTPError as exc:
            self.closed = f"failed: {exc!r}"

    def _record(self, event: dict[str, Any], received: float) -> None:
        view = event.get("request") or {}
        rid, state = view.get("id"), view.get("state")
        if not rid or not state:
            return
        self.last[rid] = view
        self.seen[rid].setdefault(state, received)
        keep = []
        for wrid, wstate, future in self.waiters:
            if future.done():  # a cancelled wait
                continue
            if wrid == rid and wstate == state:
                future.set_result(received)
            else:
                keep.append((wrid, wstate, future))
        self.waiters = keep

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self.task


@dataclass
class Figures:
    approve_rtt: list[float] = field(default_factory=list)
    to_active: list[float] = field(default_factory=list)
    end_rtt: list[float] = field(default_factory=list)
    to_ended: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    steps: str = ""


def load_client(app: SandboxAppliance, name: str, http: httpx.AsyncClient) -> Client:
    _, home = app.identities[name]
    ident = Identity.load(ClientHome(home))
    return Client(name, ident, ident.private_key(), http)


def build_request(
    operator: Client, controller_id: str, entry: dict[str, Any], duration: int
) -> Request:
    """As `bgtui request` builds it: the catalog's command and network, a derived session key."""
    name = str(entry["name"])
    privilege = PRIVILEGES[name]
    rid = str(ULID())
    ssh_key = None
    if entry.get("session_key"):
        ssh_key = session_key(operator.key, rid).public.openssh(f"bgtui-session-{rid}")
    req = Request(
        id=rid,
        controller_id=controller_id,
        resource=name,
        privilege=privilege,
        credential_source=str(entry["credential_sources"][0]),
        network_path=str(entry.get("network")),
        command=(entry.get("commands") or {}).get(privilege),
        requested_duration=duration,
        reason=f"bench/providers.py: {name}",
        operator_fingerprint=operator.ident.fingerprint,
        operator_key=operator.ident.public.openssh(),
        session_key=ssh_key,
        created_at=utc_text(now_utc()),
        nonce=new_nonce(),
    )
    req.check()
    return req


async def one_session(
    operator: Client,
    approver: Client,
    watcher: Watcher,
    controller_id: str,
    entry: dict[str, Any],
    duration: int,
    figures: Figures | None,
) -> None:
    """One session of a provider; its figures go to `figures` (None: a warm-up)."""
    req = build_request(operator, controller_id, entry, duration)
    signed: Signed = req.sign(operator.key)
    status, body = await operator.call("POST", "/v1/requests", signed.to_json())
    if status != 201:
        raise RuntimeError(f"submit refused ({status}): {body}")

    active = watcher.wait_for(req.id, "active")
    over = [watcher.wait_for(req.id, s) for s in ("denied", "failed", "ended", "expired")]
    approval = new_approval(
        signed,
        req,
        approver_fingerprint=approver.ident.fingerprint,
        decision="approve",
        duration=duration,
    ).sign(approver.key)
    sent = time.perf_counter()
    status, body = await approver.call(
        "POST", f"/v1/requests/{req.id}/approvals", approval.to_json()
    )
    replied = time.perf_counter()
    if status != 200:
        raise RuntimeError(f"approval refused ({status}): {body}")
    done, _ = await asyncio.wait([active, *over], timeout=WAIT, return_when="FIRST_COMPLETED")
    for future in over:
        future.cancel()
    if active not in done:
        active.cancel()
        view = watcher.last.get(req.id, {})
        detail = f"{view.get('state')}: {view.get('detail') or view.get('ended_reason')}"
        if figures is not None:
            figures.failures.append(f"{req.id} not active ({detail})")
        return
    activated = active.result()
    view = watcher.last.get(req.id, {})

    ended = watcher.wait_for(req.id, "ended")
    end_sent = time.perf_counter()
    status, body = await operator.call("POST", f"/v1/requests/{req.id}/end")
    end_replied = time.perf_counter()
    if status != 200:
        raise RuntimeError(f"end refused ({status}): {body}")
    try:
        ended_at = await asyncio.wait_for(ended, WAIT)
    except TimeoutError:
        if figures is not None:
            figures.failures.append(f"{req.id} not ended within {WAIT:.0f} s")
        return
    if figures is None:
        return
    figures.approve_rtt.append((replied - sent) * 1000)
    figures.to_active.append((activated - sent) * 1000)
    figures.end_rtt.append((end_replied - end_sent) * 1000)
    figures.to_ended.append((ended_at - end_sent) * 1000)
    final = watcher.last.get(req.id, {})
    figures.reasons[str(final.get("ended_reason"))] += 1
    if not figures.steps:
        planes = view.get("planes") or []
        figures.steps = ", ".join(
            f"{step.get('plane')}/{step.get('provider')} {step.get('action')}"
            + (f" {step['kind']}" if step.get("kind") else "")
            for step in planes
        )


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (
        f"min {ordered[0]:7.1f}  median {statistics.median(ordered):7.1f}  "
        f"p95 {p95:7.1f}  max {ordered[-1]:7.1f} ms  (n={len(ordered)})"
    )


async def run(app: SandboxAppliance, args: argparse.Namespace) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(app.socket))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bgctl", timeout=httpx.Timeout(60.0, read=None)
    ) as http:
        operator = load_client(app, "olive", http)
        approver = load_client(app, "alice", http)
        info = (await http.get("/v1/info")).json()
        controller_id = str(info["controller_id"])
        status, catalog = await operator.call("GET", "/v1/resources")
        if status != 200:
            raise RuntimeError(f"GET /v1/resources: {status} {catalog}")
        entries = {str(e["name"]): e for e in catalog}
        names = [n for n in PROVIDERS if n in entries and entries[n].get("available") is not False]
        for name in PROVIDERS:
            if name not in names:
                print(f"{name}: not offered on this machine; skipped")

        watcher = Watcher(approver)  # an approver's stream carries every request
        watcher.start()
        await asyncio.wait_for(watcher.ready.wait(), 10)

        figures = {name: Figures() for name in names}
        started = time.monotonic()
        for _ in range(args.warmup):
            for name in names:
                await one_session(
                    operator, approver, watcher, controller_id, entries[name], args.duration, None
                )
        for _ in range(args.sessions):
            for name in names:
                await one_session(
                    operator,
                    approver,
                    watcher,
                    controller_id,
                    entries[name],
                    args.duration,
                    figures[name],
                )
        elapsed = time.monotonic() - started
        await watcher.close()

    total = (args.warmup + args.sessions) * len(names)
    print(f"\n{total} sessions in {elapsed:.1f} s ({args.warmup} warm-up per provider, unmeasured)")
    for name in names:
        f = figures[name]
        print(f"\n== {name}  ({PROVIDERS[name]})")
        if f.steps:
            print(f"   plane steps: {f.steps}")
        print(f"   approval POST round trip       {summary(f.approve_rtt)}")
        print(f"   approval -> 'active' event     {summary(f.to_active)}")
        print(f"   end POST round trip            {summary(f.end_rtt)}")
        print(f"   end -> 'ended' event           {summary(f.to_ended)}")
        if f.reasons:
            print(
                "   ended_reason: " + ", ".join(f"{k} x{v}" for k, v in sorted(f.reasons.items()))
            )
        for failure in f.failures:
            print(f"   FAILED: {failure}")
    if watcher.closed:
        print(f"\nSSE stream {watcher.closed}")


def tool_version(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0] if text else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="measured sessions per provider")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured sessions per provider first"
    )
    parser.add_argument("--duration", type=int, default=600, help="requested/approved duration (s)")
    parser.add_argument("--dir", type=Path, default=None, help="where the appliance's root goes")
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cpus, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(
        f"tools: {tool_version(['postgres', '--version'])}; "
        f"{tool_version(['ssh', '-V'])}; "
        "Kubernetes: the API simulator (controller/sandbox/kube.py, a child process)"
    )
    # The appliance makes its own root (mode 0700; under /tmp unless --dir); as root it puts
    # PostgreSQL's directory in a sibling, so the parent must stay traversable for `postgres`.
    given = args.dir.resolve() / f"bench-providers-{ULID()}" if args.dir else None
    app = SandboxAppliance(given)
    print(
        f"parameters: sessions={args.sessions} per provider, warmup={args.warmup}, "
        f"duration={args.duration} s, sequential (one session at a time)"
    )
    try:
        start = time.monotonic()
        app.start()
        print(
            f"appliance up in {time.monotonic() - start:.1f} s at {app.root}; resources: "
            + ", ".join(app.resources)
        )
        for line in app.missing:
            print(f"  missing: {line}")
        asyncio.run(run(app, args))
    finally:
        app.stop()


if __name__ == "__main__":
    main()
