"""The controller's home: its keys, trust store, catalog and state, in one directory.

Private keys are written once with mode 0600 (never readable by others, not even briefly);
everything a person may want to read (trust store, controller.toml) is plain text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import platformdirs

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey
from bgtui.protocol.trust import TrustStore
from controller.config import EXAMPLE, ControllerConfig, load_config


def default_home() -> Path:
    env = os.environ.get("BGCTL_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("bgctl"))


def write_private(path: Path, data: bytes) -> None:
    """Creates `path` with mode 0600 and writes `data`; refuses to replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class ControllerHome:
    """Paths and loaders for one controller's home directory."""

    path: Path

    @property
    def key_path(self) -> Path:
        return self.path / "controller_ed25519"

    @property
    def ca_path(self) -> Path:
        return self.path / "ssh_ca_ed25519"

    @property
    def trust_path(self) -> Path:
        return self.path / "allowed_signers"

    @property
    def config_path(self) -> Path:
        return self.path / "controller.toml"

    @property
    def db_path(self) -> Path:
        return self.path / "state.db"

    @property
    def audit_head_path(self) -> Path:
        return self.path / "audit-head.json"

    @property
    def socket_path(self) -> Path:
        return self.path / "bgctl.sock"

    def exists(self) -> bool:
        return self.key_path.exists()

    def require(self) -> None:
        if not self.exists():
            raise Refused(f"{self.path}: no controller here; run `bgctl init --id ID` first")

    @cached_property
    def config(self) -> ControllerConfig:
        return load_config(self.config_path)

    def signing_key(self) -> PrivateKey:
        return _load_key(self.key_path)

    def ca_key(self) -> PrivateKey:
        return _load_key(self.ca_path)

    def public_key(self) -> PublicKey:
        return PublicKey.parse(self.key_path.with_suffix(".pub").read_text(), str(self.key_path))

    def trust(self) -> TrustStore:
        return TrustStore.load(self.trust_path)

    def create(self, controller_id: str) -> None:
        """Lays out a new home: keys, empty trust store, example controller.toml, state.db."""
        if self.exists() or self.config_path.exists():
            raise Refused(f"{self.path}: already holds a controller; pick another --home")
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        for path, comment in (
            (self.key_path, controller_id),
            (self.ca_path, f"{controller_id}-ca"),
        ):
            key = PrivateKey.generate(comment)
            write_private(path, key.openssh())
            path.with_suffix(".pub").write_text(key.public.openssh() + "\n")
        TrustStore(self.trust_path).save()
        self.config_path.write_text(EXAMPLE.format(id=controller_id))


def _load_key(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Refused(f"{path}: missing; run `bgctl init --id ID` first") from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise Refused(f"{path}: mode {mode:o} lets others read a private key; chmod 600 it")
    return PrivateKey.load(data, None, str(path))
