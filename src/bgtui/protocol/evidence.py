"""The audit chain rule and the evidence bundle, shared by the controller and the client mirror.

An entry's hash is `sha256(prev_hash_hex + "\\n" + entry bytes)`, 64 zeros before the first.
The bundle holds entries.jsonl (the canonical bytes, one entry a line), hashes.txt, every
checkpoint as its signed bytes plus an `ssh-keygen -Y sign` signature, the controller's key as
an allowed_signers file, a POSIX script that recomputes the chain, SHA256SUMS over all of it
(signed when the controller itself exports), and a README that walks through the checks.

A bundle may hold a contiguous slice of the log (one session's span) rather than all of it:
the chain then starts from the stored hash of the entry before the slice, and what it proves is
that these exact entries end in a head the controller signed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Checkpoint, Signed

GENESIS = "0" * 64
EXPORT_NAMESPACE = "bgtui-export@v1"
NAMESPACES = (Checkpoint.NAMESPACE, "bgtui-receipt@v1", EXPORT_NAMESPACE)
SUMS = "SHA256SUMS"
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")

EntryRow = tuple[int, bytes, str, str]
"""(seq, entry bytes, prev_hash, hash) as stored."""


@dataclass(frozen=True)
class AuditVerdict:
    """The outcome of verifying an audit log: intact, or the first bad entry and what is wrong.

    `copy` names which copy was checked when it is not the controller's own ("local copy").
    """

    ok: bool
    size: int
    checkpoints: int
    first_bad: int | None = None
    detail: str = ""
    copy: str = ""

    def __str__(self) -> str:
        tag = f" ({self.copy})" if self.copy else ""
        if self.ok:
            return (
                f"audit log intact: {self.size} entries, "
                f"{self.checkpoints} checkpoints verified{tag}"
            )
        where = f" at entry {self.first_bad}" if self.first_bad is not None else ""
        return f"audit log broken{where}{tag}: {self.detail}"


def summary_line(data: dict[str, Any], width: int = 70) -> str:
    """An entry's data in one line: the telling fields first, long tokens shortened, nested
    objects (signed payloads) left out; the full entry has everything."""
    keys = sorted(data, key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k))
    parts = []
    for key in keys:
        value = data[key]
        if isinstance(value, dict | list) or value in (None, ""):
            continue
        text = str(value)
        if len(text) > 24 and " " not in text:
            text = text[:12] + "…"
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


_FIRST = ("reason", "resource", "privilege", "duration", "decision", "error", "sha256")


def chain_hash(prev: str, entry: bytes) -> str:
    """The hash of an entry: sha256 over the previous hash (hex), a newline and the entry bytes."""
    return hashlib.sha256(prev.encode() + b"\n" + entry).hexdigest()


def checkpoint_name(size: int) -> str:
    """The bundle path of the checkpoint covering the first `size` entries."""
    return f"checkpoints/{size:08d}.json"


def allowed_signers_line(controller_id: str, key: PublicKey) -> str:
    """The controller's key as an allowed_signers line, limited to the controller's namespaces."""
    if not _PRINCIPAL.fullmatch(controller_id):
        raise Refused(f"controller id {controller_id!r} can't be an allowed_signers principal")
    return f'{controller_id} namespaces="{",".join(NAMESPACES)}" {key.openssh(comment="")}\n'


@dataclass(frozen=True)
class BundleScope:
    """Who exports and what: the whole log (the default, by bgctl) or one session's span."""

    exported_by: str = "bgctl"
    session: str | None = None
    recordings: tuple[Path, ...] = ()  # files named <sha256>.cast, copied into recordings/


def write_bundle(
    out_dir: Path,
    *,
    controller_id: str,
    controller_key: PublicKey,
    signer: sshsig.Signer | None,
    entries: Iterable[EntryRow],
    checkpoints: Iterable[tuple[int, Signed]],
    verdict: str,
    scope: BundleScope | None = None,
) -> Path:
    """Writes the bundle into `out_dir` (new or empty) and returns it.

    `entries` are (seq, bytes, prev_hash, hash) in seq order, contiguous; `checkpoints` are
    (size, signed). `signer` must be the controller key (it signs SHA256SUMS); None leaves
    SHA256SUMS unsigned (a client exporting its mirror). `verdict` goes into the README.
    """
    scope = scope or BundleScope()
    if signer is not None and signer.public != controller_key:
        raise Refused("the signing key is not the controller key; cannot sign the bundle")
    allowed = allowed_signers_line(controller_id, controller_key)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise Refused(f"{out_dir}: not empty; give a new directory")
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    count, first, prev = 0, 1, GENESIS
    with (
        (out_dir / "entries.jsonl").open("wb") as lines,
        (out_dir / "hashes.txt").open("w") as hashes,
    ):
        for seq, entry, prev_hash, digest in entries:
            if count == 0 and seq != 1:
                # A slice starts from the stored hash before it; the whole log from genesis.
                first, prev = seq, prev_hash
            lines.write(entry + b"\n")
            hashes.write(f"{seq} {prev_hash} {digest}\n")
            count += 1

    last = first + count - 1
    newest: int | None = None
    for size, signed in checkpoints:
        if count and not first <= size <= last:
            continue  # outside the slice: the chain script could not check it
        path = out_dir / checkpoint_name(size)
        path.write_bytes(signed.payload)
        path.with_name(path.name + ".sig").write_text(signed.signature)
        newest = size if newest is None else max(newest, size)
    if newest is None:
        raise Refused("the audit log has no signed checkpoint yet; nothing to export")

    if scope.recordings:
        (out_dir / "recordings").mkdir()
        for recording in scope.recordings:
            shutil.copyfile(recording, out_dir / "recordings" / recording.name)

    (out_dir / "allowed_signers").write_text(allowed)
    (out_dir / "verify-chain.sh").write_text(
        chain_script(checkpoint_name(newest), first=first, prev=prev)
    )
    (out_dir / "README.md").write_text(
        bundle_readme(
            controller_id,
            controller_key,
            count,
            checkpoint_name(newest),
            verdict,
            signed=signer is not None,
            first=first,
            scope=scope,
        )
    )
    sums = _sha256sums(out_dir)
    (out_dir / SUMS).write_bytes(sums)
    if signer is not None:
        (out_dir / f"{SUMS}.sig").write_text(sshsig.sign(signer, EXPORT_NAMESPACE, sums))
    return out_dir


def _sha256sums(root: Path) -> bytes:
    """`sha256sum` output (text mode, two spaces) over every file but the sums and their sig."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name in (SUMS, f"{SUMS}.sig"):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {name}\n")
    return "".join(lines).encode()


def chain_script(newest: str, *, first: int = 1, prev: str = GENESIS) -> str:
    """A POSIX sh script recomputing the chain with sha256sum, printf and read only.

    It starts at entry `first` from hash `prev` (the whole log: entry 1 from 64 zeros).
    """
    if not re.fullmatch(r"[0-9a-f]{64}", prev):
        raise Refused(f"entry {first}: stored prev_hash {prev!r} is not a SHA-256")
    return (
        _CHAIN_SCRIPT.replace("@NEWEST@", newest)
        .replace("@FIRST@", str(first))
        .replace("@PREV@", prev)
    )


_CHAIN_SCRIPT = r"""#!/bin/sh
# Recomputes the audit chain from entries.jsonl with stock tools and checks it against
# hashes.txt, every checkpoint in checkpoints/, and the newest checkpoint (@NEWEST@):
#   hash(0) = 64 zeros;  hash(n) = sha256( hash(n-1) "\n" line n of entries.jsonl )
# The first line is entry @FIRST@; it chains to hash(@FIRST@ - 1) = prev below.
# Prints the final size and head and exits 0 when everything matches; 1 at the first mismatch.
set -u
cd "$(dirname "$0")" || exit 1
newest=@NEWEST@
first=@FIRST@
fail() { printf 'FAIL: %s\n' "$1" >&2; exit 1; }

prev=@PREV@
n=$((first - 1))
exec 3< hashes.txt
while IFS= read -r line; do
    n=$((n + 1))
    h=$(printf '%s\n%s' "$prev" "$line" | sha256sum)
    h=${h%% *}
    IFS=' ' read -r seq p stored <&3 || fail "hashes.txt ends before entry $n"
    [ "$seq" = "$n" ] || fail "hashes.txt line $((n - first + 1)) is for entry $seq"
    [ "$p" = "$prev" ] && [ "$stored" = "$h" ] || fail "entry $n: hash differs from hashes.txt"
    if [ ${#n} -lt 8 ]; then z=00000000$n; z=${z#"${z%????????}"}; else z=$n; fi
    if [ -f "checkpoints/$z.json" ]; then
        IFS= read -r cp < "checkpoints/$z.json" || true
        head=${cp#*\"head\":\"}; head=${head%%\"*}
        [ "$head" = "$h" ] || fail "entry $n: chain differs from checkpoints/$z.json"
    fi
    prev=$h
done < entries.jsonl
if IFS= read -r extra <&3; then fail "hashes.txt has more lines than entries.jsonl"; fi

IFS= read -r cp < "$newest" || true
size=${cp#*\"size\":}; size=${size%%,*}
head=${cp#*\"head\":\"}; head=${head%%\"*}
if [ "$first" = 1 ]; then held="$n entries"; else held="entries $first..$n"; fi
[ "$size" = "$n" ] || fail "$newest covers $size entries, entries.jsonl holds $held"
[ "$head" = "$prev" ] || fail "final hash $prev differs from the head in $newest"
printf 'OK: %s, head %s matches %s\n' "$held" "$prev" "$newest"
"""


def bundle_readme(
    controller_id: str,
    key: PublicKey,
    entries: int,
    newest: str,
    verdict: str,
    *,
    signed: bool = True,
    first: int = 1,
    scope: BundleScope | None = None,
) -> str:
    """The bundle's README: what is in it and the exact commands that check it."""
    scope = scope or BundleScope()
    last = first + entries - 1
    if first == 1:
        held = f"{entries} audit entries"
    else:
        held = f"Audit entries {first}..{last} (a slice of the log)"
    if scope.session:
        held += (
            f", spanning session `{scope.session}`: its own entries are the lines with "
            f'`"session":"{scope.session}"` (`grep -F \'"session":"{scope.session}"\' '
            "entries.jsonl`); the others are the entries written in between, needed to chain "
            "its entries to the signed head"
        )
    if signed:
        verify = f"ssh-keygen -Y verify -f allowed_signers -I {controller_id} -n {EXPORT_NAMESPACE}"
        step1 = f"""    {verify} \\
        -s {SUMS}.sig < {SUMS}
    sha256sum -c {SUMS}

The first proves the controller signed `{SUMS}`; the second that every file matches it."""
        sums_file = (
            f"- `{SUMS}`, `{SUMS}.sig`: checksums of all other files, signed by the controller."
        )
    else:
        step1 = f"""    sha256sum -c {SUMS}

This proves every file arrived intact. `{SUMS}` is not signed: {scope.exported_by} exported
this bundle from its own verified copy of the log and holds no controller key. What makes
the bundle evidence is steps 2 and 3: the controller's signature on the checkpoint, and the
entries chaining to it."""
        sums_file = f"- `{SUMS}`: checksums of all other files (unsigned)."
    chain_start = (
        "with hash(0) = 64 zeros"
        if first == 1
        else f"starting from hash({first - 1}), the prev_hash of entry {first} in `hashes.txt`"
    )
    recordings = ""
    if scope.recordings:
        recordings = """
## 4. The session recordings are the ones the log names

Each recording is `recordings/SHA256.cast` (asciicast v2); its upload is an audit entry
`recording.uploaded` carrying the SHA-256 of its exact bytes:

    sha256sum recordings/*.cast
    grep -F '"event":"recording.uploaded"' entries.jsonl

Every hash printed by the first command must appear in an entry printed by the second.
"""
    return f"""# Audit evidence bundle: controller `{controller_id}`

Exported by {scope.exported_by}. {held}; the newest signed checkpoint is `{newest}`.
Controller key: `{key.fingerprint}` (in `allowed_signers`).
The exporter's own verification at export time: {verdict}

Every file below is plain text, and every check uses stock tools (OpenSSH's `ssh-keygen`,
coreutils' `sha256sum`, a POSIX `sh`). Run them from this directory.

## 0. Make sure the key is the controller's

`allowed_signers` came with the bundle, so a forger could have replaced it. Compare the
fingerprint above with the one you know from the controller by another channel
(`bgctl init` prints it; `ssh-keygen -lf` on the controller's `controller_ed25519.pub`).

## 1. The bundle is what was exported

{step1}

## 2. The newest checkpoint is signed by the controller

    ssh-keygen -Y verify -f allowed_signers -I {controller_id} -n {Checkpoint.NAMESPACE} \\
        -s {newest}.sig < {newest}

Every checkpoint can be checked the same way:

    for f in checkpoints/*.json; do
        ssh-keygen -Y verify -f allowed_signers -I {controller_id} \\
            -n {Checkpoint.NAMESPACE} -s "$f.sig" < "$f" || echo "BAD: $f"
    done

A checkpoint is canonical JSON (RFC 8785): `size` entries with chain head `head`.

## 3. The entries chain up to the signed head

    sh verify-chain.sh

It recomputes, for each line n of `entries.jsonl`,

    hash(n) = sha256( hash(n-1) + "\\n" + line n )      {chain_start}

(in hex, without the line's trailing newline), compares every hash with `hashes.txt` and with
each checkpoint in `checkpoints/`, and finally the last hash and the number of lines with the
newest checkpoint. It prints `OK: …` and exits 0 only if all of them match.
{recordings}
## What the files are

- `entries.jsonl`: one audit entry per line, exactly the bytes the controller hashed:
  canonical JSON of `seq`, `at` (UTC), `event`, `actor`, `session`, `data`. Entries hold
  names, ids and fingerprints, never secrets.
- `hashes.txt`: `seq prev_hash hash` per entry, as the controller stored them.
- `checkpoints/NNNNNNNN.json` and `.json.sig`: each signed checkpoint, named by its size.
- `allowed_signers`: the controller's public key, for `ssh-keygen -Y verify`.
- `verify-chain.sh`: the chain check of step 3.
{sums_file}
"""
