"""``kdseg-prepare``: volumes -> the memory-mapped slice cache that training reads.

Each case is loaded, checked (label fits image: shape, affine, label values), passed through
the :class:`~kdseg.data.preprocess.Preprocessor` and written as ``.npy`` arrays plus a
``meta.json`` written last. Done cases are skipped, cases run in parallel processes, and a
progress bar shows the work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from kdseg.data.boxes import jitter_box, organ_box, organ_level
from kdseg.data.cache import adopt_source, case_folder, is_prepared, source_stamp
from kdseg.data.io import load_volume
from kdseg.data.nnunet import label_map_of, remap_labels
from kdseg.data.pairs import check_pair
from kdseg.data.preprocess import Geometry, Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.roi import largest_component_box
from kdseg.data.sources import Case, ImageCase
from kdseg.errors import InputError, atomic_path, progress_steps, warning_line, write_text_atomic

LABELS = (0, 1, 2)


def cache_dir_for(cache_root: str | Path, dataset: str, config: PreprocessConfig) -> Path:
    """The cache folder of one dataset under one preprocessing config."""
    return Path(cache_root) / f"{dataset}-{config.digest()}"


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def _geometry_meta(geom: Geometry) -> dict[str, list]:
    """The mapping of a cached case back to its volume, as ``meta.json`` stores it."""
    return {
        "spacing": list(geom.spacing),
        "input_shape": list(geom.input_shape),
        "model_size": list(geom.model_size),
        "box": list(geom.box),
        "z_range": list(geom.slices),
    }


def prepare_case(case: Case, config: PreprocessConfig, cache_dir: Path) -> str:
    """Load, check, preprocess and cache one case; return its id.

    With ``window_level: organ`` the organ level (median HU of the ground-truth organ, label
    > 0) sets the window and is stored in ``meta.json`` as ``organ_level_hu``. It is not
    jittered like the box: a good stage 1's mask changes a median by a few HU (a poor one,
    spilling into darker neighbours, pulls it down more: see docs/cascade.md).
    """
    source = case_source(case)  # before reading: a file changed meanwhile is stale next time
    image = load_volume(case.image)
    label = case_label(case, image)
    pre = Preprocessor(config)
    roi, level = labeled_roi(pre, image, label, case.case_id)
    box, box_level, no_organ = cut_box(config, roi, level)
    slices, geom = pre.image(image, box, level=box_level)
    labels = pre.label(label, image, geom)
    lesions, kept = pre.lesions_kept(label, image, geom)
    if no_organ:  # a case without organ gives a stage-2 model no slice at all
        slices, labels, kept = slices[:0], labels[:0], 0
    folder = case_folder(cache_dir, case.case_id)
    _save_npy(slices.astype(config.store_dtype), folder / "image.npy")
    _save_npy(labels, folder / "label.npy")
    per_slice = labels.reshape(labels.shape[0], int(np.prod(labels.shape[1:])))
    meta = {
        "case_id": case.case_id,
        "image": str(case.image),
        "n_slices": int(labels.shape[0]),
        "organ_slices": np.nonzero((per_slice > 0).any(axis=1))[0].tolist(),
        "tumor_slices": np.nonzero((per_slice == 2).any(axis=1))[0].tolist(),
        "tumor_lesions": [lesions, kept],  # in the label, and with a voxel on the model grid
        "organ_outside_window": outside_window(np.asanyarray(image.dataobj), label, config, level),
        **_geometry_meta(geom),
        **({"organ_level_hu": level} if config.window_level == "organ" else {}),
        "source": source,
    }
    write_text_atomic(folder / "meta.json", json.dumps(meta) + "\n")
    return case.case_id


def case_source(case: Case | ImageCase) -> dict:
    """The :func:`~kdseg.data.cache.source_stamp` of the files a case's cache is made from:
    image and label (with the layout's label mapping), or image and ROI mask."""
    if isinstance(case, ImageCase):
        return source_stamp([case.image, case.roi_label])
    return source_stamp([case.image, case.label], case.label_map)


def outside_window(
    hu: np.ndarray, label: np.ndarray, config: PreprocessConfig, level: float | None = None
) -> list[float]:
    """Shares of the organ's voxels (label > 0, tumor included) at or below the HU window's low
    end and at or above its high end: there the window flattens every contrast to one value.
    ``level``: the organ level of a ``window_level: organ`` config (its window's centre)."""
    organ = hu[label > 0]
    if organ.size == 0:
        return [0.0, 0.0]
    lo, hi = Preprocessor(config).hu_window(level)
    return [round(float(np.mean(organ <= lo)), 4), round(float(np.mean(organ >= hi)), 4)]


WINDOW_WARN_SHARE = 0.05
"""A case is reported when more than this share of its organ voxels lies outside the window."""


def window_warning(
    cache_dir: Path, ids: Sequence[str], window: Sequence[float], relative: bool = False
) -> str | None:
    """One line when the HU window clips a case's organ, else None.

    ``relative``: ``window`` is relative to each organ's level (``window_level: organ``).

    Contrast inside a clipped organ is gone before the network sees it: a phantom liver at
    178 HU under the paper's window [-60, 140] shows its tumors at -12 and -20 HU as flat 140.
    Read from each case's ``meta.json`` (caches written before this check hold no shares).
    """
    over, checked = [], 0
    for case_id in ids:
        path = case_folder(cache_dir, case_id) / "meta.json"
        shares = (
            json.loads(path.read_text()).get("organ_outside_window") if path.is_file() else None
        )
        checked += shares is not None
        if shares and sum(shares) > WINDOW_WARN_SHARE:
            over.append((sum(shares), case_id, shares))
    if not over:
        return None
    _, worst, (below, above) = max(over)
    at, fmt = ("the organ level ", "+g") if relative else ("", "g")
    side = (
        f"{above:.0%} at or above {at}{window[1]:{fmt}} HU"
        if above >= below
        else (f"{below:.0%} at or below {at}{window[0]:{fmt}} HU")
    )
    span = f"[{window[0]:g}, {window[1]:g}]" + (" around the organ level" if relative else "")
    return (
        f"{len(over)} of {checked} case(s) have more than {WINDOW_WARN_SHARE:.0%} of their organ "
        f"voxels outside the HU window {span} (worst: {worst}, {side}); "
        "contrast there is flattened before the network sees it (data.preprocess.window)"
    )


def empty_label_warning(cache_dir: Path, ids: Sequence[str], roi: bool = False) -> str | None:
    """One line when labeled cases hold no organ voxel (their label all background), else None.

    Every case of LiTS, KiTS19 and the Decathlon holds its organ: an empty label is most often
    a placeholder or a broken export, and it teaches the network that the organ is background
    (an organ-ROI config gives the case no slice at all). Read from each case's ``meta.json``.
    """
    empty, checked = [], 0
    for case_id in ids:
        path = case_folder(cache_dir, case_id) / "meta.json"
        organ = json.loads(path.read_text()).get("organ_slices") if path.is_file() else None
        checked += organ is not None
        if organ == []:
            empty.append(case_id)
    if not empty:
        return None
    shown = ", ".join(empty[:3]) + (", ..." if len(empty) > 3 else "")
    effect = (
        "preprocess.roi=organ gives them no slice"
        if roi
        else "they teach the network that every voxel is background"
    )
    return (
        f"{len(empty)} of {checked} labeled case(s) hold no organ voxel: their label is all "
        f"background ({shown}); {effect}; check those label files"
    )


def training_roi(
    pre: Preprocessor, image: nib.Nifti1Image, label: np.ndarray, case_id: str
) -> tuple[int, ...] | None:
    """The ground-truth organ box of one case, each face jittered by up to ``roi_jitter_mm``.

    The draw is seeded by the case id and the config digest: the same cache every time.
    """
    return jittered(pre, image, organ_box(pre.reorient(image, label) > 0), case_id)


def jittered(
    pre: Preprocessor, image: nib.Nifti1Image, box: tuple[int, ...] | None, case_id: str
) -> tuple[int, ...] | None:
    """``box`` with each face moved by up to ``roi_jitter_mm``, drawn from the case id and the
    config digest (the same cache every time); ``None`` stays ``None``. The digest is taken
    with the keys that do not shape a ground-truth box at their defaults (``label_resize``,
    ``roi_components``), so a config that differs only in those trains on the same boxes."""
    if box is None:
        return None
    boxes = dataclasses.replace(pre.config, label_resize=None, roi_components=None)
    seed = int(hashlib.sha1(f"{case_id}:{boxes.digest()}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    cfg = pre.config
    return jitter_box(box, cfg.roi_jitter_mm, pre.spacing(image), rng, cfg.roi_margin_mm)


def _same_record(record: Path, config: PreprocessConfig, source: str | None) -> bool:
    """Whether the cache's ``preprocess.json`` already says ``config`` (read as a config: a
    record written before a key was added lacks it, and means the same) and ``source``."""
    try:
        stored = json.loads(record.read_text())
        return PreprocessConfig.from_dict(stored["config"]) == config and _same_source(
            stored.get("source"), source
        )
    except (OSError, ValueError, KeyError, TypeError, InputError):
        return False


def _same_source(stored: object, source: str | None) -> bool:
    """Whether a record's ``source`` names the folder ``source`` names: compared resolved on
    both sides, so a record of another spelling of the same folder (a trailing slash, a
    relative path, a link; records written before kdseg resolved it) counts as the same."""
    if stored == source:
        return True
    if not isinstance(stored, str) or not stored or not source:
        return False
    return Path(stored).resolve() == Path(source).resolve()


def case_label(case: Case, image: nib.Nifti1Image) -> np.ndarray:
    """The case's label volume, checked against its image and mapped to kdseg's 0/1/2."""
    allowed = LABELS if case.label_map is None else [a for a, _ in case.label_map]
    label = check_pair(image, load_volume(case.label, role="label"), case.label, allowed)
    return remap_labels(label, case.label_map)


def cut_box(
    config: PreprocessConfig, box: tuple[int, ...] | None, level: float | None
) -> tuple[tuple[int, ...] | None, float | None, bool]:
    """The box and level to cut a case's slices with, and whether the case has no organ.

    An organ-ROI case without organ gives a stage-2 model no slice at all: any box and level
    will do for the cut, and the caller drops what comes out (``slices[:0]``).
    """
    if config.roi is None or box is not None:
        return box, level, False
    return (0, 1, 0, 1, 0, 1), (None if config.window_level is None else 0.0), True


def labeled_roi(
    pre: Preprocessor, image: nib.Nifti1Image, label: np.ndarray, case_id: str
) -> tuple[tuple[int, ...] | None, float | None]:
    """A labeled case's organ box (ground truth, jittered; ``None`` without ROI or organ) and
    organ level (``window_level: organ``; over the whole ground-truth organ, not jittered)."""
    roi = training_roi(pre, image, label, case_id) if pre.config.roi == "organ" else None
    level = None
    if pre.config.window_level == "organ":
        level = organ_level(pre.reorient(image), pre.reorient(image, label) > 0)
    return roi, level


def image_roi(
    pre: Preprocessor, image: nib.Nifti1Image, case: ImageCase
) -> tuple[tuple[int, ...] | None, float | None]:
    """An unlabeled case's organ box and level in an organ-ROI config: the largest component
    of its ``roi_label`` mask, as the cascade reads stage 1's mask, the box jittered as in
    training; ``(None, None)`` without ROI. Refused without a mask."""
    if pre.config.roi is None:
        return None, None
    if case.roi_label is None:
        raise InputError(
            case.image,
            "unlabeled image with preprocess.roi=organ has no organ box: give the organ "
            "masks of the unlabeled scans in data.unlabeled_roi_labels (a stage 1's or "
            "kdseg-pseudolabel's labels)",
        )
    hu = pre.reorient(image) if pre.config.window_level == "organ" else None
    mask = pre.reorient(image, roi_mask(image, case.roi_label)) > 0
    found, info = largest_component_box(mask, hu, keep=pre.config.roi_components or 1)
    return jittered(pre, image, found, case.case_id), info.get("organ_level_hu")


def case_roi(
    case: Case | ImageCase, pre: Preprocessor, image: nib.Nifti1Image
) -> tuple[tuple[int, ...] | None, float | None]:
    """The organ box and level the case's cached slices were cut with (:func:`labeled_roi` or
    :func:`image_roi`): what a stored teacher prediction of the case is cut with too."""
    if isinstance(case, ImageCase):
        return image_roi(pre, image, case)
    return labeled_roi(pre, image, case_label(case, image), case.case_id)


def prepare_image_case(case: ImageCase, config: PreprocessConfig, cache_dir: Path) -> str:
    """Load, preprocess and cache one unlabeled image (the image-only cache); return its id.

    Same preprocessing and layout as :func:`prepare_case`, no ``label.npy``; ``meta.json``
    says ``labeled: false``. An organ-ROI config takes the organ box and level from the case's
    ``roi_label`` (a predicted mask): its largest component, as the cascade reads stage 1's
    mask (:mod:`kdseg.data.roi`), the box jittered as in training; without a mask the case is
    refused. A mask without organ gives the case no slice, as in :func:`prepare_case`.
    """
    source = case_source(case)
    image = load_volume(case.image)
    pre = Preprocessor(config)
    roi, level = image_roi(pre, image, case)
    box, box_level, no_organ = cut_box(config, roi, level)
    slices, geom = pre.image(image, box, level=box_level)
    if no_organ:
        slices = slices[:0]
    folder = case_folder(cache_dir, case.case_id)
    _save_npy(slices.astype(config.store_dtype), folder / "image.npy")
    meta = {
        "case_id": case.case_id,
        "image": str(case.image),
        "labeled": False,
        "n_slices": int(slices.shape[0]),
        "organ_slices": [],
        "tumor_slices": [],
        **_geometry_meta(geom),
        **({"roi_label": str(case.roi_label)} if config.roi is not None else {}),
        **({"organ_level_hu": level} if level is not None else {}),
        "source": source,
    }
    write_text_atomic(folder / "meta.json", json.dumps(meta) + "\n")
    return case.case_id


def roi_mask(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    """The organ mask (label > 0) of a predicted label map, checked against ``image``: same
    shape and affine, whole values in kdseg's labels or in the mapping of the ``dataset.json``
    beside it (beside its ``labelsTr/`` in an nnU-Net or kdseg-pseudolabel folder)."""
    label_map = label_map_of(path.parent.parent if path.parent.name == "labelsTr" else path.parent)
    allowed = LABELS if label_map is None else [stored for stored, _ in label_map]
    label = check_pair(image, load_volume(path, role="label"), path, allowed)
    return (remap_labels(label, label_map) > 0).astype(np.uint8)


def lost_lesion_warning(cache_dir: Path, ids: Sequence[str]) -> str | None:
    """One line when tumor lesions of the labels keep no voxel on the model grid, else None.

    Such a lesion is in no slice the network trains or is validated on (the evaluation scores
    on the image grid, where it still counts): too small for ``in_plane_size`` /
    ``spacing_mm``, or outside the crop. Read from each case's ``meta.json`` (caches written
    before this check hold no counts).
    """
    cases, lesions, lost = [], 0, 0
    for case_id in ids:
        path = case_folder(cache_dir, case_id) / "meta.json"
        counts = json.loads(path.read_text()).get("tumor_lesions") if path.is_file() else None
        if not counts:
            continue
        lesions += counts[0]
        if counts[1] < counts[0]:
            lost += counts[0] - counts[1]
            cases.append((counts[0] - counts[1], case_id, counts))
    if not lost:
        return None
    _, worst, (n, kept) = max(cases)
    return (
        f"{lost} of {lesions} tumor lesion(s), in {len(cases)} case(s), keep no voxel on the "
        f"model grid (worst: {worst}, {n - kept} of {n}): smaller than its pixels or outside "
        "its crop, they are in no training slice (data.preprocess.spacing_mm / in_plane_size)"
    )


def _prepare_one(case: Case | ImageCase, config: PreprocessConfig, cache_dir: Path) -> str:
    if isinstance(case, ImageCase):
        return prepare_image_case(case, config, cache_dir)
    return prepare_case(case, config, cache_dir)


#: caches whose window warning this process has printed (:func:`prepare_cases`)
_WARNED: set[str] = set()


def prepare_cases(
    cases: Sequence[Case | ImageCase],
    config: PreprocessConfig,
    cache_dir: str | Path,
    workers: int = 1,
    progress: bool = True,
    source: str = "",
) -> list[str]:
    """Prepare every case not yet in ``cache_dir``; return the ids of all prepared cases.

    :class:`Case` items get images and labels, :class:`ImageCase` items images only.
    """
    cache_dir = Path(cache_dir)
    stamps = {c.case_id: case_source(c) for c in cases}  # (``source`` is the data folder)
    todo = [c for c in cases if not is_prepared(cache_dir, c.case_id, stamps[c.case_id])]
    stale = {c.case_id for c in todo}
    for case_id, stamp in stamps.items():
        if case_id not in stale:
            adopt_source(cache_dir, case_id, stamp)
    record = cache_dir / "preprocess.json"
    text = json.dumps(
        {"config": config.to_dict(), "digest": config.digest(), "source": source}, indent=1
    )
    if todo or not _same_record(record, config, source):
        try:  # a complete cache on a read-only mount is read as it is
            write_text_atomic(record, text)
        except OSError as exc:
            raise InputError(
                cache_dir,
                f"cannot write the slice cache into {cache_dir.parent} ({exc.strerror or exc}); "
                "set data.cache_root=<a writable folder> (or KDSEG_CACHE_DIR)",
            ) from None
    quiet = not (progress and todo)  # nothing to do: quiet
    with progress_steps(f"prepare {len(todo)} case(s)", len(todo), enabled=not quiet) as bar:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_prepare_one, c, config, cache_dir) for c in todo]
                for future in futures:
                    future.result()
                    bar.advance()
        else:
            for case in todo:
                _prepare_one(case, config, cache_dir)
                bar.advance()
    labeled = [c.case_id for c in cases if not isinstance(c, ImageCase)]
    # on stderr, as every warning (docs/reliability.md, console lines). Once per process and
    # cache, whichever cases are asked for: a training run prepares before Lightning starts
    # and again in prepare_data; kdseg-export draws its check slices from the val and train
    # cases, then its int8 calibration slices from the train cases alone (another count).
    relative = config.window_level == "organ"
    checks = (
        ("", lambda: window_warning(cache_dir, labeled, config.window, relative=relative)),
        ("lost:", lambda: lost_lesion_warning(cache_dir, labeled)),
        ("empty:", lambda: empty_label_warning(cache_dir, labeled, roi=config.roi is not None)),
    )
    for kind, check in checks:
        key = f"{kind}{cache_dir}"
        if key not in _WARNED and (line := check()):  # (said once: not worked out again)
            _WARNED.add(key)
            print(warning_line(line), file=sys.stderr)
    return [c.case_id for c in cases]
