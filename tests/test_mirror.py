"""The client's local mirror of the audit log against a real `bgctl serve` (DESIGN §6).

Sessions are driven with the real `bgtui` CLI; the mirror syncs over signed calls. A controller
whose history is later rewritten or truncated (state.db edited while it is stopped, checkpoints
even re-signed with its own key) is caught by the next sync, and the local copy stays as it was.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import ok, poll, run, state_is
from tests.servers import Appliance, appliance
from tests.test_lifecycle_cli import approve, submit

from bgtui.client import ApiRefused, ControllerClient
from bgtui.home import ClientHome
from bgtui.identity import Identity
from bgtui.mirror import AuditFilter, Mirror, SyncResult, mirror_path
from bgtui.mirror_schema import MIGRATIONS
from bgtui.protocol.errors import Refused
from bgtui.protocol.evidence import GENESIS, chain_hash
from bgtui.protocol.keys import PrivateKey, PublicKey
from bgtui.protocol.objects import Checkpoint, Signed


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Appliance]:
    yield from appliance(tmp_path)


def client(app: Appliance, who: str) -> ControllerClient:
    home = ClientHome(app.identities[who].home)
    return ControllerClient(app.url, Identity.load(home).signer())


def controller_key(app: Appliance) -> PublicKey:
    return PublicKey.parse((app.home / "controller_ed25519.pub").read_text())


def open_mirror(app: Appliance, who: str = "audrey") -> Mirror:
    return Mirror(mirror_path(ClientHome(app.identities[who].home)), "acme-prod")


def session(app: Appliance, reason_tag: str = "") -> str:
    """A whole session: requested, approved, active, ended by its operator."""
    extra = ("--reason", f"INC-4711 checkout errors {reason_tag}".strip())
    rid = str(submit(app, "status-page", *extra)["id"])
    approve(app, rid)
    poll(app, rid, state_is("active"))
    ok(app.bgtui("olive", "end", rid))
    poll(app, rid, state_is("ended"))
    return rid


def synced(app: Appliance, who: str = "audrey") -> Mirror:
    mirror = open_mirror(app, who)
    with client(app, who) as c:
        result = mirror.sync(c, controller_key(app))
    assert result.rewritten is None, result.rewritten
    return mirror


def controller_rows(app: Appliance) -> list[tuple[int, bytes, str, str]]:
    db = sqlite3.connect(f"file:{app.home / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, entry, prev_hash, hash FROM audit_entries ORDER BY seq")
        return [(s, bytes(e), p, h) for s, e, p, h in rows.fetchall()]
    finally:
        db.close()


def local_rows(mirror: Mirror) -> list[tuple[object, ...]]:
    """Everything the mirror holds for the controller, to prove a refusal changed nothing."""
    entries = mirror.db.conn.execute(
        "SELECT seq, entry, prev_hash, hash FROM audit_entries ORDER BY seq"
    ).fetchall()
    checkpoints = mirror.db.conn.execute(
        "SELECT size, head, payload, signature FROM audit_checkpoints ORDER BY size"
    ).fetchall()
    return [*entries, *checkpoints]


# -- tampering with a stopped controller's state.db, as its operator could -------------------


def rewrite_entry(app: Appliance, seq: int, old: bytes, new: bytes) -> None:
    """Changes entry `seq`, rechains every later entry and re-signs every later checkpoint
    with the controller's own key, so the controller's own `audit verify` still passes."""
    key = PrivateKey.load((app.home / "controller_ed25519").read_bytes())
    db = sqlite3.connect(app.home / "state.db")
    try:
        rows = db.execute(
            "SELECT seq, entry, prev_hash FROM audit_entries WHERE seq >= ? ORDER BY seq", (seq,)
        ).fetchall()
        prev, heads = rows[0][2], {}
        for number, entry, _ in rows:
            data = bytes(entry).replace(old, new) if number == seq else bytes(entry)
            assert number != seq or data != bytes(entry), "nothing to rewrite"
            digest = chain_hash(prev, data)
            db.execute(
                "UPDATE audit_entries SET entry = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (data, prev, digest, number),
            )
            heads[number], prev = digest, digest
        checkpoints = db.execute(
            "SELECT id, size, payload FROM audit_checkpoints WHERE size >= ?", (seq,)
        ).fetchall()
        newest: Signed | None = None
        for ident, size, payload in checkpoints:
            old_checkpoint = json.loads(bytes(payload))
            signed = Checkpoint("acme-prod", size, heads[size], old_checkpoint["signed_at"]).sign(
                key
            )
            db.execute(
                "UPDATE audit_checkpoints SET head = ?, payload = ?, signature = ? WHERE id = ?",
                (heads[size], signed.payload, signed.signature, ident),
            )
            newest = signed
        db.commit()
    finally:
        db.close()
    assert newest is not None
    (app.home / "audit-head.json").write_text(json.dumps(newest.to_json()) + "\n")


def truncate_tail(app: Appliance, keep: int) -> None:
    """Deletes every entry after `keep`, the checkpoints covering them and the head file."""
    db = sqlite3.connect(app.home / "state.db")
    try:
        db.execute("DELETE FROM audit_entries WHERE seq > ?", (keep,))
        db.execute("DELETE FROM audit_checkpoints WHERE size > ?", (keep,))
        db.commit()
    finally:
        db.close()
    (app.home / "audit-head.json").unlink()


# -- sync and verify -------------------------------------------------------------------------


def test_sync_copies_the_log_and_verifies_it(app: Appliance) -> None:
    rid = session(app)
    mirror = open_mirror(app)
    seen: list[tuple[int, int]] = []
    with client(app, "audrey") as c:
        result = mirror.sync(c, controller_key(app), lambda done, total: seen.append((done, total)))
        assert result.rewritten is None
        theirs = controller_rows(app)
        assert result.fetched == result.size == result.verified_size == len(theirs)
        assert seen and seen[-1] == (len(theirs), len(theirs))
        # exactly the controller's bytes, hashes and links
        assert [(s, e.encode(), p, h) for s, e, p, h in local_rows(mirror)[: len(theirs)]] == [
            tuple(row) for row in theirs
        ]
        assert mirror.last_verified() == (theirs[-1][0], theirs[-1][3])
        events = [r.event for r in mirror.timeline(rid)]
        assert events[:3] == ["request.submitted", "approval.approve", "session.activating"]
        assert "session.ended_by_operator" in events and events[-1] == "session.receipt"
        assert mirror.verify(controller_key(app)).ok
        # a second sync copies only what is new, and nothing when nothing is
        again = mirror.sync(c, controller_key(app))
        assert again.fetched == 0 and again.size == len(theirs)
        second = session(app, "second")
        third = mirror.sync(c, controller_key(app))
        assert third.fetched > 0 and third.size == len(controller_rows(app))
    assert mirror.timeline(second)[0].data["reason"] == "INC-4711 checkout errors second"
    verdict = mirror.verify(controller_key(app))
    assert verdict.ok and verdict.size == third.size and verdict.checkpoints == 2, verdict
    mirror.close()


def test_a_controller_with_another_key_is_refused(app: Appliance) -> None:
    synced(app).close()
    mirror = open_mirror(app)
    with client(app, "audrey") as c, pytest.raises(Refused, match="now presents key"):
        mirror.sync(c, PrivateKey.generate().public)
    assert mirror.controller_key() == controller_key(app)
    mirror.close()
    # a first sync with a wrong key: the controller's checkpoint does not verify
    fresh = open_mirror(app, "alice")
    with client(app, "alice") as c, pytest.raises(Refused, match="does not verify"):
        fresh.sync(c, PrivateKey.generate().public)
    assert fresh.audit_size() == 0 and fresh.controller_key() is None
    fresh.close()


@pytest.mark.parametrize("tamper", ["rewrite", "truncate"])
def test_rewritten_history_is_reported_and_the_local_copy_kept(app: Appliance, tamper: str) -> None:
    rid = session(app)
    mirror = synced(app)
    before = local_rows(mirror)
    size = mirror.audit_size()
    app.stop()
    if tamper == "rewrite":
        submitted = mirror.timeline(rid)[0]
        rewrite_entry(app, submitted.seq, b"INC-4711 checkout errors", b"routine maintenance")
        # The controller's own check is satisfied: only a copy taken earlier can tell.
        own = run("bgctl", "--home", str(app.home), "audit", "verify")
        assert own.returncode == 0, own.stderr
    else:
        truncate_tail(app, size - 3)
    app.start()
    with client(app, "audrey") as c:
        result = mirror.sync(c, controller_key(app))
    assert result.rewritten is not None
    assert result.rewritten.startswith("AUDIT LOG REWRITTEN on controller acme-prod: ")
    assert (
        "\n" not in result.rewritten and f"({size} entries) is kept unchanged" in result.rewritten
    )
    expected = "differs from our copy" if tamper == "rewrite" else "entries were deleted"
    assert expected in result.rewritten, result.rewritten
    assert result.fetched == 0 and result.size == size
    assert local_rows(mirror) == before
    assert mirror.timeline(rid)[0].data["reason"] == "INC-4711 checkout errors"
    assert mirror.verify(controller_key(app)).ok
    mirror.close()


def test_offline_reads_work_with_the_controller_stopped(app: Appliance) -> None:
    rid = session(app)
    synced(app).close()
    app.stop()
    with open_mirror(app) as mirror:
        size = mirror.audit_size()
        assert size > 0 and mirror.audit_count() == size
        assert mirror.audit_rows(0, 5)[0].seq == size
        assert mirror.timeline(rid)[0].event == "request.submitted"
        assert mirror.audit_count(AuditFilter(text="INC-4711")) >= 1
        assert mirror.verify(controller_key(app)).ok
        assert mirror.controller_key() == controller_key(app)
    path = mirror_path(ClientHome(app.identities["audrey"].home))
    assert Mirror.known_controller(path, app.url) == "acme-prod"


def test_filters_search_paging_and_timeline(app: Appliance) -> None:
    first = session(app, "alpha")
    second = session(app, "bravo")
    mirror = synced(app)
    size = mirror.audit_size()
    everything = [r.seq for r in mirror.audit_rows(0, size + 10)]
    assert everything == list(range(size, 0, -1))
    pages = [r.seq for offset in range(0, size, 7) for r in mirror.audit_rows(offset, 7)]
    assert pages == everything
    assert mirror.audit_entry(1) is not None and mirror.audit_entry(size + 1) is None

    by_session = AuditFilter(session=first)
    assert mirror.audit_count(by_session) == len(mirror.timeline(first))
    assert {r.session for r in mirror.audit_rows(0, 100, by_session)} == {first}
    approvals = mirror.audit_rows(0, 100, AuditFilter(event="approval.approve"))
    assert {r.session for r in approvals} == {first, second}
    assert {r.actor for r in approvals} == {"alice"}
    prefixed = mirror.audit_rows(0, 100, AuditFilter(event="session.*"))
    assert prefixed and all(r.event.startswith("session.") for r in prefixed)
    assert mirror.audit_count(AuditFilter(actor="olive", session=second)) == sum(
        r.actor == "olive" for r in mirror.timeline(second)
    )
    bravo = mirror.audit_rows(0, 100, AuditFilter(text="bravo"))
    assert [r.session for r in bravo] == [second]
    assert mirror.audit_count(AuditFilter(text="INC-4711 checkout")) == 2
    assert mirror.audit_count(AuditFilter(text="brav")) == 1  # word prefixes
    assert mirror.audit_count(AuditFilter(text="nothing-like-this")) == 0
    at = mirror.timeline(second)[0].at
    assert mirror.audit_count(AuditFilter(since=at, session=second)) == len(mirror.timeline(second))
    assert mirror.audit_count(AuditFilter(until="2000-01-01")) == 0
    assert mirror.audit_count(AuditFilter(since="1h")) == size
    assert mirror.audit_count(AuditFilter(since=at[:10], until=at[:10])) == size
    with pytest.raises(Refused, match="bad time"):
        mirror.audit_count(AuditFilter(since="yesterday-ish"))
    timeline = mirror.timeline(second)
    assert [r.seq for r in timeline] == sorted(r.seq for r in timeline)
    mirror.close()


def test_an_operator_reads_only_their_own_sessions_entries(tmp_path: Path) -> None:
    app = Appliance(tmp_path).setup()
    try:
        app.enrol("oscar", "operator")
        app.start()
        rid = session(app)
        with client(app, "olive") as c:
            mirror = open_mirror(app, "olive")
            with pytest.raises(ApiRefused, match="only their own sessions") as refused:
                mirror.sync(c, controller_key(app))
            assert refused.value.status == 403
            assert mirror.audit_size() == 0
            mirror.close()
            own = c.audit_entries(0, session=rid)["entries"]
        assert own and {json.loads(e["entry"])["session"] for e in own} == {rid}
        with client(app, "oscar") as c, pytest.raises(ApiRefused) as other:
            c.audit_entries(0, session=rid)
        assert other.value.status == 404
        # approvers and auditors read everything; the operator's refusal is itself audited
        mirror = synced(app, "alice")
        refusals = mirror.audit_rows(0, 10, AuditFilter(event="audit.read_refused"))
        assert [r.actor for r in refusals] == ["olive"]
        mirror.close()
    finally:
        app.close()


def test_concurrent_syncs_of_one_mirror_wait_for_each_other(app: Appliance) -> None:
    """The auditor's automatic sync and the verify dialog's sync, each with its own Mirror in
    its own thread: neither copies an entry twice (no UNIQUE violation), both succeed."""
    session(app)
    expected = 0
    start = threading.Barrier(2)
    results: list[SyncResult] = []
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            with open_mirror(app) as mirror, client(app, "audrey") as c:
                start.wait(timeout=10)
                results.append(mirror.sync(c, controller_key(app)))
        except BaseException as exc:
            errors.append(exc)

    for stage in ("fresh copy", "more entries"):
        if stage == "more entries":
            session(app, "second")
        threads = [threading.Thread(target=sync) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        first, second = results[-2:]
        assert first.rewritten is None and second.rewritten is None
        assert sorted([first.fetched, second.fetched])[0] == 0  # the second found nothing new
        assert first.size == second.size > expected
        assert first.fetched + second.fetched == first.size - expected
        expected = first.size
    with open_mirror(app) as mirror:
        verdict = mirror.verify(controller_key(app))
        assert verdict.ok and verdict.size == expected == len(controller_rows(app)), verdict
        seqs = mirror.db.conn.execute("SELECT seq FROM audit_entries ORDER BY seq").fetchall()
        assert [seq for (seq,) in seqs] == list(range(1, expected + 1))


# -- the store itself ------------------------------------------------------------------------


def test_views_are_kept_newest_first(tmp_path: Path) -> None:
    with Mirror(tmp_path / "mirror.db", "acme-prod") as mirror:
        old = {"id": "01A", "created_at": "2026-01-01T00:00:00Z", "state": "ended"}
        new = {"id": "01B", "created_at": "2026-01-02T00:00:00Z", "state": "pending"}
        mirror.save_views([old, new])
        mirror.save_views([{**new, "state": "active"}])
        assert [v["id"] for v in mirror.views()] == ["01B", "01A"]
        assert mirror.view("01B") == {**new, "state": "active"}
        assert mirror.view("nope") is None
    with Mirror(tmp_path / "mirror.db", "other-prod") as other:
        assert other.views() == []
    assert (tmp_path / "mirror.db").stat().st_mode & 0o777 == 0o600


def test_the_catalog_is_kept_and_names_the_controller_at_its_address(tmp_path: Path) -> None:
    path = tmp_path / "mirror.db"
    resources = [{"name": "status-page", "kind": "service", "privileges": ["use"]}]
    assert Mirror.known_controller(path, "unix:/run/bgctl.sock") is None  # no file yet
    with Mirror(path, "acme-prod") as mirror:
        assert mirror.catalog() is None
        mirror.save_catalog("unix:/run/bgctl.sock", resources, {"controller_id": "acme-prod"})
        assert mirror.catalog() == (resources, {"controller_id": "acme-prod"})
        mirror.save_catalog("unix:/run/bgctl.sock", [], {"controller_id": "acme-prod"})
        assert mirror.catalog() == ([], {"controller_id": "acme-prod"})  # replaced, not merged
    with Mirror(path, "acme-stage") as stage:
        stage.save_catalog("https://stage:8443", resources, {"controller_id": "acme-stage"})
    # Each address names the controller last seen there; an unknown one, none (two are held).
    assert Mirror.known_controller(path, "unix:/run/bgctl.sock") == "acme-prod"
    assert Mirror.known_controller(path, "https://stage:8443") == "acme-stage"
    assert Mirror.known_controller(path, "https://elsewhere") is None
    # The address is redeployed with another controller: the newer answer wins.
    with Mirror(path, "acme-prod-2") as redeployed:
        redeployed.save_catalog("unix:/run/bgctl.sock", resources, {})
    assert Mirror.known_controller(path, "unix:/run/bgctl.sock") == "acme-prod-2"


def test_a_version_1_mirror_is_upgraded_in_place_and_keeps_what_it_held(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from bgtui.mirror_schema import v1_initial

    path = tmp_path / "mirror.db"
    db = Database(path)
    v1_initial(db)
    db.execute("PRAGMA user_version = 1")
    view = {"id": "01A", "created_at": "2026-01-01T00:00:00Z", "state": "ended"}
    db.execute(
        "INSERT INTO views (controller, id, created_at, state, view) VALUES (?, ?, ?, ?, ?)",
        ["acme-prod", "01A", view["created_at"], "ended", json.dumps(view)],
    )
    db.conn.commit()
    db.close()
    with Mirror(path, "acme-prod") as mirror:
        assert mirror.views() == [view]
        assert mirror.catalog() is None
        mirror.save_catalog("unix:/x.sock", [], {"controller_id": "acme-prod"})
        version = mirror.db.conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS) == 2


def test_a_mirror_from_a_newer_bgtui_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mirror.db"
    Mirror(path, "acme-prod").close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    before = path.read_bytes()
    with pytest.raises(Refused, match="newer than this bgtui understands"):
        Mirror(path, "acme-prod")
    assert path.read_bytes() == before


def test_an_older_view_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """An action's answer can arrive after a newer event: the higher revision stays."""
    with Mirror(tmp_path / "mirror.db", "acme-prod") as mirror:
        active = {"id": "01A", "created_at": "2026-01-01T00:00:00Z", "state": "active"}
        mirror.save_views([{**active, "revision": 20}])
        mirror.save_views([{**active, "state": "activating", "revision": 10}])
        assert mirror.view("01A") == {**active, "revision": 20}
        mirror.save_views([{**active, "state": "pending"}])  # no revision: counts as 0
        assert mirror.view("01A") == {**active, "revision": 20}
        assert [v["state"] for v in mirror.views()] == ["active"]
        mirror.save_views([{**active, "detail": "again", "revision": 20}])  # equal: replaces
        assert mirror.view("01A") == {**active, "detail": "again", "revision": 20}
        mirror.save_views([{**active, "state": "ended", "revision": 30}])
        assert mirror.view("01A") == {**active, "state": "ended", "revision": 30}
        # without revisions (older controllers) the last one saved wins, as before
        mirror.save_views([{"id": "01B", "state": "pending"}, {"id": "01B", "state": "active"}])
        mirror.save_views([{"id": "01B", "state": "ended"}])
        assert mirror.view("01B") == {"id": "01B", "state": "ended"}


def _fill(mirror: Mirror, count: int) -> None:
    prev, rows = GENESIS, []
    for seq in range(1, count + 1):
        entry = json.dumps(
            {"actor": "a", "at": "2026-01-01T00:00:00Z", "data": {}, "event": "e", "seq": seq},
            separators=(",", ":"),
        )
        digest = chain_hash(prev, entry.encode())
        rows.append(("acme-prod", seq, entry, prev, digest))
        prev = digest
    mirror.db.conn.executemany(
        "INSERT INTO audit_entries (controller, seq, entry, prev_hash, hash) VALUES (?,?,?,?,?)",
        rows,
    )
    key = PrivateKey.generate()
    signed = Checkpoint("acme-prod", count, prev, "2026-01-01T00:00:00Z").sign(key)
    mirror.db.conn.execute(
        "INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?, ?)",
        ("acme-prod", count, prev, signed.payload.decode(), signed.signature, "now"),
    )
    mirror.db.conn.execute(
        "INSERT INTO controllers (id, key) VALUES (?, ?)", ("acme-prod", key.public.openssh())
    )
    mirror.db.conn.commit()


def test_local_tampering_is_named_by_verify(tmp_path: Path) -> None:
    with Mirror(tmp_path / "mirror.db", "acme-prod") as mirror:
        _fill(mirror, 25_000)
        key = mirror.controller_key()
        assert key is not None
        assert mirror.verify(key).ok
        mirror.db.conn.execute(
            "UPDATE audit_entries SET entry = replace(entry, '\"a\"', '\"b\"') WHERE seq = 12345"
        )
        verdict = mirror.verify(key)
        assert not verdict.ok and verdict.first_bad == 12345, verdict
        assert "entry 12345 was modified" in str(verdict)
        assert not mirror.verify(PrivateKey.generate().public).ok


def test_the_tuis_store_thread_makes_the_mirror_when_the_catalog_names_the_controller(
    tmp_path: Path,
) -> None:
    """Views that arrive before the catalog are held, then written to the mirror the catalog
    names; a catalog naming another controller at that address switches mirrors."""
    from functools import partial

    from bgtui.app import open_mirror
    from bgtui.tui_link import ThreadCache

    home = ClientHome(tmp_path / "home")
    url = "unix:/run/bgctl.sock"
    first = {"id": "01A", "created_at": "2026-01-01T00:00:00Z", "state": "pending"}
    cache = ThreadCache(partial(open_mirror, home, url))
    try:
        cache.save_views([first])
        assert cache.views() == [] and not mirror_path(home).exists()  # no controller named yet
        cache.save_catalog(url, [{"name": "db"}], {"controller_id": "acme-prod"})
        assert cache.views() == [first]
        assert cache.catalog() == ([{"name": "db"}], {"controller_id": "acme-prod"})
        cache.save_catalog(url, [], {"controller_id": "acme-prod-2"})  # redeployed there
        assert cache.views() == []
    finally:
        cache.close()
    with Mirror(mirror_path(home), "acme-prod") as mirror:
        assert mirror.views() == [first]
    assert Mirror.known_controller(mirror_path(home), url) == "acme-prod-2"
