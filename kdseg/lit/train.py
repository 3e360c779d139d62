"""Run a Lightning fit from a composed config: loggers, checkpoints, resume, summary.

Shared by ``kdseg-train`` and ``kdseg-distill``: the caller builds the LightningModule, this
module does everything around it. Checkpoints go to ``<run_dir>/checkpoints``: ``last.ckpt``
every ``checkpoint.every_n_train_steps`` steps and at each epoch end (so a killed run loses at
most one interval; the one before stays as ``last-previous.ckpt``) and ``best.ckpt`` by
validation Dice. Rerunning with the same run dir (or ``resume=PATH``) continues from
``last.ckpt`` with the same CSV log and wandb run (:mod:`kdseg.lit.resume`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

from kdseg.data.dataset import check_outside, resolve_data
from kdseg.errors import LOCAL_RANK_VARIABLE, ConfigError, progress_draws, write_text_atomic
from kdseg.lit.callbacks import (
    QuietModelSummary,
    RandomStreams,
    StepTimer,
    TrainingProgress,
    ValidationLine,
    WandbValidationOverlay,
    progress_bar,
)
from kdseg.lit.resume import (
    AtomicCheckpointIO,
    MovableCheckpoint,
    ResumableCSVLogger,
    ResumableWandbLogger,
    RotatingCheckpoint,
    open_resume,
    wandb_run_id,
)
from kdseg.models import batch_norm_refusal

log = logging.getLogger(__name__)


def build_loggers(
    cfg: dict[str, Any], run_dir: Path, resume_step: int | None = None
) -> list[Logger]:
    """CSV always; wandb unless ``logger.wandb.enabled`` is false (offline by default).

    ``resume_step``: the step a resumed run restarts from; the CSV log is continued up to it
    and wandb continues the run dir's own run id, catching up with the CSV log (a fresh run
    takes a new id; see :mod:`kdseg.lit.resume`).
    """
    csv_logger = ResumableCSVLogger(
        str(run_dir), name="csv", version="", keep_before_step=resume_step
    )
    loggers: list[Logger] = [csv_logger]
    wb = cfg.get("wandb") or {}
    if wb.get("enabled", True) and os.environ.get("WANDB_MODE") != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        logger = ResumableWandbLogger(
            project=wb.get("project", "kdseg"),
            entity=wb.get("entity"),  # a team or user other than the login's default
            name=wb.get("name"),
            group=wb.get("group"),
            tags=list(wb.get("tags") or []),
            save_dir=str(run_dir),
            offline=bool(wb.get("offline", True)),
            log_model=False,
            id=wandb_run_id(run_dir, fresh=resume_step is None),
            resume="allow",
            keep_before_step=resume_step,  # on a resume, wandb catches up with the CSV log
            csv_path=Path(csv_logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE,
        )
        logger._wandb_init.pop("anonymous", None)  # else wandb warns it is deprecated
        loggers.append(logger)
    return loggers


def build_callbacks(cfg: dict[str, Any], run_dir: Path, wandb: bool = False) -> list[pl.Callback]:
    """Checkpointing (last every N steps or per epoch; best by validation Dice), LR monitor,
    the throughput timer (``perf/*``), and validation overlays when wandb logs the run."""
    ckpt_dir = run_dir / "checkpoints"
    every = cfg.get("every_n_train_steps") or None
    last = RotatingCheckpoint.last(ckpt_dir, every)
    best = MovableCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=cfg.get("monitor", "val/dice_mean"),
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    extra = [WandbValidationOverlay()] if wandb else []
    # best before last: both save at the end of a training epoch, in list order, and last.ckpt
    # holds every callback's state, so it must be written after best has seen the epoch (else a
    # resumed run compares against an older best score and replaces best.ckpt with a worse one)
    return [
        best,
        last,
        LearningRateMonitor(logging_interval="epoch"),
        QuietModelSummary(),
        StepTimer(),
        RandomStreams(),
        ValidationLine(cfg.get("monitor", "val/dice_mean")),
        TrainingProgress(),
        *extra,
    ]


def fit_from_config(
    cfg: dict[str, Any],
    make_module: Callable[[dict[str, Any], dict[str, Any]], pl.LightningModule],
    run_dir: str | Path,
    record: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Resolve the data config, build the module with ``make_module(cfg, data_info)``, fit it.

    The one path behind ``kdseg-train`` and ``kdseg-distill``; ``cfg`` is the resolved plain
    config of the run. ``record`` writes it beside the checkpoints (``config.yaml``,
    ``.hydra/``: :func:`kdseg.cli.save_run_config`); it runs when training starts, with the
    split, so a run refused before then leaves the record of a run dir's earlier run as it was
    (or, where nothing is left to train, when the fit ends).
    """
    seed = check_seed(cfg.get("seed", 123))
    _check_trainer(cfg.get("trainer", {}))  # before the data is prepared (fit checks again)
    _check_checkpointing(cfg.get("checkpoint") or {})
    # Seed before anything is built: the network's initial weights come from torch's global
    # RNG, so under the same seed kdseg-train and kdseg-distill start the student from
    # bit-identical weights (the student is built before the teacher and the adapters).
    pl.seed_everything(seed, workers=True, verbose=False)
    teacher = cfg.get("teacher") or {}
    setup = resolve_data(cfg["data"], teacher.get("predictions"))
    cache = teacher.get("cache")
    if isinstance(cache, str) and cache.strip():  # other values: teacher_cache.check_cache_dir
        check_outside(Path(cache), setup.sources, "teacher.cache")  # as data.cache_root
    # the module first: a teacher checkpoint that is missing or trained on other inputs, or a
    # bad method, is refused in seconds, not after preparing the whole dataset (preparing
    # draws nothing from the global RNGs, so the initial weights are the same either way)
    module = make_module(cfg, setup.info())
    check_monitor((cfg.get("checkpoint") or {}).get("monitor"), module)
    if rank_zero_only.rank == 0:
        # fill the caches before Lightning starts: bad input is then one line on stderr, not
        # a line after the Trainer's banner (prepare_data finds everything done)
        setup.prepare(workers=int(cfg["data"].get("prepare_workers", 1)), progress=True)
    init = weights_checksum(module.net) if hasattr(module, "net") else None
    datamodule = setup.datamodule(seed=seed)
    if rank_zero_only.rank == 0:
        # slices that cannot batch are refused here, not in the Trainer's setup after the
        # loggers have started (a refused run leaves no logger files: kdseg.cli.boundary)
        datamodule.check_shapes()
        trainer_cfg = cfg.get("trainer") or {}
        check_batch_norm(module, datamodule, int(setup.info()["in_channels"]), trainer_cfg)
    # the run's config and the split it trains with, beside its checkpoints (they record it
    # too), written once training starts (a run refused before, a resume included, writes
    # nothing): data.split_file=<run>/split.json scores the same cases whatever the cache root

    def at_start() -> None:
        if record is not None:
            record()
        setup.write_split(run_dir)

    summary = fit(module, datamodule, cfg, run_dir, init_checksum=init, at_start=at_start)
    if rank_zero_only.rank == 0:  # DDP: every process runs this; one line is enough
        score = summary["best_score"]  # the full float stays in summary.json
        shown = f"{score:.4f}" if isinstance(score, float) else score
        print(f"best checkpoint: {summary['best_checkpoint']} (val dice {shown})")
        hint = wandb_sync_hint(Path(run_dir), cfg.get("logger") or {})
        if hint:
            print(hint)
    return summary


def check_batch_norm(
    module: pl.LightningModule,
    datamodule: Any,
    in_channels: int,
    trainer: dict[str, Any] | None = None,
) -> None:
    """Refuse, before training starts, a batch of one slice so small that a BatchNorm layer of
    the trained network sees a 1 x 1 map (one value per channel), which torch refuses at the
    first training step, mid-run and as a traceback. Only ``data.batch_size`` 1 can (a batch
    of 2 or more gives every channel 2 values or more); each training size is tried on the
    meta device (:func:`kdseg.models.batch_norm_refusal`), the network from the module's
    ``model`` config (the student for kdseg-distill; the frozen teacher runs in eval mode).
    ``trainer.sync_batchnorm`` over several processes passes: SyncBatchNorm takes its
    statistics over every process's batch, and torch refuses one value only in a world of
    one."""
    model_cfg = getattr(module, "hparams", {}).get("model")
    batch_size = int(datamodule.cfg.batch_size)
    if batch_size != 1 or not isinstance(model_cfg, dict):
        return
    trainer = trainer or {}
    nodes = trainer.get("num_nodes") or 1
    if trainer.get("sync_batchnorm") is True and _whole(nodes):
        if _devices_per_node(trainer) * nodes > 1:
            return
    for h, w in datamodule.training_sizes():
        refusal = batch_norm_refusal(model_cfg, (batch_size, in_channels, h, w))
        if refusal is not None:
            raise ConfigError(
                f"data.batch_size 1 with {h} x {w} training slices: a BatchNorm layer of "
                f"model {model_cfg.get('name')} would see a 1 x 1 map ({refusal}); set "
                "data.batch_size to 2 or more, or train on larger slices (data.patch_size, "
                "data.preprocess.in_plane_size)"
            )


class AtTrainStart(pl.Callback):
    """Runs ``action`` once on process 0 when training starts: at the first training epoch's
    start, after Lightning has restored a resumed run's checkpoint and after the module's own
    ``on_train_start`` (which refuses a schedule without an end), and before the first
    checkpoint. So a run refused before then (a bad ``last.ckpt``, a config that does not
    match it) has written nothing by it, and a run killed after a checkpoint has it. A run
    resumed mid-epoch gets no epoch start for that epoch: its first batch's start stands in.
    A fit with nothing left to train starts neither: :func:`fit` runs ``action`` at its end
    when the folder holds no record yet."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action = action
        self.done = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.done and trainer.is_global_zero:
            self.action()
        self.done = True

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # a run resumed mid-epoch: Lightning calls no on_train_epoch_start for that epoch
        self.on_train_epoch_start(trainer, pl_module)


def wandb_sync_hint(run_dir: Path, logger_cfg: dict[str, Any]) -> str | None:
    """The command that uploads the run's offline wandb files (wandb prints it at the end of a
    run, but kdseg silences wandb), or None when wandb did not log offline."""
    import shlex

    wb = logger_cfg.get("wandb") or {}
    if not wb.get("enabled", True) or not wb.get("offline", True):
        return None
    if not any((run_dir / "wandb").glob("offline-run-*")):
        return None
    return f"wandb (offline): wandb sync {shlex.quote(str(run_dir / 'wandb'))}/offline-run-*"


def check_seed(seed: Any) -> int:
    """The run's seed: a whole number numpy and torch both take (0 to 2**32 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r}: use a whole number from 0 to {2**32 - 1}")
    return seed


#: strategies whose processes Lightning starts itself, by fork or spawn (``ddp_fork``,
#: ``ddp_spawn``, ``ddp_notebook`` and their ``_find_unused_parameters_*`` variants)
_SELF_LAUNCHED = ("ddp_fork", "ddp_spawn", "ddp_notebook")


def _devices_per_node(trainer: dict[str, Any]) -> int:
    """How many processes ``trainer.devices`` asks for on each node (``auto`` / -1 on a GPU:
    the CUDA devices NVML sees, without initialising CUDA here; none seen: Lightning's CPU
    fallback, one process)."""
    from lightning_fabric.accelerators.cuda import num_cuda_devices

    devices = trainer.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text in ("auto", "-1"):
        return 1 if str(trainer.get("accelerator", "auto")) == "cpu" else max(1, num_cuda_devices())
    try:
        return int(text)
    except ValueError:
        return 1  # Lightning refuses it in its own words


def _slurm_job() -> bool:
    """Whether Lightning will take this process's ranks from SLURM: ``SLURMEnvironment.detect()``
    (``SLURM_NTASKS`` set and a job name other than ``bash`` / ``interactive``) and no
    torchelastic launch, which Lightning picks first."""
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    with warnings.catch_warnings():  # detect() warns when srun exists but is not used
        warnings.simplefilter("ignore")
        return SLURMEnvironment.detect() and not TorchElasticEnvironment.detect()


def _subprocess_launched(trainer: dict[str, Any], devices: int) -> bool:
    """Whether Lightning starts (or, under a cluster's launcher, expects) one process per
    device by rerunning the command line (``ddp``, ``fsdp``, ``deepspeed``, or ``auto`` over
    several devices or nodes), rather than forking them (:data:`_SELF_LAUNCHED`) or running one
    process. A strategy given as an object is left to Lightning."""
    strategy = trainer.get("strategy", "auto")
    if not isinstance(strategy, str) or strategy.startswith(_SELF_LAUNCHED):
        return False
    if strategy.startswith(("ddp", "fsdp", "deepspeed")):
        return True
    nodes = trainer.get("num_nodes", 1)
    return strategy == "auto" and (devices > 1 or (_whole(nodes) and nodes > 1))


def _env_count(*names: str) -> tuple[str, int] | None:
    """The first of the environment variables ``names`` that holds a whole number, with it."""
    for name in names:
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return name, int(text)
    return None


def check_slurm_strategy(trainer: dict[str, Any]) -> None:
    """Refuse, inside a SLURM job, a trainer the job's tasks cannot run.

    Where Lightning detects SLURM (:func:`_slurm_job`), it reads every process's rank from
    ``SLURM_PROCID`` / ``SLURM_NTASKS``: a fork or spawn strategy over several devices is
    refused (Lightning ignores the ranks its fork launcher gives the workers: each worker is
    rank 0 in a world of 1, and they all write the same checkpoints; under SLURM each device
    needs its own task). A strategy with one process per device (``ddp``) needs the job's
    layout to match the trainer's: ``SLURM_NTASKS_PER_NODE`` tasks per node for
    ``trainer.devices``, ``SLURM_NNODES`` (``SLURM_JOB_NUM_NODES``) nodes for
    ``trainer.num_nodes``; Lightning checks that only once the data is prepared and the run
    has started, and stops with an internal error.
    """
    if not _slurm_job():
        return
    strategy = trainer.get("strategy", "auto")
    devices = _devices_per_node(trainer)
    if isinstance(strategy, str) and strategy.startswith(_SELF_LAUNCHED) and devices > 1:
        raise ConfigError(
            f"trainer.strategy={strategy}: inside a SLURM job Lightning takes the ranks from "
            "SLURM, so forked workers would all be rank 0; use trainer=ddp with one SLURM task "
            "per device (hydra.launcher.tasks_per_node=<trainer.devices>; docs/training.md "
            '"Multi-node and SLURM")'
        )
    if not _subprocess_launched(trainer, devices):
        return
    tasks = _env_count("SLURM_NTASKS_PER_NODE")
    if tasks is not None and tasks[1] != devices:
        raise ConfigError(
            f"trainer.devices={trainer.get('devices', 'auto')}: this SLURM job runs {tasks[1]} "
            f"task(s) per node ({tasks[0]}={tasks[1]}) and Lightning needs one task per "
            f"device: set hydra.launcher.tasks_per_node={devices} (or trainer.devices="
            f'{tasks[1]}; docs/training.md "Multi-node and SLURM")'
        )
    nodes, job_nodes = (
        trainer.get("num_nodes", 1),
        _env_count("SLURM_NNODES", "SLURM_JOB_NUM_NODES"),
    )
    if job_nodes is not None and _whole(nodes) and nodes != job_nodes[1]:
        raise ConfigError(
            f"trainer.num_nodes={nodes}: this SLURM job runs on {job_nodes[1]} node(s) "
            f"({job_nodes[0]}={job_nodes[1]}): set hydra.launcher.nodes={nodes} (or "
            f'trainer.num_nodes={job_nodes[1]}; docs/training.md "Multi-node and SLURM")'
        )


def check_local_multirun(trainer: dict[str, Any]) -> None:
    """Refuse Lightning's subprocess DDP launcher in a Hydra multirun (``-m``) on this machine.

    That launcher starts each worker by rerunning this process's command line (``-m`` and the
    sweep's lists kept): every worker would run the whole sweep again. ``ddp_fork`` forks
    the workers inside the job instead. Taken where an external launcher started the
    processes (SLURM, as Hydra's submitit launcher does; torchrun; a worker of Lightning's own,
    ``LOCAL_RANK`` set): there Lightning starts none.
    """
    from lightning_fabric.plugins.environments import TorchElasticEnvironment

    strategy, devices = trainer.get("strategy", "auto"), _devices_per_node(trainer)
    if devices <= 1 or not _subprocess_launched(trainer, devices):
        return
    if not _hydra_multirun():
        return
    if _slurm_job() or TorchElasticEnvironment.detect() or LOCAL_RANK_VARIABLE in os.environ:
        return
    raise ConfigError(
        f"trainer.strategy={strategy}: in a multirun (-m) on this machine Lightning's DDP "
        "workers rerun the command line, so each would run the whole sweep again; use "
        'trainer=ddp_fork (docs/training.md "Multi-node and SLURM")'
    )


def _hydra_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``, ``hydra.mode=MULTIRUN``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def uses_cuda(trainer: dict[str, Any]) -> bool:
    """Whether the run may train on CUDA devices, decided without initialising CUDA in this
    process: ``torch.cuda.is_available()`` calls cuInit unless
    ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, and workers forked after that (``ddp_fork``) cannot
    use CUDA. Lightning's ``num_cuda_devices()`` asks NVML, as Lightning itself does."""
    from lightning_fabric.accelerators.cuda import num_cuda_devices

    if str(trainer.get("accelerator", "auto")) == "cpu":
        return False
    return num_cuda_devices() > 0


def _check_trainer(trainer: dict[str, Any]) -> None:
    """Trainer values Lightning would take without complaint and then misread, or refuse
    only once training has started (each one line naming the option, before anything is
    written)."""
    deterministic = trainer.get("deterministic")
    if deterministic not in (None, True, False, "warn"):
        raise ConfigError(f"trainer.deterministic={deterministic!r}: use true, false, warn or null")
    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    taken = {"default_root_dir", "logger", "callbacks", "plugins"}  # kdseg sets these itself
    for key in trainer:
        if key not in known or key in taken:  # else a TypeError deep in Lightning (exit 1)
            why = "kdseg sets it" if key in known else "not a pytorch_lightning.Trainer argument"
            raise ConfigError(f"trainer.{key}: {why}")
    for key in ("max_epochs", "max_steps"):  # 0 trained nothing and exited 0
        value = trainer.get(key)
        if value is not None and (not _whole(value) or value == 0 or value < -1):
            raise ConfigError(
                f"trainer.{key}={value}: use a whole number >= 1 (-1: no limit of its own)"
            )
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if not _whole(accumulate) or accumulate < 1:  # 0: a ZeroDivisionError once training starts
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate}: use a whole number >= 1")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (  # a negative value: Lightning clips nothing, without a word
        isinstance(clip, (int, float))
        and not isinstance(clip, bool)
        and math.isfinite(clip)
        and clip >= 0
    ):
        raise ConfigError(f"trainer.gradient_clip_val={clip}: use a finite number >= 0, or null")
    precision, known = trainer.get("precision"), _precisions()
    if precision is not None and known and precision not in known:
        raise ConfigError(
            f"trainer.precision={precision}: not a precision Lightning knows; use one of "
            + ", ".join(p for p in known if isinstance(p, str) and "-" in p)
        )
    check_slurm_strategy(trainer)
    check_local_multirun(trainer)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _precisions() -> tuple[Any, ...]:
    """The values Lightning's ``Trainer(precision=...)`` takes (``32-true``, ``16-mixed`` ...),
    from its private type alias; empty (no check here: Lightning's own then) if a release
    moved it."""
    from typing import get_args

    try:
        from lightning_fabric.connector import _PRECISION_INPUT
    except ImportError:
        return ()

    return tuple(value for kind in get_args(_PRECISION_INPUT) for value in get_args(kind))


def _check_checkpointing(checkpoint: dict[str, Any]) -> None:
    """``checkpoint.every_n_train_steps``: null or 0 (``last.ckpt`` at each epoch end) or a
    whole number of steps (``2.5`` was taken as it was)."""
    every = checkpoint.get("every_n_train_steps")
    if every is not None and (not _whole(every) or every < 0):
        raise ConfigError(
            f"checkpoint.every_n_train_steps={every}: use a whole number of steps, or null "
            "(last.ckpt at each epoch end)"
        )


def monitored_metrics(module: pl.LightningModule) -> list[str] | None:
    """The validation scores ``module`` logs, which ``checkpoint.monitor`` may name
    (``val/dice_mean`` and ``val/dice_<class>`` of its task's classes; the best checkpoint
    keeps the highest); None for a module without a kdseg task."""
    task = getattr(module, "task", None)
    classes = getattr(task, "eval_classes", None)
    if classes is None:
        return None
    return ["val/dice_mean", *(f"val/dice_{name}" for name in classes)]


def check_monitor(monitor: Any, module: pl.LightningModule) -> None:
    """Refuse a ``checkpoint.monitor`` the module does not log (``val/dice_tumour``) before
    training: Lightning refuses it only at the first validation's end, after an epoch."""
    names = monitored_metrics(module)
    if monitor is None or names is None or monitor in names:
        return
    raise ConfigError(
        f"checkpoint.monitor={monitor}: not a score this run logs; use one of {', '.join(names)}"
    )


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def _worker_state(run_dir: Path, trainer: pl.Trainer, best: ModelCheckpoint) -> dict[str, Any]:
    """Where the training ran in forked workers (``strategy=ddp_fork``), this process's
    trainer and callbacks never stepped: the run's step, epoch and best score are then read
    from the ``last.ckpt`` the workers wrote (it holds the best callback's state after its
    epoch). Empty when this process trained itself."""
    path = run_dir / "checkpoints" / "last.ckpt"
    if trainer.global_step > 0 or best.best_model_score is not None or not path.is_file():
        return {}
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {"global_step": int(ckpt["global_step"]), "epoch": int(ckpt["epoch"]) + 1}
    state["last_path"] = str(path)
    for key, value in ckpt.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and value.get("monitor") == best.monitor:
            state["best_score"] = _score(value.get("best_model_score"))
            state["best_path"] = value.get("best_model_path")
    return state


def _finish_wandb(loggers: list[Any]) -> None:
    """End this process's wandb run when its fit ends, however it ends: a multirun's next job
    then starts its own run (wandb otherwise hands it the one still in progress), and an
    offline run's file is complete."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            with contextlib.suppress(Exception):
                logger.experiment.finish()


def weights_checksum(net: Any) -> str:
    """SHA-256 (first 16 hex digits) over a network's state_dict, in key order.

    Equal checksums mean bit-identical weights: the pairing check of a seed.
    """
    digest = hashlib.sha256()
    for key, value in net.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fit(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    cfg: dict[str, Any],
    run_dir: str | Path,
    init_checksum: str | None = None,
    at_start: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Fit ``module``; return and write ``<run_dir>/summary.json`` (metrics, checkpoint paths).

    ``init_checksum`` (of the network as built, before any step) is recorded as
    ``init_weights_sha256``, so a paired comparison can be checked after the fact.
    ``at_start`` runs on process 0 when training starts (:class:`AtTrainStart`), or when
    the fit ends where no epoch started (a run with nothing left to train), before
    ``summary.json``.
    """
    run_dir = Path(run_dir)
    # trainer.deterministic=warn: torch flags ENet's max_unpool2d as lacking a deterministic
    # kernel. With non-overlapping 2x2 pooling every index has one writer, so on CPU it is
    # repeatable in practice (tests/test_seeding.py); the warning is noise there.
    warnings.filterwarnings("ignore", message=r"max_unpooling2d\S* does not have a deterministic")
    pl.seed_everything(int(cfg.get("seed", 123)), workers=True, verbose=False)
    if uses_cuda(cfg.get("trainer", {})):  # not torch.cuda.is_available(): see uses_cuda
        # TF32 for fp32 matrix work on tensor cores, as Lightning advises on every GPU run
        # (its banner otherwise); mixed-precision runs do most of their work in fp16 anyway
        torch.set_float32_matmul_precision("high")
    _check_trainer(cfg.get("trainer", {}))
    _check_checkpointing(cfg.get("checkpoint") or {})
    check_monitor((cfg.get("checkpoint") or {}).get("monitor"), module)
    # before anything is written; the checkpoint read once here (Lightning reads it again)
    ckpt_path, start_step = open_resume(run_dir, cfg.get("resume"), module)
    loggers = build_loggers(cfg.get("logger", {}), run_dir, start_step)
    callbacks = build_callbacks(
        cfg.get("checkpoint", {}), run_dir, wandb=any(isinstance(lg, WandbLogger) for lg in loggers)
    )
    # the bar only where it draws (stderr a terminal): elsewhere (a batch job's log, a pipe)
    # it would show nothing until the end, and TrainingProgress's and ValidationLine's lines
    # show the progress there
    bar = cfg.get("trainer", {}).get("enable_progress_bar", True) is not False and progress_draws()
    if bar:
        callbacks.append(progress_bar())  # Lightning's own, less its v_num item
    started = AtTrainStart(at_start) if at_start is not None else None
    if started is not None:
        callbacks.append(started)
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **{**cfg.get("trainer", {}), "enable_progress_bar": bar},
    )
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        for logger in loggers:  # a resumed process that logged nothing catches up now
            if isinstance(logger, ResumableWandbLogger):
                logger.catch_up()
    finally:
        _finish_wandb(loggers)
    record = run_dir / "config.yaml"
    if started is not None and not started.done and trainer.is_global_zero and not record.exists():
        # nothing was left to train and the folder holds no record (resume= of a finished run
        # into a new folder): no epoch started, but the run has its record all the same. A
        # rerun of a finished run in its own folder keeps the record of the run that trained
        # (its summary.json stays too): its settings may differ outside the run's identity
        started.action()
    summary_path = run_dir / "summary.json"
    if start_step is not None and trainer.global_step <= start_step and summary_path.is_file():
        # the run had already finished (a rerun, a resumed sweep): nothing was trained, so the
        # summary of the process that trained it, with its metrics and throughput, stays
        log.info("%s had already finished at step %d: summary.json kept", run_dir, start_step)
        return json.loads(summary_path.read_text())
    best, last = callbacks[0], callbacks[1]
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    state = _worker_state(run_dir, trainer, best)
    summary = {
        "run_dir": str(run_dir),
        "best_checkpoint": state.get("best_path") or best.best_model_path or last.best_model_path,
        "last_checkpoint": last.best_model_path or state.get("last_path"),
        "best_score": state.get("best_score", _score(best.best_model_score)),
        "epochs": state.get("epoch", trainer.current_epoch),
        "global_step": state.get("global_step", trainer.global_step),
        "seed": int(cfg.get("seed", 123)),
        "init_weights_sha256": init_checksum,
        "metrics": metrics,
        **next(c for c in callbacks if isinstance(c, StepTimer)).record(),
    }
    if trainer.is_global_zero:
        write_text_atomic(summary_path, json.dumps(summary, indent=1) + "\n")
    return summary
