"""The audit evidence bundle: everything a third party needs to check the log with stock tools.

The writer lives in `bgtui.protocol.evidence`, shared with the client's mirror export; the
controller signs SHA256SUMS with its own key (see `AuditLog.export`).
"""

from __future__ import annotations

from bgtui.protocol.evidence import (
    EXPORT_NAMESPACE,
    NAMESPACES,
    SUMS,
    allowed_signers_line,
    bundle_readme,
    chain_script,
    checkpoint_name,
    write_bundle,
)

__all__ = [
    "EXPORT_NAMESPACE",
    "NAMESPACES",
    "SUMS",
    "allowed_signers_line",
    "bundle_readme",
    "chain_script",
    "checkpoint_name",
    "write_bundle",
]
