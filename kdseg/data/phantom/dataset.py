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
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nibabel as nib

from kdseg.data.phantom.case import generate_case
from kdseg.data.phantom.config import PENDING_FILE, TRUTH_FILE, PhantomConfig
from kdseg.errors import (
    InputError,
    atomic_group,
    missing_folders,
    progress_steps,
    remove_empty_folders,
    write_text_atomic,
)


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


def _digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def _config_digest(cfg: PhantomConfig) -> str:
    """Short fingerprint of a config (its normalised values: ``noise_hu: 12`` and ``12.0`` are
    one); the one each case written now records."""
    return _digest(asdict(cfg))


def _config_digests(cfg: PhantomConfig) -> set[str]:
    """The fingerprints a case of ``cfg`` may record: :func:`_config_digest`, and that of the
    values as given, which kdseg recorded before it normalised them (a folder drawn with
    ``tumor_depth: 1`` stays this config's)."""
    given = getattr(cfg, "_given", None)
    return {_config_digest(cfg), *([_digest(given)] if given is not None else [])}


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


class _Stopped(BaseException):
    """Raised in a pool worker by SIGTERM while it draws a case (a ``BaseException``: no
    ``except Exception`` of the drawing swallows it); its atomic group then removes the case's
    files."""


_STOP: Any = None  # in a pool worker: the pool's stop flag (a multiprocessing Event)
_BUSY = False  # in a pool worker: a case is being drawn


def _on_worker_sigterm(signum: int, frame: Any) -> None:
    if _BUSY:
        # the first SIGTERM is final: a second (a process-group kill, then the pool's
        # terminate) would cut short the unwinding that removes the case's files
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stopped(signum)
    os._exit(0)  # idle: nothing of its own to clean up


def _init_worker(stop: Any) -> None:
    """A pool worker's set-up: the stop flag, and its signals. Stopping is the main process's:
    Ctrl-C and a hang-up reach the whole process group, but a worker ignores them (the main
    process sets the flag and terminates the pool); SIGTERM, the pool's terminate, unwinds a
    case being drawn (its files removed) and ends the worker."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_worker_sigterm)


def _pooled_case(args: tuple[Path, PhantomConfig, int, int]) -> tuple[str, dict] | None:
    """:func:`_write_case` in a pool worker; ``None`` without drawing once the stop flag is
    set (the run stopped: no case starts after that)."""
    global _BUSY
    try:
        if _STOP is not None and _STOP.is_set():
            return None
        _BUSY = True
        return _write_case(*args)
    except _Stopped:
        os._exit(0)
    finally:
        _BUSY = False


@contextlib.contextmanager
def _case_results(
    root: Path, cfg: PhantomConfig, jobs: Sequence[tuple[int, int]], workers: int
) -> Iterator[Iterator[tuple[str, dict]]]:
    """Write the pending cases, in this process or in a pool of ``workers`` processes; yields
    an iterator of ``(case id, truth)`` in completion order.

    The pool forks its workers on entry, before the caller starts any thread (the progress
    bar), so no lock is inherited mid-use; forking avoids re-importing the calling script
    (and torch) in every worker, as spawning would. Where fork does not exist, workers are
    spawned. On an error or a signal no case starts any more: the stop flag is set, and the
    pool is terminated, which unwinds the cases being drawn (their files removed) before this
    returns; a case that was finished but not yet recorded is the caller's to remove.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield (_write_case(root, cfg, index, seed) for index, seed in jobs)
        return
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    stop = context.Event()
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(stop,),
    )
    try:
        futures = [pool.submit(_pooled_case, (root, cfg, index, seed)) for index, seed in jobs]
        done = (future.result() for future in as_completed(futures))
        yield (result for result in done if result is not None)
    except BaseException:
        stop.set()  # a worker that takes another case now returns at once
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to every worker of ``pool`` (a case being drawn unwinds, removing its files),
    and wait for them to end (SIGKILL after 10 s)."""
    # the executor's own pid -> Process map (Python 3.14's terminate_workers() does the same)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


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


def _done(mark: dict, entry: dict) -> bool:
    """Whether the case a pending ``mark`` names was finished: its truth ``entry`` has the
    mark's seed and config."""
    return entry.get("seed") == mark.get("seed") and entry.get("config") == mark.get("config")


def _settle_pending(root: Path, pending: dict[str, dict], truth: dict[str, dict]) -> None:
    """Rewrite the pending file with the cases still unfinished on disk (files without the
    truth entry they were being written for); remove it when there are none."""
    on_disk = _cases_on_disk(root)
    left = {}
    for key, mark in sorted(pending.items(), key=lambda item: _case_order(item[0])):
        if key in on_disk and not _done(mark, truth.get(key, {})):
            left[key] = mark
    if left:
        write_text_atomic(root / PENDING_FILE, json.dumps(left, indent=1))
    else:
        (root / PENDING_FILE).unlink(missing_ok=True)


def _refuse_non_folder(root: Path, dataset: str, index: int) -> None:
    """Refuse a case whose folder (KiTS19: ``case_XXXXX``) or file exists as something else (a
    file where the folder goes, a folder where a file goes): its files could not be written."""
    image, label = case_files(root, dataset, index)
    if image.parent != root and image.parent.exists() and not image.parent.is_dir():
        raise InputError(image.parent, "is no folder, where a case folder goes; move it away")
    for path in (image, label):
        if path.is_dir():
            raise InputError(path, "is a folder, where a case file goes; move it away")


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
    new_folders_above = missing_folders([root])  # root and the folders above it this run creates
    truth_path = root / TRUTH_FILE
    truth = _read_truth(truth_path)
    pending = _read_truth(root / PENDING_FILE, "pending")
    had_pending = bool(pending)
    # a killed run's cases that were finished (truth entry written, pending file not yet
    # settled) are finished cases: another seed or config is refused for them as for any
    pending = {k: m for k, m in pending.items() if not _done(m, truth.get(k, {}))}
    digest, digests = _config_digest(cfg), _config_digests(cfg)
    _refuse_foreign_cases(root, truth, pending)
    jobs = []
    for index in range(n_cases):
        _refuse_non_folder(root, cfg.dataset, index)
        key = case_id(cfg.dataset, index)
        entry = truth.get(key, {})
        ours = entry.get("seed") == case_seed(seed, index) and entry.get("config") in digests
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
    # KiTS case folders this run creates (removed again if left empty; root exists by now)
    new_folders = missing_folders(case_files(root, cfg.dataset, i)[0].parent for i, _ in jobs)
    old_files = {  # the jobs' files already on disk (a killed run's): left for the rerun
        path for index, _ in jobs for path in case_files(root, cfg.dataset, index) if path.exists()
    }
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
        for index, _ in jobs:  # a case a pool worker finished after the stop, never recorded
            if case_id(cfg.dataset, index) not in truth:
                for path in case_files(root, cfg.dataset, index):
                    if path not in old_files:
                        path.unlink(missing_ok=True)
        remove_empty_folders(new_folders)  # a case stopped before its files: none left empty
        if pending or had_pending:
            _settle_pending(root, pending, truth)
        if marked and not truth and not _cases_on_disk(root):
            # no case on disk: no phantom folder either (with a case, even a killed run's, the
            # marker stays, so that the rerun resumes instead of calling it a real dataset)
            truth_path.unlink(missing_ok=True)
            remove_empty_folders(new_folders_above)  # root, then the empty folders above it
        raise
    if pending or had_pending:  # (also one a killed run left, whose cases are all done now)
        _settle_pending(root, pending, truth)
    return [case_files(root, cfg.dataset, index)[0] for index in range(n_cases)]
