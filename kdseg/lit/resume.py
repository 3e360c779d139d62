"""Resume that keeps everything: the checkpoint to restart from, one CSV log, one wandb run.

A training run dir is resumable at any moment, even after a SIGKILL:

* ``last.ckpt`` is rotated, not overwritten: the one before it stays as ``last-previous.ckpt``
  (:class:`RotatingCheckpoint`), so a ``last.ckpt`` cut short by a kill (or a full disk) falls
  back to the previous good one with one warning line (:func:`find_resume`). Every candidate
  is test-loaded with ``weights_only=True`` before Lightning sees it.
* ``csv/metrics.csv`` is flushed whenever a checkpoint is written and, on resume, continued:
  rows logged after the checkpoint (work the kill threw away) are dropped, the rest kept
  (:class:`ResumableCSVLogger`). Lightning's own CSV logger deletes the file on start.
* the wandb run id is stored in ``<run dir>/wandb_id.txt`` and reused with ``resume="allow"``
  (:func:`wandb_run_id`), so a resumed run continues the same wandb run; a run that starts
  from no checkpoint takes a new id. A kill stops wandb's writer wherever it was, so the
  resumed process first logs the CSV rows no earlier wandb file of the id holds, and logs no
  row one holds (:class:`ResumableWandbLogger`): the id's files hold the CSV log, each row once.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import secrets
import string
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from lightning_fabric.utilities.logger import _add_prefix
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from kdseg.errors import InputError, atomic_path, first_process, warning_line, write_text_atomic
from kdseg.eval.checkpoint import check_finite_weights, load_reason

LAST = "last.ckpt"
PREVIOUS = "last-previous.ckpt"
WANDB_ID_FILE = "wandb_id.txt"


class MovableCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose state survives a moved (or copied) run folder.

    Lightning reloads the best score and the kept files only when the checkpoint folder's path
    is the one saved; in a moved run folder it warns and starts with no best score, so the first
    validation after the resume replaced ``best.ckpt`` even when it was worse. Here a state whose
    files sit in the saved folder is read with those files' paths moved to this folder, when this
    folder holds its best file. Any other state (a ``resume=`` from another run's checkpoint:
    its best file is not here) starts fresh and quietly: this run's ``best.ckpt`` is then written
    by this run's own first validation. Its state is stored under Lightning's own
    ``ModelCheckpoint`` key, so runs saved before this class existed resume as they were."""

    _state_name = "ModelCheckpoint"

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"{self._state_name}{kwargs!r}"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath", self.dirpath)
        if self.dirpath is None or saved is None or saved == self.dirpath:
            super().load_state_dict(state_dict)
            return
        state = _moved_state(state_dict, Path(saved), Path(self.dirpath))
        if state is not None:
            super().load_state_dict(state)


def _moved_state(state: dict[str, Any], saved: Path, here: Path) -> dict[str, Any] | None:
    """``state`` with every file path under ``saved`` moved under ``here``; ``None`` unless its
    best file was in ``saved`` and is in ``here``."""
    best = state.get("best_model_path") or ""
    if not best or Path(best).parent != saved or not (here / Path(best).name).is_file():
        return None

    def move(path: str) -> str:
        return str(here / Path(path).name) if path and Path(path).parent == saved else path

    moved = dict(state, dirpath=str(here))
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        moved[key] = move(state.get(key) or "")
    moved["best_k_models"] = {move(k): v for k, v in (state.get("best_k_models") or {}).items()}
    return moved


class RotatingCheckpoint(MovableCheckpoint):
    """A ``ModelCheckpoint`` that moves the file it is about to replace to ``last-previous``,
    and that with ``every_n_train_steps`` also saves at each epoch end (Lightning then saves
    only every N steps: a finished run's last steps were not in ``last.ckpt``, a run shorter
    than N steps had none, and a rerun trained the tail again). A step save that falls on an
    epoch's last batch is left to that epoch's end, after its validation: Lightning resumes a
    checkpoint of an epoch's last batch in the next epoch and never runs the validation it was
    saved before, so a run killed during that validation lost the epoch's validation for good
    (its CSV row, and the best checkpoint's chance at it). Killed there, the run loses at
    most that one interval. With ``val_check_interval`` below 1, a step save on a batch that a
    mid-epoch validation follows waits for that validation's end in the same way (Lightning
    resumes it past that validation too). The epoch end saves at the step of a step save
    (``max_steps`` in mid-epoch) too, with the best callback's state after its epoch: that
    save replaces ``last.ckpt`` in place and keeps ``last-previous`` one interval back."""

    _state_name = "RotatingCheckpoint"

    @classmethod
    def last(cls, dirpath: str | Path, every_n_train_steps: int | None) -> RotatingCheckpoint:
        """The run's ``last.ckpt`` callback: one unmonitored file, every N steps (None: per
        epoch) and at each epoch end. It is the one file kept by an unmonitored callback:
        Lightning >= 2.6 writes a ``save_last`` copy only when a top-k file was saved in the
        same step (never with ``save_top_k=0``)."""
        return cls(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            every_n_train_steps=every_n_train_steps,
            save_on_train_epoch_end=True,
        )

    _saved_step: int | None = None  # the global step of this callback's last save

    _after_validation = False  # a step save waits for the validation its batch is followed by

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._every_n_train_steps >= 1:
            if batch_idx + 1 >= trainer.num_training_batches:
                return  # the epoch's last batch: saved at its end, after its validation
            if _validation_follows(trainer):  # trainer.val_check_interval below 1
                self._after_validation = (
                    trainer.global_step % self._every_n_train_steps == 0
                    and not self._should_skip_saving_checkpoint(trainer)
                )
                return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._every_n_train_steps < 1:
            return
        from pytorch_lightning.trainer.states import TrainerFn

        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        path = Path(filepath)
        again = self._saved_step == trainer.global_step  # the same step: replace, no rotation
        if trainer.is_global_zero and path.name == LAST and path.is_file() and not again:
            os.replace(path, path.with_name(PREVIOUS))
        super()._save_checkpoint(trainer, filepath)
        self._saved_step = trainer.global_step


def _validation_follows(trainer: Any) -> bool:
    """Whether Lightning validates right after the training batch that just ended: the test
    its training loop makes next (``val_check_interval``, ``check_val_every_n_epoch``), made
    now. A time-based ``val_check_interval`` that runs out in between is missed (the step save
    then comes before that validation, as Lightning's own does)."""
    loop = trainer.fit_loop.epoch_loop
    return not loop._skip_next_val and loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


def _load(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``path`` loaded as a Lightning checkpoint (weights only) and ``None``; or ``None`` and
    why it is not one (a truncated zip, a foreign pickle, weights that are not tensors)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, ...
        return None, load_reason(exc) or "not a checkpoint file"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return None, "not a training checkpoint (no state_dict / global_step)"
    state, step = ckpt["state_dict"], ckpt["global_step"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        return None, "not a training checkpoint (its state_dict is not a set of tensors)"
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None, f"not a training checkpoint (global_step {step!r})"
    return ckpt, None


def find_resume(run_dir: Path, resume: str | None) -> str | None:
    """Checkpoint to resume from: an explicit path, or the run dir's own ``last.ckpt``.

    An unreadable ``last.ckpt`` falls back to ``last-previous.ckpt`` (one warning line on
    stderr); when neither loads (a ``last-previous.ckpt`` alone included), or an explicit
    ``resume=`` does not, an :class:`InputError`. So is a checkpoint with NaN or Inf weights
    (:func:`check_resume_weights`): the resumed run would train garbage from its first step.
    """
    return open_resume(run_dir, resume)[0]


def open_resume(
    run_dir: Path, resume: str | None, module: Any = None
) -> tuple[str | None, int | None]:
    """:func:`find_resume`'s checkpoint and :func:`resume_step`'s step (``None, None``: a
    fresh run), with their checks, from one read of the file: a checkpoint holds the
    optimizer's state too, and each ``torch.load`` of it took as long as the next (Lightning
    reads it once more to restore the run)."""
    chosen = _choose_resume(run_dir, resume)
    if chosen is None:
        return None, None
    path, ckpt = chosen
    check_resume_weights(Path(path), ckpt)
    return path, resume_step(path, ckpt, module)


def check_resume_weights(path: Path, ckpt: dict[str, Any]) -> None:
    """Refuse a resume checkpoint whose weights hold NaN or Inf (one line naming it): a
    diverged or damaged run's state, from which every step is NaN again (the first one then
    stops the run, pointing back at this same checkpoint). ``ckpt``: the file as
    :func:`_load` read it."""
    try:
        check_finite_weights(path, ckpt["state_dict"])
    except InputError as exc:
        raise InputError(
            path,
            f"cannot resume: {exc.message}; delete the run dir to start over, or pass "
            "resume=PATH (an earlier checkpoint, e.g. last-previous.ckpt)",
        ) from None


def _choose_resume(run_dir: Path, resume: str | None) -> tuple[str, dict[str, Any]] | None:
    """:func:`find_resume`'s choice and the checkpoint as it loaded, before its weights are
    checked."""
    if resume:
        if not Path(resume).exists():
            raise InputError(resume, "resume checkpoint not found")
        ckpt, reason = _load(Path(resume))
        if ckpt is None:
            raise InputError(resume, f"resume checkpoint is unreadable ({reason})")
        return str(resume), ckpt
    last = run_dir / "checkpoints" / LAST
    previous = last.with_name(PREVIOUS)
    if not last.exists():
        if not previous.exists():
            return None
        # killed between the rotation's rename and the new save: the previous one is the
        # run's state, and a fresh start would throw the run (and its CSV log) away
        ckpt, reason = _load(previous)
        if ckpt is not None:
            return str(previous), ckpt
        raise InputError(
            previous,
            f"cannot resume: unreadable ({reason}) and no {LAST}; "
            "delete the run dir to start over, or pass resume=PATH",
        )
    ckpt, reason = _load(last)
    if ckpt is not None:
        return str(last), ckpt
    fallback = _load(previous)[0] if previous.exists() else None
    if fallback is not None:
        print(
            warning_line(f"{last} is unreadable ({reason}); resuming from {previous} instead"),
            file=sys.stderr,
        )
        return str(previous), fallback
    raise InputError(
        last,
        f"cannot resume: unreadable ({reason}) and no good {PREVIOUS}; "
        "delete the run dir to start over, or pass resume=PATH",
    )


def resume_step(ckpt_path: str, ckpt: dict[str, Any], module: Any = None) -> int:
    """The global step a resume of ``ckpt_path`` (read as ``ckpt``) starts from. With
    ``module``, the checkpoint's weights must be the module's (the same names and shapes): a
    checkpoint of another network, width or command (``kdseg-distill``'s holds the teacher
    too) is refused in one line instead of Lightning's size-mismatch report of every layer."""
    if module is not None:
        have = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        differ = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
        if differ:
            raise InputError(
                ckpt_path,
                f"resume checkpoint holds other weights than this run's network ({len(differ)} "
                f"of {len(want)} differ, e.g. {differ[0]!r}): it is of another model, width or "
                "command; resume a run with its own settings",
            )
    return int(ckpt["global_step"])


def csv_rows(path: Path, before_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """``metrics.csv``'s columns and its whole rows logged before ``before_step`` (a line cut
    short by a kill, or one without a readable step, is left out)."""
    rows: list[dict[str, str]] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        for row in reader:
            if None in row.values() or None in row:  # a line cut short by the kill
                continue
            try:
                step = int(float(row.get("step") or 0))
            except ValueError:
                continue
            if step < before_step:
                rows.append(row)
    return fields, rows


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted."""

    def __init__(self, log_dir: str, keep_before_step: int | None) -> None:
        self._keep_before_step = keep_before_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_before_step is None or not path.is_file():
            if path.is_file():
                path.unlink()  # a fresh run in an old folder: start a fresh log
            return
        fields, rows = csv_rows(path, self._keep_before_step)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, out.getvalue())
        self.metrics_keys = sorted(fields)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that continues ``metrics.csv`` across a resume and flushes at checkpoints.

    ``keep_before_step``: the global step the run resumes from (rows from that step on are
    dropped: the resumed run logs them again); ``None`` for a fresh run.
    """

    def __init__(self, *args: Any, keep_before_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._keep_before_step)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        # what a checkpoint holds is on disk in the log too, so a SIGKILL loses neither
        self.save()


def wandb_run_id(run_dir: Path, fresh: bool = False) -> str | None:
    """The wandb run id of this run dir: read from ``wandb_id.txt``, or made and stored there
    by the first process. Another DDP process only reads it, and takes ``None`` while it is
    not there: processes started together each made an id before, and the last one written
    won over the one the first process's wandb run had. Their own id is never used: the
    ``WandbLogger`` makes its run on the first process only.

    ``fresh``: the run starts from no checkpoint (its CSV log starts afresh too), so the first
    process makes a new id even where ``wandb_id.txt`` holds one: a run killed before its first
    checkpoint left it, and its rerun, whatever its settings, logged into that run's wandb run.
    """
    path = run_dir / WANDB_ID_FILE
    if path.is_file() and not (fresh and first_process()):
        text = path.read_text().strip()
        if text:
            return text
    if not first_process():
        return None
    alphabet = string.ascii_lowercase + string.digits  # what wandb's own ids are made of
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    write_text_atomic(path, run_id + "\n")
    return run_id


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target, then renamed onto it.

    Lightning's own writer stages the bytes in ``$TMPDIR`` and moves them: on a node-local or
    tmpfs ``/tmp`` the move is a copy, so a kill during it truncates ``best.ckpt`` in place,
    leaves a checkpoint-sized temporary in ``/tmp`` that nothing sweeps, and a full ``/tmp``
    fails the save while the run's own disk has room. Here the temporary sits in the
    checkpoint's folder (a pid-named hidden file, swept by the next save of the same target)
    and ``os.replace`` makes the switch. Remote paths (``s3://``) keep Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


#: the key of the training step in each wandb history row (Lightning's ``WandbLogger``)
WANDB_STEP = "trainer/global_step"
_WANDB_BLOCK = 32768  # wandb's transaction log: leveldb's log format, after a 7-byte header


def _wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a wandb transaction log (``run-<id>.wandb``), up to the first one that is
    cut short or fails its checksum: where a kill stopped the writer."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        return
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        left = _WANDB_BLOCK - offset % _WANDB_BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            offset += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        offset += 7 + length
        if kind == 1:  # the whole record
            yield chunk
        elif kind in (2, 3):  # its first or a middle part
            pending = (pending if kind == 3 else b"") + chunk
        elif kind == 4:  # its last part
            yield pending + chunk
            pending = b""
        else:
            return


def wandb_logged(wandb_dir: Path, run_id: str) -> dict[int, set[str]]:
    """What earlier processes logged to wandb run ``run_id`` under ``wandb_dir``: per training
    step, the keys logged at it. Read from their transaction logs (offline runs'
    ``offline-run-*-<id>/run-<id>.wandb``, online runs' ``run-*-<id>/`` alike), as far as each
    was written: a SIGKILL leaves one cut short, or empty."""
    logged: dict[int, set[str]] = {}
    pattern = f"*run-*-{glob.escape(run_id)}/run-{glob.escape(run_id)}.wandb"
    for path in sorted(wandb_dir.glob(pattern)):
        for step, keys in wandb_history(path):
            logged.setdefault(step, set()).update(keys)
    return logged


def wandb_history(path: Path) -> Iterator[tuple[int, set[str]]]:
    """The history rows of one wandb transaction log: each row's training step and its keys
    (wandb's own, ``_step`` and the like, left out), as far as the log was written."""
    from wandb.proto import wandb_internal_pb2

    for raw in _wandb_records(path):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # a record of another wandb version: what follows is unknown too
            return
        if record.WhichOneof("record_type") != "history":
            continue
        # a value that is a dict (an image, a table) comes as its fields: keyed by its name
        row = {i.key or i.nested_key[0]: i.value_json for i in record.history.item}
        try:
            step = int(float(json.loads(row.pop(WANDB_STEP))))
        except (KeyError, ValueError, TypeError):
            continue
        yield step, {k for k in row if not k.startswith("_")}


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


class ResumableWandbLogger(WandbLogger):
    """``WandbLogger`` whose resumed run ends with the CSV log's history, each row once.

    A SIGKILL stops the wandb writer wherever it was: its transaction log may hold none of the
    rows before the checkpoint (a run killed before its file was first written), and it may
    hold rows after it, which the resumed process logs again. So on a resume, before its first
    row, the rows of ``metrics.csv`` before the checkpoint's step that no earlier transaction
    log of this run id holds are logged (:func:`wandb_logged`), and a row whose step and keys
    an earlier process logged is not logged again. Offline runs (the default) are read whole;
    an online run's local transaction log holds what was handed to the upload. A resumed
    process that logs nothing (a rerun of a run killed after its last checkpoint) catches up
    when its fit ends (:meth:`catch_up`, from :func:`kdseg.lit.train.fit`). A fresh run
    (``keep_before_step=None``) logs as Lightning's logger does, with no reading.
    """

    def __init__(
        self,
        *args: Any,
        keep_before_step: int | None = None,
        csv_path: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._keep_before_step = keep_before_step
        self._csv_path = csv_path
        self._logged: dict[int, set[str]] | None = None  # None: not caught up yet

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.catch_up()
        logged = self._logged or {}
        if step is not None and step in logged:
            keys = set(_add_prefix(dict(metrics), self._prefix, self.LOGGER_JOIN_CHAR))
            if keys <= logged[step]:
                return  # the killed process logged it
        super().log_metrics(metrics, step)

    @rank_zero_only
    def catch_up(self) -> None:
        """Log the CSV rows before the resumed step that wandb lacks, once: before the first
        row of this process, or when its fit ends (a rerun of a run killed after its last
        checkpoint trains nothing, so logs nothing). Starts the wandb run only where a row
        is missing."""
        if self._logged is None:
            self._logged = self._catch_up()

    def _catch_up(self) -> dict[int, set[str]]:
        """Log the CSV rows before the resumed step that wandb lacks; what wandb had."""
        run_id, save_dir = self._wandb_init.get("id"), self.save_dir
        if self._keep_before_step is None or not run_id or not save_dir:
            return {}
        logged = wandb_logged(Path(save_dir) / "wandb", str(run_id))
        if self._csv_path is None or not self._csv_path.is_file():
            return logged
        for row in csv_rows(self._csv_path, self._keep_before_step)[1]:
            step = int(float(row["step"]))
            metrics = {k: _number(v) for k, v in row.items() if k != "step" and v != ""}
            if metrics and not set(metrics) <= logged.get(step, set()):
                super().log_metrics(metrics, step)
        return logged
