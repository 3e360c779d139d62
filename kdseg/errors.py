"""One error type for bad user input, and the atomic-write helpers every writer uses.

Every command turns an :class:`InputError` into one line on stderr that names the file and
what is wrong, exit code 2, and no traceback (see ``kdseg.cli``).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

_UMASK = os.umask(0)
os.umask(_UMASK)


#: the error line of a command stopped by Ctrl-C (exit code 130), in the run or while it starts
INTERRUPTED = "interrupted; unfinished outputs removed"


def program() -> str:
    """The running command's name for its console lines (``kdseg-train``), else ``kdseg``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("kdseg-") else "kdseg"


def warning_line(message: str) -> str:
    """``kdseg-<command>: warning: <message>``, the prefix of the command's error line."""
    return f"{program()}: warning: {message}"


def to_log_files(record: logging.LogRecord, folder: Path | None = None) -> None:
    """``record`` to the root logger's file handlers alone (a run's ``train.log``; the console
    has the line already, or a progress bar draws there instead), only those of log files in
    ``folder`` where given. A handler that fails is passed by: the log is a record, not the
    run."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler) or record.levelno < handler.level:
            continue
        if folder is not None and Path(handler.baseFilename).parent != folder.absolute():
            continue
        with contextlib.suppress(Exception):
            handler.handle(record)


class ConsoleFormatter(logging.Formatter):
    """The console's log lines (``conf/hydra/job_logging``): information as the bare message,
    as the commands print their own lines; warnings and errors as :func:`warning_line` and
    ``kdseg-<command>: error: ...``. The run's log file keeps Hydra's time-stamped format."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"{program()}: error: {text}"
        return warning_line(text) if record.levelno >= logging.WARNING else text


class ConsoleHandler(logging.StreamHandler):
    """The console handler of ``conf/hydra/job_logging``: information on stdout, beside the
    command's results; warnings and errors on stderr, where the error line goes, so that
    ``kdseg-eval ... > results.txt`` keeps the results alone. The streams are looked up at
    each line (pytest's capture and rich's live display replace them); stdout is flushed
    before a warning, so that a log of both streams keeps their order."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: the line still goes
                sys.stdout.flush()
            self.stream = sys.stderr
        else:
            self.stream = sys.stdout
        super().emit(record)


def progress_console() -> Console:
    """The console kdseg's rich progress bars draw on: stderr, so that stdout holds the results
    alone (``kdseg-predict ... > out.txt``, a script that parses stdout), and only where stderr
    is a terminal (rich's test: ``TTY_COMPATIBLE=1`` counts as one) or a Jupyter notebook's
    output. Elsewhere (a pipe, a log file) it is quiet: the bars there give way to
    :func:`progress_steps`'s plain lines. rich is imported on first use."""
    from rich.console import Console

    console = Console(stderr=True)
    console.quiet = not (console.is_terminal or console.is_jupyter)
    return console


def progress_draws() -> bool:
    """Whether progress bars draw (:func:`progress_console` is not quiet). rich is imported
    only where it might say yes: a start-up a tenth of a second shorter off a terminal."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        tty = False
    maybe = tty or "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ
    if not (maybe or hasattr(builtins, "get_ipython")):  # (IPython's, as rich looks it up)
        return False
    return not progress_console().quiet


def redirects_stdout(console: Console) -> bool:
    """Whether a live display on ``console`` (stderr) may take over ``print`` to stdout, as rich
    does by default to keep its bar below the lines: only where stdout shows on a terminal (or
    in a notebook) too. stdout redirected to a file or pipe keeps what is printed while a bar
    draws."""
    try:
        return console.is_jupyter or sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


#: seconds between :func:`progress_steps`'s plain lines, off a terminal
PROGRESS_EVERY_S = 30.0


class Progressing:
    """What :func:`progress_steps` yields: ``advance(n)`` the count, ``describe(text)`` the step
    under way. Off a terminal it prints a plain line on stderr (``prepare 40 case(s): 12/40, 35 s``)
    once :data:`PROGRESS_EVERY_S` seconds have passed since the start or the previous line, and
    at the end a last one where it printed any: a short run prints none."""

    def __init__(
        self,
        description: str,
        total: int,
        bar: Any = None,
        plain: bool = False,
        start: float | None = None,
    ) -> None:
        self.title = self.detail = description
        self.total, self.done = total, 0
        self._bar, self._task = bar, None if bar is None else bar.add_task(description, total=total)
        self._plain = plain
        # ``start``: a time.monotonic() of when the work began, where that was before this
        self._start = self._last = time.monotonic() if start is None else start
        self._printed: int | None = None  # the count of the last line printed

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        elif self._plain and time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._line()

    def describe(self, text: str) -> None:
        self.detail = text
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def finish(self) -> None:
        """The last plain line, where one was printed and it did not say this count already."""
        if self._plain and self._printed is not None and self._printed != self.done:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        self._printed = self.done
        self.show(self.text(self._last - self._start))

    def text(self, elapsed: float) -> str:
        """The plain line, ``elapsed`` seconds after the start: ``title: done/total, N s``, and
        ``; detail`` where :meth:`describe` named the step under way. A subclass words its own
        (training's, :class:`kdseg.lit.callbacks.TrainingProgress`), the timing kept here."""
        text = f"{self.title}: {self.done}/{self.total}, {elapsed:.0f} s"
        if self.detail != self.title:
            text += f"; {self.detail}"
        return text

    def show(self, text: str) -> None:
        """Where a plain line goes: :func:`progress_line` (stderr); a subclass may add a log."""
        progress_line(text)


def progress_line(text: str) -> None:
    """One plain progress line on stderr, stdout flushed first so that a log of both streams
    keeps their order; a closed stderr is ignored (the work goes on)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_steps(
    description: str,
    total: int,
    enabled: bool = True,
    transient: bool = False,
    counts: bool = False,
) -> Iterator[Progressing]:
    """Progress of ``total`` steps, the one way kdseg shows it: a rich bar on stderr where it
    is a terminal (:func:`progress_draws`; ``transient``: removed when done; ``counts``: the
    bar shows ``done/total``, the elapsed and the remaining time), without taking over stdout
    where that is a file or pipe (:func:`redirects_stdout`); elsewhere (a batch job's log, a
    pipe) :class:`Progressing`'s plain lines, none after a failure. ``enabled=False``: nothing.
    """
    if not (enabled and progress_draws()):
        steps = Progressing(description, total, plain=enabled)
        yield steps
        steps.finish()  # (not reached where the work failed)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    console = progress_console()
    with Progress(
        *(columns if counts else ()),
        console=console,
        transient=transient,
        redirect_stdout=redirects_stdout(console),
    ) as bar:
        yield Progressing(description, total, bar=bar)


class InputError(Exception):
    """Bad input from the user: a file that is missing, corrupt or inconsistent.

    ``path`` names the offending file or folder; the message says what is wrong with it. Line
    breaks in the message (library errors quoted in it often have them) become spaces, so the
    error stays one line.
    """

    def __init__(self, path: str | os.PathLike | None, message: str) -> None:
        self.path = None if path is None else str(path)
        self.message = " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.message}" if self.path else self.message)

    def __reduce__(self) -> tuple:
        # keeps the error intact across process pools (prepare runs cases in parallel)
        return (type(self), (self.path, self.message))


class ConfigError(InputError, ValueError):
    """A config value that cannot work (an unknown loss, a negative weight, ...): one line and
    exit code 2 like any :class:`InputError`, and still a ``ValueError`` for callers that
    validate in-process."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)

    def __reduce__(self) -> tuple:
        return (type(self), (self.message,))


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or Inf: the run stops before the update would spread it into
    the weights (and a checkpoint would save them). One line and exit code 1: not the user's
    input, and not a bug in kdseg either."""


_TEMP_RANDOM = r"[a-z0-9_]{8}"  # what tempfile.mkstemp puts between prefix and suffix


def temp_host() -> str:
    """This host's name as kdseg's temporaries carry it: letters, digits and ``_`` (any other
    character, ``-`` and ``.`` included, becomes ``_``), at most 31 of them, then ``_`` and 8
    hex digits of a hash of the whole name, so that two hosts whose names differ only in what
    was replaced or cut (``node-1`` and ``node.1``, long pod names of one StatefulSet) never
    share a tag and sweep each other's temporaries."""
    name = socket.gethostname()
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', name)[:31]}_{digest}"


def temp_tag() -> str:
    """``<host>-<pid>``: the writer of a temporary, so that a sweep can tell whether it is
    gone. The pid alone is not enough on a shared file system: a process on another host may
    have that pid, or none may have it here while that host's writer is still running."""
    return f"{temp_host()}-{os.getpid()}"


def _temp_pattern(target: Path, suffix: str) -> re.Pattern[str]:
    """Names of this host's temporaries for ``target``:
    ``.<stem>-<host>-<pid>-XXXXXXXX<suffix>`` (:func:`temp_tag`).

    Host and pid are required: a name without a pid (``.<stem>-XXXXXXXX<suffix>``) could be
    anybody's file, an input among them, and is never swept; another host's temporary may be
    in flight there, and one of the names kdseg used before (``.<stem>-<pid>-XXXXXXXX<suffix>``,
    no host) may be any host's, so neither is swept either.
    """
    stem = re.escape(target.name.split(".")[0])
    host = re.escape(temp_host())
    return re.compile(rf"\.{stem}-{host}-(\d+)-{_TEMP_RANDOM}{re.escape(suffix)}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (this process counts as gone: its own stale
    temporaries cannot exist yet)."""
    if pid == os.getpid():
        return False  # this process is only now starting to write the target
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: a process's global rank in the run, where its launcher sets one: torchrun's RANK, else
#: SLURM's SLURM_PROCID (the first of them set counts: torchrun inside a SLURM job sets both)
GLOBAL_RANK_VARIABLES = ("RANK", "SLURM_PROCID")
#: its rank on its node: torchrun's, and the only one Lightning's subprocess launcher sets
LOCAL_RANK_VARIABLE = "LOCAL_RANK"
#: what a DDP worker other than the first has nonzero: its rank in the run or on its node
#: (Lightning, torchrun) and SLURM's
RANK_VARIABLES = (*GLOBAL_RANK_VARIABLES, LOCAL_RANK_VARIABLE)
#: and, in a launch of several processes (``WORLD_SIZE`` over 1), its node's: Lightning's
#: NODE_RANK, torchrun's GROUP_RANK, set without RANK on each node of a multi-node launch by
#: hand. Not read otherwise: a NODE_RANK left in a node's environment would make a run of one
#: process there a worker that writes nothing of its own
NODE_RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK")


def first_process() -> bool:
    """Whether this is the first (or only) process of a run: a DDP worker has one of
    :data:`RANK_VARIABLES` nonzero, or one of :data:`NODE_RANK_VARIABLES` in a launch of
    several processes."""
    names = RANK_VARIABLES + (NODE_RANK_VARIABLES if several_processes() else ())
    return all(os.environ.get(k, "0") == "0" for k in names)


def several_processes() -> bool:
    """Whether this process is one of a launch of several (``WORLD_SIZE`` over 1, as torchrun
    and Lightning's launcher set it): where :data:`NODE_RANK_VARIABLES` are read. A value that
    is no number counts as one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


_KEEP: set[str] = set()
"""Real paths no sweep removes: the inputs this process reads (see :func:`keep_from_sweeps`)."""


def keep_from_sweeps(paths: Iterable[str | os.PathLike | None]) -> None:
    """Never let :func:`remove_stale_temps` delete these files, however they are named (an
    input may be named like a dead writer's temporary)."""
    _KEEP.update(os.path.realpath(p) for p in paths if p is not None and str(p))


def remove_stale_temps(target: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """Delete temporaries of ``target`` left by killed runs of this host (their process is
    gone).

    A SIGKILL (or a power cut) skips every cleanup, so the next writer of the same target
    sweeps them; a temporary of a writer that is still running is left alone, and so is
    every other host's (whether its writer runs cannot be told from here).
    """
    target = Path(target)
    suffix = _suffix(target, suffix)
    pattern = _temp_pattern(target, suffix)
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if (
            match
            and entry.is_file()
            and os.path.realpath(entry) not in _KEEP
            and not process_alive(int(match.group(1)))
        ):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _suffix(target: Path, suffix: str | None) -> str:
    if suffix is not None:
        return suffix
    return "".join(target.suffixes) or ".tmp"


def _new_temp(target: Path, suffix: str | None, sweep: bool = True) -> Path:
    """An empty temporary beside ``target`` (its parent created), stale ones swept first
    unless ``sweep`` is false (a second one of this process, whose first would count as
    stale)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(target, suffix)
    if sweep:
        remove_stale_temps(target, suffix)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name.split('.')[0]}-{temp_tag()}-", suffix=suffix, dir=target.parent
    )
    os.close(fd)
    return Path(tmp)


def _commit(tmp: Path, target: Path) -> None:
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual file mode
    os.replace(tmp, target)


def commit_temp(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename one temporary of :func:`atomic_group` onto its target ahead of the group: a file
    that stands on its own when the rest of the group is refused (``kdseg-export``'s fp32
    twin of a refused int8 file). The group's exit then finds it gone and leaves it."""
    try:
        _commit(Path(tmp), Path(target))
    except OSError as exc:
        _name_target(exc, Path(target))
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A crash or an exception leaves no half-written ``target`` behind. ``suffix`` keeps the
    extension writers rely on (``.nii.gz``, ``.onnx``) on the temporary name. Temporaries of
    earlier killed writers of the same target are removed first.
    """
    target = Path(target)
    tmp_path = _new_temp(target, suffix)
    try:
        yield tmp_path
        _commit(tmp_path, target)
    except OSError as exc:
        _name_target(exc, target)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_group(
    targets: Sequence[str | os.PathLike],
    suffixes: Sequence[str | None] | None = None,
    remove: Sequence[str | os.PathLike] = (),
) -> Iterator[list[Path]]:
    """Temporaries for files that belong together, renamed onto ``targets`` in order on success.

    Put the file whose presence means "complete" last (``kdseg-predict``: the lesion report,
    then the label): an exception before or during the renames leaves none of the group's new
    files (the ones already renamed are removed again, and a file they had replaced, such as
    an earlier run's report, is put back), and a SIGKILL between two renames can leave the
    first files without the last, which the next run overwrites, but never the last without
    the others.

    ``remove``: files that must not outlive the group's renames (``kdseg-predict``: an
    earlier run's report or overlay that this run does not write, which would otherwise sit
    beside the new label). They go after the last rename, and are put back with the rest if
    that fails.
    """
    paths = [Path(t) for t in targets]
    suffixes = list(suffixes) if suffixes is not None else [None] * len(paths)
    temps: list[Path] = []
    done: list[tuple[Path, Path | None]] = []  # (target, the file it replaced, kept aside)
    try:
        for target, suffix in zip(paths, suffixes, strict=True):
            temps.append(_new_temp(target, suffix))
        yield list(temps)
        for tmp, target, suffix in zip(temps, paths, suffixes, strict=True):
            backup = _keep_aside(target, suffix)
            done.append((target, backup))
            _commit(tmp, target)
        for stale in map(Path, remove):
            backup = _keep_aside(stale, None)
            done.append((stale, backup))
            stale.unlink(missing_ok=True)
    except BaseException as exc:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):  # each one put back, whatever the others do
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _name_target(exc, paths[-1])
        raise
    finally:
        for path in [*temps, *(backup for _, backup in done if backup is not None)]:
            path.unlink(missing_ok=True)


def missing_folders(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """Each of ``folders`` and each folder above it that does not exist yet, deepest first:
    what a command creates for its outputs, taken before it writes anything, so that a failure
    removes them again (:func:`remove_empty_folders`) instead of leaving empty folders behind."""
    chain: set[Path] = set()
    for folder in map(Path, folders):
        while not os.path.lexists(folder) and folder != folder.parent:
            chain.add(folder)
            folder = folder.parent
    return sorted(chain, key=lambda d: (len(d.parts), str(d)), reverse=True)


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first, as :func:`missing_folders` gives them) that
    is empty; one that holds anything (a finished case, a file someone else put there) stays,
    and so does every folder above it."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def removing_new_folders(folders: Iterable[str | os.PathLike]) -> Iterator[list[Path]]:
    """Note which of ``folders`` (and their parents) do not exist yet; on any exception, a
    SIGTERM's :class:`~kdseg.cli.boundary.Terminated` and Ctrl-C included (``BaseException``,
    like :func:`atomic_group`), remove those of them that are still empty. Yields the list."""
    created = missing_folders(folders)
    try:
        yield created
    except BaseException:
        remove_empty_folders(created)
        raise


def _keep_aside(target: Path, suffix: str | None) -> Path | None:
    """A second name for the file at ``target`` (a hard link, a copy where links are not
    allowed), under a temporary's name so that a killed run's is swept like its temporaries;
    ``None`` when there is no file there. ``target`` itself never goes missing meanwhile."""
    if not target.is_file():
        return None
    backup = _new_temp(target, suffix, sweep=False)
    backup.unlink()
    try:
        os.link(target, backup)
    except OSError:
        try:
            shutil.copy2(target, backup)
        except BaseException:
            backup.unlink(missing_ok=True)
            raise
    return backup


#: Write failures that say where the output goes is unusable, not that kdseg has a bug: the
#: command line reports them as one line naming the file (``kdseg.cli.boundary.report``).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _name_target(exc: OSError, target: Path) -> None:
    """Give an ``OSError`` raised while writing ``target`` that file's name, when it has none
    (a ``write()`` on a full disk names no file): the error line can then say which output
    could not be written. It stays the same ``OSError``, for callers that handle it."""
    if exc.filename is None:
        exc.filename = str(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def read_json(path: str | os.PathLike, missing: str = "not found") -> object:
    """The parsed JSON file at ``path``; :class:`InputError` (``missing`` when absent, or
    ``not valid JSON``) instead of a traceback."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
