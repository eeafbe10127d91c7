"""Handing the terminal to a session: SSH through paramiko, kubectl, psql or a plain shell.

`ShellLauncher` is what the app calls on "connect"; tests inject a fake. The real one,
`TerminalShellLauncher`, suspends the app (`App.suspend()`), runs the session's program on the
real terminal and gives the terminal back. When the session ends while the program runs, the
`ended` event fires (set from the app's event-stream thread) and a watcher closes the SSH
channel or hangs up the subprocess, so a revoked session cannot linger in an open shell.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from textual.app import App, SuspendNotSupported

from bgtui.protocol.keys import PrivateKey

Credential = dict[str, str]


@dataclass
class ShellSession:
    """What a launcher needs to open one session."""

    request_id: str
    kind: str  # ssh | kubernetes | postgres | service
    address: str
    credential: Credential | None
    session_key: PrivateKey | None
    ended: threading.Event = field(default_factory=threading.Event)
    ended_reason: str = ""  # why, once `ended` is set


@dataclass(frozen=True)
class ShellOutcome:
    """How the hand-off went; `message` is told to the operator when the TUI is back."""

    ran: bool
    message: str
    exit_code: int | None = None


class ShellLauncher(Protocol):
    """Runs a session's interactive program with the terminal handed over."""

    def launch(self, app: App[Any], session: ShellSession) -> ShellOutcome: ...


@dataclass
class Recorder:
    """Callbacks an asciicast writer hooks into: output and input bytes, terminal resizes."""

    on_output: Callable[[bytes], None] | None = None
    on_input: Callable[[bytes], None] | None = None
    on_resize: Callable[[int, int], None] | None = None


class TerminalShellLauncher:
    """The real launcher: suspends the app and runs the program on the terminal."""

    def __init__(self, recorder_factory: Callable[[ShellSession], Recorder] | None = None) -> None:
        self.recorder_factory = recorder_factory

    def launch(self, app: App[Any], session: ShellSession) -> ShellOutcome:
        try:
            with app.suspend():
                code = self._run(session)
        except SuspendNotSupported:
            return ShellOutcome(
                False,
                "this terminal cannot be handed over; run "
                f"`bgtui connect {session.request_id}` from a shell instead",
            )
        except (OSError, RuntimeError, ValueError) as exc:
            return ShellOutcome(False, f"could not open the session: {exc}")
        if session.ended.is_set():
            return ShellOutcome(True, "the session ended, so its shell was closed", code)
        return ShellOutcome(True, f"shell closed (exit {code})", code)

    def _run(self, session: ShellSession) -> int:
        recorder = self.recorder_factory(session) if self.recorder_factory else Recorder()
        credential = session.credential or {}
        if session.kind == "ssh":
            if session.session_key is None or "certificate" not in credential:
                raise RuntimeError("an SSH session needs the session key and its certificate")
            return SshRunner(credential, session.session_key, session.ended, recorder).run()
        if session.kind == "kubernetes":
            return _kubectl_shell(credential, session)
        if session.kind == "postgres":
            env = {k: v for k, v in credential.items() if k.isupper()}
            return _watched([shutil.which("psql") or "psql"], env, session.ended)
        env = {"BGTUI_SESSION": session.request_id, "BGTUI_ADDRESS": session.address}
        return _watched([_user_shell()], env, session.ended)


def _user_shell() -> str:
    return os.environ.get("SHELL") or shutil.which("bash") or "/bin/sh"


def _kubectl_shell(credential: Credential, session: ShellSession) -> int:
    """`$SHELL` with KUBECONFIG at a 0600 file that is removed when the shell exits."""
    kubeconfig = credential.get("kubeconfig")
    if not kubeconfig:
        raise RuntimeError("this session's credential has no kubeconfig")
    fd, name = tempfile.mkstemp(prefix=f"bgtui-{session.request_id}-", suffix=".kubeconfig")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(kubeconfig)
        print(f"KUBECONFIG={path} (removed when this shell exits); try: kubectl get pods")
        return _watched([_user_shell()], {"KUBECONFIG": str(path)}, session.ended)
    finally:
        path.unlink(missing_ok=True)


def _watched(argv: list[str], env: dict[str, str], ended: threading.Event) -> int:
    """Runs `argv` on the terminal; hangs it up if the session ends first."""
    process = subprocess.Popen(argv, env={**os.environ, **env})
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if ended.wait(0.2):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGHUP)  # interactive shells ignore SIGTERM
                return

    threading.Thread(target=watch, name="bgtui-shell-watch", daemon=True).start()
    try:
        return process.wait()
    finally:
        done.set()


class SshRunner:
    """An interactive SSH shell through paramiko on a PTY, with raw stdin/stdout copying."""

    def __init__(
        self, credential: Credential, key: PrivateKey, ended: threading.Event, recorder: Recorder
    ) -> None:
        self.credential = credential
        self.key = key
        self.ended = ended
        self.recorder = recorder

    def _client(self) -> Any:
        import paramiko  # deferred: only a connect needs it

        client = paramiko.SSHClient()
        for line in (self.credential.get("known_hosts") or "").splitlines():
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            if entry is not None and entry.key is not None:
                for host in entry.hostnames:
                    client.get_host_keys().add(host, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(self.key.openssh().decode()))
        pkey.load_certificate(self.credential["certificate"])
        client.connect(
            self.credential.get("host", "127.0.0.1"),
            port=int(self.credential.get("port", "22")),
            username=self.credential.get("user"),
            pkey=pkey,
            look_for_keys=False,
            allow_agent=False,
            timeout=15,
        )
        return client

    def run(self) -> int:
        client = self._client()
        try:
            size = shutil.get_terminal_size()
            channel = client.invoke_shell(
                term=os.environ.get("TERM", "xterm-256color"),
                width=size.columns,
                height=size.lines,
            )
            if self.recorder.on_resize:
                self.recorder.on_resize(size.columns, size.lines)
            self._copy(channel)
            return int(channel.recv_exit_status()) if channel.exit_status_ready() else -1
        finally:
            client.close()

    def _copy(self, channel: Any) -> None:
        stdin = sys.stdin.fileno()
        stdout = sys.stdout.fileno()

        def resized(signum: int, frame: FrameType | None) -> None:
            size = shutil.get_terminal_size()
            channel.resize_pty(width=size.columns, height=size.lines)
            if self.recorder.on_resize:
                self.recorder.on_resize(size.columns, size.lines)

        def watch() -> None:
            self.ended.wait()
            channel.close()

        threading.Thread(target=watch, name="bgtui-ssh-watch", daemon=True).start()
        previous = signal.signal(signal.SIGWINCH, resized)
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        try:
            if saved is not None:
                tty.setraw(stdin)
            while not channel.closed:
                try:
                    ready, _, _ = select.select([channel, stdin], [], [], 0.5)
                except InterruptedError:
                    continue
                if channel in ready:
                    data = channel.recv(32768)
                    if not data:
                        break
                    os.write(stdout, data)
                    if self.recorder.on_output:
                        self.recorder.on_output(data)
                if stdin in ready:
                    data = os.read(stdin, 4096)
                    if not data:
                        break
                    channel.sendall(data)
                    if self.recorder.on_input:
                        self.recorder.on_input(data)
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
