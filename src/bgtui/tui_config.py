"""What the TUI reads from the client home's `config.toml`: key bindings and theme.

```toml
theme = "nord"                 # any Textual theme name
passphrase_env = "MY_PASS"     # env var holding the identity key's passphrase (optional)

[keymap]                       # binding id = keys, e.g. rebinding approve to ctrl+a
approve = "ctrl+a"
```

Binding ids are the ones the help screen lists. Unknown ids and non-string keys are refused
with the file and key named, so a typo never silently leaves a key unbound.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bgtui.home import ClientHome
from bgtui.protocol.errors import Refused

PASSPHRASE_ENV = "BGTUI_PASSPHRASE"  # noqa: S105 - the name of an env var
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class TuiSettings:
    """Everything the app needs to know before it starts; built by the CLI or a test."""

    home: ClientHome
    controller: str
    identity_name: str | None = None
    ca_cert: Path | None = None
    keymap: dict[str, str] = field(default_factory=dict)
    theme: str | None = None
    passphrase_env: str = PASSPHRASE_ENV
    # Seconds to wait before each reconnect attempt (the last one repeats), and how many
    # failed attempts in a row turn "reconnecting" into "offline".
    reconnect_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
    offline_after: int = 3


def read_config(path: Path) -> dict[str, Any]:
    """The parsed TOML at `path` ({} when it does not exist), refusing unreadable files."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise Refused(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise Refused(f"{path}: not valid TOML ({exc})") from None


def tui_options(path: Path, binding_ids: Iterable[str]) -> dict[str, Any]:
    """`keymap`, `theme` and `passphrase_env` from config.toml, checked."""
    config = read_config(path)
    known = set(binding_ids)
    keymap_table = config.get("keymap", {})
    if not isinstance(keymap_table, dict):
        raise Refused(f'{path}: [keymap] must be a table of binding id = "keys"')
    keymap: dict[str, str] = {}
    for key, value in keymap_table.items():
        if key not in known:
            raise Refused(
                f"{path}: [keymap] {key!r} is not a binding id; known: {', '.join(sorted(known))}"
            )
        if not isinstance(value, str) or not value.strip():
            raise Refused(f'{path}: [keymap] {key} must be a string of keys, like "ctrl+a"')
        keymap[key] = value.strip()
    options: dict[str, Any] = {"keymap": keymap}
    for name in ("theme", "passphrase_env"):
        value = config.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise Refused(f"{path}: {name} must be a non-empty string")
        options[name] = value.strip()
    return options
