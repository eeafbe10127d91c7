"""The real `bgtui` in a real terminal (tmux): connect opens a recorded SSH shell and comes back.

A real `bgctl serve` with an `ssh` resource on a real loopback OpenSSH sshd that trusts the
controller's CA (as in tests/test_ssh_plane.py); the session is requested and approved with
the real CLI. Then the real `bgtui` runs in a tmux pane and is driven with `tmux send-keys`,
one key at a time, reading the pane with `tmux capture-pane` (polled, never a fixed sleep):
the operator selects the session and presses `c`, the TUI suspends and paramiko's shell gets
the terminal, a command runs, `exit` brings the TUI back intact, and the recording of the
shell is on the controller with its SHA-256 in the audit log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.helpers import ok, poll, state_is
from tests.servers import Appliance
from tests.test_lifecycle_cli import approve
from tests.test_ssh_plane import bastion_appliance

from bgtui.recording import pending_recordings
from controller.sandbox import sshd as sshsandbox
from controller.sandbox.sshd import LoopbackSshd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WIDTH, HEIGHT = 120, 40
PROMPT = re.compile(r"[$#]\s*$")
EXITED = "bgtui-exited-"  # printed by the pane's shell after bgtui, with its exit code


@dataclass
class Rig:
    app: Appliance
    sshd: LoopbackSshd
    rid: str


@pytest.fixture
def rig() -> Iterator[Rig]:
    for needed, reason in (
        ("tmux", None if shutil.which("tmux") else "tmux not found: apt-get install tmux"),
        ("sshd", sshsandbox.available()),
    ):
        if reason is not None:
            pytest.fail(f"{needed}: {reason}")  # a missing tool fails the suite; it never skips
    # A short root: the controller's socket path is in the TUI's header, which a pytest
    # tmp_path would push past the pane's width.
    root = Path(tempfile.mkdtemp(prefix="bgt-"))
    try:
        with bastion_appliance(root) as (app, server):
            asked = app.bgtui(
                *("olive", "request", "bastion", "--privilege", "admin", "--duration", "10m"),
                *("--reason", "INC-4711 disk full on the bastion", "--json"),
            )
            rid = str(json.loads(ok(asked))["id"])
            approve(app, rid)
            poll(app, rid, state_is("active"), timeout=20)
            yield Rig(app, server, rid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pane_env() -> dict[str, str]:
    """Our environment without COLUMNS and LINES, given explicitly: under pytest the process's
    C-level environment has COLUMNS=80 LINES=24 (not in os.environ), and a tmux server started
    with them hands them to the pane, where they override the real size for Textual."""
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


class Pane:
    """One tmux pane on a private tmux server (its own socket), so nothing else is touched."""

    def __init__(self, socket: Path, name: str) -> None:
        self.socket = socket
        self.name = name

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=pane_env(),
        )
        assert result.returncode == 0, f"tmux {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start(self, command: str) -> None:
        self.tmux(
            "new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", str(HEIGHT), command
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def key(self, key: str) -> None:
        """One key (a tmux key name: `Tab`, `Enter`, `c`, `C-q`)."""
        self.tmux("send-keys", "-t", self.name, key)

    def type(self, text: str) -> None:
        """Literal text, then Enter."""
        self.tmux("send-keys", "-t", self.name, "-l", text)
        self.key("Enter")

    def wait(self, check: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if EXITED in screen:
                raise AssertionError(f"bgtui exited while waiting for {what}:\n{screen}")
            if time.monotonic() > deadline:
                size = self.tmux("display", "-p", "-t", self.name, "#{pane_width}x#{pane_height}")
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what} (pane {size.strip()}):\n"
                    f"{screen}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def tui_shown(screen: str) -> bool:
    """The operator screen, whole: header, both tables and the footer."""
    return all(
        needle in screen
        for needle in ("olive · operator", "● connected", "Resources", "My requests", "^q Quit")
    )


def remote_prompt(screen: str) -> bool:
    """The TUI has given the terminal away and the remote shell shows its prompt."""
    lines = [line for line in screen.splitlines() if line.strip()]
    return "● connected" not in screen and bool(lines) and bool(PROMPT.search(lines[-1]))


def test_connect_runs_a_recorded_ssh_shell_and_the_tui_comes_back(rig: Rig, tmp_path: Path) -> None:
    olive = rig.app.identities["olive"].home
    bgtui = Path(sys.executable).parent / "bgtui"
    settings = [f"{key}={value}" for key, value in rig.app.env("olive").items()]
    command = shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", *settings, str(bgtui)])
    pane = Pane(tmp_path / "tmux.sock", "bgtui-connect")
    try:
        # The shell after bgtui keeps the pane (and the exit code) for the last check.
        pane.start(f"{command}; echo {EXITED}$?; sleep 60")
        pane.wait(
            lambda s: (
                tui_shown(s) and any(rig.rid in ln and "Active" in ln for ln in s.splitlines())
            ),
            "the operator screen with the active session",
        )
        pane.key("Tab")  # from the catalog to my requests: the session's row is selected
        pane.wait(lambda s: "c Connect" in s, "the connect key in the footer")
        pane.key("c")
        pane.wait(remote_prompt, "the remote shell's prompt")

        pane.type("echo hello-from-tmux")
        pane.wait(
            lambda s: "hello-from-tmux" in [ln.strip() for ln in s.splitlines()],
            "the command's output",
        )
        pane.type("exit")
        # Two waits, not one: the outcome is a toast that lives 5 s, and the header may still
        # say reconnecting for a moment after the terminal comes back (the event stream was
        # idle while the shell had it); both must be seen, not necessarily in one frame.
        pane.wait(lambda s: "shell closed (exit 0)" in s, "the shell's outcome in a toast")
        back = pane.wait(tui_shown, "the TUI, back and intact")
        assert rig.rid in back

        # The recording: uploaded, named by its SHA-256 in the audit log, gone from the home.
        listed = rig.app.bgtui(
            "audrey",
            "audit",
            "log",
            "--json",
            "--session",
            rig.rid,
            "--event",
            "recording.uploaded",
        )
        (entry,) = json.loads(ok(listed))
        sha256 = entry["data"]["sha256"]
        assert entry["actor"] == "olive" and entry["session"] == rig.rid
        stored = rig.app.home / "recordings" / rig.rid / f"{sha256}.cast"
        data = stored.read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256 and entry["data"]["bytes"] == len(data)
        lines = data.decode().splitlines()
        header = json.loads(lines[0])
        assert (header["version"], header["width"], header["height"]) == (2, WIDTH, HEIGHT)
        assert rig.rid in header["title"]
        events = [json.loads(line) for line in lines[1:]]
        output = "".join(e[2] for e in events if e[1] == "o")
        typed = "".join(e[2] for e in events if e[1] == "i")
        assert "\r\nhello-from-tmux\r\n" in output.replace("\x1b[?2004l\r", "")
        assert typed == "echo hello-from-tmux\rexit\r"
        assert pending_recordings(olive) == []
        # ... and the operator was told its SHA-256 (the toast wraps it after 56 characters).
        told = pane.wait(lambda s: "uploaded, sha256" in s, "the recording's notification")
        assert sha256[:40] in told

        # Still a working TUI: it quits cleanly.
        pane.key("C-q")
        pane.wait(lambda s: f"{EXITED}0" in s, "bgtui to quit with exit 0")
    finally:
        pane.kill()
