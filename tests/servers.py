"""Real processes for integration tests: a `bgctl serve` with enrolled identities, a TCP target.

`Appliance` lays out a controller home with `bgctl init`, enrols an operator, an approver and an
auditor (real `bgtui keygen` homes, pinned with `bgctl trust add`), writes a catalog, and runs
`bgctl serve` as a child process on a Unix socket or loopback TCP. Everything lives under the
test's tmp_path and is stopped at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.helpers import run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpTarget:
    """A real loopback TCP listener standing for a reachable resource (accepts and closes)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Identity:
    name: str
    role: str
    home: Path
    public_line: str


CATALOG = """\
id = "acme-prod"
request_window = "{window}"
max_duration = "4h"
approvals_required = {approvals}
allow_direct = true
webhooks = {webhooks}
public_url = "https://portal.example/acme"

[[resources]]
name = "status-page"
description = "Status service, production"
kind = "service"
address = "{target}"
network = "direct"
credential = "out-of-band"
privileges = ["use", "admin"]

[[resources]]
name = "dark-service"
description = "A service nobody answers for (its port is closed)"
kind = "service"
address = "127.0.0.1:{closed}"
network = "direct"
credential = "out-of-band"
privileges = ["use"]
"""


@dataclass
class Appliance:
    """A controller home with identities, and the `bgctl serve` process when running."""

    root: Path
    listen: str = "unix"
    approvals: int = 1
    window: str = "1h"
    webhooks: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    identities: dict[str, Identity] = field(default_factory=dict)
    target: TcpTarget | None = None
    port: int = 0
    extra_catalog: str = ""  # more [[resources]] tables, appended to controller.toml
    secret_files: dict[str, str] = field(default_factory=dict)  # home-relative path -> text (0600)

    @property
    def home(self) -> Path:
        return self.root / "controller"

    @property
    def socket(self) -> Path:
        return self.home / "bgctl.sock"

    @property
    def url(self) -> str:
        return f"unix:{self.socket}" if self.listen == "unix" else f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "bgctl.log"

    def setup(self) -> Appliance:
        result = run("bgctl", "--home", str(self.home), "init", "--id", "acme-prod")
        assert result.returncode == 0, result.stderr
        self.target = TcpTarget()
        (self.home / "controller.toml").write_text(
            CATALOG.format(
                window=self.window,
                approvals=self.approvals,
                webhooks="[" + ", ".join(f'"{u}"' for u in self.webhooks) + "]",
                target=self.target.address,
                closed=free_port(),
            )
            + self.extra_catalog
        )
        for relative, text in self.secret_files.items():
            path = self.home / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        for name, role in (
            ("olive", "operator"),
            ("alice", "approver"),
            ("arne", "approver"),
            ("audrey", "auditor"),
        ):
            self.enrol(name, role)
        return self

    def enrol(self, name: str, role: str) -> Identity:
        home = self.root / "clients" / name
        made = run("bgtui", "--home", str(home), "keygen", "--role", role, "--name", name)
        assert made.returncode == 0, made.stderr
        line = made.stdout.strip()
        pinned = run(
            "bgctl", "--home", str(self.home), "trust", "add", "--role", role, "--name", name, line
        )
        assert pinned.returncode == 0, pinned.stderr
        identity = Identity(name, role, home, line)
        self.identities[name] = identity
        return identity

    def env(self, name: str) -> dict[str, str]:
        """Environment for running `bgtui` as `name` against this controller."""
        return {"BGTUI_HOME": str(self.identities[name].home), "BGTUI_CONTROLLER": self.url}

    def bgtui(
        self, name: str, *args: str, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run("bgtui", *args, env=self.env(name), input=input)

    def start(self) -> Appliance:
        args = [sys.executable, "-m", "controller.cli", "--home", str(self.home), "serve"]
        if self.listen != "unix":
            self.port = free_port()
            args += ["--listen", f"127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(
            args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready()
        return self

    def http(self) -> httpx.Client:
        if self.listen == "unix":
            return httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://bgctl"
            )
        return httpx.Client(base_url=self.url)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"bgctl serve exited: {self.log.read_text()}")
            try:
                with self.http() as client:
                    if client.get("/v1/info").status_code == 200:
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bgctl serve did not come up: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Sends `sig` (SIGTERM: clean shutdown; SIGKILL: a crash) and waits for the exit."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop(signal.SIGKILL)
        if self.target is not None:
            self.target.close()


def appliance(root: Path, **options: object) -> Iterator[Appliance]:
    """Builds, starts and finally stops an Appliance (for use in fixtures)."""
    app = Appliance(root, **options)  # type: ignore[arg-type]
    try:
        yield app.setup().start()
    finally:
        app.close()
