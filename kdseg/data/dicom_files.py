"""Find the files of one DICOM series in a folder, and tell a series folder from a CD's index.

Split out of :mod:`kdseg.data.dicom` (the public entry, which re-exports what is public here):
which files of a folder are read as slices, before any header is validated. Files may come in
any order and with any names, with or without the 128-byte preamble (one without it is probed,
cheaply, so a folder of masks is never handed to pydicom's parser); hidden files and non-DICOM
files are ignored, while a file named ``.dcm``, ``.dicom`` or ``.ima`` that is no DICOM (an
empty or cut copy), a link to nothing and a file that cannot be opened are refused: each would
lose a slice without a word. Objects that are never an image slice (a DICOMDIR, a report) do
not make a folder a series folder; a folder holding only a DICOMDIR (a CD's root) is refused
as the index it is, naming a series folder under it. Reading is pydicom's alone: no torch or
MONAI, as the ONNX deploy path needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.misc import is_dicom

from kdseg.errors import InputError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
"""File names a series folder holds only DICOM files under (any case)."""

_BARE_PROBES = 3
"""Files :func:`is_dicom_folder` tries to read as DICOM without the preamble when none has one."""

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
"""Media Storage Directory Storage: the SOP class of a DICOMDIR, a CD's index of its series."""

#: SOP classes (and class prefixes) of DICOM objects that are never an image slice: a DICOMDIR,
#: structured reports and key object selections, presentation states, encapsulated documents
_NON_IMAGE_CLASSES = (
    DICOMDIR_CLASS,
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
)


def _unreadable(path: Path, exc: OSError) -> InputError:
    """A file that cannot be opened or read (no permission, an I/O error): said as a read,
    not left to the command's catch-all, which takes an OSError with a file name for a write."""
    return InputError(path, f"cannot read it ({exc.strerror or exc})")


def _sop_class(path: Path, ds: pydicom.Dataset | None = None) -> str:
    """The SOP class of a DICOM file, from its file meta (``ds``'s, or read from ``path``:
    the meta alone, a few hundred bytes) else its SOPClassUID; "" where neither says."""
    try:
        meta = ds.get("file_meta") if ds is not None else None
        if meta is None and ds is None:
            meta = pydicom.filereader.read_file_meta_info(path)
        uid = (meta or {}).get("MediaStorageSOPClassUID") or (ds or {}).get("SOPClassUID")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except Exception:  # noqa: BLE001  (a damaged file meta: its slice read says more)
        return ""
    return str(uid or "")


def _non_image(path: Path, ds: pydicom.Dataset | None = None) -> bool:
    """Whether a DICOM file is an object of a class that is never an image slice
    (:data:`_NON_IMAGE_CLASSES`)."""
    uid = _sop_class(path, ds)
    return any(uid == c or (c.endswith(".") and uid.startswith(c)) for c in _NON_IMAGE_CLASSES)


def dicomdir_index(folder: str | os.PathLike) -> Path | None:
    """The DICOMDIR in ``folder`` (a file named so, or one of that SOP class), or None."""
    for path in _visible_files(Path(folder)):
        if path.name.upper() == "DICOMDIR" or (
            _is_dicom(path) and _sop_class(path) == DICOMDIR_CLASS
        ):
            return path
    return None


def dicomdir_refusal(folder: str | os.PathLike) -> InputError:
    """The one line for a folder that holds a DICOMDIR and no series (a CD's root), with the
    first series folder under it where one is found among the first few folders."""
    folder = Path(folder)
    under = ""
    for k, (root, dirs, _) in enumerate(os.walk(folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if k > 0 and is_dicom_folder(root):
            under = f" (e.g. {Path(root).relative_to(folder).as_posix()})"
            break
        if k >= _WALKED:
            break
    return InputError(folder, f"a DICOMDIR index; pass the series folder under it{under}")


_WALKED = 50
"""Folders :func:`dicomdir_refusal` looks through for a series to name."""


def _is_dicom(path: Path) -> bool:
    """pydicom's preamble check, with a file that cannot be read refused as such."""
    try:
        return is_dicom(path)
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _series_files(folder: Path) -> list[tuple[Path, pydicom.Dataset | None]]:
    """The files of a series folder to read: those with a DICOM preamble (header None: not
    read yet), and those without one that pydicom still reads as a DICOM object (older exports;
    with the header their probe parsed). :func:`_read_headers` tells the image slices apart. A
    file named like DICOM that is neither (an empty or cut copy) is refused, as is a link to
    nothing or a symlink loop (a slice lost without a word: an end slice leaves no gap to find);
    others ignored."""
    from kdseg.data.io import broken_link

    files: list[tuple[Path, pydicom.Dataset | None]] = []
    for path in sorted(folder.iterdir()):
        if not path.name.startswith(".") and (problem := broken_link(path)) is not None:
            raise InputError(path, problem)
    for path in _visible_files(folder):
        if _is_dicom(path):
            files.append((path, None))
        elif (bare := _bare_dataset(path)) is not None:
            files.append((path, bare))
        elif path.suffix.lower() in DICOM_SUFFIXES:
            size = path.stat().st_size
            raise InputError(
                path,
                f"named like a DICOM file but not one ({size:,} bytes; an empty or cut copy?); "
                "copy the series again",
            )
    return files


def _visible_files(folder: Path) -> list[Path]:
    """The files in ``folder`` by name, hidden ones (``.DS_Store``, ``._`` forks) left out."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.is_file()]


#: the first two bytes of a DICOM object without the preamble: group 0x0002 or 0x0008,
#: little- or big-endian
_BARE_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _bare_dataset(path: Path) -> pydicom.Dataset | None:
    """The header (pixel data not read) of ``path`` if it is a DICOM object written without
    the preamble and ``DICM``: pydicom parses it and it has a SOPClassUID or SOPInstanceUID
    (an image slice, or a report, a localizer, ... that the header rules skip or refuse as
    they do with a preamble); else None. Such a file starts with a tag of group 0x0002 (file
    meta) or 0x0008 (identification), either byte order: anything else is not parsed at all
    (pydicom's ``force=True`` walks a file of zeros as empty elements, 13 s for 50 MB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        if head not in _BARE_GROUPS:
            return None
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, defer_size=4096)
        return ds if "SOPClassUID" in ds or "SOPInstanceUID" in ds else None
    except Exception:  # noqa: BLE001  (anything pydicom cannot parse is not DICOM)
        return None


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that holds at least one DICOM file that may be an image
    slice: one with the preamble, else one of the first :data:`_BARE_PROBES` files (those named
    ``.dcm``, ``.dicom`` or ``.ima`` first) that pydicom reads without it (a series exported
    without preambles loads, so it is a series folder too). A DICOMDIR, a report or another
    object that is never an image (:data:`_NON_IMAGE_CLASSES`, told by the file meta alone)
    does not make a folder a series: a CD's root holds a DICOMDIR beside its series folders.
    Cheap: it runs on every folder of a folder of inputs (a series' first file decides)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = _visible_files(path)
    if any(_is_dicom(p) and not _non_image(p) for p in files):
        return True
    files.sort(key=lambda p: p.suffix.lower() not in DICOM_SUFFIXES)  # stable: names within
    bare = (_bare_dataset(p) for p in files[:_BARE_PROBES])
    return any(ds is not None and not _non_image(Path(), ds) for ds in bare)
