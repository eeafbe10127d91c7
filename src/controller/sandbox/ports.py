"""Free loopback ports and small /proc helpers shared by the sandbox servers."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from types import TracebackType
from typing import Self

_PROC = Path("/proc")


class SandboxServer:
    """A sandbox process with `start()` (returning itself) and an idempotent `stop()`; usable
    as a context manager that stops it on the way out, whatever happened inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SandboxError(RuntimeError):
    """A sandbox server could not be set up; the message says what is missing or what failed."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago.

    The port is released before returning, so another process can take it first; callers that
    start a server on it retry with a new port when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def parent_map() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    result: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        result[int(entry.name)] = int(fields[1])
    return result


def descendants(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    """Every live descendant of `pid` (children first, then theirs), found through /proc."""
    parents = parent_map() if parents is None else parents
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    queue = list(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def die_with_parent() -> None:
    """For `Popen(preexec_fn=...)`: the child gets SIGTERM when its parent dies (Linux).

    A sandbox server started by a test or the demo must not outlive it, even when the parent
    is killed with SIGKILL and gets no chance to clean up.
    """
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
