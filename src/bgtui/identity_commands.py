"""`bgtui keygen`, `pubkey` and `identities`: the identities in the client home (DESIGN §9)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from bgtui import agent
from bgtui.cli_context import passphrase_env_option, passphrase_from
from bgtui.clikit import print_json
from bgtui.identity import ROLES, Identity, KeySource, load_private, read_key_file
from bgtui.protocol.keys import PrivateKey

if TYPE_CHECKING:
    from bgtui.cli_context import ClientContext


@click.command()
@click.option("--role", type=click.Choice(ROLES), required=True, help="What this identity does.")
@click.option("--name", required=True, help="Identity name; also the public key's comment.")
@click.option(
    "--import",
    "import_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Use this Ed25519 private key (OpenSSH or PKCS#8 PEM) instead of a new one.",
)
@passphrase_env_option(
    "Encrypt the stored key with the passphrase in env var VAR (it also opens an encrypted "
    "--import/--key-env/--key-command key)."
)
@click.option("--agent", "use_agent", is_flag=True, help="Sign with the Ed25519 key in ssh-agent.")
@click.option(
    "--agent-key", metavar="FINGERPRINT", help="With --agent: which key, when it holds several."
)
@click.option("--key-env", metavar="VAR", help="Read the private key from env var VAR at signing.")
@click.option(
    "--key-command", metavar="CMD", help="Run CMD at signing; its stdout is the private key."
)
@click.pass_obj
def keygen(
    obj: ClientContext,
    role: str,
    name: str,
    import_path: Path | None,
    passphrase_env: str | None,
    use_agent: bool,
    agent_key: str | None,
    key_env: str | None,
    key_command: str | None,
) -> None:
    """Create an Ed25519 identity in the home and print its public key line.

    By default a new key is generated and stored as an OpenSSH private key (mode 0600). With
    --import the key comes from a file; with --agent, --key-env or --key-command only the public
    key is stored and the private key is fetched from there each time bgtui signs. An existing
    identity is never overwritten. Example:

        bgtui keygen --role approver --name carol --passphrase-env CAROL_PASS
    """
    chosen = [
        flag
        for flag, given in (
            ("--import", import_path is not None),
            ("--agent", use_agent),
            ("--key-env", key_env is not None),
            ("--key-command", key_command is not None),
        )
        if given
    ]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} cannot be used together")
    if agent_key is not None and not use_agent:
        raise click.UsageError("--agent-key only makes sense with --agent")
    if use_agent and passphrase_env is not None:
        raise click.UsageError("--passphrase-env does not apply to a key in ssh-agent")

    home = obj.home
    Identity.check_new(home, name, role)
    passphrase = passphrase_from(passphrase_env, "the key")
    if use_agent:
        identity = Identity.enrol(
            home, name, role, KeySource("agent"), agent.find_key(None, agent_key)
        )
    elif key_env is not None or key_command is not None:
        source = (
            KeySource("env", key_env)
            if key_env is not None
            else KeySource("command", key_command or "")
        )
        key, _ = load_private(source.read_private_text(), str(source), passphrase)
        identity = Identity.enrol(home, name, role, source, key.public)
    else:
        if import_path is not None:
            key, opened_with = read_key_file(import_path, passphrase)
        else:
            key, opened_with = PrivateKey.generate(), None
        # An imported encrypted key stays encrypted (with the passphrase that opened it).
        secret = passphrase() if passphrase_env is not None else opened_with
        identity = Identity.create(home, name, role, key, secret)
    click.echo(identity.public_line)
    click.echo(
        f"created identity {identity.name} ({identity.role}, key from {identity.source}) "
        f"{identity.fingerprint} in {identity.directory}",
        err=True,
    )


@click.command()
@click.option("--fingerprint", is_flag=True, help="Print the SHA256:… fingerprint instead.")
@click.pass_obj
def pubkey(obj: ClientContext, fingerprint: bool) -> None:
    """Print the identity's public key line, `ssh-ed25519 AAAA… NAME`.

    Give this line to the controller's admin (`bgctl trust add`). With several identities in
    the home, choose one with --identity. Example:

        bgtui --identity carol pubkey --fingerprint
    """
    identity = obj.identity()
    click.echo(identity.fingerprint if fingerprint else identity.public_line)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_obj
def identities(obj: ClientContext, as_json: bool) -> None:
    """List the identities in the home: name, role, key source and fingerprint.

    Example:

        bgtui --home ~/.bgtui-test identities --json
    """
    found = Identity.load_all(obj.home)
    if as_json:
        rows = [
            {
                "name": i.name,
                "role": i.role,
                "source": str(i.source),
                "fingerprint": i.fingerprint,
                "public_key": i.public_line,
                "created_at": i.created_at,
            }
            for i in found
        ]
        print_json(rows)
        return
    if not found:
        click.echo(f"no identities in {obj.home.path}", err=True)
        return
    header = ("NAME", "ROLE", "SOURCE", "FINGERPRINT")
    table = [header, *((i.name, i.role, str(i.source), i.fingerprint) for i in found)]
    widths = [max(len(row[col]) for row in table) for col in range(len(header))]
    for row in table:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
