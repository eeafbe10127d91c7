"""`bgtui audit verify | log | export` and session recordings, against a real `bgctl serve`.

The commands run as real `bgtui` processes; exported bundles are checked with the real
`ssh-keygen -Y verify`, `sha256sum -c` and `sh`, as a third party would. Recordings go through
the signed API (upload, list, download) and end up named, by the SHA-256 of their exact bytes,
in the audit log.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import ok, poll, refused, state_is
from tests.servers import Appliance, appliance
from tests.test_lifecycle_cli import approve, submit
from tests.test_mirror import client, controller_rows, session, truncate_tail

from bgtui.audit_commands import OFFLINE
from bgtui.client import ApiRefused

CAST = (
    b'{"version": 2, "width": 80, "height": 24, "timestamp": 1767225600}\n'
    b'[0.10, "o", "$ whoami\\r\\n"]\n'
    b'[0.52, "o", "olive\\r\\n"]\n'
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Appliance]:
    yield from appliance(tmp_path)


def entries(app: Appliance, who: str, *args: str) -> list[dict[str, object]]:
    result: list[dict[str, object]] = json.loads(
        ok(app.bgtui(who, "audit", "log", "--json", *args))
    )
    return result


def sh(bundle: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A command line from the bundle's README (`tool args [< file]`), run in the bundle."""
    argv, _, stdin = command.partition(" < ")
    return subprocess.run(
        shlex.split(argv),
        input=(bundle / stdin).read_text() if stdin else None,
        cwd=bundle,
        capture_output=True,
        text=True,
        check=False,
    )


def stock_checks(bundle: Path) -> str:
    """Every check the README gives, with the real tools; returns verify-chain.sh's output."""
    for checkpoint in sorted((bundle / "checkpoints").glob("*.json")):
        name = checkpoint.relative_to(bundle).as_posix()
        command = (
            "ssh-keygen -Y verify -f allowed_signers -I acme-prod -n bgtui-checkpoint@v1 "
            f"-s {name}.sig < {name}"
        )
        result = sh(bundle, command)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    readme = " ".join((bundle / "README.md").read_text().replace("\\\n", " ").split())
    assert command.split(" < ")[0] in readme  # the newest checkpoint's, word for word
    sums = sh(bundle, "sha256sum -c SHA256SUMS")
    assert sums.returncode == 0, sums.stdout + sums.stderr
    chain = sh(bundle, "sh verify-chain.sh")
    assert chain.returncode == 0, chain.stdout + chain.stderr
    return chain.stdout


# -- verify and log --------------------------------------------------------------------------


def test_verify_and_log_sync_first_and_work_offline(app: Appliance) -> None:
    rid = session(app)
    verified = app.bgtui("audrey", "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    size = len(controller_rows(app))
    assert f"audit log intact: {size} entries, 1 checkpoints verified" in verified.stdout
    assert f"synced {size} new audit entries from acme-prod" in verified.stderr

    timeline = entries(app, "audrey", "--session", rid.lower())
    assert [e["event"] for e in timeline][:2] == ["request.submitted", "approval.approve"]
    assert {e["session"] for e in timeline} == {rid}
    approvals = entries(app, "audrey", "--event", "approval.approve")
    assert [(e["actor"], e["session"]) for e in approvals] == [("alice", rid)]
    found = entries(app, "audrey", "--search", "INC-4711")
    assert found and found[-1]["event"] == "request.submitted"
    newest = entries(app, "audrey", "--actor", "olive", "--limit", "2")
    assert len(newest) == 2 and newest[0]["seq"] > newest[1]["seq"]  # type: ignore[operator]
    assert entries(app, "audrey", "--since", "2000-01-01", "--until", "2000-12-31") == []
    table = ok(app.bgtui("audrey", "audit", "log", "--session", rid)).splitlines()
    assert table[0].split() == ["SEQ", "AT", "EVENT", "ACTOR", "SESSION", "DETAIL"]
    assert "request.submitted" in table[1] and "reason=INC-4711" in table[1]
    bad = app.bgtui("audrey", "audit", "log", "--since", "someday")
    refused(bad, "bad time 'someday'")

    app.stop()
    offline = app.bgtui("audrey", "audit", "log", "--json", "--session", rid)
    assert offline.returncode == 0, offline.stderr
    assert OFFLINE in offline.stderr.splitlines()
    assert json.loads(offline.stdout) == timeline
    again = app.bgtui("audrey", "audit", "verify")
    assert again.returncode == 0 and OFFLINE in again.stderr, again.stderr
    assert f"audit log intact: {size} entries" in again.stdout


def test_verify_fails_loudly_when_the_controller_truncated_its_log(app: Appliance) -> None:
    rid = session(app)
    ok(app.bgtui("audrey", "audit", "verify"))
    held = len(entries(app, "audrey", "--limit", "1000"))
    app.stop()
    truncate_tail(app, held - 4)
    app.start()
    line = refused(app.bgtui("audrey", "audit", "verify"), "AUDIT LOG REWRITTEN", "deleted")
    assert f"the local copy ({held} entries) is kept unchanged" in line
    # browsing still works, on the copy taken before, with the same warning
    shown = app.bgtui("audrey", "audit", "log", "--json", "--session", rid)
    assert shown.returncode == 0 and "AUDIT LOG REWRITTEN" in shown.stderr
    assert json.loads(shown.stdout)[-1]["event"] == "session.receipt"


def test_an_operator_reads_only_their_own_session(app: Appliance) -> None:
    rid = session(app)
    refused(app.bgtui("olive", "audit", "log"), "only their own sessions", "--session")
    refused(app.bgtui("olive", "audit", "verify"), "approver or auditor")
    own = entries(app, "olive", "--session", rid)
    assert own[0]["event"] == "request.submitted" and {e["session"] for e in own} == {rid}


# -- export ----------------------------------------------------------------------------------


def test_exported_bundles_check_out_with_stock_tools(app: Appliance, tmp_path: Path) -> None:
    before = session(app, "earlier")
    rid = str(submit(app)["id"])
    approve(app, rid)
    poll(app, rid, state_is("active"))
    with client(app, "olive") as c:
        uploaded = c.upload_recording(rid, CAST)
    ok(app.bgtui("olive", "end", rid))
    poll(app, rid, state_is("ended"))
    session(app, "later")

    out = tmp_path / "evidence"
    done = ok(app.bgtui("audrey", "audit", "export", "--session", rid, "--out", str(out)))
    assert f"wrote evidence bundle to {out}" in done
    chain = stock_checks(out)
    lines = (out / "entries.jsonl").read_bytes().splitlines()
    ours = [json.loads(line) for line in lines]
    first, last = ours[0]["seq"], ours[-1]["seq"]
    assert chain.startswith(f"OK: entries {first}..{last}, head ")
    # the whole session is there, starting with it, ending at the checkpoint right after it
    assert ours[0]["session"] == rid and ours[0]["event"] == "request.submitted"
    theirs = {seq: entry for seq, entry, _, _ in controller_rows(app)}
    assert lines == [theirs[seq] for seq in range(first, last + 1)]
    session_seqs = [e["seq"] for e in ours if e["session"] == rid]
    assert max(session_seqs) == last
    assert before not in {e["session"] for e in ours}
    # the recording is the exact bytes the audit entry names
    recording = out / "recordings" / f"{uploaded['sha256']}.cast"
    assert recording.read_bytes() == CAST
    named = [e for e in ours if e["event"] == "recording.uploaded"]
    assert named[0]["data"] == {"sha256": hashlib.sha256(CAST).hexdigest(), "bytes": len(CAST)}
    readme = (out / "README.md").read_text()
    assert "sha256sum recordings/*.cast" in readme and rid in readme
    assert not (out / "SHA256SUMS.sig").exists()

    whole = tmp_path / "whole"
    ok(app.bgtui("audrey", "audit", "export", "--out", str(whole)))
    size = len((whole / "entries.jsonl").read_bytes().splitlines())
    assert stock_checks(whole).startswith(f"OK: {size} entries, head ")

    # a changed entry fails the stock checks
    path = out / "entries.jsonl"
    path.write_bytes(path.read_bytes().replace(b"INC-4711", b"INC-0000", 1))
    assert sh(out, "sha256sum -c SHA256SUMS").returncode != 0
    assert sh(out, "sh verify-chain.sh").returncode == 1
    refused(app.bgtui("audrey", "audit", "export", "--out", str(out)), "not empty")


# -- recordings through the API --------------------------------------------------------------


def test_recordings_upload_list_download_and_audit(tmp_path: Path) -> None:
    app = Appliance(tmp_path).setup()
    try:
        app.enrol("oscar", "operator")
        app.start()
        rid = str(submit(app)["id"])
        with client(app, "olive") as c:
            with pytest.raises(ApiRefused, match="session is pending") as early:
                c.upload_recording(rid, CAST)
            assert early.value.status == 409
        approve(app, rid)
        poll(app, rid, state_is("active"))

        big = CAST + b'[1.0, "o", "' + b"x" * (1 << 20) + b'"]\n'  # above the 64 KiB JSON cap
        with client(app, "olive") as c:
            first = c.upload_recording(rid, CAST)
            assert c.upload_recording(rid, CAST) == first  # a retry is accepted once
            second = c.upload_recording(rid, big)
            for junk, why in ((b"hello\n", "line 1"), (CAST + b"[1]\n", "line 4")):
                with pytest.raises(ApiRefused, match=why) as bad:
                    c.upload_recording(rid, junk)
                assert bad.value.status == 422
            with pytest.raises(ApiRefused, match="larger than") as huge:
                c.upload_recording(rid, CAST + b" " * (16 * 1024 * 1024))
            assert huge.value.status == 413
            assert [r["sha256"] for r in c.recordings(rid)] == [
                first["sha256"],
                second["sha256"],
            ]
        digest = hashlib.sha256(CAST).hexdigest()
        assert first["sha256"] == digest and first["bytes"] == len(CAST)
        stored = app.home / "recordings" / rid / f"{digest}.cast"
        assert stored.read_bytes() == CAST and stored.stat().st_mode & 0o777 == 0o600

        for who in ("audrey", "alice"):
            with client(app, who) as c:
                assert c.recording(digest) == CAST
                assert len(c.recordings(rid)) == 2
        with client(app, "alice") as c, pytest.raises(ApiRefused, match="operator") as approver:
            c.upload_recording(rid, CAST)
        assert approver.value.status == 403
        with client(app, "oscar") as c:
            for call in (
                lambda: c.recording(digest),
                lambda: c.recordings(rid),
                lambda: c.upload_recording(rid, CAST),
            ):
                with pytest.raises(ApiRefused) as hidden:
                    call()
                assert hidden.value.status == 404

        # after the session ended its operator may still upload, for a while
        ok(app.bgtui("olive", "end", rid))
        poll(app, rid, state_is("ended"))
        late = CAST + b'[2.0, "o", "exit\\r\\n"]\n'
        with client(app, "olive") as c:
            assert c.upload_recording(rid, late)["bytes"] == len(late)

        uploads = [
            json.loads(entry)
            for _, entry, _, _ in controller_rows(app)
            if json.loads(entry)["event"] == "recording.uploaded"
        ]
        assert [(u["actor"], u["session"]) for u in uploads] == [("olive", rid)] * 3
        assert [u["data"] for u in uploads] == [
            {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for data in (CAST, big, late)
        ]
    finally:
        app.close()
