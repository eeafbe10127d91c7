"""Approved command recipes: declarative TOML of exact command text and named inputs.

A recipe is never a template engine: SQL placeholders are bound by psycopg as identifiers or
literals, command recipes get their inputs as environment variables, and the approver sees the
file verbatim; the request carries the file's text and SHA-256, which the approval signs.

Kinds and the keys each takes (besides `name`, `description`, `kind`, `inputs`, `outputs`):

- `sql`: `mint` (statements run once), and for teardown `teardown` (run first, once),
  `teardown_each_database` (run in every database that accepts connections, since
  `REASSIGN OWNED` and `DROP OWNED` act on one database) and `teardown_last` (run once, last);
- `command`: `argv` (run without a shell; stdout is the secret);
- `file`: `path` (relative to the controller's home, or absolute);
- `env`: `var` (an environment variable of the controller);
- `kubernetes-secret`: `namespace`, `secret`, `key`.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bgtui.protocol.errors import Refused

KINDS = ("sql", "command", "file", "env", "kubernetes-secret")
_COMMON = {"name", "description", "kind", "inputs", "outputs"}
_TEARDOWN = ("teardown", "teardown_each_database", "teardown_last")
_LISTS = ("mint", *_TEARDOWN, "argv")
_SOURCE = ("path", "var", "namespace", "secret", "key")
# kind -> (required keys, optional keys)
_KIND_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sql": (("mint",), _TEARDOWN),
    "command": (("argv",), ()),
    "file": (("path",), ()),
    "env": (("var",), ()),
    "kubernetes-secret": (("namespace", "secret", "key"), ()),
}


class RecipeError(Refused):
    """A recipe that cannot be read or used; one line naming the file (or the recipe)."""


@dataclass(frozen=True)
class Recipe:
    """One recipe file: its exact text, its hash, and what it runs."""

    name: str
    kind: str
    text: str
    description: str = ""
    mint: tuple[str, ...] = ()
    teardown: tuple[str, ...] = ()
    teardown_each_database: tuple[str, ...] = ()
    teardown_last: tuple[str, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    source: dict[str, str] = field(default_factory=dict)  # path / var / namespace+secret+key
    inputs: dict[str, str] = field(default_factory=dict)  # fixed inputs the recipe declares

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)

    def command(self, inputs: dict[str, str]) -> dict[str, Any]:
        """The `command` object a Request carries: recipe name, hash, text and inputs."""
        return {"recipe": self.name, "sha256": self.sha256, "text": self.text, "inputs": inputs}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def builtin_path(name: str) -> Path | None:
    candidate = resources.files("controller.recipes").joinpath(f"{name}.toml")
    return Path(str(candidate)) if candidate.is_file() else None


def recipe_path(ref: str, home: Path) -> Path:
    """Where recipe `ref` lives: a built-in name (`postgres-role`) or a path under the home."""
    builtin = builtin_path(ref) if "/" not in ref and not ref.endswith(".toml") else None
    return builtin or (home / ref)


def load_recipe(ref: str, home: Path) -> Recipe:
    """Loads a recipe by built-in name (`postgres-role`) or by path relative to the home."""
    path = recipe_path(ref, home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"recipe {ref!r}: {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RecipeError(f"recipe {ref!r}: cannot read {path}: {reason}") from None
    return parse_recipe(text, str(path), path.stem)


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def parse_recipe(text: str, origin: str, default_name: str = "recipe") -> Recipe:
    """A recipe from its exact text; `origin` (a file name) starts every error message."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{origin}: not valid TOML: {exc}") from None
    kind = data.get("kind")
    if kind not in KINDS:
        raise RecipeError(f"{origin}: kind must be one of {', '.join(KINDS)}")
    required, optional = _KIND_KEYS[kind]
    allowed = _COMMON | set(required) | set(optional)
    unknown = sorted(set(data) - allowed)
    if unknown:
        known = set(_LISTS) | set(_SOURCE) | _COMMON
        why = f"{_a(kind)} recipe takes no" if unknown[0] in known else "unknown key"
        raise RecipeError(f"{origin}: {why} {unknown[0]!r}")
    for key in required:
        if not data.get(key):
            raise RecipeError(f"{origin}: {_a(kind)} recipe needs `{key}`")

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise RecipeError(f"{origin}: {key} must be a list of non-empty strings")
        return tuple(value)

    def table(key: str) -> dict[str, str]:
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise RecipeError(f"{origin}: [{key}] must map names to strings")
        return dict(value)

    for key in ("name", "description", *_SOURCE):
        if key in data and not isinstance(data[key], str):
            raise RecipeError(f"{origin}: {key} must be a string")
    return Recipe(
        name=str(data.get("name") or default_name),
        kind=kind,
        text=text,
        description=str(data.get("description", "")),
        mint=strings("mint"),
        teardown=strings("teardown"),
        teardown_each_database=strings("teardown_each_database"),
        teardown_last=strings("teardown_last"),
        outputs=table("outputs"),
        argv=strings("argv"),
        source={k: data[k] for k in _SOURCE if k in data},
        inputs=table("inputs"),
    )


def approved_recipe(command: dict[str, Any] | None) -> Recipe | None:
    """The recipe exactly as a request carried it (its text checked against its hash)."""
    if not isinstance(command, dict):
        return None
    text, digest = command.get("text"), command.get("sha256")
    if not isinstance(text, str) or not isinstance(digest, str) or sha256_text(text) != digest:
        return None
    name = str(command.get("recipe") or "recipe")
    return parse_recipe(text, f"recipe {name} (as approved)", name)
