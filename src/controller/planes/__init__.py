"""Planes and their providers; adding a provider is one file and one line here."""

from __future__ import annotations

from controller.config import ControllerConfig, Resource
from controller.planes.base import PlaneError, Provider
from controller.planes.credential.out_of_band import OutOfBand
from controller.planes.network.direct import Direct

# (credential source, resource kind) -> provider; "*" matches any kind.
CREDENTIAL_PROVIDERS: dict[tuple[str, str], type[Provider]] = {
    ("out-of-band", "*"): OutOfBand,
}
NETWORK_PROVIDERS: dict[str, type[Provider]] = {
    "direct": Direct,
}


def credential_provider(resource: Resource) -> Provider:
    for key in ((resource.credential, resource.kind), (resource.credential, "*")):
        if key in CREDENTIAL_PROVIDERS:
            return CREDENTIAL_PROVIDERS[key]()
    raise PlaneError(
        f"credential source {resource.credential!r} for a {resource.kind} resource "
        "is not available in this controller"
    )


def network_provider(resource: Resource) -> Provider:
    if resource.network not in NETWORK_PROVIDERS:
        raise PlaneError(f"network path {resource.network!r} is not available in this controller")
    return NETWORK_PROVIDERS[resource.network]()


def providers_for(resource: Resource, config: ControllerConfig) -> list[Provider]:
    """The providers a session on `resource` needs, in the order they are set up."""
    if resource.network == "direct" and not config.allow_direct:
        raise PlaneError(f"{resource.name}: policy forbids direct network paths")
    return [network_provider(resource), credential_provider(resource)]
