"""The `bgtui` command line (DESIGN §9). Every command is a thin shell over the library.

The root group lists its commands by name and imports a command's module only when that command
runs, so the TUI (`bgtui` without a command) starts without loading HTTP, SQLite or the audit
code. To add a command: write it with `@click.command()` and `@click.pass_obj` (which gives the
`ClientContext`: home, chosen identity, signer) in the module for its area, and add its name to
`COMMANDS`. Raise `Refused` for anything a user can act on: the root group (`BgtuiGroup`, a
`clikit.RefusingGroup`) prints it as one `bgtui: …` line on stderr and exits 1;
`click.UsageError` is bad usage, exit 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from bgtui.cli_context import ClientContext
from bgtui.client import CA_CERT_ENV, CONTROLLER_ENV
from bgtui.clikit import RefusingGroup
from bgtui.home import HOME_ENV

__all__ = ["COMMANDS", "ClientContext", "main"]

IDENTITY_ENV = "BGTUI_IDENTITY"

COMMANDS = {
    "keygen": "bgtui.identity_commands:keygen",
    "pubkey": "bgtui.identity_commands:pubkey",
    "identities": "bgtui.identity_commands:identities",
    "resources": "bgtui.session_commands:resources",
    "request": "bgtui.session_commands:request_command",
    "list": "bgtui.session_commands:list_command",
    "show": "bgtui.session_commands:show",
    "approve": "bgtui.session_commands:approve",
    "reject": "bgtui.session_commands:reject",
    "withdraw": "bgtui.session_commands:withdraw",
    "end": "bgtui.session_commands:end",
    "connect": "bgtui.session_commands:connect",
    "revoke": "bgtui.session_commands:revoke",
    "creds": "bgtui.session_commands:creds",
    "audit": "bgtui.audit_commands:audit",
}
"""Command name -> `module:attribute` of its click command, imported on first use."""


class BgtuiGroup(RefusingGroup):
    """The root group: `Refused` and OS errors become `bgtui: …`, exit 1 (via RefusingGroup);
    the commands in `COMMANDS` load when they are first looked up."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # Under `python -m bgtui.cli` click would call itself "python -m bgtui.cli".
        kwargs.setdefault("prog_name", "bgtui")
        return super().main(*args, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(
    cls=BgtuiGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=HOME_ENV,
    help=f"Client home directory (env {HOME_ENV}; default: the platform's user data dir).",
)
@click.option(
    "--identity",
    "identity_name",
    metavar="NAME",
    envvar=IDENTITY_ENV,
    help=f"Which identity to use when the home holds several (env {IDENTITY_ENV}).",
)
@click.option(
    "--controller",
    metavar="URL",
    envvar=CONTROLLER_ENV,
    help=f"unix:PATH or https://HOST:PORT of `bgctl serve` (env {CONTROLLER_ENV}).",
)
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CA_CERT_ENV,
    help=f"CA certificate that signed the controller's TLS certificate (env {CA_CERT_ENV}).",
)
@click.version_option(package_name="bgtui")
@click.pass_context
def main(
    ctx: click.Context,
    home: Path | None,
    identity_name: str | None,
    controller: str | None,
    ca_cert: Path | None,
) -> None:
    """bgtui: break-glass access, customer-signed, time-bounded and audited.

    Without a command, bgtui opens the TUI. Start by creating an identity, then give its
    public key line to the controller's admin:

        bgtui keygen --role operator --name alice
    """
    ctx.obj = ClientContext(home, identity_name, controller, ca_cert)
    if ctx.invoked_subcommand is None:
        from bgtui.app import launch  # deferred: only the TUI needs Textual

        launch(ctx.obj)


@main.command()
@click.option("--script", is_flag=True, help="Run the whole lifecycle without a screen, checked.")
@click.option("--keep", is_flag=True, help="Keep the sandbox's files (processes still stop).")
def demo(script: bool, keep: bool) -> None:
    """Start a sandbox appliance in a temp dir and open the TUI on it (or script it).

    Everything runs locally and stops on quit. Example:

    \b
        bgtui demo --script
    """
    from bgtui.demo import run_demo

    sys.exit(run_demo(script=script, keep=keep))


if __name__ == "__main__":
    main()
