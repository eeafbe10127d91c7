"""Handing the terminal to a session: SSH through paramiko, kubectl, psql or a plain shell.

`ShellLauncher` is what the app calls on "connect"; tests inject a fake. The real one,
`TerminalShellLauncher`, suspends the app (`App.suspend()`), runs the session's program on the
real terminal and gives the terminal back. When the session ends while the program runs, the
`ended` event fires (set from the app's event-stream thread) and a watcher closes the SSH
channel or hangs up the subprocess, so a revoked session cannot linger in an open shell.

An SSH shell is recorded as asciicast v2 (bgtui.recording) when the session names a client
home to record in (`record_home`): output, input and resizes, in a 0600 file under
`<home>/recordings/<request id>/`. The launcher closes the file when the shell ends and hands
its path back in `ShellOutcome.recording`; uploading it is the caller's business (the TUI does
it in a worker once the terminal is back). Without a recording file the shell is not opened.
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
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from textual.app import App, SuspendNotSupported

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.recording import AsciicastWriter, new_recording_path

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
    record_home: Path | None = None  # the client home an SSH shell is recorded in


@dataclass(frozen=True)
class ShellOutcome:
    """How the hand-off went; `message` is told to the operator when the TUI is back."""

    ran: bool
    message: str
    exit_code: int | None = None
    recording: Path | None = None  # the closed asciicast file, to upload


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
                return self.run_here(session)
        except SuspendNotSupported:
            return ShellOutcome(
                False,
                "this terminal cannot be handed over; run "
                f"`bgtui connect {session.request_id}` from a shell instead",
            )
        except (OSError, RuntimeError, ValueError) as exc:  # handing the terminal over failed
            return ShellOutcome(False, f"could not open the session: {exc}")

    def run_here(self, session: ShellSession) -> ShellOutcome:
        """Runs the session's program on this terminal directly (`bgtui connect`, no TUI)."""
        writers: list[AsciicastWriter] = []
        try:
            code = self._run(session, writers)
        except (OSError, RuntimeError, ValueError) as exc:
            recording = _close_recording(writers)
            return ShellOutcome(False, f"could not open the session: {exc}", recording=recording)
        recording = _close_recording(writers)
        if session.ended.is_set():
            return ShellOutcome(True, "the session ended, so its shell was closed", code, recording)
        return ShellOutcome(True, f"shell closed (exit {code})", code, recording)

    def _run(self, session: ShellSession, writers: list[AsciicastWriter]) -> int:
        credential = session.credential or {}
        if session.kind == "ssh":
            if session.session_key is None or "certificate" not in credential:
                raise RuntimeError("an SSH session needs the session key and its certificate")
            if self.recorder_factory is not None:
                recorder = self.recorder_factory(session)
            elif session.record_home is not None:
                writer = _open_recording(session, credential)
                writers.append(writer)
                recorder = Recorder(writer.output, writer.input, writer.resize)
            else:
                recorder = Recorder()
            return SshRunner(credential, session.session_key, session.ended, recorder).run()
        if session.kind == "kubernetes":
            return _kubectl_shell(credential, session)
        if session.kind == "postgres":
            env = {k: v for k, v in credential.items() if k.isupper()}
            return _watched([shutil.which("psql") or "psql"], env, session.ended)
        env = {"BGTUI_SESSION": session.request_id, "BGTUI_ADDRESS": session.address}
        return _watched([_user_shell()], env, session.ended)


def _open_recording(session: ShellSession, credential: Credential) -> AsciicastWriter:
    """A new asciicast file for this SSH shell, sized like the terminal it is about to get."""
    assert session.record_home is not None
    try:
        path = new_recording_path(session.record_home, session.request_id)
    except (OSError, Refused) as exc:
        raise RuntimeError(f"cannot record it, so it was not opened: {exc}") from None
    columns, lines = _terminal_size(sys.stdout.fileno())
    where = f"{credential.get('user')}@{credential.get('host', '127.0.0.1')}"
    where += f":{credential.get('port', '22')}"
    try:
        return AsciicastWriter.create(
            path,
            columns,
            lines,
            title=f"bgtui session {session.request_id}: ssh {where}",
            env={"TERM": os.environ.get("TERM", ""), "SHELL": os.environ.get("SHELL", "")},
        )
    except OSError as exc:
        raise RuntimeError(f"cannot record it in {path}, so it was not opened: {exc}") from None


def _close_recording(writers: list[AsciicastWriter]) -> Path | None:
    """Closes the shell's recording; its path, or None when there was none (or nothing in it:
    the connection never opened)."""
    for writer in writers:
        writer.close()
        if writer.path is None:
            continue
        if writer.events == 0:
            writer.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                writer.path.parent.rmdir()
            continue
        return writer.path
    return None


def _terminal_size(fd: int) -> tuple[int, int]:
    """(columns, lines) of the terminal on `fd` (not $COLUMNS/$LINES, which go stale)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        fallback = shutil.get_terminal_size()
        return fallback.columns, fallback.lines
    return size.columns, size.lines


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
        import paramiko  # deferred: only a connect needs it

        try:
            client = self._client()
        except paramiko.SSHException as exc:
            where = f"{self.credential.get('host', '127.0.0.1')}:{self.credential.get('port')}"
            raise RuntimeError(f"SSH to {where} failed: {exc}") from None
        try:
            columns, lines = _terminal_size(sys.stdout.fileno())
            channel = client.invoke_shell(
                term=os.environ.get("TERM", "xterm-256color"), width=columns, height=lines
            )
            if self.recorder.on_resize:
                self.recorder.on_resize(columns, lines)
            self._copy(channel)
            return _exit_status(channel)
        except paramiko.SSHException as exc:
            raise RuntimeError(f"the SSH connection failed: {exc}") from None
        finally:
            client.close()

    def _copy(self, channel: Any) -> None:
        stdin = sys.stdin.fileno()
        stdout = sys.stdout.fileno()
        done = threading.Event()
        # SIGWINCH only wakes the copy loop (through a pipe), which resizes the remote PTY and
        # records the resize itself: a handler doing it could interrupt an event being written.
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write):
            os.set_blocking(fd, False)

        def resized(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(OSError):
                os.write(wake_write, b"\0")

        def watch() -> None:
            while not done.is_set():
                if self.ended.wait(0.2):
                    channel.close()
                    return

        threading.Thread(target=watch, name="bgtui-ssh-watch", daemon=True).start()
        previous = signal.signal(signal.SIGWINCH, resized)
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        try:
            if saved is not None:
                tty.setraw(stdin)
            while not channel.closed:
                ready, _, _ = select.select([channel, stdin, wake_read], [], [], 0.5)
                if wake_read in ready:
                    with contextlib.suppress(OSError):
                        os.read(wake_read, 512)
                    columns, lines = _terminal_size(stdout)
                    channel.resize_pty(width=columns, height=lines)
                    if self.recorder.on_resize:
                        self.recorder.on_resize(columns, lines)
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
            done.set()
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
            os.close(wake_read)
            os.close(wake_write)


def _exit_status(channel: Any, wait: float = 5.0) -> int:
    """The remote shell's exit status, -1 when there is none (the channel was cut).

    sshd may send it just after the output's end of file (the PTY closes before the shell is
    reaped), so it is waited for a moment rather than read the instant the output ends.
    """
    deadline = time.monotonic() + wait
    while not channel.exit_status_ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(channel.recv_exit_status()) if channel.exit_status_ready() else -1
