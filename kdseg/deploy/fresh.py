"""The "fresh process" column of ``kdseg-bench``: the CLI on one volume as a user runs it.

The bench's volume time is measured inside a warm worker (libraries imported, session built,
one warm-up run done). A hospital runs one command on one scan, so the start-up (imports,
Hydra, model load) is part of what it waits for. :func:`fresh_cli_seconds` times exactly that:
the wall time of ``kdseg-predict`` in a new process on the bench volume, report included.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _hydra_value(value: str | list[str] | None) -> str:
    """A path, a list of two (a cascade) or null, as a Hydra override value; paths absolute
    (the command runs in a temporary folder, where a relative path would name nothing)."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(os.path.abspath(v) for v in value) + "]"
    return os.path.abspath(value)


def predict_command(
    entry: dict[str, Any], volume: Path, output: Path, threads: int, batch_size: int | None = None
) -> list[str]:
    """The ``kdseg-predict`` command line that runs ``entry`` on ``volume`` with the bench's
    ``threads`` and ``batch_size`` (``None``: predict's own default)."""
    script = Path(sys.executable).parent / "kdseg-predict"
    return [
        str(script),
        f"ckpt={_hydra_value(entry.get('ckpt'))}",
        f"artifact={_hydra_value(entry.get('artifact'))}",
        f"backend={entry.get('backend', 'torch')}",
        f"input={os.path.abspath(volume)}",
        f"output={os.path.abspath(output)}",
        f"threads={threads}",
        *([] if batch_size is None else [f"batch_size={int(batch_size)}"]),
    ]


def fresh_cli_seconds(
    entry: dict[str, Any],
    volume: Path,
    threads: int,
    runs: int,
    env: dict[str, str],
    batch_size: int | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Median wall seconds of ``runs`` fresh ``kdseg-predict`` processes, or why not measured.

    Entries the command cannot run as configured (a preprocessing override, random weights,
    no checkpoint or artefact) are skipped with the reason; so is a run that takes longer than
    ``timeout_s`` (the bench's per-process limit, as for its workers: a hanging command is
    killed, not waited for).
    """
    if entry.get("preprocess"):
        return {"fresh_skipped": "preprocess override (not a kdseg-predict option)"}
    if not (entry.get("ckpt") or entry.get("artifact")) or entry.get("weights") == "random":
        return {"fresh_skipped": "no trained checkpoint or artefact"}
    times = []
    with tempfile.TemporaryDirectory(prefix="kdseg-fresh-") as tmp:
        labels = Path(tmp) / "labels.nii.gz"
        command = predict_command(entry, volume, labels, threads, batch_size)
        for _ in range(max(runs, 1)):
            start = time.perf_counter()
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                return {"fresh_skipped": f"kdseg-predict timed out after {timeout_s} s"}
            times.append(time.perf_counter() - start)
            if done.returncode:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                return {"fresh_skipped": f"kdseg-predict exited {done.returncode}: {tail[0]}"}
    return {
        "fresh_s": times,
        "fresh_median_s": statistics.median(times),
        "fresh_load": os.getloadavg()[0],
    }
