"""Operational command: an approved recipe mints the credential or reads it from a store.

`sql` recipes run their exact statements through psycopg as the resource's admin DSN (the
built-in `postgres-role` creates a login role valid until the session's expiry and drops it at
teardown). Secret-store recipes (`file`, `env`, `command`, `kubernetes-secret`) read an existing
credential and create nothing. Either way the value is sealed to the operator, never stored.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bgtui.protocol.objects import Request
from bgtui.protocol.timefmt import utc_text
from controller.config import Resource
from controller.planes.base import Artifact, Minted, PlaneError, SessionContext
from controller.recipes import Recipe, load_recipe

if TYPE_CHECKING:
    from controller.sweep import Leftover

COMMAND_TIMEOUT = 30.0


def role_name(session_id: str) -> str:
    return "bg_" + session_id.lower()


def address_parts(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host or address, port


def recipe_inputs(resource: Resource, privilege: str) -> dict[str, str]:
    """The named inputs an approver sees beside the recipe text, for one privilege."""
    host, port = address_parts(resource.address)
    inputs = {
        "privilege": privilege,
        "group_role": resource.grants.get(privilege, privilege),
        "host": host,
        "port": port,
        "role_name": "bg_<session id>",
    }
    database = resource.options.get("database")
    if isinstance(database, str):
        inputs["database"] = database
    return inputs


def expected_command(resource: Resource, privilege: str, home: Path) -> dict[str, Any]:
    """The exact `command` a request for `privilege` on `resource` must carry."""
    assert resource.recipe is not None
    return load_recipe(resource.recipe, home).command(recipe_inputs(resource, privilege))


def _looks_like_session(text: str) -> bool:
    """Session ids are lowercased ULIDs: 26 characters of Crockford base32."""
    return len(text) == 26 and all(c in "0123456789abcdefghjkmnpqrstvwxyz" for c in text)


class RecipeCredential:
    """Runs an approved recipe; checks its hash again before running it."""

    plane: ClassVar[str] = "credential"
    name: ClassVar[str] = "recipe"

    def __init__(self, home: Path) -> None:
        self.home = home

    def _recipe(self, resource: Resource) -> Recipe:
        if resource.recipe is None:
            raise PlaneError(f'{resource.name}: credential = "command" needs a recipe')
        return load_recipe(resource.recipe, self.home)

    def prepare(self, resource: Resource, request: Request | None) -> str:
        recipe = self._recipe(resource)
        summary = f"recipe {recipe.name} ({recipe.kind}, sha256 {recipe.sha256[:12]}…)"
        return f"{summary}: {recipe.description}"

    def planned(self, ctx: SessionContext) -> list[Artifact]:
        recipe = self._recipe(ctx.resource)
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
            await asyncio.to_thread(self._run_sql, ctx, recipe.mint, values)
            artifact = Artifact(self.plane, self.name, "postgres-role", values["role_name"])
            return Minted([artifact], self._outputs(recipe, values))
        value = await asyncio.to_thread(self._read_secret, ctx, recipe)
        values["value"] = value
        return Minted([], self._outputs(recipe, values) if recipe.outputs else {"value": value})

    async def teardown(self, ctx: SessionContext, artifact: Artifact) -> str:
        recipe = self._recipe(ctx.resource)
        if artifact.kind != "postgres-role":
            return "nothing to remove"
        values = self._values(ctx, recipe, password="")
        await asyncio.to_thread(self._run_sql, ctx, recipe.teardown, values)
        return f"ran {len(recipe.teardown)} teardown statements of {recipe.name}"

    def sweep(self, resource: Resource, live: set[str], dry_run: bool) -> list[Leftover]:
        """PostgreSQL roles named bg_<session> whose session is not live."""
        import psycopg

        from controller.sweep import Leftover

        recipe = self._recipe(resource)
        if recipe.kind != "sql":
            return []
        try:
            with psycopg.connect(
                self._admin_dsn(resource), autocommit=True, connect_timeout=10
            ) as conn:
                rows = conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'bg\\_%' ESCAPE '\\'"
                ).fetchall()
        except psycopg.Error as exc:
            raise PlaneError(f"postgres: {str(exc).strip().splitlines()[0]}") from None
        found = []
        for (name,) in rows:
            session = name.removeprefix("bg_")
            if session in live or not _looks_like_session(session):
                continue
            if not dry_run:
                values = {"role_name": name, "password": "", "valid_until": "infinity"}
                self._run_sql_as(resource, recipe.teardown, values)
            found.append(Leftover(resource.name, "postgres-role", name, session, not dry_run))
        return found

    # helpers ----------------------------------------------------------------------------
    def _values(
        self, ctx: SessionContext, recipe: Recipe, password: str | None = None
    ) -> dict[str, str]:
        inputs = dict((ctx.request.command or {}).get("inputs") or {})
        values = {k: str(v) for k, v in inputs.items()}
        values.update(recipe.inputs)
        values["role_name"] = role_name(ctx.session_id)
        values["password"] = secrets.token_urlsafe(24) if password is None else password
        expires = ctx.expires_at
        values["valid_until"] = utc_text(expires) if expires else "infinity"
        return values

    @staticmethod
    def _outputs(recipe: Recipe, values: dict[str, str]) -> dict[str, str]:
        try:
            return {key: template.format(**values) for key, template in recipe.outputs.items()}
        except KeyError as exc:
            raise PlaneError(f"recipe {recipe.name}: output names unknown input {exc}") from None

    def _admin_dsn(self, resource: Resource) -> str:
        env = resource.options.get("admin_dsn_env")
        if isinstance(env, str) and os.environ.get(env):
            return os.environ[env]
        path = resource.options.get("admin_dsn_file")
        if isinstance(path, str):
            try:
                return (self.home / path).read_text().strip()
            except OSError as exc:
                raise PlaneError(
                    f"{resource.name}: cannot read admin_dsn_file: {exc.strerror}"
                ) from None
        raise PlaneError(f"{resource.name}: set options.admin_dsn_file or options.admin_dsn_env")

    def _run_sql(
        self, ctx: SessionContext, statements: tuple[str, ...], values: dict[str, str]
    ) -> None:
        self._run_sql_as(ctx.resource, statements, values)

    def _run_sql_as(
        self, resource: Resource, statements: tuple[str, ...], values: dict[str, str]
    ) -> None:
        import psycopg
        from psycopg import sql

        params = {
            "role": sql.Identifier(values["role_name"]),
            "group_role": sql.Identifier(values.get("group_role", "")),
            "role_name": sql.Literal(values["role_name"]),
            "password": sql.Literal(values["password"]),
            "valid_until": sql.Literal(values["valid_until"]),
            "database": sql.Identifier(values.get("database", "")),
        }
        try:
            with psycopg.connect(
                self._admin_dsn(resource), autocommit=True, connect_timeout=10
            ) as conn:
                for statement in statements:
                    conn.execute(sql.SQL(statement).format(**params))
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PlaneError(f"postgres: {first}") from None

    def _read_secret(self, ctx: SessionContext, recipe: Recipe) -> str:
        if recipe.kind == "file":
            path = self.home / recipe.source["path"]
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise PlaneError(
                    f"recipe {recipe.name}: cannot read {path}: {exc.strerror}"
                ) from None
        if recipe.kind == "env":
            var = recipe.source["var"]
            if var not in os.environ:
                raise PlaneError(f"recipe {recipe.name}: ${var} is not set on the controller")
            return os.environ[var]
        if recipe.kind == "command":
            try:
                done = subprocess.run(
                    list(recipe.argv),
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PlaneError(f"recipe {recipe.name}: {recipe.argv[0]} failed: {exc}") from None
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or [""])[-1]
                raise PlaneError(
                    f"recipe {recipe.name}: {recipe.argv[0]} exited {done.returncode}: {tail}"
                )
            return done.stdout.strip()
        from controller.planes.credential.kubernetes import read_secret

        return read_secret(
            ctx,
            self.home,
            recipe.source["namespace"],
            recipe.source["secret"],
            recipe.source["key"],
        )
