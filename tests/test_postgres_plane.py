"""PostgreSQL credentials minted by the approved `postgres-role` recipe, against a real server.

A real `bgctl serve` (tests/servers.py) serves an `orders-db` resource backed by a throwaway
PostgreSQL cluster (initdb/pg_ctl, seeded with database `orders` and the group roles
`bg_readonly` / `bg_readwrite`). Everything is driven with the real `bgtui` CLI and checked with
real clients: `psql` for what the operator does, psycopg as the server's admin for what exists.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests.helpers import ok, run, wait_state
from tests.relay import Party, error_of, request_row
from tests.servers import Appliance
from ulid import ULID

from bgtui.protocol.timefmt import parse_utc
from controller.recipes import builtin_path
from controller.sandbox import postgres as pgsandbox
from controller.sandbox.postgres import ThrowawayPostgres

pytestmark = pytest.mark.timeout(120)
View = dict[str, Any]
RECIPE_TEXT = (builtin_path("postgres-role") or Path("missing")).read_text()

CATALOG = """
[[resources]]
name = "orders-db"
description = "Orders database, production"
kind = "postgres"
address = "127.0.0.1:{port}"
network = "direct"
credential = "command"
recipe = "postgres-role"
privileges = ["readonly", "readwrite"]
grants = {{ readonly = "bg_readonly", readwrite = "bg_readwrite" }}
options = {{ database = "orders", admin_dsn_file = "secrets/pg-admin.dsn" }}

[[resources]]
name = "orders-db-custom"
description = "Orders database, through a recipe file in the controller's home"
kind = "postgres"
address = "127.0.0.1:{port}"
network = "direct"
credential = "command"
recipe = "recipes/pg-role.toml"
privileges = ["readonly"]
grants = {{ readonly = "bg_readonly" }}
options = {{ database = "orders", admin_dsn_file = "secrets/pg-admin.dsn" }}

[[resources]]
name = "orders-db-typo"
description = "A recipe whose statement fails right at the password"
kind = "postgres"
address = "127.0.0.1:{port}"
network = "direct"
credential = "command"
recipe = "recipes/pg-typo.toml"
privileges = ["readonly"]
grants = {{ readonly = "bg_readonly" }}
options = {{ database = "orders", admin_dsn_file = "secrets/pg-admin.dsn" }}
"""


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayPostgres]:
    reason = pgsandbox.available()
    if reason is not None:
        pytest.fail(reason)  # `make test` installs PostgreSQL; missing is a failure, not a skip
    with ThrowawayPostgres() as server:
        server.seed()
        # Let readwrite sessions create tables in `orders`, so a session can own objects in a
        # database other than the admin DSN's (`postgres`): teardown must clean up there too.
        with psycopg.connect(server.dsn(server.user, server.password), autocommit=True) as conn:
            conn.execute("GRANT CREATE ON SCHEMA public TO bg_readwrite")
        yield server


@pytest.fixture(scope="module")
def app(pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    appliance = Appliance(
        tmp_path_factory.mktemp("pgplane"),
        extra_catalog=CATALOG.format(port=pg.port),
        secret_files={"secrets/pg-admin.dsn": pg.admin_dsn},
    )
    try:
        with pytest.MonkeyPatch.context() as env:  # module scope: isolate like conftest does
            env.setenv("HOME", str(appliance.root / "user"))
            for name in ("BGTUI_HOME", "BGCTL_HOME", "BGTUI_CONTROLLER", "SSH_AUTH_SOCK"):
                env.delenv(name, raising=False)
            appliance.setup()
            recipes = appliance.home / "recipes"
            recipes.mkdir()
            (recipes / "pg-role.toml").write_text(RECIPE_TEXT)
            typo = RECIPE_TEXT.replace("PASSWORD {password}", "PASSWORD {password} {password}")
            (recipes / "pg-typo.toml").write_text(typo)
            appliance.start()
        yield appliance
    finally:
        appliance.close()


# -- helpers ----------------------------------------------------------------------------------


def submit(
    app: Appliance, privilege: str, duration: str = "10m", resource: str = "orders-db"
) -> str:
    args = ["request", resource, "--privilege", privilege, "--duration", duration, "--json"]
    view: View = json.loads(ok(app.bgtui("olive", *args, "--reason", "INC-4711 stuck orders")))
    assert view["state"] == "pending"
    return str(view["id"])


def activate(app: Appliance, rid: str) -> tuple[str, View]:
    """Approves `rid` with the real CLI; returns what `approve` printed and the active view."""
    printed = ok(app.bgtui("alice", "approve", rid, "--yes"))
    view = wait_state(app, rid, "active", "failed")
    assert view["state"] == "active", view["ended_reason"]
    return printed, view


def exports(app: Appliance, rid: str) -> str:
    return ok(app.bgtui("olive", "creds", rid, "--env"))


def variables(exported: str) -> dict[str, str]:
    """What `eval "$(bgtui creds ID --env)"` sets, read back from a real shell."""
    script = 'eval "$1"; env -0'
    clean = {"PATH": os.environ["PATH"]}
    done = subprocess.run(
        ["bash", "-c", script, "_", exported], capture_output=True, env=clean, check=True
    )
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"PG")}


def psql(exported: str, statement: str) -> subprocess.CompletedProcess[str]:
    """Real `psql`, configured only by the exported variables (no ~/.psqlrc, no ~/.pgpass)."""
    script = 'eval "$1"; exec psql -X -v ON_ERROR_STOP=1 -tAc "$2"'
    clean = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "LC_ALL": "C"}
    return subprocess.run(
        ["bash", "-c", script, "_", exported, statement],
        capture_output=True,
        text=True,
        env=clean,
        timeout=30,
        check=False,
    )


def admin(pg: ThrowawayPostgres, database: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(pg.dsn(pg.user, pg.password, database), autocommit=True)


def role_row(pg: ThrowawayPostgres, role: str) -> tuple[Any, ...] | None:
    with admin(pg) as conn:
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT rolname, rolcanlogin, rolvaliduntil FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        return row


def role_of(rid: str) -> str:
    return f"bg_{rid.lower()}"


def assert_nowhere(app: Appliance, pg: ThrowawayPostgres, secret: str) -> None:
    """The minted password is in no file of the controller (state.db and its WAL, audit head,
    log) or of any client home, and never reached PostgreSQL (its log)."""
    needle = secret.encode()
    roots = [app.home, app.root / "clients"]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    files += [app.log, pg.log_path]
    names = {p.name for p in files}
    assert {"state.db", "bgctl.log", "postgres.log"} <= names, names
    for path in files:
        if path.is_socket():
            continue
        assert needle not in path.read_bytes(), f"the minted password is in {path}"


# -- the whole session ------------------------------------------------------------------------


def test_readonly_session_works_refuses_writes_and_is_cut_at_the_end(
    app: Appliance, pg: ThrowawayPostgres
) -> None:
    rid = submit(app, "readonly")
    printed, view = activate(app, rid)

    # The approver was shown the recipe file verbatim and every input, before signing.
    screen = "\n".join(line.rstrip() for line in printed.splitlines())
    shown = "\n".join(f"      {line}".rstrip() for line in RECIPE_TEXT.rstrip("\n").split("\n"))
    assert shown in screen, printed
    for line in (
        "recipe: postgres-role",
        "privilege = readonly",
        "group_role = bg_readonly",
        "database = orders",
        "host = 127.0.0.1",
        f"port = {pg.port}",
    ):
        assert f"    {line}" in printed or f"  {line}" in printed, (line, printed)

    # The role exists, in the approved group role, valid until the session's expiry.
    role = role_of(rid)
    row = role_row(pg, role)
    assert row is not None and row[1] is True
    expires = parse_utc(view["expires_at"])
    assert abs(row[2] - expires) <= timedelta(seconds=3), (row[2], expires)
    with admin(pg) as conn:
        member = conn.execute(
            "SELECT pg_has_role(%s, 'bg_readonly', 'MEMBER'),"
            " pg_has_role(%s, 'bg_readwrite', 'MEMBER')",
            (role, role),
        ).fetchone()
    assert member == (True, False)

    # The operator's credential, as libpq variables real psql uses.
    exported = exports(app, rid)
    env = variables(exported)
    assert set(env) >= {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"}
    assert env["PGUSER"] == role and env["PGDATABASE"] == "orders"
    assert env["PGPORT"] == str(pg.port)
    password = env["PGPASSWORD"]
    counted = psql(exported, "SELECT count(*) FROM orders")
    assert counted.returncode == 0, counted.stderr
    assert int(counted.stdout.strip()) >= 3
    assert psql(exported, "SELECT current_user").stdout.strip() == role
    # ...and nothing beyond the approved privilege.
    insert = psql(exported, "INSERT INTO orders (customer, total) VALUES ('mallory', 1)")
    assert insert.returncode != 0 and "permission denied" in insert.stderr, insert.stderr
    create = psql(exported, "CREATE TABLE sneaky (x int)")
    assert create.returncode != 0 and "permission denied" in create.stderr, create.stderr
    # A wrong password is refused, so the check above proves the minted one.
    wrong = psql(exported.replace(password, "not-the-password"), "SELECT 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr

    # A connection opened during the session, still open when it ends...
    live = psycopg.connect(pg.dsn(role, password), autocommit=True)
    try:
        assert live.execute("SELECT count(*) FROM orders").fetchone() is not None
        ok(app.bgtui("olive", "end", rid))
        ended = wait_state(app, rid, "ended")
        assert ended["ended_reason"] == "ended by operator"
        # ...is cut: PostgreSQL keeps sessions of a dropped role; the teardown does not.
        with pytest.raises(psycopg.OperationalError):
            live.execute("SELECT count(*) FROM orders")
    finally:
        live.close()
    assert role_row(pg, role) is None
    with admin(pg) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
        ).fetchone()
    assert left == (0,)
    after = psql(exported, "SELECT 1")
    assert after.returncode != 0 and "password authentication failed" in after.stderr

    # The signed receipt lists the role and when it was removed.
    text = ok(app.bgtui("olive", "show", rid))
    assert "receipt: signed by acme-prod" in text, text
    receipt = text.split("receipt: signed by acme-prod", 1)[1].splitlines()
    line = next(line for line in receipt if "postgres-role" in line)
    assert role in line and "removed 20" in line and "removed None" not in line, line
    assert "the role and its connections are gone" in line, line
    receipt_views = [s for s in ended["planes"] if s["kind"] == "postgres-role"]
    assert {(s["action"], s["state"]) for s in receipt_views} == {
        ("mint", "done"),
        ("teardown", "done"),
    }
    assert_nowhere(app, pg, password)


def test_readwrite_session_writes_and_what_it_owns_elsewhere_is_reassigned(
    app: Appliance, pg: ThrowawayPostgres
) -> None:
    rid = submit(app, "readwrite")
    activate(app, rid)
    role = role_of(rid)
    exported = exports(app, rid)
    password = variables(exported)["PGPASSWORD"]
    insert = psql(exported, "INSERT INTO orders (customer, total) VALUES ('hooli', 42)")
    assert insert.returncode == 0, insert.stderr
    # The session creates a table in `orders` (not the admin DSN's database `postgres`):
    # DROP OWNED / REASSIGN OWNED act per database, so teardown must run them there.
    made = psql(exported, "CREATE TABLE incident_notes (note text); INSERT INTO incident_notes"
                " VALUES ('checked')")  # fmt: skip
    assert made.returncode == 0, made.stderr
    with admin(pg, "orders") as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'incident_notes'"
        ).fetchone()
    assert owner == (role,)

    ok(app.bgtui("olive", "end", rid))
    ended = wait_state(app, rid, "ended")
    assert ended["ended_reason"] == "ended by operator"
    assert role_row(pg, role) is None
    with admin(pg, "orders") as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'incident_notes'"
        ).fetchone()
        conn.execute("DROP TABLE incident_notes")
    assert owner == (pg.user,)  # reassigned to the admin, not lost and not blocking DROP ROLE
    assert_nowhere(app, pg, password)


def test_expiry_drops_the_role_by_itself(app: Appliance, pg: ThrowawayPostgres) -> None:
    rid = submit(app, "readonly", duration="5s")
    activate(app, rid)
    role = role_of(rid)
    assert role_row(pg, role) is not None
    exported = exports(app, rid)
    assert psql(exported, "SELECT 1").returncode == 0
    ended = wait_state(app, rid, "ended", timeout=30)
    assert ended["ended_reason"] == "expired"
    assert role_row(pg, role) is None
    assert psql(exported, "SELECT 1").returncode != 0


# -- recipes are bound to the approval ---------------------------------------------------------


def test_a_recipe_changed_after_the_request_fails_activation_and_mints_nothing(
    app: Appliance, pg: ThrowawayPostgres
) -> None:
    recipe = app.home / "recipes" / "pg-role.toml"
    rid = submit(app, "readonly", resource="orders-db-custom")
    original = recipe.read_text()
    try:
        # Someone widens the recipe between the request and the approval.
        recipe.write_text(original.replace("IN ROLE {group_role}", "SUPERUSER"))
        printed = ok(app.bgtui("alice", "approve", rid, "--yes"))
        assert "IN ROLE {group_role}" in printed  # the approver saw (and signed) the original
        failed = wait_state(app, rid, "failed", "active")
        assert failed["state"] == "failed", failed
        assert "changed since it was approved" in failed["ended_reason"], failed["ended_reason"]
        assert role_row(pg, role_of(rid)) is None
        # The role announced as an intent was torn down anyway (idempotently: it never existed).
        removal = [s for s in failed["planes"] if s["kind"] == "postgres-role"]
        assert [(s["action"], s["state"]) for s in removal] == [
            ("mint", "failed"),
            ("teardown", "done"),
        ]
        # A request made against the recipe as it now is activates normally.
        again = submit(app, "readonly", resource="orders-db-custom")
    finally:
        recipe.write_text(original)
    # ...but the recipe changed back again, so this one fails as well: the approval binds the hash.
    ok(app.bgtui("alice", "approve", again, "--yes"))
    assert (
        "changed since it was approved"
        in wait_state(app, again, "failed", "active")["ended_reason"]
    )
    assert role_row(pg, role_of(again)) is None


def test_a_request_must_carry_the_recipe_and_inputs_as_the_controller_has_them(
    app: Appliance,
) -> None:
    olive = Party.of(app, "olive")
    honest = json.loads(ok(app.bgtui("olive", "resources", "--json")))
    command = next(r for r in honest if r["name"] == "orders-db")["commands"]["readonly"]
    assert command["text"] == RECIPE_TEXT and command["recipe"] == "postgres-role"
    base = {
        "resource": "orders-db",
        "privilege": "readonly",
        "credential_source": "command",
        "network_path": "direct",
    }
    cases = {
        "does not carry recipe postgres-role as it is now": {
            **command,
            "text": command["text"].replace("IN ROLE {group_role}", "SUPERUSER"),
        },
        "recipe inputs differ": {
            **command,
            "inputs": {**command["inputs"], "group_role": "bg_readwrite"},
        },
        "as it is now": None,
    }
    for expected, tampered in cases.items():
        signed, req = olive.new_request(**base, command=tampered)
        response = olive.submit(signed)
        assert response.status_code == 422, response.text
        assert expected in error_of(response), error_of(response)
        assert request_row(app, req.id) is None
    # A relay that rewrites the command of an honestly signed request breaks its signature.
    signed, req = olive.new_request(**base, command=command)
    body = signed.to_json()
    forged = json.loads(json.dumps(body).replace("IN ROLE {group_role}", "SUPERUSER"))
    assert forged != body
    response = olive.call("POST", "/v1/requests", forged)
    assert response.status_code == 422, response.text
    assert request_row(app, req.id) is None


def test_a_failing_statement_is_reported_without_the_password(
    app: Appliance, pg: ThrowawayPostgres
) -> None:
    rid = submit(app, "readonly", resource="orders-db-typo")
    ok(app.bgtui("alice", "approve", rid, "--yes"))
    failed = wait_state(app, rid, "failed", "active")
    reason = failed["ended_reason"]
    assert failed["state"] == "failed" and "syntax error" in reason, reason
    # PostgreSQL echoes the token it choked on: the SCRAM verifier the recipe bound for
    # {password} (the password itself never leaves the controller). It is blanked out.
    assert "[redacted]" in reason and "SCRAM-SHA-256$" not in reason, reason
    assert "\n" not in reason
    assert role_row(pg, role_of(rid)) is None
    assert "SCRAM-SHA-256$" not in app.log.read_text()


# -- sweep ------------------------------------------------------------------------------------


def test_sweep_finds_and_removes_a_leftover_session_role(
    app: Appliance, pg: ThrowawayPostgres
) -> None:
    # A role of this controller's ended session, back (restored from a backup, say); and a
    # role of a session this controller never had: another controller's, on the same server.
    rid = submit(app, "readwrite")
    activate(app, rid)
    ok(app.bgtui("olive", "end", rid))
    wait_state(app, rid, "ended")
    leftover, foreign = role_of(rid), f"bg_{str(ULID()).lower()}"
    with admin(pg) as conn:
        for role in (leftover, foreign):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'x' IN ROLE bg_readwrite").format(
                    sql.Identifier(role)
                )
            )
    with admin(pg, "orders") as conn:  # it owns something outside the admin DSN's database
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(leftover)))
        conn.execute("CREATE TABLE leftover_scratch (x int)")
    home = str(app.home)
    dry = run("bgctl", "--home", home, "sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove postgres-role {leftover} on orders-db" in dry.stdout, dry.stdout
    assert "bg_readonly" not in dry.stdout and "bg_readwrite" not in dry.stdout
    assert foreign not in dry.stdout
    assert role_row(pg, leftover) is not None

    swept = run("bgctl", "--home", home, "sweep")
    assert swept.returncode == 0, swept.stderr
    assert f"removed postgres-role {leftover} on orders-db" in swept.stdout, swept.stdout
    assert role_row(pg, leftover) is None
    with admin(pg, "orders") as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'leftover_scratch'"
        ).fetchone()
        conn.execute("DROP TABLE leftover_scratch")
    assert owner == (pg.user,)
    again = run("bgctl", "--home", home, "sweep", "--dry-run")
    assert leftover not in again.stdout
    assert role_row(pg, foreign) is not None  # never this controller's to drop
    with admin(pg) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(foreign)))


def test_connect_runs_psql_as_the_session_role(app: Appliance, pg: ThrowawayPostgres) -> None:
    """`bgtui connect` (the same launcher the TUI hands the terminal to) opens psql."""
    rid = submit(app, "readonly")
    activate(app, rid)
    done = app.bgtui("olive", "connect", rid, input="select current_user, count(*) from orders;\n")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if role_of(rid) in line)
    user, count = (cell.strip() for cell in row.split("|"))
    assert user == role_of(rid) and int(count) >= 3, done.stdout  # other tests may add rows
    ok(app.bgtui("olive", "end", rid))
