"""The prepared slice cache: per-case memory-mapped arrays, so RAM stays bounded.

Layout of one cache (one folder per dataset and preprocessing digest)::

    <cache>/preprocess.json            the PreprocessConfig, its digest, the source folder
    <cache>/cases/<case_id>/image.npy  (Z, h, w) model-input slices in the store dtype
    <cache>/cases/<case_id>/label.npy  (Z, h, w) uint8 labels on the same grid
    <cache>/cases/<case_id>/meta.json  written last: slice flags, spacing, shapes, box

With ``preprocess.roi: organ`` a case's arrays hold only the slices of its (jittered) organ
box, cropped to that box, so a stage-2 model trains on organ slices; a case without organ
holds none.

An image-only cache (unlabeled scans) has the same layout without ``label.npy``; its
``meta.json`` says ``labeled: false``.

A case counts as prepared only when its ``meta.json`` exists (it is written atomically after
the arrays), which makes ``prepare`` idempotent and safe to kill, and when the files it was
made from are still the ones it names: ``meta.json`` holds their stamp (:func:`source_stamp`:
size and modification time of each, and a layout's label mapping), so an edited label, a
replaced scan or another site's folder behind the same cache is prepared again instead of
read from a stale cache. A moved or hard-linked dataset keeps its stamps. A case cached by an
earlier kdseg (no stamp) is trusted as before and given its files' stamp where the cache is
writable (:func:`adopt_source`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kdseg.errors import InputError


@dataclass(frozen=True)
class CachedCase:
    """Metadata of one prepared case (its arrays are opened on demand by memory map)."""

    case_id: str
    folder: Path
    n_slices: int
    organ_slices: tuple[int, ...]
    tumor_slices: tuple[int, ...]
    spacing: tuple[float, float, float]
    labeled: bool = True

    @cached_property
    def image(self) -> np.ndarray:
        """(Z, h, w) image slices, memory-mapped read-only."""
        return np.load(self.folder / "image.npy", mmap_mode="r")

    @cached_property
    def label(self) -> np.ndarray:
        """(Z, h, w) label slices, memory-mapped read-only."""
        return np.load(self.folder / "label.npy", mmap_mode="r")

    def __getstate__(self) -> dict:
        # memory maps are re-opened in each DataLoader worker, never pickled
        return {k: v for k, v in self.__dict__.items() if k not in ("image", "label")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def case_folder(cache_dir: Path, case_id: str) -> Path:
    """Folder of one case inside a cache."""
    return Path(cache_dir) / "cases" / case_id


def _file_stamp(path: Path) -> list[int | str]:
    """``[size, mtime_ns]`` of a file; a DICOM series folder: ``[files, bytes, newest mtime,
    digest]`` over the files in it, the digest over each file's name, size and mtime (so one
    slice replaced by a file of its size with an older mtime kept, ``cp -p``, is seen too)."""
    path = Path(path)
    if path.is_dir():
        stats = [(p.name, p.stat()) for p in sorted(path.iterdir()) if p.is_file()]
        each = "".join(f"{n}\0{s.st_size}\0{s.st_mtime_ns}\n" for n, s in stats)
        return [
            len(stats),
            sum(s.st_size for _, s in stats),
            max((s.st_mtime_ns for _, s in stats), default=0),
            hashlib.sha256(each.encode()).hexdigest()[:16],
        ]
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def source_stamp(paths: Sequence[Path | None], label_map: Any = None) -> dict[str, Any]:
    """What a cached case was made from, as ``meta.json`` stores it under ``"source"``: each
    file's stamp (``None`` for an absent optional file) and the label mapping applied."""
    files = [None if p is None or not Path(p).exists() else _file_stamp(p) for p in paths]
    return {
        "files": files,
        "label_map": None if label_map is None else [list(m) for m in label_map],
    }


def is_prepared(
    cache_dir: Path,
    case_id: str,
    source: dict[str, Any] | None = None,
    arrays: Sequence[str] | None = None,
) -> bool:
    """True when the case's arrays and metadata are complete and, given ``source`` (its
    :func:`source_stamp` now), were made from those very files. ``arrays``: the ``.npy``
    files a case holds (default: the slice cache's ``image.npy``, and ``label.npy`` when
    labelled); each must map whole."""
    meta = case_folder(cache_dir, case_id) / "meta.json"
    if not meta.exists():
        return False
    try:
        stored = json.loads(meta.read_text())
    except (OSError, ValueError):  # unreadable: prepared again (meta.json is replaced last)
        return False
    if arrays is None:
        arrays = ["image.npy", *(["label.npy"] if stored.get("labeled", True) else [])]
    if not all(_whole_array(meta.parent / n, stored.get("n_slices")) for n in arrays):
        return False  # cut short or emptied after meta.json was written: prepared again
    if source is None:
        return True
    if "source" not in stored:  # a cache of an earlier kdseg: trusted as it was (adopt_source)
        return True
    return stored["source"] == source


def _whole_array(path: Path, n_slices: int | None) -> bool:
    """Whether the ``.npy`` file at ``path`` maps with every byte its header promises (and
    ``n_slices`` slices where given): a cut-short file fails the memory map."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return False
    shape = array.shape
    del array
    return n_slices is None or (len(shape) > 0 and shape[0] == n_slices)


def adopt_source(cache_dir: Path, case_id: str, source: dict[str, Any]) -> None:
    """Give a case cached by an earlier kdseg (no stamp in its ``meta.json``) the stamp of its
    files now, so that later changes to them are seen; a read-only cache is left as it is."""
    from kdseg.errors import write_text_atomic

    path = case_folder(cache_dir, case_id) / "meta.json"
    try:
        meta = json.loads(path.read_text())
        if "source" not in meta:
            write_text_atomic(path, json.dumps({**meta, "source": source}) + "\n")
    except (OSError, ValueError):
        pass


def open_case(cache_dir: Path, case_id: str) -> CachedCase:
    """Open one prepared case; a clear error if it was never prepared."""
    folder = case_folder(cache_dir, case_id)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise InputError(folder, "case not prepared; run kdseg-prepare with the same data config")
    meta = json.loads(meta_path.read_text())
    return CachedCase(
        case_id=case_id,
        folder=folder,
        n_slices=int(meta["n_slices"]),
        organ_slices=tuple(meta["organ_slices"]),
        tumor_slices=tuple(meta["tumor_slices"]),
        spacing=tuple(meta["spacing"]),
        labeled=bool(meta.get("labeled", True)),
    )
