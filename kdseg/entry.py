"""The console scripts' entry points: ``kdseg-predict`` runs :func:`predict`, which imports
:mod:`kdseg.cli.predict` and calls its ``main`` (``[project.scripts]`` of pyproject.toml).

Why not ``kdseg.cli.predict:main`` itself: the script pip writes imports its entry point before
any kdseg code can act, and a command's module takes 0.3 to 0.5 s of imports (Hydra,
OmegaConf, nibabel ...) before :func:`kdseg.cli.boundary.app_guard` installs the signal
handlers; Ctrl-C in that time printed a 30-line ``KeyboardInterrupt`` traceback. This module
imports the standard library alone (nothing that a command does not import anyway), so the
command's import runs inside a ``try``: Ctrl-C there is the command's usual line,
``interrupted``, and exit code 130, as later in the run. The top layer: it imports
:mod:`kdseg.cli`, which nothing imports back.
"""

from __future__ import annotations

import importlib
import sys


def _run(module: str, command: str) -> int | None:
    """Import ``kdseg.cli.<module>`` and call its ``main``, Ctrl-C during the import (or before
    the command's own handlers are installed) being one line and exit code 130."""
    try:
        main = importlib.import_module(f"kdseg.cli.{module}").main
        return main()
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback either
        from kdseg.errors import INTERRUPTED

        try:
            print(f"{command}: error: {INTERRUPTED}", file=sys.stderr, flush=True)
        except OSError:  # the terminal or pipe is gone
            pass
        return 130


def phantom() -> int | None:
    """``kdseg-phantom``."""
    return _run("phantom", "kdseg-phantom")


def split() -> int | None:
    """``kdseg-split``."""
    return _run("split", "kdseg-split")


def prepare() -> int | None:
    """``kdseg-prepare``."""
    return _run("prepare", "kdseg-prepare")


def train() -> int | None:
    """``kdseg-train``."""
    return _run("train", "kdseg-train")


def distill() -> int | None:
    """``kdseg-distill``."""
    return _run("distill", "kdseg-distill")


def evaluate() -> int | None:
    """``kdseg-eval``."""
    return _run("evaluate", "kdseg-eval")


def predict() -> int | None:
    """``kdseg-predict``."""
    return _run("predict", "kdseg-predict")


def export() -> int | None:
    """``kdseg-export``."""
    return _run("export", "kdseg-export")


def bench() -> int | None:
    """``kdseg-bench``."""
    return _run("bench", "kdseg-bench")


def report() -> int | None:
    """``kdseg-report``."""
    return _run("report", "kdseg-report")


def models() -> int | None:
    """``kdseg-models``."""
    return _run("models", "kdseg-models")


def pseudolabel() -> int | None:
    """``kdseg-pseudolabel``."""
    return _run("pseudolabel", "kdseg-pseudolabel")
