"""The client's home directory: where identities (and later config and the local store) live."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bgtui.protocol.errors import Refused

HOME_ENV = "BGTUI_HOME"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def check_identity_name(name: str) -> str:
    """Returns `name` if it is usable as an identity name (and directory name), else refuses."""
    if not _NAME.fullmatch(name):
        raise Refused(
            f"bad identity name {name!r}: use up to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_home_path() -> Path:
    """$BGTUI_HOME, else the platform's per-user data dir; computed on call, never at import."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs  # deferred: resolving the data dir is only needed when no home is given

    return Path(platformdirs.user_data_dir("bgtui"))


class ClientHome:
    """Paths inside a client home; creates nothing until `ensure()` is called."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"ClientHome({str(self.path)!r})"

    @classmethod
    def resolve(cls, explicit: Path | str | None = None) -> ClientHome:
        """The home named by `--home`, else $BGTUI_HOME, else the platform default."""
        return cls(explicit if explicit else default_home_path())

    @property
    def identities_dir(self) -> Path:
        """`HOME/identities`, one directory per identity."""
        return self.path / "identities"

    def identity_dir(self, name: str) -> Path:
        """The directory of identity `name` (validated, so it can never escape the home)."""
        return self.identities_dir / check_identity_name(name)

    @property
    def config_path(self) -> Path:
        """`HOME/config.toml` (client settings; not read yet)."""
        return self.path / "config.toml"

    def ensure(self) -> None:
        """Creates the home and its identities dir, private to the user (mode 0700)."""
        for directory in (self.path, self.identities_dir):
            if directory.is_dir():
                continue
            try:
                directory.mkdir(mode=0o700, parents=True)
                os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
            except FileExistsError:
                if not directory.is_dir():
                    raise Refused(f"{directory}: exists and is not a directory") from None
            except OSError as exc:
                raise Refused(
                    f"{directory}: cannot create the bgtui home ({exc.strerror})"
                ) from None
