"""The CLI boundary: every failure becomes one line on stderr, and normal runs print no noise.

:func:`command` turns a task function into a ``kdseg-<name>`` entry point (Hydra app plus the
two guards below); :func:`guarded` is the task-level guard alone, for a module that applies
``hydra.main`` itself.

* Bad input (:class:`~kdseg.errors.InputError`), config errors (a missing mandatory key such as
  ``input=``, ``batch_size=abc``, an override Hydra cannot apply) -> one line, exit code 2.
* Anything else -> one line naming the exception, exit code 1 (a bug: please report it).
* ``verbose=true`` prints the traceback first. SIGTERM raises :class:`Terminated` and Ctrl-C
  :class:`KeyboardInterrupt`, so every ``finally`` (temporary files) runs: exit 143 / 130.
* Library noise is filtered once per process: Lightning's accelerator banners and litlogger
  tip, known deprecation warnings, the MONAI nvImageCodec notice; other Python warnings are
  one ``kdseg-<command>: warning:`` line (:func:`console_warnings`), as kdseg's own are.
* A refused run leaves no run folder behind (:mod:`kdseg.cli.rundir`), nor what its
  loggers made when the refusal came after they started (:func:`remove_new_logger_files`: also
  in a run folder that was there before, which keeps all it had), and a sweep refused at its
  first job no sweep folder (:func:`remove_new_sweep_dir`); a refused job of a sweep removes
  its own job folder (``<sweep>/<n>``, :func:`note_sweep_job_dir`), the other jobs' stay.

What the options themselves may be (types, ranges, keys a command reads) and the one-shot
composition live in :mod:`kdseg.cli.options`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import gc
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from kdseg.cli.options import (
    CONFIG_PATH,
    check_no_new_keys,
    check_option_ranges,
    check_option_types,
    check_overrides,
    compose_once,
    plain_overrides,
    quote_paths,
    unknown_choice,
    unknown_option,
)
from kdseg.cli.rundir import (
    note_default_run_dir,
    note_new_run_dir,
    note_run_state,
    note_sweep_job_dir,
    remove_new_logger_files,
    remove_new_run_dir,
    remove_new_sweep_dir,
)
from kdseg.errors import (
    INTERRUPTED,
    WRITE_ERRNOS,
    InputError,
    TrainingDiverged,
    to_log_files,
    warning_line,
)

#: Lightning INFO lines that say nothing the run's config does not already say.
BANNERS = (
    "GPU available",
    "TPU available",
    "HPU available",
    "💡 Tip",
    "LOCAL_RANK",
    "Trainer already configured with model summary",
    "Restoring states from the checkpoint",  # kdseg logs "resuming from <path>" itself
    "Restored all states from the checkpoint",
    "Using 16bit Automatic Mixed Precision",  # trainer.precision says so (GPU runs)
    "Using bfloat16 Automatic Mixed Precision",
    "Initializing distributed:",  # DDP: trainer=ddp says so
    "-" * 20,  # DDP: the "distributed_backend=gloo / All processes registered" box
    "`Trainer.fit` stopped:",  # max_epochs / max_steps reached: the run's config says so
)
#: Lightning lines dropped wherever they appear in a record (a rank prefix before them)
BANNER_PARTS = ("Received SIGTERM",)  # kdseg reports SIGTERM itself (exit 143)
#: the loggers those lines come through (the CUDA accelerator logs LOCAL_RANK on its own)
BANNER_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.accelerators.cuda",
    "lightning.pytorch.accelerators.cuda",
    "lightning_fabric.utilities.distributed",
    "pytorch_lightning.trainer.connectors.signal_connector",
    "lightning.pytorch.trainer.connectors.signal_connector",
)
#: Deprecation and notice warnings from the stack that a user can do nothing about.
KNOWN_WARNINGS = (
    r".*does not have many workers which may be a bottleneck.*",
    r".*The anonymous setting has no effect.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*pkg_resources is deprecated.*",
    # an epoch shorter than log_every_n_steps: the steps are still logged every N (counted
    # over the whole fit), and validation logs per epoch
    r".*is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    # kdseg-distill: the frozen teacher is in eval mode on purpose (METHOD.md §2)
    r".*module\(s\) in eval mode at the start of training.*",
    # DDP: Lightning's own all_gather of the Dice counts, and its advice for logged values
    # that kdseg already reduces over the processes (the counts are all-gathered)
    r".*torch.distributed.nn.functional.all_gather is deprecated.*",
    r".*It is recommended to use `self.log\('val/.*sync_dist=True.*",
)


class Terminated(BaseException):
    """Raised by the SIGTERM / SIGHUP handler (a ``BaseException``: ``except Exception`` lets
    it pass); its argument is the signal's number."""


class Interrupted(BaseException):
    """Raised by the SIGINT handler instead of ``KeyboardInterrupt``: Lightning turns a
    ``KeyboardInterrupt`` during ``fit`` into ``sys.exit(1)``, which would hide Ctrl-C's exit
    code 130 and kdseg's one line; any other exception it re-raises after its own cleanup."""


class _DropBanners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.lstrip().startswith(BANNERS) or any(part in message for part in BANNER_PARTS)
        )


def quiet_libraries() -> None:
    """Silence the stack's banners and known warnings (idempotent)."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    for name in BANNER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropBanners) for f in logger.filters):
            logger.addFilter(_DropBanners())
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_SILENT", "true")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A Python warning that reaches the console, as one ``kdseg-<command>: warning:`` line
    (Python's own format leads with the full path of the library file; ``verbose=true``
    keeps it)."""
    text = " ".join(str(message).split()) or category.__name__
    with contextlib.suppress(OSError, ValueError):
        print(warning_line(text), file=file or sys.stderr)


def console_warnings(verbose: bool) -> None:
    """Python warnings as :func:`_show_warning` lines, unless ``verbose``."""
    if not verbose:
        warnings.showwarning = _show_warning


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _on_sigint(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP (the terminal or SSH session closed) -> :class:`Terminated`
    (Python's default would end the process on the spot, skipping every cleanup); SIGINT ->
    :class:`Interrupted` where Python's own handler is installed. A signal someone set to be
    ignored (``nohup``) stays ignored. Main thread only."""
    try:
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None and signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread
        pass


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _config_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    if isinstance(exc, MissingMandatoryValue) and key:
        return f"missing mandatory option {key}= (pass {key}=VALUE)"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"option {key}: {message}" if key and str(key) not in message else message


def report(command: str, exc: BaseException, verbose: bool) -> int:
    """Print ``exc`` as one line (after the traceback when ``verbose``); return the exit code."""
    from hydra.errors import HydraException

    exc = _stop_behind(exc)
    if isinstance(exc, BrokenPipeError):  # `kdseg-predict ... | head`: the reader left
        with contextlib.suppress(OSError):  # no second error when Python flushes at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    if verbose and not isinstance(exc, (KeyboardInterrupt, Interrupted, Terminated)):
        traceback.print_exception(exc)
    if isinstance(exc, InputError):
        line, code = str(exc), 2
    elif isinstance(exc, OmegaConfBaseException):
        line, code = _config_message(exc), 2
    elif isinstance(exc, HydraException):
        line, code = _first_line(exc), 2
    elif isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS and exc.filename:
        # a full disk, a quota, a read-only or forbidden folder: where the output goes
        line, code = f"{exc.filename}: cannot write it ({os.strerror(exc.errno)})", 2
    elif any(cls.__name__ == "MisconfigurationException" for cls in type(exc).__mro__):
        line, code = _first_line(exc), 2  # Lightning's refusal of a trainer setting
    elif isinstance(exc, TrainingDiverged):
        line, code = str(exc), 1
    elif isinstance(exc, Terminated):
        signum = exc.args[0] if exc.args else signal.SIGTERM
        line = f"terminated ({signal.Signals(signum).name}); unfinished outputs removed"
        line, code = line + resume_hint(command), 128 + signum
    elif isinstance(exc, (KeyboardInterrupt, Interrupted)):
        line, code = INTERRUPTED + resume_hint(command), 130
    else:
        hint = "" if verbose else " (verbose=true shows the traceback)"
        line, code = f"internal error: {type(exc).__name__}: {_first_line(exc)}{hint}", 1
    _log_to_files(f"{command}: error: {line}")  # first: a hung-up terminal fails the print
    with contextlib.suppress(OSError):  # the terminal or pipe is gone (SIGHUP, `| tee` killed)
        print(f"{command}: error: {line}", file=sys.stderr, flush=True)
    return code


def _stop_behind(exc: BaseException) -> BaseException:
    """The stop (:class:`Terminated`, :class:`Interrupted`, ``KeyboardInterrupt``) behind a
    terminal error raised while handling it: after a hang-up, Lightning's progress bar writes
    to the terminal that is gone (EIO; EPIPE under a killed ``| tee``), and that ``OSError``
    would be reported as an internal error, exit 1, instead of the hang-up, exit 129."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.EIO, errno.EPIPE):
        return exc
    cause, seen = exc.__context__, 0
    while cause is not None and seen < 20:
        if isinstance(cause, (Terminated, Interrupted, KeyboardInterrupt)):
            return cause
        cause, seen = cause.__context__, seen + 1
    return exc


def _log_to_files(message: str) -> None:
    """The error line into the run's log file too (``train.log``; not the console, which has
    it already): a resumed run's log otherwise shows no sign that it was stopped, or why."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    # only this job's: a multirun's earlier job keeps its log handler until the next records
    # under ``--cfg`` Hydra sets no output dir: no run, no log file
    output_dir = (
        OmegaConf.select(HydraConfig.get(), "runtime.output_dir")
        if HydraConfig.initialized()
        else None
    )
    run = Path(output_dir) if output_dir else None
    to_log_files(logging.LogRecord("kdseg", logging.ERROR, __file__, 0, message, None, None), run)


TRAINING_COMMANDS = ("kdseg-train", "kdseg-distill")


def resume_hint(command: str = "kdseg-train") -> str:
    """How to resume the training run this process was stopped in (empty where it wrote no
    checkpoint, or for a command that does not train: a one-shot command run inside a run
    folder would otherwise be told to "resume" it): the default run dir is time-stamped, so
    "the same command" alone would start a new run in a new folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if command not in TRAINING_COMMANDS or not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    sweep = str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    return resume_words(Path(hydra_cfg.runtime.output_dir), sweep)


def resume_words(run: Path, sweep: str | None = None) -> str:
    """``; to resume, rerun the same command with hydra.run.dir=<run>`` (a multirun: with
    ``hydra.sweep.dir=<sweep>``, whose finished jobs are kept) when ``run`` holds a
    checkpoint to resume from, else nothing."""
    import shlex

    checkpoints = [run / "checkpoints" / n for n in ("last.ckpt", "last-previous.ckpt")]
    if not any(c.is_file() for c in checkpoints):
        return ""
    folder = Path(sweep) if sweep else run
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    where = f"{key}={folder.absolute()}"
    return f"; to resume, rerun the same command with {shlex.quote(where)}"


def _argv_verbose(argv: list[str]) -> bool:
    """``verbose=true`` on the command line, read as Hydra and the option check read it: the
    truth value ``true`` in any case, nothing else (``verbose=yes`` is a string, which
    :func:`~kdseg.cli.options.check_option_types` refuses; read as true here, it printed a
    traceback before that line)."""
    flags = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith("verbose=")]
    return any(f.strip().lower() == "true" for f in flags)


def guarded(command: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[DictConfig], Any]]:
    """Decorator for a Hydra task function: every exception -> one line (see module docstring)."""

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
        @functools.wraps(fn)
        def wrapper(cfg: DictConfig) -> Any:
            quiet_libraries()
            install_signal_handlers()
            verbose = OmegaConf.select(cfg, "verbose", default=False) is True  # as checked
            try:
                from hydra.core.hydra_config import HydraConfig

                if HydraConfig.initialized():
                    hydra_cfg = HydraConfig.get()
                    run = Path(hydra_cfg.runtime.output_dir).absolute()
                    note_default_run_dir(run, hydra_cfg.job.name)
                    note_sweep_job_dir(run)
                    note_run_state(run if command in TRAINING_COMMANDS else None)
                    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
                    overrides = list(hydra_cfg.overrides.task)
                    check_no_new_keys(hydra_cfg.job.config_name, overrides, choices)
                    check_option_types(cfg, hydra_cfg.job.config_name, choices)
                    check_option_ranges(cfg)
                return fn(cfg)
            except SystemExit:
                raise
            except BaseException as exc:  # noqa: BLE001  (the boundary: one line, never a traceback)
                code = report(command, exc, verbose)
                if code == 2:  # refused: the run never started
                    remove_new_logger_files()
                    remove_new_run_dir()
                    remove_new_sweep_dir()
                raise SystemExit(code) from None

        return wrapper

    return decorate


_EXIT_COLLECTION_SKIPPED = False


def skip_exit_collection() -> None:
    """At interpreter exit, :func:`gc.freeze` what is alive then (once per process, from an
    ``atexit`` handler): the final garbage collection of the shutdown then leaves out the
    hundreds of thousands of objects torch, Lightning, MONAI and SciPy hold, which it would
    traverse only to free memory the process is about to give back: 1.5 to 2 s of every
    command's exit on two cores. The other exit handlers (logging's flush, multiprocessing's
    children, weakref finalizers, wandb) run as before, and a command called in a process that
    goes on (a test, a notebook) collects as before: nothing is frozen until the exit."""
    global _EXIT_COLLECTION_SKIPPED
    if not _EXIT_COLLECTION_SKIPPED:
        _EXIT_COLLECTION_SKIPPED = True
        atexit.register(gc.freeze)


def app_guard(
    command: str, app: Callable[[], Any], config_name: str | None = None
) -> Callable[[], Any]:
    """Wrap a ``hydra.main`` app: Hydra's own errors (a bad override, a missing config group)
    also become one line and exit code 2 instead of Hydra's multi-line report; an option the
    config lacks is named with the closest one (:func:`~kdseg.cli.options.unknown_option`)."""

    @functools.wraps(app)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        skip_exit_collection()
        quiet_libraries()
        install_signal_handlers()
        note_new_run_dir(sys.argv[1:])
        verbose = _argv_verbose(sys.argv[1:])
        console_warnings(verbose)
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises; we print the one line
        try:
            return app(*args, **kwargs)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001
            if _hydra_usage_error(exc):  # `-m ... --cfg job`: Hydra's own refusal of the flags
                exc = InputError(None, f"{_first_line(exc)} (see {command} --hydra-help)")
            elif config_name is not None and type(exc).__name__ == "ConfigCompositionException":
                exc = unknown_option(_first_line(exc), config_name) or exc
            elif type(exc).__name__ == "MissingConfigException":  # model=enett
                exc = unknown_choice(str(exc)) or exc
            raise SystemExit(report(command, exc, verbose)) from None

    return wrapper


def shown_config_checked(config_name: str, app: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a ``hydra.main`` app: ``--cfg job|hydra|all`` first runs kdseg's checks of the
    overrides (:func:`~kdseg.cli.options.check_overrides`). Hydra prints the composed config
    and never calls the task, whose boundary runs them: ``kdseg-predict --cfg job
    +thresold=0.5`` printed ``thresold: 0.5`` and ``batch_size=abc`` its value, command lines
    the command itself refuses."""

    @functools.wraps(app)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            overrides = _shown_config_overrides(sys.argv[1:])
            if overrides is not None:
                check_overrides(config_name, overrides)
        return app(*args, **kwargs)

    return wrapper


def _shown_config_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a command line that only prints its config (``--cfg``), read by
    Hydra's own argument parser; None for any other (a run, ``-m``, ``--info``, another config
    named by ``--config-name`` ..., flags Hydra itself refuses)."""
    import io

    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            flags = get_args_parser().parse_args(argv)
    except SystemExit:  # Hydra's parser refuses the flags: Hydra says so itself
        return None
    others = (flags.help, flags.hydra_help, flags.run, flags.multirun, flags.info)
    elsewhere = (flags.config_path, flags.config_name, flags.config_dir)
    rerun = getattr(flags, "experimental_rerun", None)
    if not flags.cfg or flags.shell_completion or any(others) or any(elsewhere) or rerun:
        return None
    return list(flags.overrides)


@contextlib.contextmanager
def without_collection() -> Iterator[None]:
    """The cyclic garbage collector paused for the ``with`` block, for Lightning's imports:
    their hundreds of thousands of new objects (torch's compiler stack, torchmetrics with
    matplotlib and SciPy) set off full collections that traverse every object made so far,
    again and again (7 of them, 0.9 s of kdseg-train's start on two cores), and they make
    little cyclic garbage. The collector runs again after the block, as before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def lightning_logging() -> None:
    """Lightning's loggers as its import sets them up when no logging is configured yet: their
    own stderr handler, not propagated to Hydra's. kdseg-train and kdseg-distill import
    Lightning only after their input checks, when Hydra's console handler is on the root
    logger; without this, Lightning's few lines would take Hydra's ``[time][name][INFO]``
    prefix and go to the run's log file."""
    for name in ("pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
        logger.propagate = False


def _hydra_usage_error(exc: BaseException) -> bool:
    """A ``ValueError`` raised inside Hydra itself (its command-line flags), not in a task."""
    if not isinstance(exc, ValueError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}hydra{os.sep}" in frames[-1].filename


def command(
    name: str,
    config_name: str,
    one_shot: bool = False,
    warm: Callable[[list[str]], Callable[[], None] | None] | None = None,
    paths: tuple[str, ...] = (),
    null_paths: tuple[str, ...] = (),
) -> Callable[[Callable[[DictConfig], Any]], Callable]:
    """``@command("kdseg-predict", "predict")``: the Hydra app for ``conf/<config_name>.yaml``
    with the task guard inside, a fast plain ``--help`` and the app guard around it.

    ``one_shot``: a tool that writes no run folder (``kdseg-predict``); called with
    :func:`plain_overrides` only, it skips the Hydra app and runs on :func:`compose_once`'s
    config. Anything else (``--cfg job``, ``-m``, ``hydra.*``, ``+key=``) goes to the app.
    ``warm(argv)``, for a one-shot tool, starts work that needs no config (reading the input
    named on the command line) before the config is composed; it must never raise, and it may
    return a function that drops what it started, called however the command ends.
    ``paths``: options that name files, quoted for Hydra's grammar where needed
    (:func:`~kdseg.cli.options.quote_paths`: ``input=CT scan (1).nii.gz`` as it is written,
    ``input=1e3`` a file, not a number); ``null_paths``: those of them that take ``null``.
    """
    import hydra

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        from kdseg.cli import fast_help  # (kdseg.cli imports this module)

        task = guarded(name)(fn)
        app = fast_help(config_name)(
            hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(task)
        )
        app = shown_config_checked(config_name, app)
        if not one_shot:
            return app_guard(name, app, config_name)

        @functools.wraps(app)
        def direct_or_app(*args: Any, **kwargs: Any) -> Any:
            argv = sys.argv[1:]
            quoted = quote_paths(argv, paths, null_paths) if paths else argv
            if args or kwargs or not plain_overrides(argv):
                sys.argv[1:] = quoted
                return app(*args, **kwargs)
            undo = warm(argv) if warm is not None else None
            try:
                return task(compose_once(config_name, quoted))
            finally:
                if undo is not None:
                    undo()

        return app_guard(name, direct_or_app, config_name)

    return decorate
