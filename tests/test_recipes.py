"""Secret-store recipes: a credential read from the customer's store, sealed to the operator.

A real `bgctl serve` offers `service` resources whose credential comes from an approved recipe
that reads a file in the controller's home, an environment variable of the controller, or a
command's output. The operator gets the value with `bgtui creds`; the controller's store never
holds it. Recipe files are parsed strictly: unknown keys and missing fields are one-line errors
naming the file. (The Kubernetes-Secret recipe is tested with the Kubernetes simulator.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import ok, wait_state
from tests.servers import Appliance

from bgtui.protocol.errors import Refused
from controller.recipes import builtin_path, load_recipe, parse_recipe

pytestmark = pytest.mark.timeout(120)
View = dict[str, Any]

FILE_TOKEN = "file-token-7f3c9e1d2b"
ENV_TOKEN = "env-token-a81c55e0f4"
COMMAND_TOKEN = "command-token-0d9b2e6a37"
ENV_VAR = "BGTEST_STATUS_ADMIN_TOKEN"

RECIPES = {
    "recipes/file-token.toml": """\
# The status page's admin token, from a file only the controller can read.
kind = "file"
description = "reads secrets/status-token"
path = "secrets/status-token"
""",
    "recipes/env-token.toml": f"""\
kind = "env"
description = "reads ${ENV_VAR} of the controller"
var = "{ENV_VAR}"
""",
    "recipes/command-token.toml": """\
# A secret-store CLI stands here: argv runs without a shell, in the controller's home, with the
# request's inputs as BGTUI_* variables; its stdout is the secret.
kind = "command"
argv = ["sh", "-c", "cat secrets/cmd-token; printf '@%s' \\"$BGTUI_PRIVILEGE\\""]

[outputs]
STATUS_TOKEN = "{value}"
STATUS_URL = "http://{host}:{port}/"
""",
    "recipes/failing.toml": """\
kind = "command"
argv = ["sh", "-c", "cat secrets/cmd-token; echo 'vault: permission denied' >&2; exit 3"]
""",
    "recipes/broken.toml": """\
kind = "file"
path = "secrets/status-token"
mint = ["SELECT 1"]
""",
}

RESOURCE = """
[[resources]]
name = "{name}"
kind = "service"
address = "{address}"
network = "direct"
credential = "command"
recipe = "{recipe}"
privileges = ["use"]
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    root = tmp_path_factory.mktemp("recipes")
    appliance = Appliance(
        root,
        secret_files={
            "secrets/status-token": FILE_TOKEN + "\n",
            "secrets/cmd-token": COMMAND_TOKEN,
        },
    )
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HOME", str(root / "user"))  # module scope: isolate like conftest does
            for name in ("BGTUI_HOME", "BGCTL_HOME", "BGTUI_CONTROLLER", "SSH_AUTH_SOCK"):
                env.delenv(name, raising=False)
            env.setenv(ENV_VAR, ENV_TOKEN)  # the controller's environment, inherited by serve
            appliance.setup()
            assert appliance.target is not None
            catalog = appliance.home / "controller.toml"
            for name, recipe in (
                ("status-file", "recipes/file-token.toml"),
                ("status-env", "recipes/env-token.toml"),
                ("status-command", "recipes/command-token.toml"),
                ("status-failing", "recipes/failing.toml"),
                ("status-broken", "recipes/broken.toml"),
            ):
                catalog.write_text(
                    catalog.read_text()
                    + RESOURCE.format(name=name, address=appliance.target.address, recipe=recipe)
                )
            for relative, text in RECIPES.items():
                path = appliance.home / relative
                path.parent.mkdir(exist_ok=True)
                path.write_text(text)
            appliance.start()
        yield appliance
    finally:
        appliance.close()


def session(app: Appliance, resource: str, *final: str) -> tuple[str, View, str]:
    """Request and approve with the real CLI: the id, the settled view, what `approve` printed."""
    args = ("request", resource, "--duration", "10m", "--reason", "INC-7 status page", "--json")
    rid = str(json.loads(ok(app.bgtui("olive", *args)))["id"])
    printed = ok(app.bgtui("alice", "approve", rid, "--yes"))
    return rid, wait_state(app, rid, *(final or ("active", "failed"))), printed


def at_rest(app: Appliance) -> list[Path]:
    """Every file of the controller (state.db, its WAL, audit head…), its log, the clients'."""
    files = [p for p in app.home.rglob("*") if p.is_file() and not p.is_socket()]
    files += [p for p in (app.root / "clients").rglob("*") if p.is_file()]
    files.append(app.log)
    assert {"state.db", "audit-head.json"} <= {p.name for p in files}
    return files


def assert_not_stored(app: Appliance, value: str) -> None:
    secret_files = {app.home / "secrets" / "status-token", app.home / "secrets" / "cmd-token"}
    for path in at_rest(app):
        if path not in secret_files:  # the customer's store itself holds it, of course
            assert value.encode() not in path.read_bytes(), f"{value} is in {path}"


# -- through the real controller --------------------------------------------------------------


def test_file_recipe_hands_the_token_to_the_operator_only(app: Appliance) -> None:
    rid, view, printed = session(app, "status-file")
    assert view["state"] == "active", view["ended_reason"]
    # The approver saw the recipe verbatim.
    assert '      path = "secrets/status-token"' in printed
    assert "    recipe: file-token" in printed
    assert ok(app.bgtui("olive", "creds", rid)) == f"value: {FILE_TOKEN}\n"
    assert_not_stored(app, FILE_TOKEN)
    ok(app.bgtui("olive", "end", rid))
    ended = wait_state(app, rid, "ended")
    assert ended["receipt"] is not None
    text = ok(app.bgtui("olive", "show", rid))
    assert "nothing was minted for this session" in text, text


def test_env_recipe_reads_the_controllers_environment(app: Appliance) -> None:
    rid, view, _ = session(app, "status-env")
    assert view["state"] == "active", view["ended_reason"]
    credential = json.loads(ok(app.bgtui("olive", "creds", rid, "--json")))
    assert credential == {"value": ENV_TOKEN}
    assert_not_stored(app, ENV_TOKEN)
    # Only the session's operator may have it.
    other = app.bgtui("alice", "creds", rid)
    assert other.returncode == 1 and ENV_TOKEN not in other.stdout + other.stderr
    ok(app.bgtui("olive", "end", rid))
    wait_state(app, rid, "ended")


def test_command_recipe_output_becomes_the_credential(app: Appliance) -> None:
    rid, view, printed = session(app, "status-command")
    assert view["state"] == "active", view["ended_reason"]
    assert '      argv = ["sh", "-c",' in printed
    token = f"{COMMAND_TOKEN}@use"  # stdout, with the privilege input from BGTUI_PRIVILEGE
    assert app.target is not None
    exported = ok(app.bgtui("olive", "creds", rid, "--env"))
    assert exported == (
        f"export STATUS_TOKEN={token}\nexport STATUS_URL=http://{app.target.address}/\n"
    )
    assert_not_stored(app, token)
    assert_not_stored(app, COMMAND_TOKEN)
    ok(app.bgtui("olive", "end", rid))
    wait_state(app, rid, "ended")


def test_a_failing_command_fails_the_session_in_one_line_without_its_output(
    app: Appliance,
) -> None:
    _, view, _ = session(app, "status-failing", "failed", "active")
    assert view["state"] == "failed"
    reason = view["ended_reason"]
    assert "exited 3: vault: permission denied" in reason and "\n" not in reason, reason
    assert COMMAND_TOKEN not in reason
    assert_not_stored(app, COMMAND_TOKEN)


def test_a_malformed_recipe_makes_its_resource_unavailable_with_the_reason(
    app: Appliance,
) -> None:
    listed = {r["name"]: r for r in json.loads(ok(app.bgtui("olive", "resources", "--json")))}
    broken = listed["status-broken"]
    path = app.home / "recipes" / "broken.toml"
    assert broken["available"] is False
    assert broken["unavailable_reason"] == f"{path}: a file recipe takes no 'mint'"
    assert listed["status-file"]["available"] is True  # one bad recipe spoils nothing else
    asked = app.bgtui(
        "olive", "request", "status-broken", "--duration", "5m", "--reason", "x", "--json"
    )
    assert asked.returncode == 1
    assert asked.stderr.count("\n") == 1 and str(path) in asked.stderr, asked.stderr


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "file"\npath = "x"\ncolour = "red"\n', "unknown key 'colour'"),
        ('kind = "file"\n', "a file recipe needs `path`"),
        ('kind = "env"\nvar = ""\n', "an env recipe needs `var`"),
        ('kind = "sql"\nteardown = ["DROP ROLE {role}"]\n', "a sql recipe needs `mint`"),
        ('kind = "command"\nargv = "cat /etc/token"\n', "argv must be a list of non-empty strings"),
        ('kind = "kubernetes-secret"\nnamespace = "ops"\nsecret = "s"\n', "needs `key`"),
        ('kind = "terraform"\n', "kind must be one of sql, command, file, env"),
        ('path = "x"\n', "kind must be one of"),
        ('kind = "env"\nvar = "X"\nargv = ["true"]\n', "an env recipe takes no 'argv'"),
        ('kind = "file"\npath = 7\n', "path must be a string"),
        ('kind = "file"\npath = "x"\n[outputs]\nT = 1\n', "[outputs] must map names to strings"),
        ('kind = "file"\npath = "x\n', "not valid TOML"),
    ],
)
def test_recipe_files_are_parsed_strictly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "recipes" / "bad.toml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(Refused) as raised:
        load_recipe("recipes/bad.toml", tmp_path)
    said = str(raised.value)
    assert said.startswith(f"{path}: ") and message in said and "\n" not in said, said


def test_missing_recipe_and_builtin_lookup(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"recipe 'recipes/none.toml': .*none.toml not found"):
        load_recipe("recipes/none.toml", tmp_path)
    builtin = load_recipe("postgres-role", tmp_path)
    assert builtin.kind == "sql" and builtin.name == "postgres-role"
    assert builtin.text == (builtin_path("postgres-role") or Path()).read_text()
    assert builtin.teardown_last == ("DROP ROLE IF EXISTS {role}",)
    # The text is all there is: the same text parses to the same recipe and hash.
    assert parse_recipe(builtin.text, "x").sha256 == builtin.sha256
    assert os.path.basename(str(builtin_path("postgres-role"))) == "postgres-role.toml"
