"""One guard for every output path: never write over an input, never write into an input folder.

Every command that writes (predict, eval, export, prepare, train, report ...) passes each path
it is about to create through :func:`check_output` *before* any work starts, so a bad
``output=`` costs one line and no time:

* the output is an input (or the same file through a link), or would overwrite one;
* the output lies inside an input folder (a folder of scans, a DICOM series, a dataset root);
* a parent of the output is a file, or the nearest existing folder cannot be written to;
* an existing folder sits where a file goes, or an existing file where a folder goes.

Beside them, :func:`check_threads`: a thread count above the CPUs the process may use
(``threads=100000`` grew to thousands of threads and gigabytes before a model ran).

Like :mod:`kdseg.errors` this is the ground floor: standard library only, importable from
every layer (the torch-free deploy path included).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kdseg.errors import InputError, keep_from_sweeps

PathLike = str | os.PathLike


def _real(path: PathLike) -> Path:
    """Absolute path with every existing link resolved (``..`` and ``.`` collapsed)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor)


def _writable(folder: Path) -> str | None:
    """``None`` when a file can be created in ``folder``, else the reason (no name is left).

    An actual probe, not ``os.access``: that answers yes to root on a read-only mount.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def check_output(
    target: PathLike,
    inputs: Iterable[PathLike | None] = (),
    *,
    folder: bool = False,
    what: str = "output",
) -> Path:
    """Refuse ``target`` as an output path (an :class:`InputError` naming it), else return it.

    ``inputs`` are the files and folders the command reads (``None`` entries are skipped).
    ``folder=True`` when ``target`` is a folder the command fills (it may exist already).
    ``what`` names the option in messages (``output``, ``output_dir`` ...).
    """
    if not str(target).strip():  # an unset shell variable: output=$DIR would mean "here"
        raise InputError(None, f"{what}= is empty; name a file or folder")
    real = _real(target)
    inputs = list(inputs)
    keep_from_sweeps(inputs)  # an input named like a stale temporary is still an input
    for source in inputs:
        if source is None or str(source) == "":
            continue
        src = _real(source)
        if real == src:
            kind = "folder" if src.is_dir() else "file"
            raise InputError(target, f"{what} is the input {kind} itself; it would be overwritten")
        if src.is_dir() and src in real.parents:
            raise InputError(
                target, f"{what} lies inside the input folder {source}; write it elsewhere"
            )
    if os.path.lexists(real):
        if folder and not real.is_dir():
            raise InputError(target, f"{what} is an existing file where a folder is needed")
        if not folder and real.is_dir():
            raise InputError(target, f"{what} is an existing folder where a file is needed")
    anchor = _nearest_existing(real if folder else real.parent)
    if not anchor.is_dir():
        raise InputError(target, f"{what} cannot be created: {anchor} is a file, not a folder")
    reason = _writable(anchor)
    if reason:
        raise InputError(
            target, f"{what} cannot be written: no file can be made in {anchor} ({reason})"
        )
    return Path(target)


def check_outputs(
    targets: Iterable[PathLike], inputs: Iterable[PathLike | None] = (), what: str = "output"
) -> list[Path]:
    """:func:`check_output` for several files of one command; two equal targets are refused too."""
    inputs = list(inputs)
    seen: set[Path] = set()
    checked = []
    for target in targets:
        real = _real(target)
        if real in seen:
            raise InputError(target, f"two inputs would write this same {what} file")
        seen.add(real)
        checked.append(check_output(target, inputs, what=what))
    return checked


#: a thread count every machine accepts: the commands' default of 2 (kdseg-export,
#: kdseg-bench) stays valid on a one-CPU machine, where two threads only share the CPU
THREADS_FLOOR = 2


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the system has one (a
    container or ``taskset`` limits it), else every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        return os.cpu_count() or 1


def check_threads(value: int | None, option: str = "threads=", what: str = "threads") -> int | None:
    """``value`` (``None`` stays ``None``), unless above the CPUs this process may use (at least
    :data:`THREADS_FLOOR`): then one :class:`InputError` naming ``option`` (``threads=``,
    ``--time ``, kdseg-phantom's ``workers=``, whose ``what`` is ``processes``). ONNX Runtime
    and OpenMP start every thread asked for, each with its own stack and buffers, so a
    mistyped count (``threads=100000``) ran thousands of threads into gigabytes of memory, too
    busy to stop at SIGTERM; more threads (or processes) than CPUs never run faster."""
    if value is None:
        return None
    cpus = usable_cpus()
    limit = max(cpus, THREADS_FLOOR)
    if value > limit:
        raise InputError(
            None,
            f"{option}{value}: more {what} than the {cpus} CPU{'s' if cpus != 1 else ''} this "
            f"process may use; give at most {limit}",
        )
    return value


def check_count(option: str, value: Any, least: int) -> None:
    """A whole number of at least ``least`` for ``option`` (``runs``, ``int8.repeats``), else
    one line naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(None, f"{option}={value}: a whole number, at least {least}")
