"""Phantom datasets on disk: the real LiTS / KiTS19 layouts, seeds, and resumable writing.

:func:`write_dataset` writes many cases (optionally in a process pool) with their truth file,
atomically and idempotently: a case whose files and truth entry match the seed and the config
fingerprint is skipped. :func:`case_id`, :func:`case_files` and :func:`case_seed` give the
names, paths and seeds of the cases, as the readers of the real datasets expect them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import nibabel as nib

from kdseg.data.phantom.case import generate_case
from kdseg.data.phantom.config import PENDING_FILE, TRUTH_FILE, PhantomConfig
from kdseg.errors import InputError, atomic_group, progress_steps, write_text_atomic


def case_id(dataset: str, index: int) -> str:
    """The real datasets' case name: ``volume-{i}`` (LiTS) or ``case_{i:05d}`` (KiTS19)."""
    return f"volume-{index}" if dataset == "lits" else f"case_{index:05d}"


def case_files(root: str | Path, dataset: str, index: int) -> tuple[Path, Path]:
    """(image, label) paths of case ``index`` in the real layout under ``root``."""
    root = Path(root)
    if dataset == "lits":
        return root / f"volume-{index}.nii.gz", root / f"segmentation-{index}.nii.gz"
    folder = root / case_id(dataset, index)
    return folder / "imaging.nii.gz", folder / "segmentation.nii.gz"


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in a dataset written with ``seed``."""
    return seed * 100003 + index


def _config_digest(cfg: PhantomConfig) -> str:
    """Short fingerprint of a config: a case written with another config is redrawn."""
    return hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _write_case(root: Path, cfg: PhantomConfig, index: int, seed: int) -> tuple[str, dict]:
    """Generate case ``index`` and write its two files as one atomic group (the label last:
    an interrupted write leaves neither, or at worst after a SIGKILL the image alone); return
    (id, truth)."""
    image, label, truth = generate_case(cfg, seed)
    with atomic_group(case_files(root, cfg.dataset, index)) as temps:
        for img, tmp in zip((image, label), temps, strict=True):
            nib.save(img, str(tmp))
    truth["config"] = _config_digest(cfg)
    return case_id(cfg.dataset, index), truth


def _read_truth(path: Path, what: str = "truth") -> dict[str, dict]:
    """The truth file of a phantom folder (or, ``what="pending"``, its file of cases being
    written), or an empty dict when there is none yet."""
    if not path.exists():
        return {}
    try:
        truth = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            path, f"unreadable phantom {what} file ({exc}); delete it to redraw"
        ) from None
    if not isinstance(truth, dict) or not all(isinstance(v, dict) for v in truth.values()):
        raise InputError(path, f"phantom {what} file must hold an object keyed by case id")
    return truth


def _case_order(key: str) -> tuple[int, str]:
    """Sort key that puts ``volume-2`` before ``volume-10``."""
    digits = "".join(ch for ch in key if ch.isdigit())
    return (int(digits) if digits else -1, key)


@contextlib.contextmanager
def _case_results(
    root: Path, cfg: PhantomConfig, jobs: Sequence[tuple[int, int]], workers: int
) -> Iterator[Iterator[tuple[str, dict]]]:
    """Write the pending cases, in this process or in a pool of ``workers`` processes; yields
    an iterator of ``(case id, truth)`` in completion order.

    The pool forks its workers on entry, before the caller starts any thread (the progress
    bar), so no lock is inherited mid-use; forking avoids re-importing the calling script
    (and torch) in every worker, as spawning would. Where fork does not exist, workers are
    spawned. On an error, cases not yet started are cancelled.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield (_write_case(root, cfg, index, seed) for index, seed in jobs)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context(method)
    )
    try:
        futures = [pool.submit(_write_case, root, cfg, index, seed) for index, seed in jobs]
        yield (future.result() for future in as_completed(futures))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar, plain lines off a terminal, or nothing; yields ``advance(n)``."""
    with progress_steps(description, total, enabled=enabled, counts=True) as bar:
        yield bar.advance


def _cases_on_disk(root: Path) -> dict[str, list[Path]]:
    """The case files under ``root`` in either layout (``volume-*``, ``segmentation-*``,
    ``case_*/imaging*``, ``case_*/segmentation*``), keyed by the case id they belong to
    (``segmentation-3.nii`` belongs to ``volume-3``)."""
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for prefix in ("volume-", "segmentation-"):
        for path in sorted(root.glob(f"{prefix}*.nii*")):
            key = "volume-" + path.name[len(prefix) :].split(".")[0]
            found.setdefault(key, []).append(path)
    for name in ("imaging", "segmentation"):
        for path in sorted(root.glob(f"case_*/{name}*")):
            found.setdefault(path.parent.name, []).append(path)
    return found


def _refuse_foreign_cases(root: Path, truth: dict, pending: dict) -> None:
    """Refuse a case file of either layout that neither the truth file nor the pending file
    names: a real dataset's (or another tool's) case, which phantoms would overwrite or mix
    into. A phantom run names each case in the pending file before writing its files, and in
    the truth file once they are written, so a killed run's case is always recognised."""
    for key, files in sorted(_cases_on_disk(root).items()):
        if key in truth or key in pending:
            continue
        if not (root / TRUTH_FILE).exists():
            raise InputError(
                files[0],
                f"is a case, and {root} is no phantom folder; write into an empty folder",
            )
        raise InputError(
            files[0],
            f"is a case that {TRUTH_FILE} does not name: no phantom of this folder (a real "
            "case?); move it away or write into an empty folder",
        )


def _mark(seed: int, digest: str) -> dict:
    """A pending file's entry: the seed and config a case is being written with."""
    return {"seed": seed, "config": digest}


def _settle_pending(root: Path, pending: dict[str, dict], truth: dict[str, dict]) -> None:
    """Rewrite the pending file with the cases still unfinished on disk (files without the
    truth entry they were being written for); remove it when there are none."""
    on_disk = _cases_on_disk(root)
    left = {}
    for key, mark in sorted(pending.items(), key=lambda item: _case_order(item[0])):
        entry = truth.get(key, {})
        done = entry.get("seed") == mark.get("seed") and entry.get("config") == mark.get("config")
        if key in on_disk and not done:
            left[key] = mark
    if left:
        write_text_atomic(root / PENDING_FILE, json.dumps(left, indent=1))
    else:
        (root / PENDING_FILE).unlink(missing_ok=True)


def write_dataset(
    root: str | Path,
    cfg: PhantomConfig,
    n_cases: int,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Write ``n_cases`` phantom cases in the real layout of ``cfg.dataset`` under ``root``.

    LiTS: ``root/volume-{i}.nii.gz`` and ``root/segmentation-{i}.nii.gz``; KiTS19:
    ``root/case_{i:05d}/imaging.nii.gz`` and ``.../segmentation.nii.gz``; case ``i`` uses
    :func:`case_seed` ``(seed, i)``. ``root/phantom_truth.json`` maps each case id to the truth
    of :func:`generate_case` plus the config fingerprint, and is rewritten after every case.
    Idempotent: a case whose files exist and whose truth entry has the same seed and config is
    skipped, so an interrupted run resumes where it stopped: before any case file is written,
    ``root/phantom_pending.json`` names the cases about to be written (removed again once they
    are done, so a finished folder holds the case files and the truth file only). A case of
    another seed or config, and any case file of either layout that neither file names (a real
    dataset's), is never replaced: an :class:`InputError` names it before anything is written.
    A case's two files are written as one atomic group, every other file atomically.
    Returns the image paths of all ``n_cases`` cases, in order.
    """
    if n_cases < 0:
        raise InputError(None, f"phantom n_cases must be >= 0, got {n_cases}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(None, f"phantom seed must be a whole number >= 0, got {seed!r}")
    root = Path(root).resolve()
    new_root = not root.exists()
    truth_path = root / TRUTH_FILE
    truth = _read_truth(truth_path)
    pending = _read_truth(root / PENDING_FILE, "pending")
    digest = _config_digest(cfg)
    _refuse_foreign_cases(root, truth, pending)
    jobs = []
    for index in range(n_cases):
        key = case_id(cfg.dataset, index)
        entry = truth.get(key, {})
        ours = entry.get("seed") == case_seed(seed, index) and entry.get("config") == digest
        files = case_files(root, cfg.dataset, index)
        present = [p for p in files if p.exists()]
        if present and entry and not ours and key not in pending:  # another seed or config
            raise InputError(
                present[0],
                "is a phantom of another seed or params; write into an empty folder",
            )
        if not (ours and len(present) == len(files)):  # (pending: a killed run's case)
            jobs.append((index, case_seed(seed, index)))
    marked = bool(jobs) and not truth_path.exists()
    if marked:  # marks the folder as a phantom folder first
        write_text_atomic(truth_path, "{}")
    if jobs:  # names the cases before their files exist: files without either entry are foreign
        for index, job_seed in jobs:
            pending[case_id(cfg.dataset, index)] = _mark(job_seed, digest)
        write_text_atomic(root / PENDING_FILE, json.dumps(pending, indent=1))
    new_folders = [  # KiTS case folders this run creates (removed again if left empty)
        folder
        for folder in {case_files(root, cfg.dataset, index)[0].parent for index, _ in jobs}
        if folder != root and not folder.exists()
    ]
    try:
        with (
            _case_results(root, cfg, jobs, workers) as results,
            _progress(progress, n_cases, f"phantom {cfg.dataset}") as advance,
        ):
            advance(n_cases - len(jobs))
            for key, entry in results:
                truth[key] = entry
                ordered = {k: truth[k] for k in sorted(truth, key=_case_order)}
                write_text_atomic(truth_path, json.dumps(ordered, indent=1))
                advance(1)
    except BaseException:
        for folder in new_folders:  # a case stopped before its files: no empty folder left
            with contextlib.suppress(OSError):
                folder.rmdir()
        if pending:
            _settle_pending(root, pending, truth)
        if marked and not truth and not _cases_on_disk(root):
            # no case on disk: no phantom folder either (with a case, even a killed run's, the
            # marker stays, so that the rerun resumes instead of calling it a real dataset)
            truth_path.unlink(missing_ok=True)
            if new_root:
                with contextlib.suppress(OSError):
                    root.rmdir()
        raise
    if pending:  # (also one a killed run left, whose cases are all done now)
        _settle_pending(root, pending, truth)
    return [case_files(root, cfg.dataset, index)[0] for index in range(n_cases)]
