"""`bgtui demo`: the whole break-glass lifecycle on a sandbox appliance, scripted or in the TUI.

`run_script` drives the real `bgtui` command line (and the real `kubectl`, `psql` and `ssh`)
as three people in turn, for every resource the appliance offers: the operator requests, the
approver signs, the operator uses the credential and ends the session, the teardown receipt is
read, the dead credential is tried again, and the auditor verifies the audit log. Each step
checks what it claims and prints ✔ or ✘; the exit code is 0 only if every check held.
`run_tui` opens the TUI on the same appliance with the three identities to switch between.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from controller.sandbox.appliance import SandboxAppliance

DURATION = "10m"
COMMAND_TIMEOUT = 90.0
PRIVILEGES = {"cluster": "view", "orders-db": "readonly", "bastion": "ops", "status-page": "use"}
REASONS = {
    "cluster": "demo: look at the orders pods",
    "orders-db": "demo: count yesterday's orders",
    "bastion": "demo: check the bastion's disk",
    "status-page": "demo: read the status page",
}
_SECRET_EXPORT = re.compile(r"^(export PGPASSWORD=).*$", re.MULTILINE)
_SECRET_DSN = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


@dataclass
class Transcript:
    """Prints steps, commands and their output like a tutorial, and keeps the checks' tally."""

    out: TextIO
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        self.say()
        self.say(text)
        self.say("─" * len(text))

    def output(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self.say(f"    {line}")

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
            self.say(f"  ✔ {what}")
        else:
            self.failed.append(what)
            self.say(f"  ✘ {what}")
        return ok


@dataclass
class Run:
    """One finished command: its exit code and what it printed (stdout, then stderr)."""

    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


class Demo:
    """The scripted lifecycle against one appliance; the operator's files live in `work`."""

    def __init__(self, appliance: SandboxAppliance, out: TextIO, work: Path) -> None:
        self.app = appliance
        self.t = Transcript(out)
        self.work = work

    # -- running things ----------------------------------------------------------------------

    def run(
        self,
        who: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        shown: str | None = None,
        hide: Callable[[str], str] = lambda text: text,
    ) -> Run:
        """Runs a real program as `who`, printing `[who] $ command` and then its output."""
        self.t.say(f"  [{who}] $ {shown or shlex.join(argv)}")
        program = argv
        if argv[0] == "bgtui":
            program = [sys.executable, "-m", "bgtui.cli", *argv[1:]]
        elif argv[0] == "bgctl":
            program = [sys.executable, "-m", "controller.cli", *argv[1:]]
        try:
            result = subprocess.run(
                program,
                capture_output=True,
                text=True,
                env=env if env is not None else self.env(who),
                timeout=COMMAND_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self.t.output(f"(no answer after {COMMAND_TIMEOUT:.0f}s)")
            return Run(124, "", "timed out")
        ran = Run(result.returncode, result.stdout, result.stderr)
        self.t.output(hide(ran.text))
        return ran

    def env(self, who: str, **extra: str) -> dict[str, str]:
        env = self.app.client_env(who)
        env.update(extra)
        return env

    def bgtui(self, who: str, *args: str) -> Run:
        return self.run(who, ["bgtui", *args])

    def quiet_view(self, who: str, rid: str) -> dict[str, Any]:
        """`bgtui show ID --json`, not printed (for checks on what was just shown)."""
        result = subprocess.run(
            [sys.executable, "-m", "bgtui.cli", "show", rid, "--json"],
            capture_output=True,
            text=True,
            env=self.env(who),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            return {}
        view: dict[str, Any] = json.loads(result.stdout)
        return view

    # -- the whole script --------------------------------------------------------------------

    def script(self) -> int:
        started = time.monotonic()
        t = self.t
        t.heading("bgtui demo --script: break-glass access, end to end, on a sandbox appliance")
        t.say(f"controller  {self.app.controller_url}  (bgctl serve, home {self.app.home})")
        for name, (role, home) in self.app.identities.items():
            t.say(f"{name:<8}    {role:<9} client home {home}")
        t.say("`[olive] $ bgtui …` runs with BGTUI_HOME set to olive's home and BGTUI_CONTROLLER")
        t.say("set to the controller above; every command is the real program.")
        if self.app.missing:
            t.say("not on this machine (the rest of the demo still runs):")
            for line in self.app.missing:
                t.say(f"  - {line}")

        t.heading("0. the catalog")
        catalog = self.bgtui("olive", "resources")
        t.check(
            catalog.code == 0 and all(name in catalog.stdout for name in self.app.resources),
            f"olive sees {len(self.app.resources)} resources: {', '.join(self.app.resources)}",
        )
        timings: list[tuple[str, float]] = []
        for number, resource in enumerate(self.app.resources, start=1):
            began = time.monotonic()
            kind = self.app.kind_of(resource)
            t.heading(f"{number}. {resource} ({kind})")
            self.lifecycle(resource, kind)
            timings.append((resource, time.monotonic() - began))

        t.heading(f"{len(self.app.resources) + 1}. the audit log")
        self.audit()

        total = len(t.failed) + t.passed
        t.heading("summary")
        for resource, seconds in timings:
            t.say(f"  {resource:<12} {seconds:5.1f}s")
        t.say(f"  total        {time.monotonic() - started:5.1f}s")
        if t.failed:
            t.say(f"✘ {len(t.failed)} of {total} checks failed:")
            for what in t.failed:
                t.say(f"  - {what}")
            return 1
        t.say(f"✔ all {total} checks passed")
        return 0

    # -- one resource ------------------------------------------------------------------------

    def lifecycle(self, resource: str, kind: str) -> None:
        t = self.t
        rid = self.request_and_approve(resource)
        if rid is None:
            return
        shown = self.bgtui("olive", "show", rid)
        view = self.quiet_view("olive", rid)
        planes = view.get("planes") or []
        t.check(
            shown.code == 0
            and view.get("state") == "active"
            and bool(view.get("expires_at"))
            and bool(planes)
            and all(step.get("state") in ("done", "ready", "ok") for step in planes),
            f"active until {view.get('expires_at')}; {len(planes)} plane step(s) done",
        )
        exercise = {
            "kubernetes": self.kubernetes,
            "postgres": self.postgres,
            "ssh": self.ssh,
            "service": self.service,
        }[kind]
        after = exercise(resource, rid)

        t.say("  -- end the session --")
        ended = self.bgtui("olive", "end", rid)
        t.check(ended.code == 0, "olive ends the session")
        receipt = self.bgtui("olive", "show", rid, "--wait")
        view = self.quiet_view("olive", rid)
        artifacts = self.receipt_artifacts(view)
        t.check(
            receipt.code == 0
            and view.get("state") == "ended"
            and "receipt: signed by" in receipt.stdout,
            f"ended ({view.get('ended_reason')}); the teardown receipt's signature verifies",
        )
        if kind == "service":
            t.check(artifacts == [], "nothing was minted, so the receipt lists no artifacts")
        else:
            t.check(
                bool(artifacts) and all(a.get("removed_at") for a in artifacts),
                f"every minted artifact ({len(artifacts)}) has a removed_at time",
            )
        if after is not None:
            t.say("  -- the old credential, after the end --")
            after()

    def request_and_approve(self, resource: str) -> str | None:
        """olive asks (and waits), alice approves; the request id once active, else None."""
        t = self.t
        args = [
            "bgtui",
            "request",
            resource,
            "--privilege",
            PRIVILEGES[resource],
            "--duration",
            DURATION,
            "--reason",
            REASONS[resource],
            "--wait",
        ]
        t.say(f"  [olive] $ {shlex.join(args)} &")
        waiting = subprocess.Popen(
            [sys.executable, "-m", "bgtui.cli", *args[1:]],
            env=self.env("olive"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            return self._approve_while_waiting(resource, waiting)
        finally:
            if waiting.poll() is None:  # interrupted (Ctrl+C, SIGTERM): leave no client behind
                waiting.kill()
                waiting.wait(timeout=10)

    def _approve_while_waiting(self, resource: str, waiting: subprocess.Popen[str]) -> str | None:
        t = self.t
        assert waiting.stdout is not None
        first = waiting.stdout.readline()
        t.output(first)
        rid = first.split()[0] if first.strip() else ""
        if not t.check(bool(rid) and "pending" in first, "olive's signed request is pending"):
            waiting.kill()
            _, err = waiting.communicate(timeout=10)
            t.output(err)
            return None
        approval = self.bgtui("alice", "approve", rid, "--yes")
        fingerprints = re.findall(r"SHA256:[A-Za-z0-9+/]{43}", approval.stdout)
        t.check(
            approval.code == 0 and bool(fingerprints) and "digest" in approval.stdout,
            "alice saw the operator's fingerprint and the request digest, and signed",
        )
        try:
            rest, err = waiting.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            waiting.kill()
            rest, err = waiting.communicate(timeout=10)
        t.say("  [olive] (the waiting request follows the session as its planes come up)")
        t.output(rest + err)
        lines = rest.strip().splitlines()
        active = waiting.returncode == 0 and bool(lines) and lines[-1].startswith("active")
        if not t.check(active, "the session went active once every plane was ready"):
            return None
        return rid

    def receipt_artifacts(self, view: dict[str, Any]) -> list[dict[str, Any]]:
        raw = view.get("receipt")
        if not isinstance(raw, dict):
            return []
        try:
            artifacts = json.loads(str(raw.get("payload"))).get("artifacts")
        except (ValueError, AttributeError):
            return []
        return [a for a in artifacts or [] if isinstance(a, dict)]

    # -- what each kind of credential can do --------------------------------------------------

    def kubernetes(self, resource: str, rid: str) -> Callable[[], None]:
        t = self.t
        kubeconfig = self.work / f"{resource}.kubeconfig"
        got = self.bgtui("olive", "creds", rid, "--kubeconfig", str(kubeconfig))
        t.check(got.code == 0 and kubeconfig.exists(), "olive opened the sealed kubeconfig")
        kubectl = shutil.which("kubectl")
        pod = "orders-api-7c9d8f6b5-k2x4p"
        env = self.env("olive", KUBECACHEDIR=str(self.work / "kube-cache"))
        base = ["kubectl", "--kubeconfig", str(kubeconfig)]

        if kubectl is None:
            t.say("  (kubectl is not installed: the Python kubernetes client stands in for it)")
            return self._kubernetes_python(kubeconfig, pod)
        listed = self.run("olive", [*base, "get", "pods", "-n", "orders"], env=env)
        t.check(listed.code == 0 and pod in listed.stdout, "view lists the pods in orders")
        delete = self.run("olive", [*base, "delete", "pod", pod, "-n", "orders"], env=env)
        t.check(
            delete.code != 0 and "forbidden" in delete.text.lower(),
            "view may not delete a pod: Forbidden",
        )

        def after() -> None:
            again = self.run("olive", [*base, "get", "pods", "-n", "orders"], env=env)
            said = again.text.lower()
            t.check(
                again.code != 0 and ("unauthorized" in said or "must be logged in" in said),
                "the session's token is refused: Unauthorized",
            )

        return after

    def _kubernetes_python(self, kubeconfig: Path, pod: str) -> Callable[[], None]:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        t = self.t

        def status_of(call: Callable[[Any], object]) -> int:
            api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
            with api:
                try:
                    call(client.CoreV1Api(api))
                except ApiException as exc:
                    return int(exc.status or 0)
            return 200

        listed = status_of(lambda core: core.list_namespaced_pod("orders"))
        t.check(listed == 200, "view lists the pods in orders (HTTP 200)")
        deleted = status_of(lambda core: core.delete_namespaced_pod(pod, "orders"))
        t.check(deleted == 403, f"view may not delete a pod: HTTP {deleted} Forbidden")

        def after() -> None:
            again = status_of(lambda core: core.list_namespaced_pod("orders"))
            t.check(again == 401, f"the session's token is refused: HTTP {again} Unauthorized")

        return after

    def postgres(self, resource: str, rid: str) -> Callable[[], None]:
        t = self.t
        got = self.bgtui_hidden("olive", "creds", rid, "--env")
        variables = _exports(got.stdout)
        t.check(
            got.code == 0 and {"PGHOST", "PGUSER", "PGPASSWORD"} <= set(variables),
            f"olive opened the sealed login role {variables.get('PGUSER')} "
            "(its password is hidden in this transcript)",
        )
        env = {k: v for k, v in self.env("olive").items() if not k.startswith("PG")}
        env.update(variables)
        env["PGCONNECT_TIMEOUT"] = "5"
        if shutil.which("psql") is None:
            t.say("  (psql is not installed: psycopg stands in for it)")
            return self._postgres_python(variables)
        count = self.run("olive", ["psql", "-X", "-c", "select count(*) from orders"], env=env)
        t.check(
            count.code == 0 and re.search(r"^\s*\d+\s*$", count.stdout, re.MULTILINE) is not None,
            "readonly can read the orders table",
        )
        insert = "insert into orders (customer, total) values ('mallory', 1)"
        refused = self.run("olive", ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", insert], env=env)
        t.check(
            refused.code != 0 and "permission denied" in refused.text,
            "readonly may not insert: permission denied",
        )

        def after() -> None:
            again = self.run("olive", ["psql", "-X", "-c", "select 1"], env=env)
            t.check(
                again.code != 0 and _login_refused(again.text),
                "the session's login role is gone: the login fails",
            )

        return after

    def _postgres_python(self, variables: dict[str, str]) -> Callable[[], None]:
        import psycopg

        t = self.t
        conninfo = {
            "host": variables.get("PGHOST", ""),
            "port": variables.get("PGPORT", ""),
            "user": variables.get("PGUSER", ""),
            "password": variables.get("PGPASSWORD", ""),
            "dbname": variables.get("PGDATABASE", ""),
            "connect_timeout": 5,
        }

        def attempt(statement: str) -> str:
            try:
                with psycopg.connect(**conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
                    conn.execute(statement)
            except psycopg.Error as exc:
                return str(exc)
            return ""

        t.check(attempt("select count(*) from orders") == "", "readonly can read orders")
        error = attempt("insert into orders (customer, total) values ('mallory', 1)")
        t.check("permission denied" in error, "readonly may not insert: permission denied")

        def after() -> None:
            said = attempt("select 1")
            t.check(_login_refused(said), "the session's login role is gone: the login fails")

        return after

    def ssh(self, resource: str, rid: str) -> Callable[[], None] | None:
        t = self.t
        directory = self.work / f"{resource}-ssh"
        got = self.bgtui("olive", "creds", rid, "--ssh-dir", str(directory))
        t.check(
            got.code == 0 and (directory / "id_ed25519-cert.pub").exists(),
            "olive wrote the session key and its certificate",
        )
        if shutil.which("ssh") is None:
            t.say("  (the OpenSSH client is not installed: nothing to connect with)")
            return None
        argv = ["ssh", "-F", str(directory / "config"), "-o", "BatchMode=yes", "session"]
        hello = self.run("olive", [*argv, "echo hello from $(hostname)"])
        t.check(
            hello.code == 0 and "hello from" in hello.stdout,
            "the certificate logs in to the bastion",
        )

        live = [*argv, "echo connected; exec sleep 300"]
        t.say(f"  [olive] $ {shlex.join(live)} &   (a shell left open across the end)")
        held = subprocess.Popen(
            live,
            env=self.env("olive"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert held.stdout is not None
        t.output(held.stdout.readline())

        def after() -> None:
            try:
                held.wait(timeout=15)
                cut = True
            except subprocess.TimeoutExpired:
                held.kill()
                held.wait(timeout=5)
                cut = False
            t.say(f"  [olive] (the open shell ended with exit status {held.returncode})")
            t.check(cut, "the connection left open was cut at teardown")
            again = self.run("olive", [*argv, "echo still here"])
            t.check(
                again.code != 0 and "denied" in again.text.lower(),
                "the certificate is refused: its key id is revoked",
            )

        return after

    def service(self, resource: str, rid: str) -> None:
        t = self.t
        got = self.bgtui("olive", "creds", rid)
        t.check(got.code == 0 and "out of band" in got.stdout, "break glass supplies no credential")
        status = self.app.status
        if status is None:
            t.check(False, "the status service is running")
            return
        t.say(f"  [olive] GET http://{status.address}/   (the path the session opened)")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", status.port, timeout=5)
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            connection.close()
        except OSError as exc:
            t.output(f"connection failed: {exc}")
            t.check(False, "the status service answers")
            return
        t.output(f"HTTP {response.status} {response.reason}\n{body}")
        t.check(response.status == 200, "a TCP connection to the service works")

    def bgtui_hidden(self, who: str, *args: str) -> Run:
        """Like `bgtui`, with passwords blanked in what is printed (not in what is returned)."""

        def hide(text: str) -> str:
            text = _SECRET_EXPORT.sub(r"\1'…'", text)
            return _SECRET_DSN.sub(r"\1…@", text)

        return self.run(who, ["bgtui", *args], hide=hide)

    # -- the audit ---------------------------------------------------------------------------

    def audit(self) -> None:
        t = self.t
        probe = subprocess.run(
            [sys.executable, "-m", "bgtui.cli", "audit", "verify", "--help"],
            capture_output=True,
            env=self.env("audrey"),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if probe.returncode == 0:
            verdict = self.bgtui("audrey", "audit", "verify")
        else:
            t.say("  (`bgtui audit` is not in this build: the controller's own check instead)")
            verdict = self.run(
                "admin",
                ["bgctl", "--home", str(self.app.home), "audit", "verify"],
                env=self.app.client_env("audrey"),
            )
        t.check(
            verdict.code == 0 and "audit log intact" in verdict.text,
            "every entry chains to the one before and every checkpoint signature verifies",
        )


def _exports(text: str) -> dict[str, str]:
    """NAME=value pairs from `export NAME='value'` lines."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            found[name] = value
    return found


def _login_refused(text: str) -> bool:
    said = text.lower()
    return any(
        phrase in said
        for phrase in ("password authentication failed", "does not exist", "not permitted to log")
    )


def run_script(appliance: SandboxAppliance, out: TextIO | None = None) -> int:
    """The lifecycle for every resource the appliance offers, printed; 0 only if all held."""
    work = Path(tempfile.mkdtemp(prefix="operator-", dir=appliance.root))
    os.chmod(work, 0o700)
    try:
        return Demo(appliance, out or sys.stdout, work).script()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the TUI ---------------------------------------------------------------------------------


def run_tui(appliance: SandboxAppliance) -> int:
    """Opens the TUI on the appliance as olive, with alice and audrey a key (ctrl+o) away."""
    if appliance.missing:
        print("not on this machine (everything else works):")
        for line in appliance.missing:
            print(f"  - {line}")
    try:
        app = _build_tui(appliance)
    except ImportError as exc:
        return _wait_without_tui(appliance, f"the TUI is not in this build ({exc})")
    names = ", ".join(f"{name} ({role})" for name, (role, _) in appliance.identities.items())

    async def greet(pilot: Any) -> None:
        # Textual's documented hook for acting once the app is up. A closed terminal (SIGHUP)
        # or a SIGTERM/SIGINT must quit the app, so that the sandbox is torn down behind it.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(signum, pilot.app.exit)
        pilot.app.notify(f"ctrl+o switches between {names}", title="bgtui demo", timeout=20)
        for line in appliance.missing:
            pilot.app.notify(line, title="not on this machine", severity="warning", timeout=30)

    app.run(auto_pilot=greet)
    return 0


def _build_tui(appliance: SandboxAppliance) -> Any:
    """The app, through the same factory the CLI and the tests use (imported only here: the
    TUI is optional for `--script`)."""
    from bgtui.app import create_app
    from bgtui.client import ControllerClient
    from bgtui.home import ClientHome
    from bgtui.identity import Identity
    from bgtui.protocol.sshsig import Signer
    from bgtui.protocol.timefmt import now_utc
    from bgtui.shell import TerminalShellLauncher
    from bgtui.tui_config import TuiSettings

    identities = [
        Identity.load(ClientHome(home), name) for name, (_, home) in appliance.identities.items()
    ]
    url = appliance.controller_url

    def client_factory(identity: Identity, signer: Signer) -> ControllerClient:
        return ControllerClient(url, signer)

    operator = next(i for i in identities if i.role == "operator")
    settings = TuiSettings(home=operator.home, controller=url, identity_name=operator.name)
    return create_app(
        settings,
        client_factory=client_factory,
        identities=identities,
        clock=now_utc,
        shell_launcher=TerminalShellLauncher(),
    )


def _wait_without_tui(appliance: SandboxAppliance, why: str) -> int:
    """Without a TUI the sandbox still serves: says how to drive it, waits for Ctrl+C."""
    print(f"{why}; the sandbox is up, drive it from another terminal:")
    for name, (role, home) in appliance.identities.items():
        where = f"BGTUI_HOME={home} BGTUI_CONTROLLER={appliance.controller_url}"
        print(f"  {name} ({role}): {where} bgtui …")
    print("press Ctrl+C to tear the sandbox down")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def run_demo(*, script: bool, keep: bool) -> int:
    """`bgtui demo`: starts the appliance, runs the script or the TUI, always tears it down."""
    from controller.sandbox.appliance import SandboxAppliance
    from controller.sandbox.ports import SandboxError

    print("starting the sandbox appliance…", file=sys.stderr, flush=True)
    appliance = SandboxAppliance(keep=keep)
    try:
        appliance.start()
    except SandboxError as exc:
        print(f"bgtui: the sandbox did not start: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"sandbox in {appliance.root}", file=sys.stderr, flush=True)
        return run_script(appliance) if script else run_tui(appliance)
    finally:
        appliance.stop()
        where = f"kept in {appliance.root}" if keep else "removed"
        print(f"sandbox stopped; its files {where}", file=sys.stderr)
