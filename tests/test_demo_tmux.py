"""`bgtui demo` in a real terminal (tmux): the whole story walked by key presses.

The real `bgtui demo` (sandbox appliance and TUI) runs in a pane of a private tmux server and is
driven one key per `tmux send-keys` call, reading the pane with `tmux capture-pane`, polled
against a deadline (never a fixed sleep): olive requests the bastion, alice approves, olive
connects (the TUI suspends, a real SSH shell on the loopback sshd gets the terminal, a command
runs, `exit` brings the TUI back), ends the session and sees it Ended; audrey verifies the audit
log; ctrl+q quits, the pane's process exits 0 and nothing of the sandbox is left running.

Where the screen gives no text to wait for (a cursor moving in a list), the walk checks the
outcome instead (the form's title, the header's identity) and corrects course.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.test_demo import assert_nothing_left, processes_mentioning

from controller.sandbox import postgres as pgsandbox
from controller.sandbox import sshd as sshsandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WIDTH, HEIGHT = 140, 45
IDENTITIES = ("olive", "alice", "audrey")  # the switcher's order (the appliance enrols them so)
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
PROMPT = re.compile(r"[$#]\s*$")


class Pane:
    """One pane on a private tmux server (its own socket): nothing of the user's is touched."""

    def __init__(self, socket: Path, name: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.name = name
        self.env = env
        self.root: Path | None = None  # the demo's sandbox, once known

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-f", "/dev/null", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=10,
            check=False,
        )
        assert result.returncode == 0, f"tmux {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start(self, command: str) -> None:
        size = ("-x", str(WIDTH), "-y", str(HEIGHT))
        # remain-on-exit keeps the pane, its last screen and its exit status once bgtui quits.
        self.tmux("new-session", "-d", "-s", self.name, *size, command)
        self.tmux("set-option", "-t", self.name, "remain-on-exit", "on")

    def screen(self, *, styled: bool = False) -> str:
        """What the pane shows; `styled` keeps the SGR escapes (bold, colours)."""
        return self.tmux("capture-pane", "-p", *(["-e"] if styled else []), "-t", self.name)

    def key(self, key: str) -> None:
        """One key, by tmux's name for it (`Down`, `Enter`, `C-o`, `a`)."""
        self.tmux("send-keys", "-t", self.name, key)

    def wait(
        self, check: Callable[[str], bool], what: str, timeout: float = 30.0, styled: bool = False
    ) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(styled=styled)
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g}s for {what}; the pane shows:\n{screen}")
            time.sleep(0.05)

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        return self.wait(lambda s: all(n in s for n in needles), " and ".join(needles), timeout)

    def type(self, text: str, echoed: Callable[[str, str], bool]) -> None:
        """Types `text` one key per call, waiting after each until `echoed(screen, so_far)`."""
        for index, char in enumerate(text):
            self.key("Space" if char == " " else char)
            done = text[: index + 1].rstrip()  # a pane's capture drops trailing spaces

            def shown(screen: str, done: str = done) -> bool:
                return echoed(screen, done)

            self.wait(shown, f"{done!r} to be echoed")

    def dead_status(self) -> str | None:
        """How the pane's process ended (`0`, `1`, `signal 15`…), or None while it runs."""
        shown = self.tmux(
            "display-message",
            "-p",
            "-t",
            self.name,
            "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}",
        )
        dead, status, signum = [*shown.strip().split(":"), "", ""][:3]
        # tmux may see the pty close a moment before it reaps the process and learns how it
        # ended: until then it is not over.
        if dead != "1" or not (status or signum):
            return None
        return status or f"signal {signum}"

    def pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").strip())

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def in_input(screen: str, typed: str) -> bool:
    """`typed` shown at the start of a Textual Input (`▊  typed…`)."""
    return f"▊  {typed}" in screen


def at_prompt(screen: str, typed: str) -> bool:
    """`typed` at the end of the shell's prompt line."""
    return any(
        PROMPT.search(line.rstrip()[: -len(typed)]) and line.rstrip().endswith(typed)
        for line in screen.splitlines()
    )


def remote_prompt(screen: str) -> bool:
    """The TUI gave the terminal away and the remote shell shows its prompt."""
    lines = [line for line in screen.splitlines() if line.strip()]
    return "^q Quit" not in screen and bool(lines) and bool(PROMPT.search(lines[-1]))


def has_exited(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent (tmux) to reap it."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def sandbox_root(pid: int) -> Path:
    """The demo's sandbox, from its `bgctl serve` child (`--home ROOT/controller serve`)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])

    def descends(child: int) -> bool:
        while child > 1:
            if child == pid:
                return True
            child = parents.get(child, 0)
        return False

    for child in parents:
        if not descends(child):
            continue
        try:
            argv = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "controller.cli" in words and "serve" in words and "--home" in words:
            return Path(words[words.index("--home") + 1]).parent
    raise AssertionError(f"no `bgctl serve` below pid {pid}")


class Walk:
    """The demo's screens, as a person reads and drives them."""

    def __init__(self, pane: Pane) -> None:
        self.pane = pane

    def header_says(self, name: str) -> Callable[[str], bool]:
        return lambda s: any(
            line.lstrip().startswith(f"bgtui  {name} · ") and "● connected" in line
            for line in s.splitlines()[:2]
        )

    def as_identity(self, name: str) -> str:
        """ctrl+o, down to `name`, enter; retried if a key went astray (the header tells)."""
        for _ in range(3):
            self.pane.key("C-o")
            self.pane.wait_for("Use which identity?")
            for _ in range(IDENTITIES.index(name)):
                self.pane.key("Down")
            self.pane.key("Enter")
            screen = self.pane.wait(
                lambda s: "Use which identity?" not in s and "● connected" in s, "the new mode"
            )
            if self.header_says(name)(screen):
                return screen
        raise AssertionError(f"could not switch to {name}:\n{self.pane.screen()}")

    def open_request_form(self, resource: str) -> None:
        """Moves the catalog's cursor to `resource` (a key, then its effect), then `n`."""
        order = CATALOG_ROW.findall(self.pane.screen())
        assert resource in order, order
        for _ in range(2 * len(order)):
            at = self.pane.wait(
                lambda s: catalog_cursor(s) is not None, "the catalog's cursor", styled=True
            )
            current = catalog_cursor(at)
            assert current is not None
            if current == resource:
                break
            step = 1 if order.index(resource) > order.index(current) else -1
            self.pane.key("Down" if step == 1 else "Up")
            after = order[order.index(current) + step]

            def moved(screen: str, after: str = after) -> bool:
                return catalog_cursor(screen) == after

            self.pane.wait(moved, f"cursor on {after}", styled=True)
        self.pane.key("n")
        self.pane.wait_for(f"Request access to {resource}")


CATALOG_ROW = re.compile(r"^  (\S+) +(?:kubernetes|postgres|ssh|service) ", re.MULTILINE)
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def catalog_cursor(styled_screen: str) -> str | None:
    """The catalog row under the cursor: the one drawn bold (Textual's cursor row style)."""
    for line in styled_screen.splitlines():
        found = CATALOG_ROW.match(SGR.sub("", line))
        if found is not None and bold_at(line, line.find(found.group(1))):
            return found.group(1)
    return None


def bold_at(line: str, index: int) -> bool:
    """Whether text at `index` of a line with SGR escapes is bold."""
    bold = False
    for match in SGR.finditer(line[:index]):
        params = [int(p) if p else 0 for p in match.group(1).split(";")]
        i = 0
        while i < len(params):
            code = params[i]
            if code in (38, 48, 58):  # a colour: skip its 5;N or 2;R;G;B arguments
                i += 3 if params[i + 1 : i + 2] == [5] else 5
                continue
            if code == 0:
                bold = False
            elif code == 1:
                bold = True
            elif code == 22:
                bold = False
            i += 1
    return bold


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    for reason in (
        None if shutil.which("tmux") else "tmux not found: apt-get install tmux",
        sshsandbox.available(),
        pgsandbox.available(),
    ):
        if reason is not None:
            pytest.fail(reason)  # a missing tool fails the suite; it never skips
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGTUI_", "BGCTL_", "TMUX"))}
    env["HOME"] = str(tmp_path / "home")  # ssh, kubectl and psql write nothing of the user's
    (tmp_path / "home").mkdir()
    # A short path: a Unix socket path is limited to 107 bytes, and tmp_path can be long.
    made = Pane(Path(tempfile.gettempdir()) / f"bgtui-demo-tmux-{os.getpid()}.sock", "demo", env)
    try:
        yield made
    finally:
        leave_nothing(made)
        made.kill()
        made.socket.unlink(missing_ok=True)


def leave_nothing(pane: Pane) -> None:
    """After a failed walk: quit the demo; if it will not (it ignores SIGHUP and SIGTERM while
    its TUI runs), kill it and end what its sandbox started, by pid, and remove the sandbox."""
    try:
        pid = pane.pid()
    except AssertionError:
        return  # the session never started
    if not has_exited(pid):
        pane.key("C-q")
        deadline = time.monotonic() + 20
        while not has_exited(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if not has_exited(pid):
        os.kill(pid, signal.SIGKILL)
    if pane.root is not None:
        for line in processes_mentioning(str(pane.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGTERM)
        shutil.rmtree(pane.root, ignore_errors=True)
        shutil.rmtree(f"{pane.root}-postgres", ignore_errors=True)


def test_demo_walks_request_approve_connect_end_and_audit_verify(pane: Pane) -> None:
    program = Path(sys.executable).parent / "bgtui"
    # Under pytest the C-level environment carries COLUMNS=80 LINES=24 (not in os.environ); a
    # pane started with them would make Textual draw at 80x24 whatever the pane's size.
    pane.start(shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", str(program), "demo"]))
    walk = Walk(pane)

    # olive, the operator: the catalog, then a request for the bastion.
    pane.wait(
        lambda s: walk.header_says("olive")(s) and "bastion" in s and "^q Quit" in s,
        "the operator's catalog",
        timeout=60,
    )
    root = pane.root = sandbox_root(pane.pid())
    walk.open_request_form("bastion")
    pane.wait_for("Duration (counted from activation")
    pane.type("10m", in_input)
    pane.key("Tab")
    pane.type("tmux walk", in_input)
    pane.key("C-s")
    sent = pane.wait(
        lambda s: (
            "My requests and sessions" in s
            and any("Pending" in ln and "bastion" in ln for ln in s.splitlines())
        ),
        "the request, pending",
    )
    (rid,) = {m for ln in sent.splitlines() if "bastion" in ln for m in ULID.findall(ln)}

    # alice, the approver: the inbox, the request as signed, approve.
    walk.as_identity("alice")
    pane.wait(lambda s: any(rid in ln and "tmux walk" in ln for ln in s.splitlines()), "inbox")
    pane.key("Enter")
    pane.wait_for(f"Review request {rid}", "operator signature verified", "a Approve")
    pane.key("a")
    try:
        pane.wait(
            lambda s: (
                "Active sessions" in s
                and any(rid in ln and "Active" in ln for ln in s.splitlines())
            ),
            "the session active in alice's list",
        )
    except AssertionError as exc:  # whose fault: the controller's or the screen's?
        said = bgtui(root, "alice", "show", rid)
        raise AssertionError(f"{exc}\nthe controller says:\n{said}") from None

    # olive again: open the session, connect, a command in the real shell, back.
    walk.as_identity("olive")
    pane.wait(lambda s: any(rid in ln and "Active" in ln for ln in s.splitlines()), "active")
    pane.key("Tab")  # from the catalog to my requests (the only row: this session)
    pane.wait_for("c Connect")
    pane.key("Enter")
    pane.wait_for(f"bastion · admin · {rid}", "left (until", "c Connect")
    pane.key("c")
    pane.wait(remote_prompt, "the remote shell's prompt")
    pane.type("echo demo-ok", at_prompt)
    pane.key("Enter")
    pane.wait(lambda s: "demo-ok" in [ln.strip() for ln in s.splitlines()], "the command's output")
    pane.type("exit", at_prompt)
    pane.key("Enter")
    pane.wait_for(f"bastion · admin · {rid}", "Active", "c Connect", "^q Quit")

    # End the session: confirm, and it is Ended with its teardown done.
    pane.key("e")
    pane.wait_for(f"End session {rid} now?")
    pane.key("y")
    pane.wait_for("Ended  ended by operator")

    # audrey, the auditor: the audit log verifies.
    walk.as_identity("audrey")
    screen = pane.wait(
        lambda s: "v Verify" in s or "auditor mode" in s, "the auditor's screen (or placeholder)"
    )
    if re.search(r"\bv Verify\b", screen):
        pane.key("v")
        verdict = pane.wait(lambda s: "intact" in s or "✘" in s, "the verification's verdict")
    else:  # no audit browser in this build: the auditor checks from the command line
        verdict = bgtui(root, "audrey", "audit", "verify")
    assert "intact" in verdict and "✘" not in verdict, verdict

    # Quit: the demo exits 0 and takes its sandbox with it.
    pid = pane.pid()
    pane.key("C-q")
    pane.wait(lambda s: has_exited(pid), "bgtui demo to exit", timeout=60)
    # tmux says how it ended once it has reaped it (seen to lag, rarely: then the last line
    # the demo prints, after its teardown, is the proof of a clean exit).
    pane.wait_for("sandbox stopped; its files removed", timeout=10)
    assert pane.dead_status() in ("0", None), pane.screen()
    assert_nothing_left(root)


def bgtui(root: Path, who: str, *args: str) -> str:
    """The real `bgtui` CLI as `who` against the demo's controller (the demo still runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGTUI_", "BGCTL_"))}
    env["BGTUI_HOME"] = str(root / "clients" / who)
    env["BGTUI_CONTROLLER"] = f"unix:{root / 'controller' / 'bgctl.sock'}"
    result = subprocess.run(
        [sys.executable, "-m", "bgtui.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, f"bgtui {' '.join(args)} as {who}: {said}"
    return said
