"""The `bgtui` command line (DESIGN §9). Every command is a thin shell over the library.

To add a command: decorate a function with `@main.command()` and `@click.pass_obj` to get the
`ClientContext` (home, chosen identity, signer). Raise `Refused` for anything a user can act
on: the root group (`BgtuiGroup`, a `clikit.RefusingGroup`) prints it as one `bgtui: …` line
on stderr and exits 1; `click.UsageError` is bad usage, exit 2.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bgtui import agent
from bgtui.client import CA_CERT_ENV, CONTROLLER_ENV, ControllerClient
from bgtui.clikit import RefusingGroup, print_json
from bgtui.home import HOME_ENV, ClientHome
from bgtui.identity import ROLES, Identity, KeySource, Passphrase, load_private, read_key_file
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.sshsig import Signer

IDENTITY_ENV = "BGTUI_IDENTITY"
F = TypeVar("F", bound=Callable[..., Any])


class BgtuiGroup(RefusingGroup):
    """The root group: `Refused` (via RefusingGroup) and OS errors become `bgtui: …`, exit 1."""

    group_class = type  # subgroups made with @main.group() get the same handling

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # Under `python -m bgtui.cli` click would call itself "python -m bgtui.cli".
        kwargs.setdefault("prog_name", "bgtui")
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:  # a disk or permission problem we did not foresee: still one line
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"{ctx.find_root().info_name}: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)


def passphrase_from(env_var: str | None, what: str = "key") -> Passphrase:
    """A passphrase provider: env var `env_var` if named, else a hidden prompt on a terminal."""

    def provide() -> bytes | None:
        if env_var:
            value = os.environ.get(env_var)
            if not value:
                raise Refused(f"--passphrase-env {env_var}: environment variable is not set")
            return value.encode()
        if sys.stdin.isatty():
            text: str = click.prompt(f"Passphrase for {what}", hide_input=True, err=True)
            return text.encode()
        return None

    return provide


def passphrase_env_option(help_text: str) -> Callable[[F], F]:
    """The `--passphrase-env VAR` option, shared by every command that opens or writes a key."""
    return click.option("--passphrase-env", "passphrase_env", metavar="VAR", help=help_text)


class ClientContext:
    """What every command shares: the home (resolved lazily), the chosen identity name and the
    controller to talk to."""

    def __init__(
        self,
        home: Path | None,
        identity_name: str | None,
        controller: str | None = None,
        ca_cert: Path | None = None,
    ) -> None:
        self._home_option = home
        self.identity_name = identity_name
        self._controller_option = controller
        self._ca_cert_option = ca_cert
        self._home: ClientHome | None = None

    @property
    def home(self) -> ClientHome:
        """The client home: --home, else $BGTUI_HOME, else the platform data dir."""
        if self._home is None:
            self._home = ClientHome.resolve(self._home_option)
        return self._home

    def identity(self) -> Identity:
        """The identity named by --identity / $BGTUI_IDENTITY, or the only one in the home."""
        return Identity.load(self.home, self.identity_name)

    def signer(self, passphrase_env: str | None = None) -> Signer:
        """A signer for the chosen identity; asks for a passphrase only if its key needs one."""
        chosen = self.identity()
        return chosen.signer(passphrase_from(passphrase_env, f"identity {chosen.name}"))

    def controller(self) -> str:
        """--controller, else $BGTUI_CONTROLLER, else `controller = "…"` in HOME/config.toml."""
        if self._controller_option:
            return self._controller_option
        configured = self._config().get("controller")
        if isinstance(configured, str) and configured:
            return configured
        raise Refused(
            "no controller given: pass --controller unix:PATH|https://HOST:PORT, "
            f'set {CONTROLLER_ENV}, or put controller = "…" in {self.home.config_path}'
        )

    def _config(self) -> dict[str, Any]:
        path = self.home.config_path
        try:
            return tomllib.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise Refused(f"{path}: cannot read ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise Refused(f"{path}: not valid TOML ({exc})") from None

    def client(self, signer: Signer) -> ControllerClient:
        """A client for the chosen controller that signs every call with `signer`."""
        ca_cert = self._ca_cert_option
        configured = self._config().get("ca_cert") if ca_cert is None else None
        if isinstance(configured, str) and configured:
            ca_cert = Path(configured).expanduser()
        return ControllerClient(self.controller(), signer, ca_cert=ca_cert)


@click.group(cls=BgtuiGroup, context_settings={"help_option_names": ["-h", "--help"]})
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

    Start by creating an identity, then give its public key line to the controller's admin:

        bgtui keygen --role operator --name alice
    """
    ctx.obj = ClientContext(home, identity_name, controller, ca_cert)


@main.command()
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


@main.command()
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


@main.command()
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


if __name__ == "__main__":
    main()
