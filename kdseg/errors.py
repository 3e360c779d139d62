"""One error type for bad user input, and the atomic-write helper every writer uses.

Every command turns an :class:`InputError` into one line on stderr that names the file and
what is wrong, exit code 2, and no traceback (see ``kdseg.cli``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(Exception):
    """Bad input from the user: a file that is missing, corrupt or inconsistent.

    ``path`` names the offending file or folder; the message says what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike | None, message: str) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self) -> tuple:
        # keeps the error intact across process pools (prepare runs cases in parallel)
        return (type(self), (self.path, self.message))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A crash or an exception leaves no half-written ``target`` behind. ``suffix`` keeps the
    extension writers rely on (``.nii.gz``, ``.onnx``) on the temporary name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name.split('.')[0]}-", suffix=suffix, dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
