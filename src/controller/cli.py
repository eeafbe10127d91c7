"""bgctl: the controller's command line (DESIGN §9)."""

from __future__ import annotations

from pathlib import Path

import click

from bgtui.clikit import RefusingGroup, print_json
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.trust import ROLES, check_name, check_role
from controller.audit import AuditLog
from controller.config import _ID
from controller.home import ControllerHome, default_home
from controller.store import open_store


def _home(ctx: click.Context) -> ControllerHome:
    home: ControllerHome = ctx.obj
    return home


def _audit(home: ControllerHome) -> AuditLog:
    return AuditLog(
        open_store(home.db_path),
        home.config.id,
        home.signing_key(),
        head_file=home.audit_head_path,
    )


@click.group(cls=RefusingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BGCTL_HOME",
    help="Controller home (env BGCTL_HOME; default: the platform's data dir).",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """The break-glass controller: verifies signatures, mints and tears down, keeps the audit log.

    Start with `bgctl init --id ID`, pin keys with `bgctl trust add`, then `bgctl serve`.
    """
    ctx.obj = ControllerHome(home or default_home())


@main.command()
@click.option("--id", "controller_id", required=True, help="This controller's id, e.g. acme-prod.")
@click.pass_context
def init(ctx: click.Context, controller_id: str) -> None:
    """Create a controller home: signing key, SSH CA, trust store, controller.toml, state.db.

    Example: bgctl --home /var/lib/bgctl init --id acme-prod
    """
    if not _ID.fullmatch(controller_id):
        raise Refused(f"bad id {controller_id!r}: use lowercase letters, digits, '.' and '-'")
    home = _home(ctx)
    home.create(controller_id)
    audit = _audit(home)
    key = home.public_key()
    ca = home.ca_key().public
    audit.append(
        "controller.init",
        "bgctl",
        {"controller_id": controller_id, "key": key.fingerprint, "ssh_ca": ca.fingerprint},
    )
    click.echo(f"initialised controller {controller_id} in {home.path}")
    click.echo(f"controller key  {key.fingerprint}")
    click.echo(f"SSH CA key      {ca.fingerprint}")
    click.echo(f"next: pin keys with `bgctl trust add`, describe resources in {home.config_path}")


@main.group(cls=RefusingGroup)
def trust() -> None:
    """Pin, list and unpin the keys this controller accepts (an allowed_signers file)."""


def _read_key_argument(value: str) -> PublicKey:
    path = Path(value)
    if len(value) < 4096 and "\n" not in value and path.is_file():
        return PublicKey.parse(path.read_text(errors="replace"), str(path))
    return PublicKey.parse(value, "key text")


@trust.command("add")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the key may sign.")
@click.option("--name", required=True, help="Who holds the key; shown in the audit log.")
@click.argument("key")
@click.pass_context
def trust_add(ctx: click.Context, role: str, name: str, key: str) -> None:
    """Pin KEY for ROLE. KEY is a .pub or PEM file, or the key text itself.

    Example: bgctl trust add --role approver --name alice ~/alice.pub
    """
    home = _home(ctx)
    home.require()
    check_name(name)
    check_role(role)
    store = home.trust()
    entry = store.add(name, role, _read_key_argument(key))
    log = _audit(home)  # config and keys are checked before anything is written
    store.save()
    log.append("trust.add", "bgctl", {"name": name, "role": role, "fingerprint": entry.fingerprint})
    click.echo(f"pinned {name} as {role}: {entry.fingerprint}")


@trust.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def trust_list(ctx: click.Context, as_json: bool) -> None:
    """Show every pinned key: role, name and fingerprint."""
    home = _home(ctx)
    home.require()
    entries = home.trust().entries
    if as_json:
        print_json(
            [{"name": e.name, "role": e.role, "fingerprint": e.fingerprint} for e in entries]
        )
        return
    if not entries:
        click.echo("no keys pinned; add one with `bgctl trust add --role R --name N KEY`")
    for entry in entries:
        click.echo(f"{entry.role:<9} {entry.name:<24} {entry.fingerprint}")


@trust.command("remove")
@click.argument("name")
@click.pass_context
def trust_remove(ctx: click.Context, name: str) -> None:
    """Unpin the key called NAME; its signatures are refused from now on."""
    home = _home(ctx)
    home.require()
    store = home.trust()
    entry = store.remove(name)
    log = _audit(home)
    store.save()
    log.append(
        "trust.remove",
        "bgctl",
        {"name": name, "role": entry.role, "fingerprint": entry.fingerprint},
    )
    click.echo(f"unpinned {name} ({entry.role}, {entry.fingerprint})")


@main.command()
@click.option(
    "--listen",
    metavar="unix:PATH|HOST:PORT",
    help="Where to listen (default: bgctl.sock in the home).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM certificate for TLS on HOST:PORT.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key for --tls-cert.",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_default=True,
)
@click.pass_context
def serve(
    ctx: click.Context,
    listen: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
) -> None:
    """Run the controller: verify, mint, expire, tear down, audit. Stops cleanly on SIGTERM.

    Examples: bgctl serve  |  bgctl serve --listen 0.0.0.0:8443 --tls-cert c.pem --tls-key k.pem
    """
    from controller.server import serve as run_server

    run_server(_home(ctx), listen, tls_cert, tls_key, log_level)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.pass_context
def sweep(ctx: click.Context, dry_run: bool) -> None:
    """Remove minted artifacts that no live session owns (after a crash, say).

    Example: bgctl sweep --dry-run
    """
    from controller.sweep import sweep as run_sweep

    home = _home(ctx)
    home.require()
    found = run_sweep(home, dry_run)
    for leftover in found:
        click.echo(leftover.line())
    if not found:
        click.echo("nothing to sweep: every minted artifact belongs to a live session")


@main.group(cls=RefusingGroup)
def audit() -> None:
    """Verify and export the signed, hash-chained audit log."""


@audit.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Recompute the chain and check every checkpoint; exit 1 naming the first bad entry."""
    home = _home(ctx)
    home.require()
    verdict = _audit(home).verify(home.public_key())
    if not verdict.ok:
        raise Refused(str(verdict))
    click.echo(str(verdict))


@audit.command("export")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the bundle (created; must be empty if it exists).",
)
@click.pass_context
def audit_export(ctx: click.Context, out: Path) -> None:
    """Write an evidence bundle a third party checks with ssh-keygen and sha256sum.

    Example: bgctl audit export --out evidence/ && cat evidence/README.md
    """
    home = _home(ctx)
    home.require()
    if out.exists() and any(out.iterdir()):
        raise Refused(f"{out}: not empty; give a new directory")
    log = _audit(home)
    log.export(out, home.public_key(), home.signing_key())
    click.echo(f"wrote evidence bundle to {out}; see {out / 'README.md'}")


if __name__ == "__main__":
    main(prog_name="bgctl")
