"""Thin Hydra entry points, one module per command (``kdseg-<command>`` -> ``kdseg.cli.<command>``).

Each composes its config from ``conf/`` and calls one library function. :func:`command` makes
the entry point and turns every failure into one line on stderr (bad input: exit code 2; see
:mod:`kdseg.cli.boundary`); outputs pass :func:`kdseg.guards.check_output` before work starts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

import kdseg.config  # noqa: F401  (registers the config resolvers)
from kdseg.cli.boundary import command, guarded
from kdseg.cli.options import CONFIG_PATH, groups_help, number
from kdseg.cli.rundir import run_log_file
from kdseg.errors import (
    GLOBAL_RANK_VARIABLES,
    LOCAL_RANK_VARIABLE,
    NODE_RANK_VARIABLES,
    ConfigError,
    InputError,
    first_process,
    several_processes,
    write_text_atomic,
)
from kdseg.guards import check_output

__all__ = [
    "CONFIG_PATH",
    "build_predictor",
    "check_data",
    "command",
    "fast_help",
    "format_timings",
    "guarded",
    "number",
    "run_dir",
    "save_run_config",
    "stage_list",
    "timed",
    "to_dict",
]


def fast_help(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator above ``@hydra.main``: a plain ``--help`` prints the choices of each config
    group the command uses (:func:`~kdseg.cli.options.groups_help`, read from ``conf/`` at
    run time) and the command's own config file.

    Hydra's ``--help`` lists every config group of ``conf/`` (about a second of config-repo
    copies on two cores) before printing anything; the config file, with its comments, is the
    better help for a one-shot tool. ``--hydra-help``, ``--cfg job`` and ``--help`` next to
    overrides still go to Hydra.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not args and not kwargs and sys.argv[1:] in (["--help"], ["-h"]):
                import shutil

                command = Path(sys.argv[0]).name
                text = (Path(CONFIG_PATH) / f"{config_name}.yaml").read_text()
                width = min(shutil.get_terminal_size((80, 24)).columns, 100)
                groups = groups_help(config_name, width=width)
                print(
                    f"usage: {command} key=value ...  (Hydra overrides of conf/{config_name}.yaml)"
                    f"\n  {command} --cfg job [key=value ...]  shows the composed config;"
                    " --hydra-help: Hydra's own options\n\n"
                    + (f"{groups}\n\n" if groups else "")
                    + text
                )
                return None
            return fn(*args, **kwargs)

        return wrapper

    return decorate


@contextlib.contextmanager
def timed(steps: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall seconds of the ``with`` block to ``steps[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - start


def format_timings(steps: dict[str, float]) -> str:
    """One line: each step's seconds and their total (``verbose=true`` output)."""
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in steps.items())
    return f"time (s): {parts}; total {sum(steps.values()):.2f}"


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-container copy of a config (safe for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_dir() -> Path:
    """The current Hydra run's output folder."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def save_run_config(
    cfg: DictConfig, inputs: tuple = ()
) -> tuple[Path, dict[str, Any], Callable[[], None]]:
    """Check the run dir and open the run's log; return the dir, the plain config, and the
    function that writes the run's config (``config.yaml``, ``.hydra/``: :func:`record_run`).

    The caller runs that function when training starts (``fit_from_config``'s start, before
    the first checkpoint, so a killed run has its config): a rerun in an existing run folder
    refused before then (a data folder not found, a bad trainer option, a checkpoint of other
    settings) leaves that run's saved config as it was. ``inputs`` (the data folder, a teacher
    checkpoint ...) must not hold the run dir.
    """
    out = check_output(run_dir(), inputs, folder=True, what="run dir")
    check_same_run(out, cfg)
    open_run_log(out)
    return out, to_dict(cfg), record_run(out, cfg)


#: Hydra's default format for the job's log file
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class _RunLog(logging.FileHandler):
    """The run's ``<job name>.log``, opened by :func:`open_run_log` (one per process)."""


def record_run(out: Path, cfg: DictConfig) -> Callable[[], None]:
    """The function that writes a run's record, on the first process only (DDP workers
    started with it would each rewrite it): the resolved config as ``config.yaml``, and what
    Hydra writes into a run dir before the task starts (``conf/train.yaml`` turns Hydra's own
    writing off): ``.hydra/`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``, as Hydra
    writes them). The texts are made now, from the config as the task got it; the files are
    written when the function is called (each through a temporary, then renamed)."""
    from hydra.core.hydra_config import HydraConfig

    files = {out / "config.yaml": OmegaConf.to_yaml(cfg, resolve=True)}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        folder = out / ".hydra"
        files[folder / "config.yaml"] = OmegaConf.to_yaml(cfg)
        files[folder / "hydra.yaml"] = OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg}))
        files[folder / "overrides.yaml"] = OmegaConf.to_yaml(hydra_cfg.overrides.task)

    def write() -> None:
        if first_process():
            for path, text in files.items():
                write_text_atomic(path, text)

    return write


def open_run_log(out: Path) -> None:
    """On every process, the job's log file in the run dir, appended to as Hydra's is, once
    the run dir has passed kdseg's checks: ``<job name>.log`` on the first process;
    :func:`run_log_name` on the others."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _RunLog)]:
        root.removeHandler(handler)  # an earlier job of this process (a multirun)
        handler.close()
    handler = _RunLog(out / run_log_name(HydraConfig.get().job.name))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)


def run_log_name(job: str) -> str:
    """This process's log file in the run dir (:func:`~kdseg.cli.rundir.run_log_file`), so
    that the processes of a run do not interleave their lines in one file: ``<job>.log`` on
    the first; ``<job>_process_<rank>.log`` on a process of global rank over 0 (torchrun's
    ``RANK``, SLURM's ``SLURM_PROCID``: :data:`~kdseg.errors.GLOBAL_RANK_VARIABLES`); else,
    in a launch of several processes without a global rank (Lightning's own launcher started
    on each node by hand), ``<job>_node_<n>.log`` on the first process of node ``n`` > 0
    (:data:`~kdseg.errors.NODE_RANK_VARIABLES`). A worker of Lightning's subprocess launcher
    (its ``LOCAL_RANK`` over 0, no global rank) keeps ``<job>.log``: its job name is its own
    already (``train_ddp_process_<n>``: Lightning overrides ``hydra.job.name``)."""
    for name in GLOBAL_RANK_VARIABLES:
        if name in os.environ:
            rank = os.environ[name].strip()
            return run_log_file(job, "process", int(rank)) if _positive(rank) else run_log_file(job)
    if _positive(os.environ.get(LOCAL_RANK_VARIABLE, "0").strip()) or not several_processes():
        return run_log_file(job)
    for name in NODE_RANK_VARIABLES:
        node = os.environ.get(name, "0").strip()
        if _positive(node):
            return run_log_file(job, "node", int(node))
    return run_log_file(job)


def _positive(value: str) -> bool:
    """Whether ``value`` (an environment variable's) is a whole number over 0."""
    return value.isdigit() and int(value) > 0


#: What a run is: a rerun in its run dir resumes it, so these must not change there (the
#: number of epochs, logging, workers and data paths may). The loader's keys are in it: a
#: resumed run of another batch size, sampling or patch would train on other batches than
#: its saved config says.
RUN_IDENTITY = (
    "seed",
    "model",
    "student",
    "teacher.ckpt",
    "teacher.predictions",
    "distill",
    "loss",
    "optim",
    "data.name",
    "data.task",
    "data.context",
    "data.preprocess",
    "data.batch_size",
    "data.sampling",
    "data.target_fraction",
    "data.target_slices",
    "data.target_weighting",
    "data.samples_per_epoch",
    "data.val_sampling",
    "data.augment",
    "data.patch_size",
    "data.patch_ratios",
    "data.unlabeled_fraction",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.gradient_clip_algorithm",
    "trainer.precision",
)


_ABSENT = object()


def check_same_run(out: Path, cfg: DictConfig) -> None:
    """Refuse a rerun in a run dir that would resume a run of other settings (a checkpoint
    and a saved config are there): it would go on training that run under the new settings'
    name, or fail deep in loading its weights. With ``resume=<checkpoint>`` the settings are
    those of the checkpoint's run (:func:`check_resume_settings`)."""
    resume = OmegaConf.select(cfg, "resume", default=None)
    if resume not in (None, "", "null"):
        check_resume_settings(Path(str(resume)), cfg)
        return
    saved = out / "config.yaml"
    checkpoints = [out / "checkpoints" / n for n in ("last.ckpt", "last-previous.ckpt")]
    if not saved.is_file() or not any(c.exists() for c in checkpoints):
        return
    before = _load_config(saved)
    changed = _changed(before, cfg)
    if changed:
        raise InputError(
            out,
            f"holds a run of other settings ({_shown(changed)}); rerunning here "
            "resumes it, so give the same settings, or another hydra.run.dir",
        )


def check_resume_settings(ckpt: Path, cfg: DictConfig) -> None:
    """Refuse ``resume=<checkpoint>`` with settings of :data:`RUN_IDENTITY` other than the
    checkpoint's run trained with (the seed, the optimizer, the augmentation ...): the resumed
    run goes on with the checkpoint's weights, optimizer state and schedule, so its
    ``config.yaml``, ``summary.json`` and checkpoints would record settings it never trained
    with. The settings are the ``config.yaml`` of the checkpoint's run folder (the parent of
    its ``checkpoints/``, this run's own included), else what the checkpoint itself records
    (network, optimizer, loss, method, teacher, dataset and task: not the seed). A checkpoint
    that is missing or unreadable is passed here: ``find_resume`` refuses it in its words."""
    if not ckpt.is_file():
        return
    folder = checkpoint_run(ckpt)
    before = _load_config(folder / "config.yaml") if folder is not None else None
    if before is None:
        before = _checkpoint_settings(ckpt, student="student" in cfg)
    changed = _changed(before, cfg)
    if changed:
        raise InputError(
            ckpt,
            f"resume checkpoint of a run of other settings ({_shown(changed)}); "
            "resume= goes on training that run, so give its settings",
        )


def _load_config(path: Path) -> DictConfig | None:
    """A saved run config, or None where there is none or it cannot be read (not compared)."""
    if not path.is_file():
        return None
    try:
        loaded = OmegaConf.load(path)
    except Exception:  # noqa: BLE001 - an unreadable saved config cannot be compared
        return None
    return loaded if isinstance(loaded, DictConfig) else None


def _checkpoint_settings(ckpt: Path, student: bool) -> DictConfig | None:
    """The settings a kdseg checkpoint records (``hyper_parameters``), keyed as a run config:
    its network as ``model`` (``student`` for a distillation), ``optim``, ``loss``,
    ``distill``, ``teacher`` and the dataset's ``name``, ``task`` and ``context``."""
    import torch

    try:
        hp = torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters")
    except Exception:  # noqa: BLE001 - find_resume refuses an unreadable checkpoint
        return None
    if not isinstance(hp, dict):
        return None
    settings = {k: hp[k] for k in ("optim", "loss", "distill", "teacher") if k in hp}
    if "model" in hp:
        settings["student" if student else "model"] = hp["model"]
    data = hp.get("data") if isinstance(hp.get("data"), dict) else {}
    settings["data"] = {k: data[k] for k in ("name", "task", "context") if k in data}
    try:
        return OmegaConf.create(settings)
    except Exception:  # noqa: BLE001 - not a kdseg checkpoint's settings: not compared
        return None


def _changed(before: DictConfig | None, cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """The settings of :data:`RUN_IDENTITY` whose values differ between a saved config and
    this run's, each as its leaf key and both values (``loss.focal``, ``None``, ``'softmax'``).
    A key the saved config lacks is one kdseg added since that run: not a change; no saved
    config (``None``: unreadable, or none recorded), no change."""
    if before is None:
        return []
    now = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    changed: list[tuple[str, Any, Any]] = []
    for key in RUN_IDENTITY:
        changed += _differences(
            key,
            _plain(OmegaConf.select(before, key, default=_ABSENT)),
            _plain(OmegaConf.select(now, key, default=None)),
        )
    return changed


def _shown(changed: list[tuple[str, Any, Any]]) -> str:
    """The first three changed settings, ``key: before -> now``."""
    return ", ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, old, new in changed[:3])


#: How a network trains, not what it is: free to change on a resume.
RUN_OPTIONS = ("compile", "channels_last")


def _focal_kind(value: Any) -> Any:
    """``loss.focal`` as :func:`kdseg.config.check_focal` reads it (``null`` is ``sigmoid``,
    case aside), without refusing: a bad value is refused when the run starts."""
    from kdseg.config import check_focal

    try:
        return check_focal(value)
    except ConfigError:
        return value


#: Settings with more than one spelling of one value: compared as the value they mean.
SAME_VALUE: dict[str, Callable[[Any], Any]] = {"loss.focal": _focal_kind}


def _differences(key: str, before: Any, now: Any) -> list[tuple[str, Any, Any]]:
    """The leaves under ``key`` where a saved setting differs from the new one. Keys the
    saved config lacks (options kdseg added since that run, at any depth) are not compared;
    a key it has and the new one lacks is a change."""
    if before is _ABSENT:
        return []
    if isinstance(before, dict) and isinstance(now, dict):
        return [
            leaf
            for sub, value in before.items()
            for leaf in _differences(f"{key}.{sub}", value, now.get(sub, _ABSENT))
        ]
    same = SAME_VALUE.get(key, lambda v: v)
    if now is not _ABSENT and same(before) == same(now):
        return []
    return [(key, before, None if now is _ABSENT else now)]


def _plain(value: Any) -> Any:
    if not isinstance(value, (DictConfig, ListConfig)):
        return value
    plain = OmegaConf.to_container(value)
    return (
        {k: v for k, v in plain.items() if k not in RUN_OPTIONS}
        if isinstance(plain, dict)
        else plain
    )


def _short(value: Any, limit: int = 60) -> str:
    text = str(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def data_inputs(cfg: DictConfig) -> tuple[Any, ...]:
    """The folders a training run reads its data from (the run dir must lie outside them):
    ``data.root``, ``data.unlabeled_root`` and ``data.unlabeled_roi_labels``."""
    keys = ("data.root", "data.unlabeled_root", "data.unlabeled_roi_labels")
    return tuple(OmegaConf.select(cfg, key, default=None) for key in keys)


def check_unlabeled(data: dict[str, Any], teacher: bool) -> None:
    """Unlabeled scans that a run would prepare and never learn from are refused before
    anything is prepared: in ``kdseg-train`` (``teacher`` false: no teacher to learn from
    them; its mixed batches would only shrink the labeled share), and with
    ``data.unlabeled_fraction`` 0 (no batch draws them)."""
    if not data.get("unlabeled_root"):
        return
    if not teacher:
        raise InputError(
            None,
            "data.unlabeled_root: kdseg-train has no teacher to learn from unlabeled scans; "
            "use kdseg-distill, or kdseg-pseudolabel then kdseg-train on its output",
        )
    if not data.get("unlabeled_fraction"):
        raise InputError(
            None,
            "data.unlabeled_root is set but data.unlabeled_fraction is 0: no batch would draw "
            "the scans; set data.unlabeled_fraction (e.g. 0.5) or drop data.unlabeled_root",
        )


def check_data(plain: dict[str, Any], teacher: bool = True) -> None:
    """A training run's data (folder, cases, split, stored teacher predictions) resolved before
    Lightning is imported (6 of the 7.7 s a refusal took on 2 cores): a typo in ``data.root``
    is refused in about two seconds. ``fit_from_config`` resolves it again (a file listing).
    What ``data.unlabeled_root`` holds besides scans is one warning line, as kdseg-predict
    words it for its input folder (on the first process only). ``teacher``: whether the run
    has one (kdseg-distill; kdseg-train has none, :func:`check_unlabeled`)."""
    from kdseg.data.dataset import resolve_data

    check_unlabeled(plain["data"], teacher)
    notes: list[str] = []
    resolve_data(plain["data"], (plain.get("teacher") or {}).get("predictions"), notes=notes)
    if first_process():  # DDP: each process checks the data; one line is enough
        for note in notes:  # what data.unlabeled_root holds besides scans (as kdseg-predict)
            logging.getLogger("kdseg.data.sources").warning(note)


def checkpoint_run(ckpt: Any) -> Path | None:
    """The run folder a checkpoint belongs to: the parent of its ``checkpoints/`` folder, as
    kdseg-train lays a run out (``None`` for a checkpoint elsewhere). Another run writing
    there would replace that run's config and logs, and resume from its ``last.ckpt``."""
    if ckpt in (None, "", "null"):
        return None
    folder = Path(str(ckpt)).parent
    return folder.parent if folder.name == "checkpoints" else None


def stage_list(value: Any) -> list[Any]:
    """``ckpt`` / ``artifact`` as a list: ``[a, b]`` is a cascade, a single value one stage."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [None if v in (None, "null") else str(v) for v in value]
    return [str(value)]


def build_predictor(
    cfg: DictConfig,
    threshold: float | None,
    progress: bool = False,
    threshold_key: str = "threshold",
    binary_only: str | None = None,
    task: str | None = None,
    stage_data: list[tuple[dict[str, Any], str]] | None = None,
) -> tuple[Any, Any, str, str | None]:
    """The checkpoint or artefact named by ``ckpt`` / ``artifact`` / ``backend`` as a Predictor.

    Shared by ``kdseg-predict`` and ``kdseg-eval``; returns ``(predictor, bundle, backend,
    artifact)`` with the backend and artefact actually used. A list of two (``ckpt=[s1,s2]``
    or ``artifact=[s1.onnx,s2.onnx]``) is an organ-to-tumor cascade, stage 1 first: the
    predictor is a :class:`~kdseg.eval.inference.CascadePredictor` and the bundle, backend and
    artefact returned are stage 2's. ``threshold_key`` names the option ``threshold`` came from
    and ``binary_only`` the setting that asked for it (default ``<threshold_key>=``), for the
    line that refuses it. ``task``: a ``data.task=`` the user gave, which the model (stage 2)
    must have been trained on: a model is scored on its own task, so another one is refused
    (:func:`check_task`) rather than ignored. ``stage_data``, when given, gets each stage's
    ``(data section, checkpoint or artefact)``, stage 1 first (for the leakage check).
    """
    from kdseg.deploy.artifact import resolve_bundle
    from kdseg.eval.inference import BACKENDS, CascadePredictor, Predictor, check_tta
    from kdseg.guards import check_threads

    threads = check_threads(number(cfg, "threads", int, minimum=1))
    batch_size = number(cfg, "batch_size", int, minimum=1)
    tta = check_tta(OmegaConf.select(cfg, "tta", default=None))
    ckpts = stage_list(None if OmegaConf.is_missing(cfg, "ckpt") else cfg.ckpt)
    artifacts = stage_list(cfg.artifact)
    n = max(len(ckpts), len(artifacts), 1)
    if n > 2 or len(ckpts) not in (0, n) or len(artifacts) not in (0, n):
        raise InputError(
            None, "a cascade is two stages: ckpt=[stage1,stage2] and/or artifact=[stage1,stage2]"
        )
    if threshold is not None and not 0 < threshold < 1:
        raise InputError(None, f"{threshold_key}={threshold}: a probability, between 0 and 1")
    stages = []
    for i in range(n):
        ckpt = ckpts[i] if ckpts else None
        artifact = artifacts[i] if artifacts else None
        bundle, backend, artifact = resolve_bundle(ckpt, artifact, cfg.backend, threads)
        if stage_data is not None:
            stage_data.append((dict(bundle.data), str(ckpt or artifact)))
        if i == n - 1 and task is not None:
            check_task(task, bundle.task.name, artifact or ckpt)
        if i == n - 1 and threshold is not None and bundle.task.name == "multiclass":
            raise InputError(
                artifact or ckpt,
                f"{binary_only or threshold_key + '='} applies to binary models (organ or "
                "tumor); this one is multiclass",
            )
        if backend not in BACKENDS:  # compile / aoti live in the deployment layer, with torch
            import kdseg.deploy.backends  # noqa: F401
        # (ONNX Runtime's load errors become one InputError in inference.onnx_session)
        predictor = Predictor.from_bundle(
            bundle,
            backend=backend,
            artifact=artifact,
            threads=threads,
            batch_size=batch_size,
            threshold=threshold if i == n - 1 else None,
            progress=progress,
            tta=tta,
        )
        if i == 0 and n > 1 and bundle.preprocess.roi == "organ":
            raise InputError(
                artifact or ckpt,
                "cascade stage 1 was trained on organ crops (preprocess.roi=organ), so it "
                "needs an organ box itself: the stages look swapped; list the whole-volume "
                "organ model first, ckpt=[stage1.ckpt,stage2.ckpt]",
            )
        if i == 1 and bundle.preprocess.roi != "organ":
            _warn_uncropped_stage2(artifact or ckpt)
        stages.append((predictor, bundle, backend, artifact))
    if n == 1:
        return stages[0]
    return (CascadePredictor(stages[0][0], stages[1][0]), *stages[1][1:])


def _warn_uncropped_stage2(model: Any) -> None:
    """One warning line: a cascade's stage 2 that records no organ-box preprocessing
    (``preprocess.roi`` other than ``organ``) was not trained on the crops it is given. It
    runs anyway (a whole-volume model still predicts inside a box), but its results are not
    what its own evaluation measured."""
    from kdseg.errors import warning_line

    print(
        warning_line(
            f"{model}: cascade stage 2 was not trained on organ crops (its preprocess.roi is "
            "not organ); its labels inside stage 1's box may not match its evaluation"
        ),
        file=sys.stderr,
    )


def check_task(asked: str, own: str, model: Any) -> None:
    """Refuse ``data.task=<asked>`` for a model trained on another task (``own``), naming the
    option, the model and its task: the predictions are the model's own classes, whatever
    the option says, so passing it by would score the model on a task it was not asked for.
    A multiclass model's full evaluation already scores each binary task's class (organ:
    labels 1 and 2, tumor: label 2, as a binary model's), so there the line says so."""
    if asked == own:
        return
    head = f"data.task={asked}: this model's task is {own}, and a model is scored on its own task"
    if own == "multiclass":
        raise InputError(
            model,
            f"{head}; its full evaluation already scores {asked} in its own column (drop "
            f"data.task=; protocol=paper scores a binary model, one trained with "
            f"data.task={asked})",
        )
    raise InputError(
        model, f"{head} (drop data.task=, or give a model trained with data.task={asked})"
    )


def require_paths(cfg: DictConfig, *keys: str) -> None:
    """Refuse a path option that is a list or empty (an unset shell variable: ``input=$SCAN``
    would otherwise mean the current folder)."""
    for key in keys:
        if isinstance(cfg[key], ListConfig):
            raise InputError(None, f"{key}= takes one path, not a list")
        if not str(cfg[key]).strip():
            raise InputError(None, f"{key}= is empty; name a file or folder")


def require_whole_volume(predictor: Any, cfg: DictConfig) -> None:
    """Refuse a stage-2 model (trained on organ boxes) run alone on whole volumes, naming it."""
    if getattr(predictor, "stages", None) is None and predictor.pre.config.roi == "organ":
        artifact = stage_list(cfg.artifact)
        key, model = ("artifact", artifact[0]) if artifact else ("ckpt", cfg.ckpt)
        raise InputError(
            model,
            "this model was trained on organ ROIs (preprocess.roi=organ): run it as stage 2 of "
            f"a cascade, {key}=[stage1,{Path(str(model)).name}]",
        )
