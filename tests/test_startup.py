"""`bgtui` starts without what it does not need yet, and still offers every command.

Startup speed is kept by what is imported before the first frame, so that is what these tests
check (never wall time): the root command line and the app leave HTTP, SQLite, the audit code
and the command modules for when a command or a worker asks for them.
"""

from __future__ import annotations

import subprocess
import sys

import click
from tests.helpers import run

from bgtui.cli import COMMANDS, main

LATER = (
    "httpx",
    "sqlite_utils",
    "ulid",
    "paramiko",
    "yaml",
    "kubernetes",
    "psycopg",
    "bgtui.mirror",
    "bgtui.audit_commands",
    "bgtui.session_commands",
    "bgtui.identity_commands",
)


def loaded_after(statement: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` (modules or packages) a fresh interpreter holds after `statement`."""
    code = (
        "import sys\n"
        f"{statement}\n"
        f"names = {names!r}\n"
        "print(','.join(sorted(n for n in names if any("
        "m == n or m.startswith(n + '.') for m in sys.modules))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    return [name for name in out.split(",") if name]


def test_the_command_line_loads_no_command_module_http_or_sqlite_until_a_command_runs() -> None:
    assert loaded_after("import bgtui.cli", (*LATER, "textual")) == []


def test_the_app_reaches_its_first_frame_without_http_sqlite_or_the_audit_code() -> None:
    assert loaded_after("import bgtui.app", LATER) == []


def test_shared_signing_code_imports_neither_textual_nor_click() -> None:
    assert loaded_after("import bgtui.actions", ("textual", "click", "httpx")) == []


def test_every_listed_command_loads_under_its_own_name() -> None:
    context = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(context, name)
        assert isinstance(command, click.Command), name
        assert command.name == name


def test_help_lists_every_command() -> None:
    result = run("bgtui", "--help")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:")[1]
    for name in [*COMMANDS, "demo"]:
        assert f"\n  {name} " in listed, name
