"""Planes and their providers; adding a provider is one file and one line here."""

from __future__ import annotations

from pathlib import Path

from controller.config import ControllerConfig, Resource
from controller.planes.base import PlaneError, Provider
from controller.planes.credential.kubernetes import KubernetesCredential
from controller.planes.credential.out_of_band import OutOfBand
from controller.planes.credential.recipe import RecipeCredential
from controller.planes.credential.ssh_ca import SshCertificateCredential
from controller.planes.network.direct import Direct

# (credential source, resource kind) -> provider; "*" matches any kind.
CREDENTIAL_PROVIDERS: dict[tuple[str, str], type[Provider]] = {
    ("out-of-band", "*"): OutOfBand,
    ("controller", "kubernetes"): KubernetesCredential,
    ("controller", "ssh"): SshCertificateCredential,
    ("command", "*"): RecipeCredential,
}
NETWORK_PROVIDERS: dict[str, type[Provider]] = {
    "direct": Direct,
}


def credential_provider(resource: Resource, home: Path) -> Provider:
    for key in ((resource.credential, resource.kind), (resource.credential, "*")):
        if key in CREDENTIAL_PROVIDERS:
            return CREDENTIAL_PROVIDERS[key](home)
    raise PlaneError(
        f"credential source {resource.credential!r} for a {resource.kind} resource "
        "is not available in this controller"
    )


def network_provider(resource: Resource, home: Path) -> Provider:
    if resource.network not in NETWORK_PROVIDERS:
        raise PlaneError(f"network path {resource.network!r} is not available in this controller")
    return NETWORK_PROVIDERS[resource.network](home)


def providers_for(resource: Resource, config: ControllerConfig, home: Path) -> list[Provider]:
    """The providers a session on `resource` needs, in the order they are set up."""
    if resource.network == "direct" and not config.allow_direct:
        raise PlaneError(f"{resource.name}: policy forbids direct network paths")
    return [network_provider(resource, home), credential_provider(resource, home)]
