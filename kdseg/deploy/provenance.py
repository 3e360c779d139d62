"""Where an artefact or a benchmark came from: kdseg's version, its git commit, a file's hash.

An exported model travels to hospitals without its run folder; its metadata records the kdseg
version and source commit that exported it and the sha256 of the checkpoint it was exported
from, so a deployed file can be traced back (and ``kdseg-export`` recognises its own exports of
a checkpoint that was moved). ``kdseg-bench`` records the commit of the code it measured. Torch
free: the artefact's reader (:mod:`kdseg.deploy.artifact`) imports it.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

from kdseg import __version__


@functools.cache  # three git processes; an export writes its metadata several times
def source_commit() -> str | None:
    """The git commit of the kdseg code that runs (``git rev-parse --short HEAD``), with
    ``-dirty`` when tracked files differ from it; None where kdseg is not a git checkout (an
    installed package, even one inside another repository's tree, or no ``git``). Asked once
    per process: the code a process runs does not change under it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of the file ``path``, read once per version of the file (an export
    writes its metadata several times)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_provenance(ckpt: str | Path) -> dict[str, Any]:
    """What an artefact exported from the checkpoint ``ckpt`` records of its origin (its hash
    ``None`` for a checkpoint that is no file to read)."""
    try:
        sha: str | None = file_sha256(ckpt)
    except OSError:
        sha = None
    return {
        "kdseg_version": __version__,
        "source_commit": source_commit(),
        "checkpoint_sha256": sha,
    }


def describe_provenance(meta: dict[str, Any]) -> str | None:
    """One line on an artefact's origin from its metadata (``None`` for an artefact of a kdseg
    that recorded none): version, commit and the checkpoint's hash."""
    prov = meta.get("provenance")
    if not isinstance(prov, dict):
        return None
    sha = prov.get("checkpoint_sha256")
    commit = prov.get("source_commit") or "no git checkout"
    return (
        f"kdseg {prov.get('kdseg_version', '?')} ({commit}), checkpoint sha256 "
        f"{str(sha)[:12] if sha else '?'}"
    )
