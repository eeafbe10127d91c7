"""`bgtui demo --script`: the whole lifecycle on a sandbox appliance, and nothing left behind.

The demo is run as a real process, exactly as CI and a new user run it: it starts `bgctl serve`,
the Kubernetes API simulator, a throwaway PostgreSQL and a loopback sshd, drives the real
`bgtui`, `kubectl`, `psql` and `ssh` through every resource kind, and must exit 0. Afterwards
no process may mention its temporary root, and the root must be gone; the same holds when it
is stopped with SIGTERM half-way through.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.sandbox import postgres as pgsandbox
from controller.sandbox import sshd as sshsandbox

TIMEOUT = 240


@pytest.fixture(scope="module", autouse=True)
def _servers_present() -> None:
    for reason in (pgsandbox.available(), sshsandbox.available()):
        if reason is not None:
            pytest.fail(reason)  # a missing server fails the suite; it never skips


def demo_process(tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGTUI_", "BGCTL_"))}
    env["HOME"] = str(tmp_path / "home")  # kubectl, ssh and psql write nothing of the user's
    return subprocess.Popen(
        [sys.executable, "-m", "bgtui.cli", "demo", "--script"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def sandbox_root(stderr: str) -> Path:
    found = re.search(r"^sandbox in (\S+)$", stderr, re.MULTILINE)
    assert found, stderr
    return Path(found.group(1))


def processes_mentioning(text: str) -> list[str]:
    """`pid: cmdline` of every process whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def assert_nothing_left(root: Path) -> None:
    deadline = time.monotonic() + 10
    while processes_mentioning(str(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(root)) == []
    assert not root.exists()
    assert not Path(f"{root}-postgres").exists()  # PostgreSQL's directory when run as root


@pytest.fixture(scope="module")
def transcript(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, str]]:
    tmp = tmp_path_factory.mktemp("demo")
    process = demo_process(tmp)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"bgtui demo --script did not finish in {TIMEOUT}s:\n{out}\n{err}")
    yield process.returncode, out, err


def test_script_runs_the_whole_lifecycle_for_every_kind(transcript: tuple[int, str, str]) -> None:
    code, out, err = transcript
    assert code == 0, out + err
    for heading in ("(kubernetes)", "(postgres)", "(ssh)", "(service)"):
        assert heading in out, out
    assert "✘" not in out
    assert "audit log intact" in out
    assert re.search(r"✔ all \d+ checks passed", out), out
    # What each step claims, seen in the real tools' own output:
    assert "Error from server (Forbidden)" in out  # kubectl delete under view
    assert "(Unauthorized)" in out  # kubectl after the end
    assert "permission denied for table orders" in out  # psql INSERT under readonly
    assert "hello from" in out  # ssh with the session's certificate
    assert "Permission denied (publickey)" in out  # ssh after the end
    assert "PGPASSWORD='…'" in out  # the minted password is not printed


def test_script_leaves_nothing_running_and_removes_its_root(
    transcript: tuple[int, str, str],
) -> None:
    _, _, err = transcript
    root = sandbox_root(err)
    assert "sandbox stopped; its files removed" in err
    assert_nothing_left(root)


def test_sigterm_midway_tears_the_sandbox_down_even_when_repeated(tmp_path: Path) -> None:
    process = demo_process(tmp_path)
    assert process.stdout is not None and process.stderr is not None
    try:
        seen = ""
        while "1. cluster" not in seen:  # the appliance is up and the first session under way
            line = process.stdout.readline()
            assert line, process.stderr.read()
            seen += line
        os.kill(process.pid, signal.SIGTERM)
        time.sleep(0.3)  # an impatient second one lands while the sandbox is being torn down
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    assert_nothing_left(sandbox_root(err))


def test_what_is_missing_is_listed_and_the_rest_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No PostgreSQL, no sshd, no kubectl, psql or ssh on PATH: each is named with the command
    that installs it, and the Kubernetes (through the Python client) and service lifecycles
    still run and pass."""
    import io

    from bgtui.demo import run_script
    from controller.sandbox.appliance import SandboxAppliance

    monkeypatch.setattr(pgsandbox, "available", lambda: "initdb not found: apt-get install x")
    monkeypatch.setattr(sshsandbox, "available", lambda: "sshd not found: apt-get install y")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = io.StringIO()
    with SandboxAppliance(tmp_path / "sandbox") as appliance:
        assert appliance.resources == ["cluster", "status-page"]
        code = run_script(appliance, out)
    transcript = out.getvalue()
    assert code == 0, transcript
    for line in (
        "PostgreSQL: initdb not found — install with: apt-get install x",
        "SSH host (sshd): sshd not found — install with: apt-get install y",
        "kubectl: kubectl not found — install with: apt-get install kubernetes-client",
        "psql: psql not found — install with: apt-get install postgresql-client",
    ):
        assert line in appliance.missing
        assert line in transcript
    assert "HTTP 403 Forbidden" in transcript and "HTTP 401 Unauthorized" in transcript
    assert "(postgres)" not in transcript and "(ssh)" not in transcript
    assert not (tmp_path / "sandbox").exists()
