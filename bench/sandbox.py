"""How long each sandbox server takes to start and to stop (all of it, files included).

    python bench/sandbox.py [--runs 3]

For each of the sandbox fixtures the tests and `bgtui demo` use, starts it and stops it `--runs`
times and prints min/median/max seconds for each:

- `postgres`   ThrowawayPostgres: `initdb` into a temporary directory, `pg_ctl start` on a free
               loopback port, ready when the admin DSN connects; stop: `pg_ctl stop`, files gone
- `sshd`       LoopbackSshd: host key, config and `sshd -f` on a free loopback port, ready when
               it answers; stop: every connection and the listener killed, files gone
- `kube`       KubeSimulator: its CA and server certificate, the HTTPS server as a child
               process, ready when `/version` answers over verified TLS
- `appliance`  SandboxAppliance (`bgtui demo`): all of the above plus a loopback HTTP service,
               `bgctl init`, identities, trust and a real `bgctl serve`, ready when it answers

Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgtui.protocol.keys import PrivateKey
from controller.sandbox.appliance import SandboxAppliance
from controller.sandbox.kube import KubeSimulator
from controller.sandbox.postgres import ThrowawayPostgres
from controller.sandbox.sshd import LoopbackSshd


def timed(make: Callable[[Path], Any], runs: int) -> tuple[list[float], list[float]]:
    starts, stops = [], []
    for _ in range(runs):
        scratch = Path(tempfile.mkdtemp(prefix="bgbench-"))
        try:
            server = make(scratch)
            began = time.perf_counter()
            server.start()
            starts.append(time.perf_counter() - began)
            began = time.perf_counter()
            server.stop()
            stops.append(time.perf_counter() - began)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return starts, stops


def line(name: str, what: str, values: list[float]) -> str:
    return (
        f"{name:<10} {what:<6} min {min(values):6.2f} s  median {statistics.median(values):6.2f} s"
        f"  max {max(values):6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="starts and stops of each (3)")
    args = parser.parse_args()
    ca_line = PrivateKey.generate("bench-ca").public.openssh()
    servers: dict[str, Callable[[Path], Any]] = {
        # Each makes its own temporary directory (PostgreSQL's must be one its user can reach)
        # but the simulator, which is given one.
        "postgres": lambda root: ThrowawayPostgres(),
        "sshd": lambda root: LoopbackSshd(ca_line),
        "kube": lambda root: KubeSimulator(root / "kube"),
        "appliance": lambda root: SandboxAppliance(),
    }
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.runs} runs each")
    for name, make in servers.items():
        starts, stops = timed(make, args.runs)
        print(line(name, "start", starts))
        print(line(name, "stop", stops))


if __name__ == "__main__":
    main()
