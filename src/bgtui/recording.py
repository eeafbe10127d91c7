"""Recording an SSH shell as asciicast v2, and uploading the recording as evidence.

The format (https://docs.asciinema.org/manual/asciicast/v2/): a header line, a JSON object
`{"version": 2, "width": W, "height": H, "timestamp": UNIX, "env": {"TERM", "SHELL"}, "title"}`,
then one JSON array per event, `[seconds_since_start, code, data]`: "o" for output (what the
remote side sent), "i" for input (every byte the operator typed) and "r" for a resize ("WxH").
`asciinema play FILE` replays it.

Bytes become text with one incremental UTF-8 decoder per direction, errors="replace" (what
asciinema itself does): a character split across two reads is kept whole, and a byte that is
not UTF-8 becomes U+FFFD, so the file is always valid UTF-8 and JSON. The file is a faithful
record of what the terminal showed, not a byte-exact copy of the wire.

Where it lives, and what happens to it
---------------------------------------
`<client home>/recordings/<request id>/<UTC start>-<random>.cast`, directory 0700, file 0600
from its creation on, each event written and flushed as it happens (a crash keeps everything
up to it). It records what the operator typed, so it may hold secrets (a password typed to
`sudo`): it is evidence the customer keeps, readable only by the operator's account.

When the shell closes it is uploaded to the controller (`POST /v1/requests/ID/recordings`,
signed by the operator), which stores it by SHA-256 and writes `recording.uploaded` {sha256,
bytes} into the audit log. Only when the controller answers with that same SHA-256 is the local
copy deleted. If the controller cannot be reached it is kept and uploaded again after the next
shell of this home closes (the controller takes recordings up to 10 minutes after a session
ends). If the controller refuses it, it is renamed `….refused.cast` and kept, never retried.
While a recording is written its writer holds an exclusive lock on it, so another bgtui on
the same home never uploads (and deletes) a recording still in progress.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bgtui.protocol.errors import Refused

RECORDINGS_DIR = "recordings"
REFUSED_SUFFIX = ".refused.cast"
_RID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")

UploadFn = Callable[[str, bytes], dict[str, Any]]
"""`(request id, bytes) -> {sha256, bytes, at}`: `ControllerClient.upload_recording`."""


class AsciicastWriter:
    """Writes one asciicast v2 recording to `sink` (a binary file, or a BytesIO in tests).

    `clock` gives seconds on a monotonic scale (event times are differences of it);
    `timestamp` is the header's Unix start time. Thread-safe; after `close()` events are
    ignored.
    """

    def __init__(
        self,
        sink: IO[bytes],
        width: int,
        height: int,
        *,
        title: str | None = None,
        command: str | None = None,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timestamp: int | None = None,
        path: Path | None = None,
    ) -> None:
        self.sink = sink
        self.path = path
        self.width = width
        self.height = height
        self.events = 0
        self._clock = clock
        self._start = clock()
        self._last = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._decoders = {
            code: codecs.getincrementaldecoder("utf-8")(errors="replace") for code in "oi"
        }
        header: dict[str, Any] = {
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": int(time.time()) if timestamp is None else timestamp,
        }
        if env is not None:
            header["env"] = {key: value for key, value in env.items() if value}
        if title:
            header["title"] = title
        if command:
            header["command"] = command
        self._line(header)

    @classmethod
    def create(cls, path: Path, width: int, height: int, **options: Any) -> AsciicastWriter:
        """A new file at `path` (which must not exist), mode 0600 and locked while written."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            sink = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        try:
            return cls(sink, width, height, path=path, **options)
        except BaseException:
            sink.close()
            path.unlink(missing_ok=True)
            raise

    # events ---------------------------------------------------------------------------
    def output(self, data: bytes) -> None:
        """What the remote side sent to the terminal."""
        self._event("o", data)

    def input(self, data: bytes) -> None:
        """What the operator typed."""
        self._event("i", data)

    def resize(self, width: int, height: int) -> None:
        """The terminal's new size (a size it already has is not an event)."""
        with self._lock:
            if self._closed or (width, height) == (self.width, self.height):
                return
            self.width, self.height = width, height
            self._write_event("r", f"{width}x{height}")

    def _event(self, code: str, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            text = self._decoders[code].decode(data)
            if text:
                self._write_event(code, text)

    def _write_event(self, code: str, text: str) -> None:
        # Never going backwards, whatever the clock does: players expect ordered times.
        self._last = max(self._last, round(self._clock() - self._start, 6))
        self._line([self._last, code, text])
        self.events += 1

    def _line(self, value: Any) -> None:
        line = json.dumps(value, ensure_ascii=False, separators=(", ", ": ")) + "\n"
        self.sink.write(line.encode("utf-8"))
        self.sink.flush()

    def close(self) -> None:
        """Writes what the decoders still hold (an incomplete character: U+FFFD), syncs a file
        to disk and closes it (which releases its lock); idempotent."""
        with self._lock:
            if self._closed:
                return
            for code, decoder in self._decoders.items():
                rest = decoder.decode(b"", final=True)
                if rest:
                    self._write_event(code, rest)
            self._closed = True
            if self.path is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self.sink.fileno())
                self.sink.close()

    def __enter__(self) -> AsciicastWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# where recordings live ------------------------------------------------------------------
def recordings_root(home: Path) -> Path:
    return home / RECORDINGS_DIR


def new_recording_path(home: Path, rid: str, now: datetime | None = None) -> Path:
    """A fresh name in `<home>/recordings/<rid>/`, creating the directories (0700)."""
    if not _RID.fullmatch(rid):
        raise Refused(f"{rid!r} is not a request id")
    directory = recordings_root(home) / rid
    for level in (home, recordings_root(home), directory):
        if not level.is_dir():
            level.mkdir(mode=0o700, exist_ok=True)
            os.chmod(level, 0o700)  # mkdir's mode is masked by the umask
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{stamp}-{secrets.token_hex(3)}.cast"


def pending_recordings(home: Path) -> list[tuple[str, Path]]:
    """(request id, path) of every recording here not yet uploaded nor refused, oldest first.

    Only `recordings/<request id>/` directories count (the mirror keeps downloaded
    recordings beside them, in `recordings/<controller id>/`).
    """
    root = recordings_root(home)
    found: list[tuple[str, Path]] = []
    if not root.is_dir():
        return found
    for directory in sorted(root.iterdir()):
        if not _RID.fullmatch(directory.name) or not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.cast")):
            if not path.name.startswith(".") and not path.name.endswith(REFUSED_SUFFIX):
                found.append((directory.name, path))
    return found


def _in_progress(path: Path) -> bool:
    """Whether some writer still holds the recording's lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


# uploading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """What became of one recording: uploaded (its SHA-256), kept for a retry, or refused."""

    rid: str
    path: Path
    sha256: str
    size: int
    uploaded: bool
    error: str | None = None
    retry: bool = False


def upload_recording(upload: UploadFn, rid: str, path: Path) -> Upload:
    """Uploads the recording at `path`; deletes it once the controller has the same SHA-256.

    A controller that cannot be reached (or fails) leaves the file for a retry; one that
    refuses it leaves it renamed `*.refused.cast`, kept but never retried.
    """
    from bgtui.client import ApiRefused  # deferred: only an upload needs the client

    try:
        data = path.read_bytes()
    except OSError as exc:
        return Upload(rid, path, "", 0, False, f"cannot read it: {exc.strerror or exc}", True)
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        answer = upload(rid, data)
    except ApiRefused as exc:
        if exc.status >= 500 or exc.status in (408, 429):
            return Upload(rid, path, sha256, len(data), False, str(exc), retry=True)
        kept = path.with_name(path.name.removesuffix(".cast") + REFUSED_SUFFIX)
        with contextlib.suppress(OSError):
            path.rename(kept)
            path = kept
        return Upload(rid, path, sha256, len(data), False, str(exc))
    except Refused as exc:
        return Upload(rid, path, sha256, len(data), False, str(exc), retry=True)
    if answer.get("sha256") != sha256:
        said = answer.get("sha256")
        return Upload(
            rid, path, sha256, len(data), False, f"the controller recorded {said!r} instead"
        )
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when it was the session's last one
    return Upload(rid, path, sha256, len(data), True)


def upload_pending(upload: UploadFn, home: Path, first: Path | None = None) -> list[Upload]:
    """Uploads `first` (when given), then every other pending recording no writer holds."""
    uploads: list[Upload] = []
    for rid, path in pending_recordings(home):
        if path == first:
            uploads.insert(0, upload_recording(upload, rid, path))
        elif not _in_progress(path):
            uploads.append(upload_recording(upload, rid, path))
    return uploads


def describe(upload: Upload) -> str:
    """One line for the operator about one recording."""
    if upload.uploaded:
        return f"recording of {upload.rid} uploaded, sha256 {upload.sha256}"
    if upload.retry:
        return (
            f"recording of {upload.rid} kept at {upload.path} ({upload.error}); it is uploaded "
            "again when your next shell from bgtui closes, up to 10 minutes after the session ends"
        )
    return (
        f"recording of {upload.rid} kept at {upload.path}: "
        f"the controller refused it ({upload.error})"
    )
