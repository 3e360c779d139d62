"""What a refused command made, removed again: a run folder, its loggers' files, a sweep folder.

A command refused before it trains (exit 2: bad input, a config error) should leave no trace
behind. Hydra makes the run folder (and its parents, when ``hydra.run.dir`` names new ones)
and the sweep folder before the task runs; kdseg writes the run's record into it (the log,
then ``config.yaml`` and ``.hydra/`` when training starts); the loggers add
``wandb_id.txt``, wandb's offline run and ``csv/`` once they start.
:mod:`kdseg.cli.boundary` notes the state at the task's start (:func:`note_new_run_dir`,
:func:`note_default_run_dir`, :func:`note_sweep_job_dir`, :func:`note_run_state`) and, on a
refusal, calls :func:`remove_new_logger_files`, :func:`remove_new_run_dir` and
:func:`remove_new_sweep_dir`. Only what this process made goes, and nothing once the run has
trained (a checkpoint, ``summary.json``, a CSV row): that run is resumable and keeps its
record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from kdseg.errors import first_process, write_text_atomic

#: the folders of a ``hydra.run.dir`` named on the command line that did not exist before
#: Hydra made them (deepest first): what a refused run removes again
_NEW_FOLDERS: list[Path] = []
#: the same for a ``hydra.sweep.dir`` named on the command line (remove_new_sweep_dir)
_NEW_SWEEP_FOLDERS: list[Path] = []
#: [the command's start (time.time()), whether it named hydra.run.dir, hydra.sweep.dir]
#: (note_new_run_dir)
_STARTED: list[Any] = []
#: the record a run writes into its run dir (the log once the run dir has passed its checks;
#: the config, kdseg.cli.record_run, and the split when training starts)
_RECORD_FILES = (
    "config.yaml",
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "split.json",  # the run's split (kdseg.lit.train.fit_from_config)
)

#: the job name Lightning's subprocess launcher gives each worker it starts, followed by the
#: worker's local rank (``hydra.job.name=train_ddp_process_<n>``, whatever the command's job)
LIGHTNING_WORKER_JOB = "train_ddp_process_"
#: how the log of a process other than the first is told apart (kdseg.cli.run_log_name): by
#: its global rank (``<job>_process_<rank>.log``), or by its node (``<job>_node_<n>.log``)
LOG_KINDS = ("process", "node")


def run_log_file(job: str, kind: str | None = None, number: int = 0) -> str:
    """The name of a process's log in the run dir: ``<job>.log``, or, for a process other
    than the first (``kind``: one of :data:`LOG_KINDS`), ``<job>_<kind>_<number>.log``."""
    if kind is None:
        return f"{job}.log"
    if kind not in LOG_KINDS:
        raise ValueError(f"log kind {kind!r} is none of {LOG_KINDS}")
    return f"{job}_{kind}_{number}.log"


def is_run_log(name: str, job: str) -> bool:
    """Whether ``name`` is a log of a process of a run of job ``job`` (any of the names
    :func:`run_log_file` gives, for ``job`` or a worker of Lightning's launcher): what a
    refused run's folder may hold of its own, whichever of its processes wrote first."""
    jobs = rf"{re.escape(job)}|{re.escape(LIGHTNING_WORKER_JOB)}\d+"
    kinds = "|".join(map(re.escape, LOG_KINDS))
    return re.fullmatch(rf"(?:{jobs})(?:_(?:{kinds})_\d+)?\.log", name) is not None


#: a training run dir as its task found it (note_run_state): the names in it, in its csv/,
#: wandb's entries in its wandb/ (a link's target), and what a run that trained writes
_BEFORE: dict[str, Any] = {}
#: the run's wandb id, which kdseg.lit.resume.wandb_run_id stores there (WANDB_ID_FILE)
WANDB_ID_FILE = "wandb_id.txt"
#: the links wandb (re)points at the run folder it starts in ``<run>/wandb/``
WANDB_LINKS = ("latest-run", "debug.log", "debug-internal.log")


def _progress(run: Path) -> dict[str, Any]:
    """What only a run that trained writes: checkpoints (their size and time), summary.json,
    and the CSV log's rows (its bytes: a resumed run's logger rewrites it as it starts)."""
    import hashlib

    state: dict[str, Any] = {}
    checkpoints = run / "checkpoints"
    files = sorted(checkpoints.rglob("*")) if checkpoints.is_dir() else []
    for path in [*files, run / "summary.json"]:
        with contextlib.suppress(OSError):
            if path.is_file():
                stat = path.stat()
                state[str(path)] = (stat.st_size, stat.st_mtime_ns)
    with contextlib.suppress(OSError):
        metrics = run / "csv" / "metrics.csv"
        state[str(metrics)] = hashlib.sha256(metrics.read_bytes()).hexdigest()
    return state


def _names(folder: Path) -> dict[str, str | None]:
    """The entries of ``folder`` (none where it is no folder), each with its link's target."""
    if folder.is_symlink() or not folder.is_dir():
        return {}
    return {p.name: (os.readlink(p) if p.is_symlink() else None) for p in folder.iterdir()}


def note_run_state(run: Path | None) -> None:
    """At a training task's start, before kdseg writes anything: what its run dir holds, so
    that a refusal removes what the run's loggers made since and nothing that was there
    (:func:`remove_new_logger_files`). ``None``: not a training task (nothing is noted)."""
    _BEFORE.clear()
    if run is None or not run.is_dir():
        return
    _BEFORE.update(
        run=run,
        top=set(_names(run.resolve())),  # a run dir reached through a link: the folder's own
        csv=set(_names(run / "csv")),
        wandb=_names(run / "wandb"),
        wandb_id=_text(run / WANDB_ID_FILE),  # a fresh run replaces it (wandb_run_id)
        progress=_progress(run),
    )


def _text(path: Path) -> str | None:
    """``path``'s text; ``None`` where it cannot be read."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _remove_tree(folder: Path) -> None:
    """``rm -r folder`` (a link is removed, never followed); wandb's service may still be
    closing a file in it, so a failure is tried again a few times, then left."""
    import shutil

    for _ in range(5):
        try:
            shutil.rmtree(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.2)


def remove_new_logger_files() -> None:
    """After a refusal of a training run: remove what its loggers made in its run dir since
    the task started (:func:`note_run_state`; the Trainer's setup, or the Trainer itself, can
    refuse after they start): ``wandb_id.txt`` (or, where it was there, the id it held: a
    fresh run makes a new one), wandb's run folders of that id
    (``wandb/offline-run-<time>-<id>``) and its links there (a link that was there points where
    it did again), and the CSV logger's ``csv/`` with its ``hparams.yaml``. Only what was not
    there before, so a resumed run keeps all it had; and nothing at all once the run has
    trained (a checkpoint, ``summary.json`` or a CSV row written since: its record stays).
    The record kdseg itself writes (:func:`remove_new_run_dir`) is not touched here."""
    from hydra.core.hydra_config import HydraConfig

    if not _BEFORE or not HydraConfig.initialized():
        return
    run = _BEFORE["run"]
    if Path(HydraConfig.get().runtime.output_dir).absolute() != run or not run.is_dir():
        return
    if not first_process():
        return  # a DDP worker: the first process owns the run dir
    if _progress(run) != _BEFORE["progress"]:
        return  # it trained: the run is resumable, or its record is
    top, id_file = _BEFORE["top"], run / WANDB_ID_FILE
    run_id = ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        run_id = id_file.read_text().strip()
    wandb, links = run / "wandb", _BEFORE["wandb"]
    own = re.compile(rf"(offline-)?run-\d{{8}}_\d{{6}}-{re.escape(run_id)}") if run_id else None
    for name, target in _names(wandb).items():
        entry = wandb / name
        with contextlib.suppress(OSError):
            if name in links:  # there before: only a link wandb pointed elsewhere changes back
                if links[name] is not None and target is not None and target != links[name]:
                    entry.unlink()
                    entry.symlink_to(links[name])
            elif target is not None and name in WANDB_LINKS:
                entry.unlink()
            elif target is None and own is not None and own.fullmatch(name):
                _remove_tree(entry)
    now = _names(wandb)
    for name, target in links.items():  # a link of before that wandb removed
        if target is not None and name not in now:
            with contextlib.suppress(OSError):
                (wandb / name).symlink_to(target)
    if "wandb" not in top:
        with contextlib.suppress(OSError):
            wandb.rmdir()  # stays where it holds anything else
    if WANDB_ID_FILE not in top:
        id_file.unlink(missing_ok=True)
    elif _BEFORE["wandb_id"] is not None and _text(id_file) != _BEFORE["wandb_id"]:
        with contextlib.suppress(OSError):
            write_text_atomic(id_file, _BEFORE["wandb_id"])  # the id a fresh run replaced
    csv = run / "csv"
    if csv.is_symlink():  # a linked folder is somebody's: nothing in it is removed
        return
    if "hparams.yaml" not in _BEFORE["csv"]:
        with contextlib.suppress(OSError):
            (csv / "hparams.yaml").unlink(missing_ok=True)
    if "csv" not in top:
        with contextlib.suppress(OSError):
            csv.rmdir()


def note_new_run_dir(argv: list[str]) -> None:
    """Before Hydra runs: which folders of an explicit ``hydra.run.dir=<path>`` do not exist
    yet (Hydra creates them before any of kdseg's checks)."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    sweep = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")]
    _STARTED[:] = [time.time(), bool(given), bool(sweep)]
    for named, new in ((given, _NEW_FOLDERS), (sweep, _NEW_SWEEP_FOLDERS)):
        new.clear()
        if not named or "${" in named[-1] or not named[-1].strip():
            continue
        path = Path(named[-1]).absolute()
        for folder in (path, *path.parents):
            if folder.exists():
                break
            new.append(folder)


def _stamped_now(stamp: str) -> bool:
    """Whether Hydra's time stamp ``YYYYmmdd-HHMMSS`` (local time) is this command's: between
    its start and now."""
    when = time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S"))
    return _STARTED[0] - 2 <= when <= time.time() + 1


def note_default_run_dir(run: Path, job: str) -> None:
    """At the task's start: the run dir of a training command named by its default,
    time-stamped pattern (``.../<name>-YYYYmmdd-HHMMSS``, Hydra's ``now`` at this command's
    start) and holding nothing but its processes' logs (:func:`is_run_log`) is this command's
    own, so a refused run removes it as it removes a new named one. Its parents stay
    (``runs/train`` may be shared), and so does a folder named on the command line that was
    there before."""
    if _NEW_FOLDERS or not _STARTED or _STARTED[1]:
        return
    match = re.search(r"-(\d{8}-\d{6})$", run.name)
    if match is None or run == Path.cwd().absolute() or not run.is_dir():
        return
    if not _stamped_now(match.group(1)):
        return
    if all(p.is_dir() or (p.parent == run and is_run_log(p.name, job)) for p in run.rglob("*")):
        _NEW_FOLDERS.append(run)


def note_sweep_job_dir(run: Path) -> None:
    """At the task's start in a multirun (``-m``): note the job's own folder (``<sweep>/<n>``)
    when it is empty and made since the command started, with the new empty folders between it
    and the sweep folder, so that a refused job removes them as :func:`remove_new_run_dir`
    removes a new run dir; the other jobs' folders stay. Nothing is noted outside a multirun,
    for a job folder that held anything (a resumed sweep's), or for a job writing into the
    sweep folder itself (the one-shot tools' ``subdir: .``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    _NEW_FOLDERS.clear()  # this job's own (a named hydra.run.dir is not a multirun's)
    sweep = Path(HydraConfig.get().sweep.dir).absolute()
    if run == sweep or run == Path.cwd().absolute() or not run.is_dir() or run.is_symlink():
        return
    if any(run.iterdir()):
        return
    start = _STARTED[0] - 2 if _STARTED else None
    if start is not None and run.stat().st_mtime < start:
        return  # an empty folder that was there before: not this command's
    _NEW_FOLDERS.append(run)
    if start is None or sweep not in run.parents:
        return
    for folder in run.parents:  # the new folders of a nested subdir (<sweep>/<a>/<b>)
        if folder == sweep or folder.stat().st_mtime < start:
            break
        _NEW_FOLDERS.append(folder)


def remove_new_run_dir() -> None:
    """After a refusal: remove the run dir Hydra made for this run, when it holds nothing but
    the run's own record (:func:`kdseg.cli.record_run`; its processes' logs, :func:`is_run_log`:
    under an external launcher each process writes its own), and the new folders above it that
    are then empty: only a ``hydra.run.dir`` named on the command line that did not exist
    before the command (noted by :func:`note_new_run_dir`), or a multirun job's own new
    folder (:func:`note_sweep_job_dir`). Nothing else is ever removed: not the current folder
    a one-shot tool runs in, not a folder that was there before; of Hydra's default
    time-stamped run dir (:func:`note_default_run_dir`) the leaf only. A
    refused run into a new folder then leaves no trace, not even inside an input folder."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    run = Path(hydra_cfg.runtime.output_dir).absolute()
    new = _NEW_FOLDERS
    if not new or run != new[0] or not run.is_dir():
        return  # only a folder this command made (never the cwd of a one-shot tool)
    ours = {run / name for name in _RECORD_FILES}
    found = {p for p in run.rglob("*") if not p.is_dir()}
    logs = {p for p in found if p.parent == run and is_run_log(p.name, hydra_cfg.job.name)}
    if not found <= ours | logs:
        return  # the run wrote something else: leave it all
    logging.shutdown()  # the run's log file handler holds the file open
    for path in found:
        path.unlink(missing_ok=True)
    # the empty folders the run made before it was refused (.hydra/, a logger's csv/), deepest
    # first; one that holds anything stays, and so does the run dir above it
    for folder in sorted((p for p in run.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()
    for folder in new:  # deepest first; stops at the first that is not empty
        try:
            folder.rmdir()
        except OSError:
            break


def remove_new_sweep_dir() -> None:
    """After a refusal of a sweep's first job (``-m``): remove the sweep folder Hydra made
    for it when it holds nothing but the ``multirun.yaml`` Hydra wrote there in this command
    (and empty folders; the refused job's own folder is gone by then, with its record:
    :func:`note_sweep_job_dir`), and this command made it: a
    ``hydra.sweep.dir`` named on the command line that did not exist before (with its new
    parents, when empty), or the default ``<runs>/<command>-multirun/<YYYYmmdd-HHMMSS>``
    stamped with this command's start (its parents stay, as a run dir's). A later job's
    refusal keeps it, and the earlier jobs' folders in it: the record of the jobs that ran."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or len(_STARTED) < 3:
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.job.num != 0:
        return
    sweep = Path(hydra_cfg.sweep.dir).absolute()
    if _STARTED[2]:  # named: only a folder that was not there before
        if not _NEW_SWEEP_FOLDERS or sweep != _NEW_SWEEP_FOLDERS[0]:
            return
    else:
        match = re.fullmatch(r"\d{8}-\d{6}", sweep.name)
        if match is None or sweep == Path.cwd().absolute():
            return
        if not _stamped_now(sweep.name):
            return
    record = sweep / "multirun.yaml"
    if not record.is_file() or record.stat().st_mtime < _STARTED[0] - 2:
        return
    if {p for p in sweep.rglob("*") if not p.is_dir()} != {record}:
        return  # anything else there: not this command's alone, leave it all
    record.unlink()
    folders = sorted((p for p in sweep.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for folder in [*folders, sweep, *_NEW_SWEEP_FOLDERS[1:]]:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break
