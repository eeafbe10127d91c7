"""Shared fixtures: every test gets its own homes under tmp_path; nothing reads the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every home and config lookup at tmp_path so tests never touch real user state."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user" / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user" / "config"))
    monkeypatch.delenv("BGTUI_HOME", raising=False)
    monkeypatch.delenv("BGCTL_HOME", raising=False)
    monkeypatch.delenv("BGTUI_CONTROLLER", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
