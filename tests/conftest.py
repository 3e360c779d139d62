"""Shared fixtures: a tiny phantom LiTS folder and a tiny trained checkpoint, built once."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is as fast, and steadier
# the default slice cache (paths.cache_dir: ~/.cache/kdseg) never fills the home folder nor a
# user's KDSEG_CACHE_DIR: one temporary folder per test process (each xdist worker its own),
# inherited by the commands the tests start, removed at exit
_CACHE_DIR = tempfile.mkdtemp(prefix="kdseg-test-cache-")
os.environ["KDSEG_CACHE_DIR"] = _CACHE_DIR
atexit.register(shutil.rmtree, _CACHE_DIR, True)
# a test process's exit: its final garbage collection would traverse every object of the
# libraries it imported, only to free memory the process gives back (about 2 s for a worker
# that imported torch and Lightning); as every kdseg command (kdseg.cli.boundary)
atexit.register(gc.freeze)

BIN = Path(sys.executable).parent
TINY_PHANTOM = (
    "params={size_range: [64, 72], slices_range: [14, 18], max_tumors: 3, p_no_tumor: 0.0, "
    "tumor_mm_range: [12, 30]}"
)
TINY_DATA = [
    "experiment=demo",
    "data.preprocess.in_plane_size=[48,48]",
    "data.batch_size=8",
    "data.samples_per_epoch=32",
]

#: ``trained_enet``'s settings beyond TINY_DATA (a rerun of that run gives them again)
TRAINED_ENET = (
    "model=enet",
    "model.width=0.5",
    "data.samples_per_epoch=64",
    "trainer.max_epochs=3",
)

#: A warning line of any command (on stderr, as the error line)
WARNING_LINE = re.compile(r"kdseg(-[a-z]+)?: warning: ")


def error_lines(stderr: str) -> list[str]:
    """``stderr``'s non-empty lines less its warning lines: a refused command says why in one
    line, whatever it warned about before (the phantoms' organ outside the HU window, when a
    training run is refused after preparing its data)."""
    return [line for line in stderr.splitlines() if line.strip() and not WARNING_LINE.match(line)]


def kdseg(
    command: str, *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a kdseg console script; on failure show its output."""
    result = subprocess.run(
        [str(BIN / f"kdseg-{command}"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kdseg-{command} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


def _loggers() -> list[tuple[str, logging.Logger]]:
    """The root logger and every named one (placeholders left out)."""
    named = list(logging.Logger.manager.loggerDict.items())
    return [("", logging.getLogger()), *((n, g) for n, g in named if isinstance(g, logging.Logger))]


def _once_a_process() -> list[set]:
    """kdseg's sets of what it has said once in this process (the HU-window and empty-label
    notes of a cache folder, an nnU-Net dataset's extra channels, cases a split leaves out)."""
    from kdseg.data import manifest, nnunet, prepare

    return [prepare._WARNED, nnunet._NOTED, manifest._WARNED]


def kdseg_here(
    command: str, *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """``kdseg(command, *args)`` in this process: the console script's entry function, called
    as the script calls it (its argv, ``sys.exit`` of what it returns), its stdout and stderr
    captured, without an interpreter's start-up (2 to 5 s of imports a command, most of the
    suite's time). For the tests of what a command writes, or refuses in its one line; a test
    of the process itself (signals, DDP, wandb, two processes alike for one seed, a resumed
    run bit for bit, what a fresh interpreter prints) starts a real one with :func:`kdseg`.

    What a command changes in the process is undone after it: argv, the working directory,
    the environment, Hydra's global state and the root logger's handlers (a run's train.log),
    warning filters, signal handlers, torch's thread count and deterministic mode, the global
    random streams (``random``, numpy's, torch's: a run seeds them) and what kdseg says once a
    process (:func:`_once_a_process`). The command sees the warning filters a fresh
    interpreter starts with."""
    import contextlib
    import io
    import random
    import signal
    import traceback
    import warnings
    from importlib.metadata import entry_points

    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    (script,) = entry_points(group="console_scripts", name=f"kdseg-{command}")
    main = script.load()
    out, err = io.StringIO(), io.StringIO()
    argv, here, environ = sys.argv, os.getcwd(), dict(os.environ)
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    loggers = _loggers()
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for name, lg in loggers}
    threads = torch.get_num_threads()
    streams = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    command_line = [str(BIN / f"kdseg-{command}"), *args]
    sys.argv = command_line[:]
    os.environ["WANDB_MODE"] = "disabled"  # as kdseg() runs a command
    GlobalHydra.instance().clear()
    # a test that called a command's main() itself leaves Hydra's run config behind (under
    # ``--cfg``, one without an output dir), which this command would take for its own
    hydra_run = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = None
    code: object = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            # a fresh interpreter's warning filters, not the suite's (pyproject.toml ignores
            # FutureWarning, which a command shows as a warning line)
            warnings.resetwarnings()
            for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            try:
                code = main()
            except SystemExit as exc:
                code = exc.code
            except Exception:  # what the interpreter does with an uncaught one: exit 1
                traceback.print_exc()
                code = 1
            if code is not None and not isinstance(code, int):  # sys.exit("message")
                print(code, file=sys.stderr)
                code = 1
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = hydra_run
        for name, logger in _loggers():  # Hydra's console and file handlers, Lightning's
            handlers, level, propagate, disabled = saved.get(name, ([], None, None, None))
            for added in set(logger.handlers) - set(handlers):
                added.close()
            logger.handlers[:] = handlers
            if level is not None:
                logger.level, logger.propagate, logger.disabled = level, propagate, disabled
        for s, handler in signals.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        random.setstate(streams[0])  # seed_everything's seeds stay the command's
        np.random.set_state(streams[1])
        torch.set_rng_state(streams[2])
        for said in _once_a_process():  # what a command says once a process, said again
            said.clear()
    result = subprocess.CompletedProcess(command_line, code or 0, out.getvalue(), err.getvalue())
    if check and result.returncode != 0:
        raise AssertionError(
            f"kdseg-{command} (in-process) failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def phantom_lits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five tiny LiTS-layout phantom cases (3 train, 1 val, 1 test)."""
    root = tmp_path_factory.mktemp("data") / "lits"
    # in this process: a fresh interpreter's start-up and imports (seconds a command) would
    # be paid by every test process, and by every test file run on its own
    kdseg_here("phantom", "dataset=lits", f"root={root}", "n_cases=5", "seed=1", TINY_PHANTOM)
    return root


@pytest.fixture(scope="session")
def trained_enet(phantom_lits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ENet trained for three short epochs; returns its run folder. Long enough (24
    steps) that it labels the organ (test Dice about 0.7): a network that predicts background
    everywhere would let every comparison of two predictions pass whatever the code did."""
    run = tmp_path_factory.mktemp("runs") / "enet"
    kdseg_here(  # in this process, as phantom_lits
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        *TRAINED_ENET,
        f"hydra.run.dir={run}",
    )
    return run


@pytest.fixture(scope="session")
def trained_onnx(trained_enet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trained_enet``'s best checkpoint exported to fp32 ONNX once (no check slices)."""
    from kdseg.deploy.export import export_checkpoint
    from kdseg.deploy.export_options import ExportOptions

    out = tmp_path_factory.mktemp("onnx") / "enet.onnx"
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    return export_checkpoint(
        ExportOptions(ckpt=str(ckpt), check_slices=0, output=str(out))
    ).artifact


@pytest.fixture(autouse=True)
def _restore_process_state():
    """Commands run in-process install kdseg's SIGINT / SIGTERM handlers and Lightning sets
    torch's deterministic mode; each test ends with the worker's own again."""
    import signal

    import torch

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    # an in-process Trainer(deterministic="warn") sets torch's global mode for the worker
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


#: the repository; what the tests write never lands in it (``.gitignore`` hides ``/cache/``,
#: so ``git status`` would not show a cache written there by a test)
REPO = Path(__file__).resolve().parents[1]
#: where a cache the tests leaked would land: the repository, and the default cache root
CACHE_LEAKS = (REPO / "cache", REPO / ".kdseg_cache", Path("~/.cache/kdseg").expanduser())


def _entries(folder: Path) -> set[str] | None:
    return set(os.listdir(folder)) if folder.is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def _no_cache_in_the_repository():
    """At the end of the session (of each xdist worker), none of :data:`CACHE_LEAKS` was made
    by the tests nor has new entries: the repository's ``cache/`` (a command run with its cwd
    here and a relative cache root) or ``.kdseg_cache``, and the default ``~/.cache/kdseg`` (a
    test that unsets ``KDSEG_CACHE_DIR``)."""
    before = {folder: _entries(folder) for folder in CACHE_LEAKS}
    yield
    leaks = []
    for folder, was in before.items():
        now = _entries(folder)
        if now is not None and (was is None or now - was):
            leaks.append(f"{folder}/" + (f" ({', '.join(sorted(now - was))})" if was else ""))
    if leaks:
        pytest.fail(f"the tests wrote a slice cache outside their own: {'; '.join(leaks)}")
