"""The sandbox appliance: a whole break-glass setup on one machine, for `bgtui demo`.

In a fresh temporary root (mode 0700) it lays out a controller home (`bgctl init`), starts the
Kubernetes API simulator, a throwaway PostgreSQL and a loopback `sshd` that trusts the
controller's SSH CA (each when this machine can run it), and a small HTTP status service;
writes a catalog with one resource per kind; enrols an operator, an approver and an auditor as
real client homes pinned with `bgctl trust add`; and runs `bgctl serve` as a child process on
its Unix socket. What this machine lacks is listed in `missing`, one line each with the command
that installs it. `stop()` ends every process and removes the root; it runs at exit and on
SIGTERM/SIGHUP too, so quitting leaves nothing running.

The real command lines are used throughout (`bgctl init`, `bgtui keygen`, `bgctl trust add`,
`bgctl serve`), exactly as an administrator would run them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from controller.sandbox import postgres as pgsandbox
from controller.sandbox import sshd as sshsandbox
from controller.sandbox.kube import KubeSimulator
from controller.sandbox.ports import SandboxError, SandboxServer

CONTROLLER_ID = "demo-appliance"
IDENTITIES = (("olive", "operator"), ("alice", "approver"), ("audrey", "auditor"))
KUBECONFIG_FILE = "secrets/kube-admin.kubeconfig"
PG_DSN_FILE = "secrets/pg-admin.dsn"
SSH_PRINCIPALS = ["bg-admin", "bg-ops"]
STATUS_BODY = b"status-page: all systems operational\n"
CLIENT_TOOLS = (
    ("kubectl", "kubectl", "apt-get install kubernetes-client"),
    ("psql", "psql", "apt-get install postgresql-client"),
    ("ssh", "OpenSSH client", "apt-get install openssh-client"),
)
_ENV_DROPPED = ("BGTUI_IDENTITY", "BGTUI_CA_CERT", "BGTUI_CONTROLLER", "BGTUI_HOME", "BGCTL_HOME")


def missing_line(label: str, reason: str) -> str:
    """`PostgreSQL: initdb not found — install with: apt-get install postgresql`."""
    what, sep, fix = reason.rpartition(": ")
    if sep and fix.startswith(("apt-get ", "sudo ", "dnf ", "brew ")):
        return f"{label}: {what} — install with: {fix}"
    return f"{label}: {reason}"


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without any bgtui/bgctl settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
    env.update(extra)
    return env


class StatusService:
    """A tiny real HTTP service on a free loopback port, standing for an out-of-band target."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(STATUS_BODY)))
                self.end_headers()
                self.wfile.write(STATUS_BODY)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the demo's screen is not a web server's log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-page", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class SandboxAppliance(SandboxServer):
    """A controller with a catalog of real (or simulated, for Kubernetes) targets and three
    enrolled people; a context manager, or call start() and stop()."""

    def __init__(self, root: Path | None = None, *, keep: bool = False) -> None:
        self._given_root = root
        self.keep = keep
        self.root: Path = Path()
        self.missing: list[str] = []
        self.resources: list[str] = []
        self.identities: dict[str, tuple[str, Path]] = {}
        self.kube: KubeSimulator | None = None
        self.postgres: pgsandbox.ThrowawayPostgres | None = None
        self.sshd: sshsandbox.LoopbackSshd | None = None
        self.status: StatusService | None = None
        self._pg_parent: Path | None = None
        self._serve: subprocess.Popen[bytes] | None = None
        self._started = False
        self._stopped = False
        self._previous_handlers: dict[int, Any] = {}

    # -- where things are ------------------------------------------------------------------

    @property
    def home(self) -> Path:
        """The controller's home."""
        return self.root / "controller"

    @property
    def socket(self) -> Path:
        return self.home / "bgctl.sock"

    @property
    def controller_url(self) -> str:
        return f"unix:{self.socket}"

    @property
    def log_path(self) -> Path:
        """`bgctl serve`'s log."""
        return self.root / "bgctl.log"

    def client_env(self, name: str) -> dict[str, str]:
        """The environment for running `bgtui` as `name` against this controller."""
        _, home = self.identities[name]
        return cli_env(BGTUI_HOME=str(home), BGTUI_CONTROLLER=self.controller_url)

    def kind_of(self, resource: str) -> str:
        return {
            "cluster": "kubernetes",
            "orders-db": "postgres",
            "bastion": "ssh",
            "status-page": "service",
        }[resource]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SandboxAppliance:
        """Builds and starts everything; on any failure stops what was started and raises."""
        if self._started:
            return self
        self._started = True
        self._make_root()
        atexit.register(self.stop)
        self._catch_signals()
        try:
            self._init_controller()
            self._start_targets()
            self._write_catalog()
            for name, role in IDENTITIES:
                self._enrol(name, role)
            self._start_serve()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops `bgctl serve` and every target, then removes the root (unless kept);
        idempotent."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        deferred = self._defer_signals()
        try:
            self._teardown()
        finally:
            self._restore_signals()
            for signum in dict.fromkeys(deferred):  # now, to the handlers there before start()
                signal.raise_signal(signum)

    def _teardown(self) -> None:
        self._stop_serve()
        for stopper in (
            self.sshd.stop if self.sshd else None,
            self.postgres.stop if self.postgres else None,
            self.kube.stop if self.kube else None,
            self.status.stop if self.status else None,
        ):
            if stopper is not None:
                with contextlib.suppress(Exception):
                    stopper()
        if self._pg_parent is not None:
            shutil.rmtree(self._pg_parent, ignore_errors=True)
        if not self.keep and self.root != Path():
            shutil.rmtree(self.root, ignore_errors=True)

    # -- steps -------------------------------------------------------------------------------

    def _make_root(self) -> None:
        if self._given_root is None:
            self.root = Path(tempfile.mkdtemp(prefix="bgtui-demo-"))
        else:
            root = self._given_root.resolve()
            root.mkdir(parents=True, exist_ok=True)
            if any(root.iterdir()):  # checked before it is ours to remove at stop()
                raise SandboxError(f"{root}: not empty; the appliance needs a new directory")
            self.root = root
        os.chmod(self.root, 0o700)

    def _catch_signals(self) -> None:
        """SIGTERM/SIGHUP unwind like Ctrl+C does, so `stop()` runs (only if nobody else
        handles them, and only from the main thread, where Python delivers signals)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def unwind(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                self._previous_handlers[signum] = signal.signal(signum, unwind)

    def _defer_signals(self) -> list[int]:
        """While tearing down, a second Ctrl+C or SIGTERM must not cut the teardown short:
        such signals are noted in the returned list and re-raised once it is done."""
        deferred: list[int] = []
        if threading.current_thread() is not threading.main_thread():
            return deferred

        def note(signum: int, frame: FrameType | None) -> None:
            deferred.append(signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous = signal.signal(signum, note)
            self._previous_handlers.setdefault(signum, previous)
        return deferred

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous_handlers = {}

    def _bgctl(self, *args: str) -> str:
        return _run([sys.executable, "-m", "controller.cli", "--home", str(self.home), *args])

    def _init_controller(self) -> None:
        self._bgctl("init", "--id", CONTROLLER_ID)
        (self.home / "secrets").mkdir(mode=0o700, exist_ok=True)

    def _secret(self, relative: str, text: str) -> None:
        path = self.home / relative
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)

    def _start_targets(self) -> None:
        self.kube = KubeSimulator(self.root / "kube", seed="demo").start()
        self.kube.admin_kubeconfig(self.home / KUBECONFIG_FILE)
        self.resources.append("cluster")

        reason = pgsandbox.available()
        if reason is None:
            self._start_postgres()
        else:
            self.missing.append(missing_line("PostgreSQL", reason))

        reason = sshsandbox.available()
        if reason is None:
            self._start_sshd()
        else:
            self.missing.append(missing_line("SSH host (sshd)", reason))

        self.status = StatusService()
        self.resources.append("status-page")

        for program, label, hint in CLIENT_TOOLS:
            if shutil.which(program) is None:
                self.missing.append(f"{label}: {program} not found — install with: {hint}")

    def _start_postgres(self) -> None:
        # As root the cluster runs as the `postgres` user, who cannot enter our 0700 root; its
        # directory is then a sibling named after the root (so a scan for the root's path still
        # finds its processes) that only root can write.
        if os.geteuid() == 0:
            self._pg_parent = Path(f"{self.root}-postgres")
            self._pg_parent.mkdir(mode=0o755)
            parent = self._pg_parent
        else:
            parent = self.root / "postgres"
        server = pgsandbox.ThrowawayPostgres(parent)
        try:
            server.start()
            server.seed()
        except (SandboxError, OSError, subprocess.SubprocessError) as exc:
            server.stop()
            self.missing.append(f"PostgreSQL: could not start ({exc})")
            return
        except Exception as exc:  # psycopg errors while seeding
            server.stop()
            self.missing.append(f"PostgreSQL: could not seed the orders database ({exc})")
            return
        self.postgres = server
        self._secret(PG_DSN_FILE, server.admin_dsn + "\n")
        self.resources.append("orders-db")

    def _start_sshd(self) -> None:
        ca_line = (self.home / "ssh_ca_ed25519.pub").read_text()
        server = sshsandbox.LoopbackSshd(ca_line, self.root / "sshd")
        try:
            server.start()
        except (SandboxError, OSError, subprocess.SubprocessError) as exc:
            server.stop()
            self.missing.append(f"SSH host (sshd): could not start ({exc})")
            return
        self.sshd = server
        self.resources.append("bastion")

    def _write_catalog(self) -> None:
        assert self.kube is not None and self.status is not None
        parts = [
            f"id = {_q(CONTROLLER_ID)}",
            'request_window = "1h"',
            'max_duration = "1h"',
            "approvals_required = 1",
            "",
            _resource(
                name="cluster",
                description="Kubernetes API simulator (not a real cluster), namespace orders",
                kind="kubernetes",
                address=self.kube.url,
                credential="controller",
                privileges=["view", "edit"],
                grants={"view": "view", "edit": "edit"},
                options={"kubeconfig": KUBECONFIG_FILE, "namespace": "orders"},
            ),
        ]
        if self.postgres is not None:
            parts.append(
                _resource(
                    name="orders-db",
                    description="Throwaway PostgreSQL, database orders",
                    kind="postgres",
                    address=f"{self.postgres.host}:{self.postgres.port}",
                    credential="command",
                    recipe="postgres-role",
                    privileges=["readonly", "readwrite"],
                    grants={"readonly": "bg_readonly", "readwrite": "bg_readwrite"},
                    options={"database": "orders", "admin_dsn_file": PG_DSN_FILE},
                )
            )
        if self.sshd is not None:
            parts.append(
                _resource(
                    name="bastion",
                    description="Loopback OpenSSH server trusting the controller's SSH CA",
                    kind="ssh",
                    address=f"{self.sshd.host}:{self.sshd.port}",
                    credential="controller",
                    privileges=["admin", "ops"],
                    grants={"admin": "bg-admin", "ops": "bg-ops"},
                    options={
                        "user": self.sshd.user,
                        "host_key": self.sshd.host_public_key,
                        "sshd_log": str(self.sshd.log_path),
                        "revoked_keys": str(self.sshd.revoked_keys_path),
                    },
                )
            )
        parts.append(
            _resource(
                name="status-page",
                description="Status service; the operator brings their own credential",
                kind="service",
                address=self.status.address,
                credential="out-of-band",
                privileges=["use"],
            )
        )
        (self.home / "controller.toml").write_text("\n".join(parts))
        order = ["cluster", "orders-db", "bastion", "status-page"]
        self.resources.sort(key=order.index)

    def _enrol(self, name: str, role: str) -> None:
        home = self.root / "clients" / name
        keygen = ["keygen", "--role", role, "--name", name]
        line = _run([sys.executable, "-m", "bgtui.cli", "--home", str(home), *keygen]).strip()
        self._bgctl("trust", "add", "--role", role, "--name", name, line)
        self.identities[name] = (role, home)

    def _start_serve(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self._serve = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "--home", str(self.home), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._serve.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise SandboxError(f"bgctl serve exited ({self._serve.returncode}): {tail}")
            with contextlib.suppress(httpx.TransportError):
                transport = httpx.HTTPTransport(uds=str(self.socket))
                with httpx.Client(transport=transport, base_url="http://bgctl") as client:
                    if client.get("/v1/info", timeout=2).status_code == 200:
                        return
            time.sleep(0.05)
        raise SandboxError(f"bgctl serve did not answer in {timeout:.0f}s; see {self.log_path}")

    def _stop_serve(self) -> None:
        process, self._serve = self._serve, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # Anything it left in its process group (it starts none today) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        shown = " ".join(argv[2:]) if argv[:2] == [sys.executable, "-m"] else " ".join(argv)
        raise SandboxError(f"{shown}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML reads)."""
    return json.dumps(value)


def _inline(table: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{key} = {_q(value)}" for key, value in table.items()) + " }"


def _resource(
    *,
    name: str,
    description: str,
    kind: str,
    address: str,
    credential: str,
    privileges: list[str],
    recipe: str | None = None,
    grants: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> str:
    lines = [
        "[[resources]]",
        f"name = {_q(name)}",
        f"description = {_q(description)}",
        f"kind = {_q(kind)}",
        f"address = {_q(address)}",
        'network = "direct"',
        f"credential = {_q(credential)}",
    ]
    if recipe is not None:
        lines.append(f"recipe = {_q(recipe)}")
    lines.append("privileges = [" + ", ".join(_q(p) for p in privileges) + "]")
    if grants:
        lines.append(f"grants = {_inline(grants)}")
    if options:
        lines.append(f"options = {_inline(options)}")
    return "\n".join(lines) + "\n"


def run_appliance(body: Callable[[SandboxAppliance], int], *, keep: bool = False) -> int:
    """Starts an appliance, runs `body` with it and always stops it; `body`'s exit code."""
    with SandboxAppliance(keep=keep) as appliance:
        return body(appliance)
