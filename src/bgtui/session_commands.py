"""The session commands: the lifecycle of DESIGN §3 against a controller.

`resources`, `request`, `list` and `show` read and ask; `approve` and `reject` sign a decision
after printing exactly what it grants; `withdraw`, `end` and `revoke` act on a request; `creds`
opens an active session's sealed credential.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bgtui import actions, sessionview
from bgtui.cli_context import echo_lines, json_option, passphrase_env_option, passphrase_from
from bgtui.client import (
    FINAL_STATES,
    ControllerClient,
    View,
    link_controller,
    request_id,
)
from bgtui.clikit import Duration, print_json
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Signed, TeardownReceipt
from bgtui.protocol.timefmt import now_utc
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

if TYPE_CHECKING:
    from bgtui.cli_context import ClientContext


@click.command()
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
    echo_lines(sessionview.resources_table(catalog))


@click.command("request")
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
    key, signer = obj.key_and_signer(identity, passphrase_env)
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
        signed = actions.build_request(
            identity=identity,
            key=key,
            signer=signer,
            controller_id=str(info["controller_id"]),
            resource=resource,
            privilege=privilege,
            credential_source=credential_source,
            duration=duration,
            reason=reason,
            now=now_utc(),
        )
        view = client.submit(signed)
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


@click.command("list")
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
    echo_lines(sessionview.requests_table(views))


@click.command()
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
    echo_lines(sessionview.show_lines(view, receipt, note))
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
        checked = actions.decidable(
            view,
            controller_id=str(info.get("controller_id")),
            duration=duration,
            duration_option="--duration ",
        )
        verb = "Approve" if decision == "approve" else "Reject"
        click.echo(f"{verb} this break-glass request:")
        lines = sessionview.decision_lines(
            checked.request,
            digest=checked.signed.digest,
            operator_name=str(view.get("operator")),
            decision=decision,
            duration=checked.granted,
            approvals_needed=int(view.get("approvals_needed") or 0),
        )
        echo_lines([f"  {line}" for line in lines])
        if decision == "reject":
            click.echo(f"  rejection reason: {reason}")
        _confirm_or_refuse(
            f"Sign this {'approval' if decision == 'approve' else 'rejection'}?", yes
        )
        approval = actions.sign_decision(
            checked, identity=identity, signer=signer, decision=decision, reason=reason
        )
        result = client.decide(rid, approval)
    click.echo(f"{result['id']}  {sessionview.state_line(result)}")


@click.command()
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


@click.command()
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


def _action_command(name: str, summary: str, example: str) -> click.Command:
    def run(obj: ClientContext, rid: str, as_json: bool) -> None:
        with obj.client(obj.signer()) as client:
            view = getattr(client, name)(rid)
        if as_json:
            print_json(view)
        else:
            click.echo(f"{view['id']}  {sessionview.state_line(view)}")

    run.__doc__ = f"{summary}\n\n    Example:\n\n    \b\n        {example}\n    "
    return click.command(name)(
        click.argument("rid", metavar="ID")(json_option("the request")(click.pass_obj(run)))
    )


withdraw = _action_command(
    "withdraw",
    "Withdraw your pending request (it becomes cancelled).",
    "bgtui withdraw 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9",
)
end = _action_command(
    "end",
    "End your active session now; everything minted for it is torn down.",
    "bgtui end 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9",
)
revoke = _action_command(
    "revoke",
    "Revoke an active session (approvers); everything minted for it is torn down.",
    "bgtui revoke 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9",
)


@click.command()
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
    key, signer = obj.key_and_signer(identity, passphrase_env)
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


@click.command()
@click.argument("rid", metavar="ID")
@passphrase_env_option("Passphrase of the identity's key, from env var VAR.")
@click.pass_obj
def connect(obj: ClientContext, rid: str, passphrase_env: str | None) -> None:
    """Open your active session here: an SSH shell, kubectl in a subshell, or psql.

    SSH shells are recorded (asciicast v2) and uploaded when they close; the shell is closed
    when the session ends. Example:

    \b
        bgtui connect 01JD2V6XKQ8ZJ3M4N5P6Q7R8S9
    """
    import threading

    from bgtui.recording import describe, upload_pending
    from bgtui.shell import ShellSession, TerminalShellLauncher

    identity = obj.identity()
    key, signer = obj.key_and_signer(identity, passphrase_env)
    if key is None:
        raise Refused(f"identity {identity.name}: ssh-agent keys cannot open a sealed credential")
    with obj.client(signer) as client:
        view = client.get(rid)
        if view.get("state") != "active":
            raise Refused(f"session {rid} is {view.get('state')}; only an active session connects")
        catalog = {str(r.get("name")): r for r in client.resources()}
        resource = catalog.get(str(view.get("resource")), {})
        sealed = client.credentials(rid).get("sealed")
        credential = open_sealed(str(sealed), key) if sealed else None
        kind = str(resource.get("kind") or "service")
        session = ShellSession(
            rid,
            kind,
            str(resource.get("address") or ""),
            credential,
            session_key(key, rid) if kind == "ssh" else None,
            threading.Event(),
            record_home=obj.home.path,
        )

        def watch() -> None:  # close the shell when the controller ends the session
            try:
                for update in client.watch(rid):
                    if update.get("state") not in ("active",):
                        session.ended_reason = str(update.get("ended_reason") or update["state"])
                        session.ended.set()
                        return
            except Refused:
                return

        threading.Thread(target=watch, name="connect-watch", daemon=True).start()
        outcome = TerminalShellLauncher().run_here(session)
        message = outcome.message
        if session.ended.is_set() and session.ended_reason:
            message += f" ({session.ended_reason})"
        click.echo(message, err=True)
        for upload in upload_pending(client.upload_recording, obj.home.path, outcome.recording):
            click.echo(describe(upload), err=True)
    if not outcome.ran:
        raise Refused(outcome.message)
