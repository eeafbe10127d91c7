"""Session recordings: the asciicast v2 writer, and uploading to a real `bgctl serve`.

The writer's files are parsed back, checked with the controller's own validator and played by
the real `asciinema` (2.4.0, `asciinema cat`). Uploads go through the signed API to a real
controller, which must store the exact bytes and name their SHA-256 in `recording.uploaded`;
the local copy goes only once that has happened.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import ok, poll, state_is
from tests.servers import Appliance, appliance
from tests.test_lifecycle_cli import approve, submit
from tests.test_mirror import client

from bgtui.client import ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.recording import (
    REFUSED_SUFFIX,
    AsciicastWriter,
    describe,
    new_recording_path,
    pending_recordings,
    upload_pending,
)
from controller.recordings import asciicast_problem

RID = "01JD2V6XKQ8ZJ3M4N5P6Q7R8S9"


class FakeClock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def parse(data: bytes) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = data.decode("utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def asciinema() -> str:
    found = shutil.which("asciinema") or str(Path(sys.executable).parent / "asciinema")
    assert Path(found).exists(), "asciinema is a test dependency: pip install -e '.[test]'"
    return found


# -- the writer ------------------------------------------------------------------------------


def test_events_are_asciicast_v2_with_text_decoded_consistently() -> None:
    sink = io.BytesIO()
    clock = FakeClock(100.0, 100.5, 101.0, 101.25, 100.9, 102.0, 103.0)
    writer = AsciicastWriter(
        sink,
        80,
        24,
        title="bgtui session X: ssh root@127.0.0.1:22",
        env={"TERM": "xterm-256color", "SHELL": "/bin/bash", "EMPTY": ""},
        clock=clock,
        timestamp=1767225600,
    )
    writer.output(b"$ ")  # 0.5
    writer.input(b"echo h\xc3")  # 1.0: "é" split across two reads stays one character
    writer.input(b"\xa9\r")  # 1.25
    writer.output(b"bad \xff byte\r\n")  # the clock went back (100.9): time stays 1.25
    writer.resize(80, 24)  # the size it has: no event
    writer.resize(100, 30)  # 2.0
    writer.output(b"\xe2\x82")  # an incomplete character, held back (no event, no time)...
    writer.close()  # ...and written as U+FFFD at close (3.0)
    writer.output(b"after close")  # ignored
    writer.close()  # idempotent

    data = sink.getvalue()
    assert asciicast_problem(data) == ""  # what the controller accepts
    header, events = parse(data)
    assert header == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1767225600,
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
        "title": "bgtui session X: ssh root@127.0.0.1:22",
    }
    assert events == [
        [0.5, "o", "$ "],
        [1.0, "i", "echo h"],
        [1.25, "i", "é\r"],
        [1.25, "o", "bad \ufffd byte\r\n"],
        [2.0, "r", "100x30"],
        [3.0, "o", "\ufffd"],
    ]
    assert writer.events == len(events)
    assert (writer.width, writer.height) == (100, 30)
    # UTF-8 as such, one event per line, no blank line (asciinema stops reading at one)
    assert "é".encode() in data and b"\n\n" not in data


def test_a_file_is_private_locked_while_written_and_played_by_asciinema(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = new_recording_path(home, RID, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert path.parent == home / "recordings" / RID
    assert path.name.startswith("20260102T030405Z-") and path.suffix == ".cast"
    for directory in (home, home / "recordings", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    writer = AsciicastWriter.create(path, 80, 24, title="t")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(FileExistsError):
            AsciicastWriter.create(path, 80, 24)
        writer.output("$ echo hello-ü\r\n".encode())
        writer.output(b"hello-\xc3")
        writer.output(b"\xbc\r\n$ ")
        writer.input(b"exit\r")
        # flushed as it goes: a crash now keeps everything so far
        assert parse(path.read_bytes())[1][-1][1:] == ["i", "exit\r"]
        # pending, but held by its writer: a retry from elsewhere leaves it alone
        assert pending_recordings(home) == [(RID, path)]
        assert upload_pending(lambda rid, data: pytest.fail("uploaded while written"), home) == []
    finally:
        writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    played = subprocess.run(
        [asciinema(), "cat", str(path)], capture_output=True, check=False, timeout=30
    )
    assert played.returncode == 0, played.stderr
    assert played.stdout.decode() == "$ echo hello-ü\r\nhello-ü\r\n$ "


def test_only_request_directories_count_as_pending(tmp_path: Path) -> None:
    home = tmp_path
    mine = new_recording_path(home, RID)
    mine.write_bytes(b'{"version": 2, "width": 80, "height": 24}\n')
    # what the mirror downloads lives beside: recordings/<controller id>/<sha256>.cast
    mirrored = home / "recordings" / "acme-prod" / f"{'a' * 64}.cast"
    mirrored.parent.mkdir()
    mirrored.write_bytes(b"{}")
    (mine.parent / ".partial.cast").write_bytes(b"")
    (mine.parent / f"old{REFUSED_SUFFIX}").write_bytes(b"")
    assert pending_recordings(home) == [(RID, mine)]
    assert pending_recordings(tmp_path / "nowhere") == []


# -- uploads to a real controller ------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    yield from appliance(tmp_path_factory.mktemp("recordings"))


def active_session(app: Appliance) -> str:
    rid = str(submit(app)["id"])
    approve(app, rid)
    poll(app, rid, state_is("active"))
    return rid


def recorded(home: Path, rid: str, text: str) -> Path:
    writer = AsciicastWriter.create(new_recording_path(home, rid), 80, 24, title=f"bgtui {rid}")
    with writer:
        writer.output(f"$ {text}\r\n".encode())
        writer.input(b"exit\r")
    assert writer.path is not None
    return writer.path


def audited(app: Appliance, rid: str) -> list[dict[str, Any]]:
    listed = ok(app.bgtui("audrey", "audit", "log", "--json", "--session", rid))
    return [e for e in json.loads(listed) if e["event"] == "recording.uploaded"]


def test_upload_stores_the_exact_bytes_audits_their_hash_and_removes_the_copy(
    app: Appliance,
) -> None:
    rid = active_session(app)
    home = app.identities["olive"].home
    path = recorded(home, rid, "echo evidence")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    with client(app, "olive") as c:
        (done,) = upload_pending(c.upload_recording, home, path)
    assert done.uploaded and (done.rid, done.sha256, done.size) == (rid, sha256, len(data))
    assert describe(done) == f"recording of {rid} uploaded, sha256 {sha256}"
    assert not path.exists() and not path.parent.exists()  # the session's directory too
    assert pending_recordings(home) == []

    stored = app.home / "recordings" / rid / f"{sha256}.cast"
    assert stored.read_bytes() == data
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    (entry,) = audited(app, rid)
    assert entry["actor"] == "olive" and entry["data"] == {"sha256": sha256, "bytes": len(data)}
    with client(app, "audrey") as c:
        assert c.recording(sha256) == data


def test_a_failed_upload_keeps_the_recording_and_the_next_one_retries_it(
    app: Appliance, tmp_path: Path
) -> None:
    rid = active_session(app)
    home = app.identities["olive"].home
    first = recorded(home, rid, "echo first")
    signer = Identity.load(ClientHome(home)).signer()
    with ControllerClient(f"unix:{tmp_path / 'nobody.sock'}", signer, timeout=2) as down:
        (kept,) = upload_pending(down.upload_recording, home, first)
    assert not kept.uploaded and kept.retry and first.exists()
    line = describe(kept)
    assert str(first) in line and "uploaded again when your next shell" in line
    assert "cannot reach the controller" in line
    assert audited(app, rid) == []

    # A recording the controller refuses is kept aside and never retried.
    junk = new_recording_path(home, rid)
    junk.write_bytes(b"not a recording\n")
    second = recorded(home, rid, "echo second")
    with client(app, "olive") as c:
        uploads = upload_pending(c.upload_recording, home, second)
    assert uploads[0].path == second  # the shell just closed goes first
    by_path = {u.path.name.split(".")[0]: u for u in uploads}
    assert by_path[first.stem].uploaded and by_path[second.stem].uploaded
    refused = by_path[junk.stem]
    assert not refused.uploaded and not refused.retry
    assert refused.path.name.endswith(REFUSED_SUFFIX) and refused.path.exists()
    assert "not an asciicast v2 recording" in describe(refused)
    assert pending_recordings(home) == []
    hashes = {e["data"]["sha256"] for e in audited(app, rid)}
    assert hashes == {by_path[first.stem].sha256, by_path[second.stem].sha256}
