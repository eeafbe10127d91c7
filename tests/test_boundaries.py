"""The domain core stays free of the TUI and HTTP frameworks (STYLE: thin shells around a core)."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "bgtui.protocol.keys",
    "bgtui.protocol.sshsig",
    "bgtui.protocol.canonical",
    "bgtui.protocol.objects",
    "bgtui.protocol.verify",
    "bgtui.protocol.trust",
    "controller.config",
    "controller.store",
    "controller.audit",
    "controller.ledger",
    "controller.planes",
]
FORBIDDEN = ("textual", "starlette", "uvicorn", "httpx")


def test_core_modules_import_no_framework() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"core modules pulled in framework modules: {out}"
