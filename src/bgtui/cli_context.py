"""What every `bgtui` command shares: the `ClientContext` and the options for keys and output.

Commands get the context with `@click.pass_obj`; it resolves the home, the chosen identity and
the controller only when a command asks, so `bgtui --help` and the TUI start without them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bgtui.client import CONTROLLER_ENV, ControllerClient
from bgtui.home import ClientHome
from bgtui.protocol.errors import Refused
from bgtui.tui_config import read_config

if TYPE_CHECKING:
    from bgtui.identity import Identity, Passphrase
    from bgtui.protocol.keys import PrivateKey
    from bgtui.protocol.sshsig import Signer

F = TypeVar("F", bound=Callable[..., Any])


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


def json_option(what: str) -> Callable[[F], F]:
    """The `--json` flag every read command takes."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def echo_lines(lines: list[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


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
        from bgtui.identity import Identity

        return Identity.load(self.home, self.identity_name)

    def signer(self, passphrase_env: str | None = None) -> Signer:
        """A signer for the chosen identity; asks for a passphrase only if its key needs one."""
        chosen = self.identity()
        return chosen.signer(passphrase_from(passphrase_env, f"identity {chosen.name}"))

    def key_and_signer(
        self, identity: Identity, passphrase_env: str | None
    ) -> tuple[PrivateKey | None, Signer]:
        """The identity's private key (None in ssh-agent) and a signer, asking a passphrase
        once: the same key signs the calls and derives or opens what is sealed to it."""
        passphrase = passphrase_from(passphrase_env, f"identity {identity.name}")
        key = identity.private_key(passphrase) if identity.source.kind != "agent" else None
        return key, key if key is not None else identity.signer(passphrase)

    def controller(self) -> str:
        """--controller, else $BGTUI_CONTROLLER, else `controller = "…"` in HOME/config.toml."""
        if self._controller_option:
            return self._controller_option
        configured = read_config(self.home.config_path).get("controller")
        if isinstance(configured, str) and configured:
            return configured
        raise Refused(
            "no controller given: pass --controller unix:PATH|https://HOST:PORT, "
            f'set {CONTROLLER_ENV}, or put controller = "…" in {self.home.config_path}'
        )

    def client(self, signer: Signer) -> ControllerClient:
        """A client for the chosen controller that signs every call with `signer`."""
        ca_cert = self._ca_cert_option
        configured = read_config(self.home.config_path).get("ca_cert") if ca_cert is None else None
        if isinstance(configured, str) and configured:
            ca_cert = Path(configured).expanduser()
        return ControllerClient(self.controller(), signer, ca_cert=ca_cert)
