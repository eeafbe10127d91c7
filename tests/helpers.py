"""Small helpers shared by tests: run the real CLIs, snapshot a directory tree."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path


def run(
    program: str, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `bgtui` or `bgctl` as a real process, the way a user would."""
    module = {"bgtui": "bgtui.cli", "bgctl": "controller.cli"}[program]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=120,
        check=False,
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` with its mode and SHA-256, to prove a refusal changed nothing."""
    result: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            mode = oct(path.stat().st_mode & 0o777)
            result[str(path.relative_to(root))] = (
                f"{mode} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            )
    return result
