"""Operational command: an approved recipe mints the credential or reads it from a store.

`sql` recipes run their exact statements through psycopg as the resource's admin DSN (the
built-in `postgres-role` creates a login role valid until the session's expiry and drops it at
teardown, cutting its live connections). Secret-store recipes (`file`, `env`, `command`,
`kubernetes-secret`) read an existing credential and create nothing. Either way the value is
sealed to the operator, never stored, logged or echoed in an error.

The password a `sql` recipe mints never reaches PostgreSQL either: `{password}` is bound to
its SCRAM-SHA-256 verifier, computed by libpq on the controller (as psql's `\\password` does).
Teardown runs the recipe text the approver approved (carried by the signed request), so a recipe
edited or deleted mid-session cannot change or block what the end of the session does.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bgtui.protocol.errors import Refused
from bgtui.protocol.objects import Request
from bgtui.protocol.timefmt import utc_text
from controller.config import Resource
from controller.planes.base import Artifact, Minted, PlaneError, SessionContext
from controller.recipes import Recipe, approved_recipe, load_recipe

if TYPE_CHECKING:
    import psycopg

    from controller.sweep import Leftover, Sessions

COMMAND_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10
BACKENDS_GONE_TIMEOUT = 10.0  # how long teardown waits for terminated connections to exit
ROLE_PREFIX = "bg_"
REDACTED = "[redacted]"
_SESSION_CHARS = frozenset("0123456789abcdefghjkmnpqrstvwxyz")


class RecipeProblem(PlaneError, Refused):
    """A recipe that cannot be loaded or used: refuses a request and fails a plane alike."""


def role_name(session_id: str) -> str:
    """`bg_<session id>`, lowercase, so the name needs no quoting surprises (29 characters)."""
    return ROLE_PREFIX + session_id.lower()


def address_parts(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, "5432"
    return host.removeprefix("[").removesuffix("]"), port


def recipe_inputs(resource: Resource, privilege: str, recipe: Recipe) -> dict[str, str]:
    """The named inputs an approver sees beside the recipe text, for one privilege."""
    host, port = address_parts(resource.address)
    inputs = {
        "privilege": privilege,
        "group_role": resource.grants.get(privilege, privilege),
        "host": host,
        "port": port,
    }
    database = resource.options.get("database")
    if isinstance(database, str) and database:
        inputs["database"] = database
    if recipe.kind == "sql":
        inputs.setdefault("database", "postgres")
        inputs["role_name"] = f"{ROLE_PREFIX}<session id, lowercase>"
        inputs["valid_until"] = "<session expiry>"
        inputs["password"] = "<random, sealed to the operator, never stored>"  # noqa: S105
    return inputs


def _load(ref: str, home: Path) -> Recipe:
    try:
        return load_recipe(ref, home)
    except Refused as exc:
        raise RecipeProblem(str(exc)) from None


def expected_command(resource: Resource, privilege: str, home: Path) -> dict[str, Any]:
    """The exact `command` a request for `privilege` on `resource` must carry."""
    if resource.recipe is None:
        raise RecipeProblem(f'{resource.name}: credential = "command" needs a recipe')
    recipe = _load(resource.recipe, home)
    return recipe.command(recipe_inputs(resource, privilege, recipe))


def _looks_like_session(text: str) -> bool:
    """Session ids are lowercased ULIDs: 26 characters of Crockford base32."""
    return len(text) == 26 and set(text) <= _SESSION_CHARS


def _first_line(exc: BaseException, secrets_: Iterable[str]) -> str:
    """The error's first line (and a PostgreSQL DETAIL), with every secret blanked out."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    detail = getattr(getattr(exc, "diag", None), "message_detail", None)
    if isinstance(detail, str) and detail.strip() and detail.strip() not in line:
        line = f"{line} ({detail.strip().splitlines()[0]})"
    for secret in secrets_:
        if secret:
            line = line.replace(secret, REDACTED)
    return line


class RecipeCredential:
    """Runs an approved recipe; checks its hash again before running it."""

    plane: ClassVar[str] = "credential"
    name: ClassVar[str] = "recipe"

    def __init__(self, home: Path) -> None:
        self.home = home

    def _recipe(self, resource: Resource) -> Recipe:
        """The recipe as the controller has it now."""
        if resource.recipe is None:
            raise RecipeProblem(f'{resource.name}: credential = "command" needs a recipe')
        return _load(resource.recipe, self.home)

    def _approved(self, ctx: SessionContext) -> Recipe:
        """The recipe as the request carried it and the approver approved it."""
        try:
            recipe = approved_recipe(ctx.request.command)
        except Refused as exc:
            raise RecipeProblem(str(exc)) from None
        return recipe if recipe is not None else self._recipe(ctx.resource)

    def prepare(self, resource: Resource, request: Request | None) -> str:
        recipe = self._recipe(resource)
        if recipe.kind == "sql":
            self._admin_dsn_source(resource)
        summary = f"recipe {recipe.name} ({recipe.kind}, sha256 {recipe.sha256[:12]}…)"
        return f"{summary}: {recipe.description}" if recipe.description else summary

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        recipe = self._approved(ctx)
        if recipe.kind != "sql":
            return []
        return [Artifact(self.plane, self.name, "postgres-role", role_name(ctx.session_id))]

    async def mint(self, ctx: SessionContext) -> Minted:
        recipe = self._recipe(ctx.resource)
        approved = (ctx.request.command or {}).get("sha256")
        if approved != recipe.sha256:
            raise PlaneError(f"recipe {recipe.name} changed since it was approved; request again")
        values = self._values(ctx, recipe)
        if recipe.kind == "sql":
            password = secrets.token_urlsafe(24)
            outputs = self._outputs(recipe, {**values, "password": password})  # fail before acting
            await asyncio.to_thread(self._mint_sql, ctx.resource, recipe, values, password)
            artifact = Artifact(self.plane, self.name, "postgres-role", values["role_name"])
            return Minted([artifact], outputs)
        value = await asyncio.to_thread(self._read_secret, ctx, recipe, values)
        if not recipe.outputs:
            return Minted([], {"value": value})
        return Minted([], self._outputs(recipe, {**values, "value": value}))

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        if artifact.kind != "postgres-role":
            return "nothing to remove"
        recipe = self._approved(ctx)
        if recipe.kind != "sql":
            return "nothing to remove"
        values = {**self._values(ctx, recipe), "role_name": artifact.name}
        return await asyncio.to_thread(
            self._teardown_sql, ctx.resource, recipe, artifact.name, values
        )

    def sweep(self, resource: Resource, sessions: Sessions, dry_run: bool) -> list[Leftover]:
        """PostgreSQL roles named bg_<session> of this controller's sessions that are not live.

        A role of a session this controller never had is left alone: it belongs to another
        controller using the same server (role names carry no controller id).
        """
        import psycopg

        from controller.sweep import Leftover

        recipe = self._recipe(resource)
        if recipe.kind != "sql":
            return []
        dsn = self._admin_dsn(resource)
        try:
            with self._connect(dsn) as conn:
                rows = conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'bg\\_%' ESCAPE '\\'"
                ).fetchall()
        except psycopg.Error as exc:
            raise PlaneError(f"postgres: {_first_line(exc, self._dsn_secrets(dsn))}") from None
        found = []
        for (name,) in rows:
            session = name.removeprefix(ROLE_PREFIX)
            if not _looks_like_session(session) or not sessions.known(session):
                continue
            if sessions.live(session):
                continue
            note, removed = "", False
            if not dry_run:
                try:
                    note, removed = self._teardown_sql(resource, recipe, name), True
                except PlaneError as exc:  # report it and go on with the other leftovers
                    note = f"not removed: {exc}"
            found.append(Leftover(resource.name, "postgres-role", name, session, removed, note))
        return found

    # values ------------------------------------------------------------------------------
    def _values(self, ctx: SessionContext, recipe: Recipe) -> dict[str, str]:
        """Inputs as approved (from the signed request), the recipe's own, and the session's."""
        inputs = (ctx.request.command or {}).get("inputs") or {}
        values = {str(k): str(v) for k, v in inputs.items()}
        values.update(recipe.inputs)
        values["role_name"] = role_name(ctx.session_id)
        values["session_id"] = ctx.session_id
        values.pop("password", None)
        expires = ctx.expires_at
        values["valid_until"] = utc_text(expires) if expires else "infinity"
        return values

    @staticmethod
    def _outputs(recipe: Recipe, values: dict[str, str]) -> dict[str, str]:
        try:
            return {key: template.format(**values) for key, template in recipe.outputs.items()}
        except (KeyError, IndexError, ValueError) as exc:
            raise RecipeProblem(
                f"recipe {recipe.name}: an output names an unknown input {exc}"
            ) from None

    # PostgreSQL --------------------------------------------------------------------------
    def _admin_dsn_source(self, resource: Resource) -> str:
        env = resource.options.get("admin_dsn_env")
        path = resource.options.get("admin_dsn_file")
        if isinstance(env, str) and env:
            return f"env {env}"
        if isinstance(path, str) and path:
            return f"file {path}"
        raise PlaneError(f"{resource.name}: set options.admin_dsn_file or options.admin_dsn_env")

    def _admin_dsn(self, resource: Resource) -> str:
        self._admin_dsn_source(resource)
        env = resource.options.get("admin_dsn_env")
        if isinstance(env, str) and env:
            if not os.environ.get(env):
                raise PlaneError(f"{resource.name}: ${env} (options.admin_dsn_env) is not set")
            return os.environ[env].strip()
        path = str(resource.options.get("admin_dsn_file"))
        try:
            return (self.home / path).read_text().strip()
        except OSError as exc:
            raise PlaneError(
                f"{resource.name}: cannot read admin_dsn_file {path}: {exc.strerror}"
            ) from None

    @staticmethod
    def _dsn_secrets(dsn: str) -> list[str]:
        from psycopg.conninfo import conninfo_to_dict

        try:
            password = conninfo_to_dict(dsn).get("password")
        except Exception:  # a malformed DSN: psycopg reports it on connect
            return []
        return [str(password)] if password else []

    @staticmethod
    def _connect(dsn: str, dbname: str | None = None) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg.conninfo import make_conninfo

        conninfo = make_conninfo(dsn, dbname=dbname) if dbname is not None else dsn
        return psycopg.connect(
            conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="bgctl"
        )

    @staticmethod
    def _params(values: dict[str, str], verifier: str | None) -> dict[str, Any]:
        from psycopg import sql

        params: dict[str, Any] = {
            "role": sql.Identifier(values["role_name"]),
            "role_name": sql.Literal(values["role_name"]),
        }
        for key in ("group_role", "database"):
            if values.get(key):
                params[key] = sql.Identifier(values[key])
        if "valid_until" in values:
            params["valid_until"] = sql.Literal(values["valid_until"])
        if verifier is not None:
            params["password"] = sql.Literal(verifier)
        return params

    @staticmethod
    def _execute(
        conn: psycopg.Connection[Any],
        recipe: Recipe,
        statements: tuple[str, ...],
        params: dict[str, Any],
    ) -> None:
        from psycopg import sql

        for statement in statements:
            try:
                query = sql.SQL(statement).format(**params)
            except (KeyError, IndexError, ValueError) as exc:
                raise RecipeProblem(
                    f"recipe {recipe.name}: a statement uses {exc}, which is not an input here"
                ) from None
            conn.execute(query)

    def _mint_sql(
        self, resource: Resource, recipe: Recipe, values: dict[str, str], password: str
    ) -> None:
        import psycopg

        dsn = self._admin_dsn(resource)
        hidden = [password, *self._dsn_secrets(dsn)]
        try:
            with self._connect(dsn) as conn:
                verifier = conn.pgconn.encrypt_password(
                    password.encode(), values["role_name"].encode(), b"scram-sha-256"
                ).decode()
                hidden.append(verifier)
                self._execute(conn, recipe, recipe.mint, self._params(values, verifier))
        except psycopg.Error as exc:
            raise PlaneError(f"postgres: {_first_line(exc, hidden)}") from None

    def _teardown_sql(
        self, resource: Resource, recipe: Recipe, role: str, values: dict[str, str] | None = None
    ) -> str:
        """Runs the recipe's teardown for `role`; idempotent (a role already gone is fine).
        `values` are the session's approved inputs (a sweep, which has none, passes only the
        role)."""
        import psycopg

        dsn = self._admin_dsn(resource)
        hidden = self._dsn_secrets(dsn)
        params = self._params({**(values or {}), "role_name": role}, None)
        try:
            with self._connect(dsn) as conn:
                row = conn.execute(
                    "SELECT oid FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone()
                if row is None:
                    return f"role {role} was already gone"
                oid = row[0]
                self._execute(conn, recipe, recipe.teardown, params)
                self._wait_backends_gone(conn, oid, role)
                databases = [
                    name
                    for (name,) in conn.execute(
                        "SELECT datname FROM pg_database"
                        " WHERE datallowconn AND NOT datistemplate ORDER BY datname"
                    ).fetchall()
                ]
            skipped = []
            for database in databases if recipe.teardown_each_database else []:
                try:
                    db_conn = self._connect(dsn, database)
                except psycopg.OperationalError:
                    skipped.append(database)  # if the role holds anything there, DROP ROLE says so
                    continue
                with db_conn:
                    self._execute(db_conn, recipe, recipe.teardown_each_database, params)
            with self._connect(dsn) as conn:
                self._execute(conn, recipe, recipe.teardown_last, params)
                gone = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                if gone is not None:
                    raise PlaneError(f"role {role} still exists after recipe {recipe.name} ran")
                # A login racing the NOLOGIN could have slipped in before the role was dropped.
                late = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = %s",
                    (oid,),
                ).fetchall()
        except psycopg.Error as exc:
            raise PlaneError(f"postgres: {_first_line(exc, hidden)}") from None
        steps = len(recipe.teardown) + len(recipe.teardown_last)
        how = (
            f"ran recipe {recipe.name}: {steps} statements once and "
            f"{len(recipe.teardown_each_database)} in each of {len(databases) - len(skipped)} "
            "databases; the role and its connections are gone"
        )
        if skipped:
            how += f" (could not connect to {', '.join(skipped)}; nothing of the role was left)"
        if late:
            how += f"; terminated {len(late)} late connection(s)"
        return how

    @staticmethod
    def _wait_backends_gone(conn: psycopg.Connection[Any], oid: int, role: str) -> None:
        """Terminated connections take a moment to exit; their locks would stall DROP OWNED."""
        deadline = time.monotonic() + BACKENDS_GONE_TIMEOUT
        while True:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usesysid = %s", (oid,)
            ).fetchone()
            if left is None or left[0] == 0:
                return
            if time.monotonic() > deadline:
                raise PlaneError(f"{left[0]} connection(s) of role {role} are still open")
            time.sleep(0.05)

    # secret stores -----------------------------------------------------------------------
    def _read_secret(self, ctx: SessionContext, recipe: Recipe, values: dict[str, str]) -> str:
        if recipe.kind == "file":
            path = self.home / recipe.source["path"]
            try:
                return path.read_text().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise PlaneError(f"recipe {recipe.name}: cannot read {path}: {reason}") from None
        if recipe.kind == "env":
            var = recipe.source["var"]
            if not os.environ.get(var):
                raise PlaneError(f"recipe {recipe.name}: ${var} is not set on the controller")
            return os.environ[var]
        if recipe.kind == "command":
            return self._run_command(recipe, values)
        from controller.planes.credential.kubernetes import read_secret

        return read_secret(
            ctx,
            self.home,
            recipe.source["namespace"],
            recipe.source["secret"],
            recipe.source["key"],
        )

    def _run_command(self, recipe: Recipe, values: dict[str, str]) -> str:
        """Runs argv (no shell) in the controller's home; inputs arrive as BGTUI_* variables."""
        env = dict(os.environ)
        for key, value in values.items():
            env["BGTUI_" + "".join(c if c.isalnum() else "_" for c in key).upper()] = value
        program = recipe.argv[0]
        try:
            done = subprocess.run(
                list(recipe.argv),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PlaneError(
                f"recipe {recipe.name}: {program} did not finish in {COMMAND_TIMEOUT:.0f}s"
            ) from None
        except OSError as exc:
            raise PlaneError(
                f"recipe {recipe.name}: cannot run {program}: {exc.strerror or exc}"
            ) from None
        value = done.stdout.rstrip("\r\n")
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or [""])[-1]
            if value:
                tail = tail.replace(value, REDACTED)
            raise PlaneError(
                f"recipe {recipe.name}: {program} exited {done.returncode}: {tail}".rstrip(": ")
            )
        if not value:
            raise PlaneError(f"recipe {recipe.name}: {program} printed nothing")
        return value
