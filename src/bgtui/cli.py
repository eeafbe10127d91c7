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
from ulid import ULID

from bgtui import agent, sessionview
from bgtui.client import (
    CA_CERT_ENV,
    CONTROLLER_ENV,
    FINAL_STATES,
    ControllerClient,
    View,
    link_controller,
    request_id,
    verified_request,
)
from bgtui.clikit import Duration, RefusingGroup, print_json
from bgtui.home import HOME_ENV, ClientHome
from bgtui.identity import ROLES, Identity, KeySource, Passphrase, load_private, read_key_file
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey
from bgtui.protocol.objects import Request, Signed, TeardownReceipt, new_approval, new_nonce
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import format_duration, now_utc, utc_text
from bgtui.protocol.verify import verify_receipt
from bgtui.sealing import (
    credential_json,
    credential_text,
    env_exports,
    open_sealed,
    write_private,
    write_ssh_dir,
)
from bgtui.session_keys import session_key

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


# -- sessions: the lifecycle of DESIGN §3 against a controller ---------------------------------


def json_option(what: str) -> Callable[[F], F]:
    """The `--json` flag every read command takes."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def _echo_lines(lines: list[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


@main.command()
@json_option("the catalog")
@click.pass_obj
def resources(obj: ClientContext, as_json: bool) -> None:
    """List the resources this controller offers, with how each is reached and credentialed.

    Example:

    \b
        bgtui --controller unix:/var/lib/bgctl/bgctl.sock resources
    """
    with obj.client(obj.signer()) as client:
        catalog = client.resources()
    if as_json:
        print_json(catalog)
        return
    _echo_lines(sessionview.resources_table(catalog))


def _pick(resource: dict[str, Any], key: str, option: str, given: str | None, what: str) -> str:
    offered = [str(v) for v in resource.get(key) or []]
    name = resource.get("name")
    if given is not None:
        if given not in offered:
            raise Refused(
                f"{name} does not offer {what} {given!r}; it offers: {', '.join(offered)}"
            )
        return given
    if len(offered) == 1:
        return offered[0]
    raise Refused(f"{name} offers several {what}s ({', '.join(offered)}); choose one with {option}")


@main.command("request")
@click.argument("resource_name", metavar="RESOURCE")
@click.option("--reason", required=True, help="Why you need access; the approver reads it.")
@click.option("--duration", type=Duration(), required=True, help="How long, e.g. 30m or 1h30m.")
@click.option("--privilege", metavar="P", help="Which privilege (needed if several are offered).")
@click.option(
    "--credential-source", metavar="S", help="Expected credential source (checked, not chosen)."
)
@click.option("--wait", is_flag=True, help="Follow the request until it is active or over.")
@json_option("the new request")
@passphrase_env_option("Passphrase of the identity's key, from env var VAR.")
@click.pass_obj
def request_command(
    obj: ClientContext,
    resource_name: str,
    reason: str,
    duration: int,
    privilege: str | None,
    credential_source: str | None,
    wait: bool,
    as_json: bool,
    passphrase_env: str | None,
) -> None:
    """Ask for time-bounded access to RESOURCE; prints the request id and its state.

    The request is signed with your identity. The network path and credential source come from
    the resource's configuration. With --wait, follows it until it is active (exit 0) or ends
    otherwise (exit 1, with the reason). Example:

    \b
        bgtui request orders-db --privilege readonly --duration 30m --reason "INC-4711" --wait
    """
    identity = obj.identity()
    passphrase = passphrase_from(passphrase_env, f"identity {identity.name}")
    key = identity.private_key(passphrase) if identity.source.kind != "agent" else None
    signer: Signer = key if key is not None else identity.signer(passphrase)
    with obj.client(signer) as client:
        info = client.info()
        catalog = {str(r.get("name")): r for r in client.resources()}
        resource = catalog.get(resource_name)
        if resource is None:
            names = ", ".join(sorted(catalog)) or "none"
            raise Refused(
                f"no resource {resource_name!r} on {info['controller_id']}; have: {names}"
            )
        if resource.get("available") is False:
            raise Refused(f"{resource_name} is unavailable: {resource.get('unavailable_reason')}")
        chosen_privilege = _pick(resource, "privileges", "--privilege", privilege, "privilege")
        source = _pick(
            resource,
            "credential_sources",
            "--credential-source",
            credential_source,
            "credential source",
        )
        rid = str(ULID())
        command = (resource.get("commands") or {}).get(chosen_privilege)
        ssh_key = None
        if resource.get("session_key"):
            if key is None:
                raise Refused(
                    f"identity {identity.name}: an SSH session needs a key bgtui can derive the "
                    "session key from; ssh-agent keys cannot; use a file, env or command source"
                )
            ssh_key = session_key(key, rid).public.openssh(f"bgtui-session-{rid}")
        req = Request(
            id=rid,
            controller_id=str(info["controller_id"]),
            resource=resource_name,
            privilege=chosen_privilege,
            credential_source=source,
            network_path=str(resource.get("network")),
            command=command,
            requested_duration=duration,
            reason=reason.strip(),
            operator_fingerprint=identity.fingerprint,
            operator_key=identity.public.openssh(),
            session_key=ssh_key,
            created_at=utc_text(now_utc()),
            nonce=new_nonce(),
        )
        req.check()
        view = client.submit(req.sign(signer))
        if not wait:
            if as_json:
                print_json(view)
            else:
                click.echo(f"{view['id']}  {sessionview.state_line(view)}")
            return
        click.echo(f"{view['id']}  {sessionview.state_line(view)}", err=as_json)
        final = _follow(client, view, err=as_json)
    if as_json:
        print_json(final)
    if final["state"] != "active":
        raise Refused(f"request {final['id']} {sessionview.outcome(final)}")


def _follow(client: ControllerClient, view: View, *, err: bool, until_final: bool = False) -> View:
    """Prints each state change of a request until it is active (or over); returns its view."""
    shown = (view.get("state"), view.get("detail"))

    def done(v: View) -> bool:
        return v.get("state") in FINAL_STATES or (v.get("state") == "active" and not until_final)

    if done(view):
        return view
    for current in client.follow(str(view["id"])):
        now = (current.get("state"), current.get("detail"))
        if now != shown:
            shown = now
            click.echo(sessionview.state_line(current), err=err)
        if done(current):
            return current
    raise Refused(f"lost the event stream of request {view['id']}")


@main.command("list")
@json_option("the requests")
@click.pass_obj
def list_command(obj: ClientContext, as_json: bool) -> None:
    """List the requests you may see (an operator sees their own), newest last.

    Example:

    \b
        bgtui list --json
    """
    with obj.client(obj.signer()) as client:
        views = client.list()
    if as_json:
        print_json(views)
        return
    if not views:
        click.echo("no requests", err=True)
        return
    _echo_lines(sessionview.requests_table(views))


@main.command()
@click.argument("rid", metavar="ID")
@click.option("--wait", is_flag=True, help="Then follow it, printing each change, until over.")
@json_option("the request")
@click.pass_obj
def show(obj: ClientContext, rid: str, wait: bool, as_json: bool) -> None:
    """Show one request: state, what it grants, approvals, plane steps and teardown receipt.

    Example:

    \b
        bgtui show 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9 --json
    """
    with obj.client(obj.signer()) as client:
        view = client.get(rid)
        if wait:
            view = _follow(client, view, err=as_json, until_final=True)
        if as_json:
            print_json(view)
            return
        receipt, note = _checked_receipt(client, view)
    _echo_lines(sessionview.show_lines(view, receipt, note))
    if receipt is None and note:
        raise Refused(f"request {view['id']}: {note}")


def _checked_receipt(client: ControllerClient, view: View) -> tuple[TeardownReceipt | None, str]:
    """The session's teardown receipt after checking the controller's signature on it."""
    raw = view.get("receipt")
    if raw is None:
        return None, ""
    info = client.info()
    try:
        key = PublicKey.parse(str(info.get("key")), "controller key")
        signed = Signed.from_json(raw)
    except Refused as exc:
        return None, f"receipt cannot be checked: {exc}"
    verdict = verify_receipt(signed, str(info.get("controller_id")), key)
    if not verdict.accepted:
        return None, f"receipt does not verify: {verdict}"
    receipt: TeardownReceipt = verdict.obj
    if receipt.request_id != view.get("id"):
        return None, f"receipt is for request {receipt.request_id}, not {view.get('id')}"
    return receipt, (
        f"signed by {receipt.controller_id} {key.fingerprint} at {receipt.completed_at} "
        f"({receipt.ended_reason})"
    )


def _confirm_or_refuse(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise Refused("not asking on a non-terminal: read the above and re-run with --yes")
    if not click.confirm(question, default=False):
        raise Refused("not signed: you declined")


def _decide(
    obj: ClientContext,
    target: str,
    decision: str,
    *,
    duration: int | None,
    reason: str,
    yes: bool,
    passphrase_env: str | None,
) -> None:
    rid = request_id(target)
    identity = obj.identity()
    signer = identity.signer(passphrase_from(passphrase_env, f"identity {identity.name}"))
    with obj.client(signer) as client:
        info = client.info()
        named = link_controller(target)
        if named is not None and named != info.get("controller_id"):
            raise Refused(
                f"the link is for controller {named!r}, not {info.get('controller_id')!r}"
            )
        view = client.get(rid)
        signed, req = verified_request(view)
        if req.controller_id != info.get("controller_id"):
            raise Refused(
                f"request {rid} is for controller {req.controller_id!r}, "
                f"this is {info.get('controller_id')!r}"
            )
        if view.get("state") != "pending":
            raise Refused(
                f"request {rid} is {view.get('state')}; only a pending one can be decided"
            )
        if duration is not None and duration > req.requested_duration:
            raise Refused(
                f"--duration {format_duration(duration)} is longer than the "
                f"{format_duration(req.requested_duration)} requested; an approval may only shorten"
            )
        granted = duration or req.requested_duration
        verb = "Approve" if decision == "approve" else "Reject"
        click.echo(f"{verb} this break-glass request:")
        lines = sessionview.decision_lines(
            req,
            digest=signed.digest,
            operator_name=str(view.get("operator")),
            decision=decision,
            duration=granted,
            approvals_needed=int(view.get("approvals_needed") or 0),
        )
        _echo_lines([f"  {line}" for line in lines])
        if decision == "reject":
            click.echo(f"  rejection reason: {reason}")
        _confirm_or_refuse(
            f"Sign this {'approval' if decision == 'approve' else 'rejection'}?", yes
        )
        approval = new_approval(
            signed,
            req,
            approver_fingerprint=identity.fingerprint,
            decision=decision,
            duration=granted if decision == "approve" else None,
            reason=reason,
        )
        approval.check()
        result = client.decide(rid, approval.sign(signer))
    click.echo(f"{result['id']}  {sessionview.state_line(result)}")


@main.command()
@click.argument("target", metavar="ID_OR_LINK")
@click.option("--duration", type=Duration(), help="Grant less time than requested (never more).")
@click.option("--reason", default="", help="A note recorded with the approval.")
@click.option("--yes", is_flag=True, help="Sign without asking (after printing what it grants).")
@passphrase_env_option("Passphrase of the approver's key, from env var VAR.")
@click.pass_obj
def approve(
    obj: ClientContext,
    target: str,
    duration: int | None,
    reason: str,
    yes: bool,
    passphrase_env: str | None,
) -> None:
    """Check a request's signature, print exactly what it grants, then sign an approval.

    ID_OR_LINK is a request id or the approval link from a notification. Example:

    \b
        bgtui approve bgtui://acme-prod/requests/01JD2V6XKQ8ZJ3M4N5P6Q7R8S9/approve --yes
    """
    _decide(
        obj,
        target,
        "approve",
        duration=duration,
        reason=reason,
        yes=yes,
        passphrase_env=passphrase_env,
    )


@main.command()
@click.argument("target", metavar="ID_OR_LINK")
@click.option("--reason", required=True, help="Why; the operator sees it.")
@click.option("--yes", is_flag=True, help="Sign without asking (after printing the request).")
@passphrase_env_option("Passphrase of the approver's key, from env var VAR.")
@click.pass_obj
def reject(
    obj: ClientContext, target: str, reason: str, yes: bool, passphrase_env: str | None
) -> None:
    """Sign a rejection of a pending request, with a reason the operator sees.

    Example:

    \b
        bgtui reject 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9 --reason "use the read replica" --yes
    """
    if not reason.strip():
        raise click.BadParameter("must not be empty", param_hint="--reason")
    _decide(
        obj,
        target,
        "reject",
        duration=None,
        reason=reason.strip(),
        yes=yes,
        passphrase_env=passphrase_env,
    )


def _action_command(name: str, summary: str, example: str) -> None:
    def run(obj: ClientContext, rid: str, as_json: bool) -> None:
        with obj.client(obj.signer()) as client:
            view = getattr(client, name)(rid)
        if as_json:
            print_json(view)
        else:
            click.echo(f"{view['id']}  {sessionview.state_line(view)}")

    run.__doc__ = f"{summary}\n\n    Example:\n\n    \b\n        {example}\n    "
    command = click.command(name)(
        click.argument("rid", metavar="ID")(json_option("the request")(click.pass_obj(run)))
    )
    main.add_command(command)


_action_command(
    "withdraw",
    "Withdraw your pending request (it becomes cancelled).",
    "bgtui withdraw 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9",
)
_action_command(
    "end",
    "End your active session now; everything minted for it is torn down.",
    "bgtui end 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9",
)
_action_command(
    "revoke",
    "Revoke an active session (approvers); everything minted for it is torn down.",
    "bgtui revoke 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9",
)


@main.command()
@click.argument("rid", metavar="ID")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the whole credential to FILE (new, mode 0600) instead of stdout.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Write a Kubernetes session's kubeconfig to PATH (new, mode 0600) for kubectl.",
)
@click.option("--env", "as_env", is_flag=True, help="Print libpq variables as shell exports.")
@click.option(
    "--ssh-dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write session key, certificate and known_hosts into DIR (mode 0700) for `ssh -i`.",
)
@json_option("the credential")
@passphrase_env_option("Passphrase of the identity's key, from env var VAR.")
@click.pass_obj
def creds(
    obj: ClientContext,
    rid: str,
    out: Path | None,
    kubeconfig: Path | None,
    as_env: bool,
    ssh_dir: Path | None,
    as_json: bool,
    passphrase_env: str | None,
) -> None:
    """Fetch your active session's credential and open it with your key.

    It is sealed to your key by the controller and handed over only while the session is
    active; bgtui writes it nowhere but stdout or the one file or directory you name. Examples:

    \b
        bgtui creds ID --kubeconfig ./k && KUBECONFIG=./k kubectl get pods
        eval "$(bgtui creds ID --env)" && psql
        bgtui creds ID --ssh-dir ./s && ssh -F ./s/config session
    """
    chosen = [o for o in (out, kubeconfig, ssh_dir) if o is not None] + ([True] if as_env else [])
    if len(chosen) > 1:
        raise click.UsageError("give at most one of --out, --kubeconfig, --env and --ssh-dir")
    identity = obj.identity()
    passphrase = passphrase_from(passphrase_env, f"identity {identity.name}")
    # One key for both signing the call and opening the box, so a passphrase is asked once.
    key = identity.private_key(passphrase) if identity.source.kind != "agent" else None
    signer: Signer = key if key is not None else identity.signer(passphrase)
    with obj.client(signer) as client:
        answer = client.credentials(rid)
    sealed = answer.get("sealed")
    if sealed is None:
        message = "this session's credential is out of band: break glass supplies none"
        if as_json:
            print_json({"id": answer.get("id"), "credential": None, "note": message})
        else:
            click.echo(message)
        return
    if key is None:
        raise Refused(
            f"identity {identity.name}: its key is in ssh-agent, which cannot open a sealed "
            "credential; use a file, env or command key source"
        )
    credential = open_sealed(str(sealed), key)
    if kubeconfig is not None:
        write_private(kubeconfig, _field(credential, "kubeconfig", "--kubeconfig"))
        click.echo(f"wrote the kubeconfig for {rid} to {kubeconfig} (mode 0600)", err=True)
    elif as_env:
        click.echo(env_exports(credential), nl=False)
    elif ssh_dir is not None:
        _field(credential, "certificate", "--ssh-dir")
        written = write_ssh_dir(ssh_dir, session_key(key, rid), credential, rid)
        click.echo(
            f"wrote {', '.join(written)} to {ssh_dir}; "
            f"connect with: ssh -F {ssh_dir / 'config'} session",
            err=True,
        )
    elif out is not None:
        write_private(out, credential_json(credential))
        click.echo(f"wrote the credential for {answer.get('id')} to {out} (mode 0600)", err=True)
    else:
        click.echo(
            credential_json(credential) if as_json else credential_text(credential), nl=False
        )


def _field(credential: dict[str, str], name: str, option: str) -> str:
    if name not in credential:
        have = ", ".join(sorted(credential)) or "nothing"
        raise Refused(f"{option}: this session's credential has no {name} (it has {have})")
    return credential[name]


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


from bgtui.audit_commands import audit  # noqa: E402  (the `bgtui audit` group)

main.add_command(audit)


if __name__ == "__main__":
    main()
