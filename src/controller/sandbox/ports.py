"""Free loopback ports, the base of the sandbox servers, and dying with the parent."""

from __future__ import annotations

import signal
import socket
from types import TracebackType
from typing import Self


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
