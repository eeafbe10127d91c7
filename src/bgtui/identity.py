"""Client identities: a name, a role and an Ed25519 key from a file, ssh-agent, env or command.

An identity lives in `HOME/identities/NAME/`: `identity.toml` (what it is), `id_ed25519.pub`
(the public line) and, for the file source only, `id_ed25519` (OpenSSH private key, mode 0600).
For the other sources the home holds no private key material at all.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgtui.agent import AgentSigner
from bgtui.home import ClientHome, check_identity_name
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey, PublicKey, is_encrypted
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import now_utc, utc_text

ROLES = ("operator", "approver", "auditor")
SOURCE_KINDS = ("file", "agent", "env", "command")
IDENTITY_FILE = "identity.toml"
PRIVATE_FILE = "id_ed25519"
PUBLIC_FILE = "id_ed25519.pub"
COMMAND_TIMEOUT = 30.0

Passphrase = Callable[[], bytes | None]
"""Asked only when a key turns out to be encrypted; returns None when no passphrase is at hand."""


@dataclass(frozen=True)
class KeySource:
    """Where an identity's private key comes from: `file`, `agent`, `env:VAR` or `command:CMD`."""

    kind: str
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise Refused(
                f"unknown key source {self.kind!r}: use file, agent, env:VAR or command:CMD"
            )
        if self.kind in ("env", "command") and not self.value.strip():
            raise Refused(f"key source {self.kind} needs a value ({self.kind}:…)")
        if self.kind == "command":
            _split_command(self.value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}" if self.kind in ("env", "command") else self.kind

    @classmethod
    def parse(cls, text: str) -> KeySource:
        """Reads the `file` / `agent` / `env:VAR` / `command:CMD` form stored in identity.toml."""
        kind, _, value = text.partition(":")
        return cls(kind, value)

    def read_private_text(self) -> bytes:
        """The private key text from the env var or the command's stdout (env/command only)."""
        if self.kind == "env":
            value = os.environ.get(self.value)
            if not value:
                raise Refused(
                    f"{self}: environment variable {self.value} is not set; "
                    "it should hold the private key text"
                )
            return value.encode()
        if self.kind == "command":
            return _run_key_command(self.value, str(self))
        raise Refused(f"{self}: this key source has no private key text to read")


def _split_command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise Refused(f"command:{command}: cannot split the command ({exc})") from None
    if not argv:
        raise Refused("key source command needs a command to run")
    return argv


def _run_key_command(command: str, label: str) -> bytes:
    argv = _split_command(command)
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise Refused(f"{label}: command {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise Refused(f"{label}: no output within {COMMAND_TIMEOUT:g}s") from None
    except OSError as exc:
        raise Refused(f"{label}: cannot run ({exc.strerror or exc})") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line]
        said = f": {lines[-1].strip()[:200]}" if lines else ""
        raise Refused(f"{label}: exited with status {result.returncode}{said}")
    if not result.stdout.strip():
        raise Refused(f"{label}: printed nothing; it should print the private key")
    return result.stdout


def load_private(
    data: bytes, source: str, passphrase: Passphrase | None = None
) -> tuple[PrivateKey, bytes | None]:
    """Opens private key text, asking `passphrase` only if it is encrypted; returns the key and
    the passphrase used (None when the key was not encrypted)."""
    secret: bytes | None = None
    if is_encrypted(data):
        secret = passphrase() if passphrase is not None else None
        if not secret:
            raise Refused(
                f"{source}: key is passphrase-protected; give the passphrase "
                "(--passphrase-env VAR, or run from a terminal to be asked)"
            )
    return PrivateKey.load(data, secret, source), secret


def read_key_file(
    path: Path, passphrase: Passphrase | None = None
) -> tuple[PrivateKey, bytes | None]:
    """Reads an OpenSSH or PKCS#8 PEM private key file (see `load_private`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Refused(f"{path}: cannot read ({exc.strerror or exc})") from None
    return load_private(data, str(path), passphrase)


def _toml_string(value: str) -> str:
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Identity:
    """A named, enrolled key in a client home, with its role and where its private key lives."""

    home: ClientHome
    name: str
    role: str
    source: KeySource
    public: PublicKey
    created_at: str

    @property
    def directory(self) -> Path:
        """`HOME/identities/NAME`."""
        return self.home.identity_dir(self.name)

    @property
    def private_path(self) -> Path:
        """The OpenSSH private key file (only present for the file source)."""
        return self.directory / PRIVATE_FILE

    @property
    def fingerprint(self) -> str:
        """The enrolled key's fingerprint, `SHA256:…` as OpenSSH shows it."""
        return self.public.fingerprint

    @property
    def public_line(self) -> str:
        """`ssh-ed25519 AAAA… NAME`, the form `bgctl trust add` takes."""
        return self.public.openssh(self.name)

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def names(cls, home: ClientHome) -> list[str]:
        """Names of the identities in `home`, sorted; empty when the home does not exist."""
        try:
            entries = list(home.identities_dir.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise Refused(f"{home.identities_dir}: cannot list ({exc.strerror or exc})") from None
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(".") and (entry / IDENTITY_FILE).is_file()
        )

    @classmethod
    def load_all(cls, home: ClientHome) -> list[Identity]:
        """Every identity in `home`, sorted by name."""
        return [cls.load(home, name) for name in cls.names(home)]

    @classmethod
    def load(cls, home: ClientHome, name: str | None = None) -> Identity:
        """Identity `name`, or the only one in the home when `name` is None."""
        names = cls.names(home)
        if name is None:
            if not names:
                raise Refused(
                    f"no identity in {home.path}; create one with "
                    "`bgtui keygen --role ROLE --name NAME`"
                )
            if len(names) > 1:
                raise Refused(
                    f"several identities in {home.path} ({', '.join(names)}); "
                    "choose one with --identity NAME"
                )
            name = names[0]
        check_identity_name(name)
        if name not in names:
            have = f"; have: {', '.join(names)}" if names else ""
            raise Refused(f"no identity named {name!r} in {home.path}{have}")
        return cls._read(home, name)

    @classmethod
    def _read(cls, home: ClientHome, name: str) -> Identity:
        directory = home.identity_dir(name)
        meta_path = directory / IDENTITY_FILE
        try:
            meta: dict[str, Any] = tomllib.loads(meta_path.read_text())
        except OSError as exc:
            raise Refused(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise Refused(f"{meta_path}: not valid TOML ({exc})") from None
        for key in ("name", "role", "source", "fingerprint", "created_at"):
            if not isinstance(meta.get(key), str):
                raise Refused(f"{meta_path}: key {key!r} is missing or not a string")
        if meta["name"] != name:
            raise Refused(f"{meta_path}: name {meta['name']!r} does not match its directory")
        if meta["role"] not in ROLES:
            raise Refused(f"{meta_path}: role {meta['role']!r} is not one of {', '.join(ROLES)}")
        try:
            source = KeySource.parse(meta["source"])
        except Refused as exc:
            raise Refused(f"{meta_path}: {exc}") from None
        public_path = directory / PUBLIC_FILE
        try:
            public_text = public_path.read_text()
        except OSError as exc:
            raise Refused(f"{public_path}: cannot read ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise Refused(f"{public_path}: not a public key (not UTF-8 text)") from None
        public = PublicKey.parse(public_text, str(public_path)).with_comment(name)
        if public.fingerprint != meta["fingerprint"]:
            raise Refused(
                f"{public_path}: key {public.fingerprint} is not the enrolled key "
                f"{meta['fingerprint']} recorded in {IDENTITY_FILE}"
            )
        return cls(home, name, meta["role"], source, public, meta["created_at"])

    # -- signing -------------------------------------------------------------------------

    def private_key(self, passphrase: Passphrase | None = None) -> PrivateKey:
        """The private key in memory (file, env and command sources; ssh-agent never gives it)."""
        if self.source.kind == "agent":
            raise Refused(
                f"identity {self.name}: its key stays in ssh-agent and cannot be read out"
            )
        if self.source.kind == "file":
            path = self.private_path
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                raise Refused(f"{path}: cannot read ({exc.strerror or exc})") from None
            if mode & 0o077:
                raise Refused(
                    f"{path}: permissions {mode & 0o777:04o} are too open; chmod 600 {path}"
                )
            key, _ = read_key_file(path, passphrase)
            label = f"file {path}"
        else:
            key, _ = load_private(self.source.read_private_text(), str(self.source), passphrase)
            label = str(self.source)
        self._check_enrolled(key.public, label)
        return key.with_comment(self.name)

    def signer(self, passphrase: Passphrase | None = None) -> Signer:
        """A Signer for this identity, refusing if its source now yields a different key."""
        if self.source.kind == "agent":
            # Finding the key in the agent (and the socket) is left to signing time: the agent
            # refuses a key it does not hold, and AgentSigner checks every signature it returns.
            return AgentSigner(self.public)
        return self.private_key(passphrase)

    def _check_enrolled(self, found: PublicKey, label: str) -> None:
        if found != self.public:
            raise Refused(
                f"identity {self.name}: key from {label} ({found.fingerprint}) is not the "
                f"enrolled key {self.fingerprint}"
            )

    # -- writing -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        home: ClientHome,
        name: str,
        role: str,
        key: PrivateKey,
        passphrase: bytes | None = None,
    ) -> Identity:
        """Stores `key` as a file-source identity (encrypted when given a passphrase)."""
        return cls._write(home, name, role, KeySource("file"), key.public, key.openssh(passphrase))

    @classmethod
    def enrol(
        cls, home: ClientHome, name: str, role: str, source: KeySource, public: PublicKey
    ) -> Identity:
        """Records an identity whose private key stays elsewhere (agent, env or command)."""
        if source.kind == "file":
            raise Refused("a file-source identity is created with Identity.create")
        return cls._write(home, name, role, source, public, None)

    @classmethod
    def check_new(cls, home: ClientHome, name: str, role: str) -> None:
        """Refuses a bad name or role, or a name already taken, before any work is done."""
        directory = home.identity_dir(name)
        if role not in ROLES:
            raise Refused(f"bad role {role!r}: use one of {', '.join(ROLES)}")
        if directory.exists() or directory.is_symlink():
            raise Refused(
                f"identity {name!r} already exists in {directory}; "
                "choose another --name (keygen never overwrites a key)"
            )

    @classmethod
    def _write(
        cls,
        home: ClientHome,
        name: str,
        role: str,
        source: KeySource,
        public: PublicKey,
        private_pem: bytes | None,
    ) -> Identity:
        cls.check_new(home, name, role)
        identity = cls(home, name, role, source, public.with_comment(name), utc_text(now_utc()))
        meta = "".join(
            f"{key} = {_toml_string(value)}\n"
            for key, value in (
                ("name", name),
                ("role", role),
                ("source", str(source)),
                ("fingerprint", identity.fingerprint),
                ("created_at", identity.created_at),
            )
        )
        tomllib.loads(meta)  # never leave a file that load() cannot read back
        home.ensure()
        final = identity.directory
        # Build the whole identity in a private temp dir beside its final place, then rename it
        # in: a failure half-way leaves no half-written identity behind.
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=home.identities_dir))
        try:
            if private_pem is not None:
                _write_new(staging / PRIVATE_FILE, private_pem, 0o600)
            _write_new(staging / PUBLIC_FILE, (identity.public_line + "\n").encode(), 0o644)
            _write_new(staging / IDENTITY_FILE, meta.encode(), 0o644)
            if final.exists() or final.is_symlink():
                raise Refused(f"identity {name!r} already exists in {final}; choose another --name")
            os.rename(staging, final)
        except OSError as exc:
            raise Refused(f"{final}: cannot write the identity ({exc.strerror or exc})") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return identity


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL and the mode at creation: a private key is never readable by others, not even
    # for the moment between create and chmod.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
