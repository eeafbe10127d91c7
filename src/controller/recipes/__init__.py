"""Approved command recipes: declarative TOML of exact command text and named inputs.

A recipe is never a template engine: SQL placeholders are bound by psycopg as identifiers or
literals, shell recipes get their inputs as environment variables, and the approver sees the
file verbatim; the request carries the file's SHA-256, which the approval signs.
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
_KEYS = {
    "name",
    "description",
    "kind",
    "mint",
    "teardown",
    "outputs",
    "argv",
    "path",
    "var",
    "namespace",
    "secret",
    "key",
    "inputs",
}


@dataclass(frozen=True)
class Recipe:
    """One recipe file: its exact text, its hash, and what it runs."""

    name: str
    kind: str
    text: str
    description: str = ""
    mint: tuple[str, ...] = ()
    teardown: tuple[str, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    source: dict[str, str] = field(default_factory=dict)  # path / var / namespace+secret+key
    inputs: dict[str, str] = field(default_factory=dict)  # fixed inputs the recipe declares

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def command(self, inputs: dict[str, str]) -> dict[str, Any]:
        """The `command` object a Request carries: recipe name, hash, text and inputs."""
        return {"recipe": self.name, "sha256": self.sha256, "text": self.text, "inputs": inputs}


def builtin_path(name: str) -> Path | None:
    candidate = resources.files("controller.recipes").joinpath(f"{name}.toml")
    return Path(str(candidate)) if candidate.is_file() else None


def load_recipe(ref: str, home: Path) -> Recipe:
    """Loads a recipe by built-in name (`postgres-role`) or by path relative to the home."""
    path = builtin_path(ref) if "/" not in ref and not ref.endswith(".toml") else None
    path = path or (home / ref)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise Refused(f"recipe {ref!r}: {path} not found") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise Refused(f"{path}: unknown key {sorted(unknown)[0]!r}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise Refused(f"{path}: kind must be one of {', '.join(KINDS)}")

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Refused(f"{path}: {key} must be a list of strings")
        return tuple(value)

    def table(key: str) -> dict[str, str]:
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise Refused(f"{path}: [{key}] must map names to strings")
        return dict(value)

    source: dict[str, str] = {
        k: data[k] for k in ("path", "var", "namespace", "secret", "key") if k in data
    }
    if not all(isinstance(v, str) for v in source.values()):
        raise Refused(f"{path}: path, var, namespace, secret and key must be strings")
    recipe = Recipe(
        name=str(data.get("name") or path.stem),
        kind=kind,
        text=text,
        description=str(data.get("description", "")),
        mint=strings("mint"),
        teardown=strings("teardown"),
        outputs=table("outputs"),
        argv=strings("argv"),
        source=source,
        inputs=table("inputs"),
    )
    _check(recipe, path)
    return recipe


def _check(recipe: Recipe, path: Path) -> None:
    needs = {
        "sql": ("mint",),
        "command": ("argv",),
        "file": ("path",),
        "env": ("var",),
        "kubernetes-secret": ("namespace", "secret", "key"),
    }[recipe.kind]
    for key in needs:
        present = getattr(recipe, key, None) if key in ("mint", "argv") else recipe.source.get(key)
        if not present:
            raise Refused(f"{path}: a {recipe.kind} recipe needs `{key}`")
