"""The audit evidence bundle: everything a third party needs to check the log with stock tools.

Layout: entries.jsonl (the stored canonical bytes, one entry a line), hashes.txt, every
checkpoint as its signed bytes plus an `ssh-keygen -Y sign` signature, the controller's key as
an allowed_signers file, a POSIX script that recomputes the chain, SHA256SUMS over all of it
signed by the controller, and a README that walks through the checks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Checkpoint, Signed

EXPORT_NAMESPACE = "bgtui-export@v1"
NAMESPACES = (Checkpoint.NAMESPACE, "bgtui-receipt@v1", EXPORT_NAMESPACE)
SUMS = "SHA256SUMS"
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


def checkpoint_name(size: int) -> str:
    """The bundle path of the checkpoint covering the first `size` entries."""
    return f"checkpoints/{size:08d}.json"


def allowed_signers_line(controller_id: str, key: PublicKey) -> str:
    """The controller's key as an allowed_signers line, limited to the controller's namespaces."""
    if not _PRINCIPAL.fullmatch(controller_id):
        raise Refused(f"controller id {controller_id!r} can't be an allowed_signers principal")
    return f'{controller_id} namespaces="{",".join(NAMESPACES)}" {key.openssh(comment="")}\n'


def write_bundle(
    out_dir: Path,
    *,
    controller_id: str,
    controller_key: PublicKey,
    signer: sshsig.Signer,
    entries: Iterable[tuple[int, bytes, str, str]],
    checkpoints: Iterable[tuple[int, Signed]],
    verdict: str,
) -> Path:
    """Writes the bundle into `out_dir` (new or empty) and returns it.

    `entries` are (seq, bytes, prev_hash, hash) in seq order; `checkpoints` are (size, signed).
    `verdict` is the controller's own verification result, recorded in the README.
    """
    if signer.public != controller_key:
        raise Refused("the signing key is not the controller key; cannot sign the bundle")
    allowed = allowed_signers_line(controller_id, controller_key)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise Refused(f"{out_dir}: not empty; give a new directory")
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    count = 0
    with (
        (out_dir / "entries.jsonl").open("wb") as lines,
        (out_dir / "hashes.txt").open("w") as hashes,
    ):
        for seq, entry, prev_hash, digest in entries:
            lines.write(entry + b"\n")
            hashes.write(f"{seq} {prev_hash} {digest}\n")
            count += 1

    newest: int | None = None
    for size, signed in checkpoints:
        path = out_dir / checkpoint_name(size)
        path.write_bytes(signed.payload)
        path.with_name(path.name + ".sig").write_text(signed.signature)
        newest = size if newest is None else max(newest, size)
    if newest is None:
        raise Refused("the audit log has no signed checkpoint yet; nothing to export")

    (out_dir / "allowed_signers").write_text(allowed)
    (out_dir / "verify-chain.sh").write_text(chain_script(checkpoint_name(newest)))
    (out_dir / "README.md").write_text(
        bundle_readme(controller_id, controller_key, count, checkpoint_name(newest), verdict)
    )
    sums = _sha256sums(out_dir)
    (out_dir / SUMS).write_bytes(sums)
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


def chain_script(newest: str) -> str:
    """A POSIX sh script recomputing the chain with sha256sum, printf and read only."""
    return _CHAIN_SCRIPT.replace("@NEWEST@", newest)


_CHAIN_SCRIPT = r"""#!/bin/sh
# Recomputes the audit chain from entries.jsonl with stock tools and checks it against
# hashes.txt, every checkpoint in checkpoints/, and the newest checkpoint (@NEWEST@):
#   hash(0) = 64 zeros;  hash(n) = sha256( hash(n-1) "\n" line n of entries.jsonl )
# Prints the final size and head and exits 0 when everything matches; 1 at the first mismatch.
set -u
cd "$(dirname "$0")" || exit 1
newest=@NEWEST@
fail() { printf 'FAIL: %s\n' "$1" >&2; exit 1; }

prev=0000000000000000000000000000000000000000000000000000000000000000
n=0
exec 3< hashes.txt
while IFS= read -r line; do
    n=$((n + 1))
    h=$(printf '%s\n%s' "$prev" "$line" | sha256sum)
    h=${h%% *}
    IFS=' ' read -r seq p stored <&3 || fail "hashes.txt ends before entry $n"
    [ "$seq" = "$n" ] || fail "hashes.txt line $n is for entry $seq"
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
[ "$size" = "$n" ] || fail "$newest covers $size entries, entries.jsonl holds $n"
[ "$head" = "$prev" ] || fail "final hash $prev differs from the head in $newest"
printf 'OK: %s entries, head %s matches %s\n' "$n" "$prev" "$newest"
"""


def bundle_readme(
    controller_id: str, key: PublicKey, entries: int, newest: str, verdict: str
) -> str:
    """The bundle's README: what is in it and the exact commands that check it."""
    return f"""# Audit evidence bundle: controller `{controller_id}`

Exported by bgctl. {entries} audit entries; the newest signed checkpoint is `{newest}`.
Controller key: `{key.fingerprint}` (in `allowed_signers`).
The controller's own verification at export time: {verdict}

Every file below is plain text, and every check uses stock tools (OpenSSH's `ssh-keygen`,
coreutils' `sha256sum`, a POSIX `sh`). Run them from this directory.

## 0. Make sure the key is the controller's

`allowed_signers` came with the bundle, so a forger could have replaced it. Compare the
fingerprint above with the one you know from the controller by another channel
(`bgctl init` prints it; `ssh-keygen -lf` on the controller's `controller_ed25519.pub`).

## 1. The bundle is what the controller exported

    ssh-keygen -Y verify -f allowed_signers -I {controller_id} -n {EXPORT_NAMESPACE} \\
        -s {SUMS}.sig < {SUMS}
    sha256sum -c {SUMS}

The first proves the controller signed `{SUMS}`; the second that every file matches it.

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

    hash(n) = sha256( hash(n-1) + "\\n" + line n )      with hash(0) = 64 zeros

(in hex, without the line's trailing newline), compares every hash with `hashes.txt` and with
each checkpoint in `checkpoints/`, and finally the last hash and the number of lines with the
newest checkpoint. It prints `OK: …` and exits 0 only if all of them match.

## What the files are

- `entries.jsonl`: one audit entry per line, exactly the bytes the controller hashed:
  canonical JSON of `seq`, `at` (UTC), `event`, `actor`, `session`, `data`. Entries hold
  names, ids and fingerprints, never secrets.
- `hashes.txt`: `seq prev_hash hash` per entry, as the controller stored them.
- `checkpoints/NNNNNNNN.json` and `.json.sig`: each signed checkpoint, named by its size.
- `allowed_signers`: the controller's public key, for `ssh-keygen -Y verify`.
- `verify-chain.sh`: the chain check of step 3.
- `{SUMS}`, `{SUMS}.sig`: checksums of all other files, signed by the controller.
"""
