"""Pseudo-labels: a teacher labels a folder of scans, and the result is a dataset to train on.

Each image (a NIfTI file, a DICOM series, or the images of a layout folder; see
:func:`~kdseg.data.sources.discover_images`) is predicted by the one
:class:`~kdseg.eval.inference.Predictor` (so every preprocessing step is undone exactly as in
``kdseg-predict``) and gets two confidences:

- ``mean_max_prob``: the mean, over the voxels predicted as foreground (the organ, tumor
  included), of the winning class probability;
- ``flip_dice``: the foreground Dice between the prediction and the prediction of the input
  mirrored left-right (along the voxel axis closest to the patient's left-right axis; mirrored
  back): a teacher that is unsure of a case tends to disagree with itself there (nnU-Net's
  mirroring, used as a check). A mirror along the slice axis would change nothing for a 2D
  model.

Cases at or above ``min_confidence`` (on ``mean_max_prob``) and ``min_flip_dice`` are written
as an nnU-Net v2 raw dataset (``imagesTr/<case>_0000.nii.gz``, a link to the input NIfTI or a
NIfTI copy of a DICOM series; ``labelsTr/<case>.nii.gz`` on the input's exact geometry;
``dataset.json``, marked ``kdseg_pseudolabel``), which ``kdseg-train data=nnunet`` reads as
ground truth, with a split file that keeps its cases out of val and test (a seeded split of
such a folder is refused: :func:`kdseg.data.dataset.resolve_data`).
Every case, kept or not, is a row of ``confidence.csv``.

``postprocess="largest"`` (beyond the paper; default ``none``, as in ``kdseg-predict``) keeps
the organ's largest component(s) in each written label
(:func:`~kdseg.eval.postprocess.postprocess_labels`); the confidences are the teacher's, of
its labels before that. ``dataset.json`` records the mode and the components kept.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from kdseg.data.io import (
    check_unoriented,
    load_volume,
    require_orientation,
    save_label,
    stored_image,
)
from kdseg.data.nnunet import is_pseudolabel_dataset, label_kind
from kdseg.data.sources import ImageCase, discover_images
from kdseg.data.tasks import organ_name
from kdseg.errors import (
    InputError,
    atomic_path,
    process_alive,
    temp_host,
    temp_tag,
    write_text_atomic,
)
from kdseg.eval.postprocess import check_plan, postprocess_labels

CSV_NAME = "confidence.csv"
DATASET_ENTRIES = ("imagesTr", "labelsTr", "dataset.json", CSV_NAME)
"""What a pseudo-label dataset folder holds; a folder with anything else is not replaced."""
COLUMNS = ("case_id", "image", "mean_max_prob", "flip_dice", "foreground_voxels", "kept")


def foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of ``a > 0`` and ``b > 0``; 1 when both are empty."""
    fa, fb = a > 0, b > 0
    total = int(fa.sum()) + int(fb.sum())
    return 1.0 if total == 0 else 2.0 * float((fa & fb).sum()) / total


def left_right_axis(image: nib.Nifti1Image) -> int:
    """The voxel axis of ``image`` closest to the patient's left-right axis."""
    return int(np.nonzero(nib.orientations.io_orientation(image.affine)[:, 0] == 0)[0][0])


def score_case(
    predictor: Any, image: nib.Nifti1Image, flip: bool = True
) -> tuple[np.ndarray, dict]:
    """The teacher's label volume for ``image`` and its confidences (see the module doc)."""
    stats: dict[str, float] = {}
    label = predictor.predict(image, stats=stats)
    voxels = stats.get("foreground_voxels", 0.0)
    row = {
        "mean_max_prob": stats["max_prob_sum"] / voxels if voxels else 0.0,
        "foreground_voxels": int(voxels),
        "flip_dice": float("nan"),
    }
    if flip:
        axis = left_right_axis(image)
        data = np.ascontiguousarray(np.flip(np.asanyarray(image.dataobj), axis=axis))
        mirrored = predictor.predict(type(image)(data, image.affine, image.header))
        row["flip_dice"] = foreground_dice(label, np.flip(mirrored, axis=axis))
    return label, row


def check_destination(source: Path, output: Path) -> None:
    """Refuse an output the dataset cannot replace as a whole without destroying something:
    the input, a folder around it, a file, or a folder of other things; and an input that is
    a file."""
    src, out = source.resolve(), output.resolve()
    if out == src or src in out.parents:
        raise InputError(output, f"the output must lie outside the input folder {source}")
    if out in src.parents:  # the output folder is replaced as a whole: the input with it
        raise InputError(output, f"the input {source} lies inside this output folder")
    if out.exists() and not out.is_dir():
        raise InputError(output, "is a file; output= takes a folder (a new one, or this tool's)")
    if out.is_dir() and any(out.iterdir()) and not _is_dataset(out):
        raise InputError(output, "exists and is not a kdseg-pseudolabel dataset; use a new folder")
    if source.is_file():
        raise InputError(source, "is a file; input= takes a folder of scans or a dataset folder")


def _link_or_copy(case: ImageCase, image: nib.Nifti1Image, target: Path) -> None:
    """The image as ``target``: a symbolic link to a ``.nii.gz`` input, else a NIfTI copy."""
    if case.image.is_file() and case.image.name.lower().endswith(".nii.gz"):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.lnk")
        tmp.unlink(missing_ok=True)
        os.symlink(case.image.resolve(), tmp)  # a link, never a write through to the input
        os.replace(tmp, target)
        return
    with atomic_path(target, suffix=".nii.gz") as tmp:
        nib.save(stored_image(image), str(tmp))  # the shape its label gets too


def _paths(output: Path, case_id: str) -> tuple[Path, Path]:
    return (
        output / "imagesTr" / f"{case_id}_0000.nii.gz",
        output / "labelsTr" / f"{case_id}.nii.gz",
    )


def write_table(rows: list[dict], path: Path) -> Path:
    """``confidence.csv`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def read_table(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``confidence.csv``."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_organ_label(organ: str, key: str = "organ") -> str:
    """``organ`` as the dataset.json's name for label 1: a name that nnU-Net readers (kdseg's
    :func:`~kdseg.data.nnunet.label_kind` among them) would read as background, nnU-Net's
    ignore label or a tumor (tumor, lesion, cancer ...) would break the dataset (two tumor
    labels, a second background), so it is refused in one line."""
    kind = label_kind(organ)
    if kind != "organ":
        raise InputError(
            None,
            f"{key}={organ!r} names the {kind} label, not an organ: the dataset.json would "
            "give label 1 that name; set organ= to the organ's name (liver, kidney ...)",
        )
    return organ


def pseudolabel_folder(
    predictor: Any,
    source: str | Path,
    output: str | Path,
    min_confidence: float = 0.0,
    min_flip_dice: float = 0.0,
    flip: bool = True,
    organ: str | None = "organ",
    unoriented: str = "error",
    cases: list[ImageCase] | None = None,
    postprocess: tuple[str, int] = ("none", 1),
) -> Iterator[dict]:
    """Label every image of ``source`` (``cases``, found by
    :func:`~kdseg.data.sources.discover_images` when not given) into the dataset ``output``;
    yield each case's row.

    A NIfTI whose header gives no orientation is refused unless ``unoriented="analyze"``
    (:func:`~kdseg.data.io.require_orientation`, as kdseg-predict). ``postprocess``: the mode
    (``none`` or ``largest``) and how many components it keeps
    (:func:`~kdseg.eval.postprocess.plan`'s pair), applied to each written label;
    ``largest`` is refused for a tumor model, as by kdseg-pseudolabel. ``organ``: the
    dataset.json's name for label 1 (:func:`~kdseg.data.tasks.organ_name`: None is
    ``"organ"``).

    A case below a threshold is listed (``kept`` false) but not written, so the folder holds
    exactly the kept cases. The dataset is built in a hidden folder beside ``output`` and
    renamed onto it once complete (replacing an earlier run's dataset there): an error or a
    signal leaves ``output`` as it was.
    """
    source, final = Path(source), Path(output).resolve()  # "." has a name once resolved
    check_destination(source, Path(output))
    check_unoriented(unoriented)
    mode, keep = check_plan(postprocess, predictor.task)
    organ = check_organ_label(organ_name({"organ": organ}))
    cases = discover_images(source) if cases is None else cases
    # built in a hidden folder beside the output and renamed onto it at the end: an error or a
    # signal leaves no half-written dataset, and an earlier run's dataset stays until then
    output = final.parent / f".{final.name}.partial-{temp_tag()}"
    _sweep_partials(final)
    output.mkdir(parents=True)
    try:
        kept = 0
        rows = _label_cases(
            predictor, cases, output, min_confidence, min_flip_dice, flip, unoriented, (mode, keep)
        )
        for row in rows:
            kept += bool(row["kept"])
            yield row
        dataset = {
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, organ: 1, "tumor": 2},
            "numTraining": kept,
            "file_ending": ".nii.gz",
            "source": str(source),
            "min_confidence": min_confidence,
            "min_flip_dice": min_flip_dice if flip else None,  # not checked: no threshold
            "kdseg_pseudolabel": True,  # data=nnunet asks such a folder for a split file
            "tta": predictor.tta,  # the confidences depend on it
            "postprocess": mode,  # the labels do
            "postprocess_keep": None if mode == "none" else keep,  # components kept, at most
        }
        write_text_atomic(output / "dataset.json", json.dumps(dataset, indent=1) + "\n")
        _replace_folder(output, final)
    finally:
        shutil.rmtree(output, ignore_errors=True)


def _is_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier run's dataset and nothing else (it is replaced)."""
    names = {p.name for p in folder.iterdir()}
    if not {CSV_NAME, "dataset.json"} <= names or names - {*DATASET_ENTRIES}:
        return False
    return is_pseudolabel_dataset(folder)


def _sweep_partials(final: Path) -> None:
    """Remove the hidden build folders, and the earlier datasets moved aside, of runs of this
    host that were killed (their process gone). Another host's (``partial-<host>-<pid>``,
    ``old-<host>-<pid>``), and one named as before (``partial-<pid>``, of any host), may be
    in flight and stay. An earlier dataset moved aside by a process killed before it put the
    new one in its place is the only copy: put back, not removed."""
    for kind in ("partial", "old"):
        prefix = f".{final.name}.{kind}-{temp_host()}-"
        for folder in sorted(final.parent.glob(f"{glob.escape(prefix)}*")):
            pid = folder.name[len(prefix) :]
            if not pid.isdigit() or process_alive(int(pid)):
                continue
            if kind == "old" and not final.exists():
                os.rename(folder, final)
            else:
                shutil.rmtree(folder, ignore_errors=True)


def _replace_folder(new: Path, final: Path) -> None:
    """Rename ``new`` onto ``final``; an earlier dataset there is moved aside, then deleted."""
    if not final.exists():
        os.rename(new, final)
        return
    old = final.parent / f".{final.name}.old-{temp_tag()}"  # swept if this process is killed
    shutil.rmtree(old, ignore_errors=True)  # one of a dead process of this pid: ours now
    os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _label_cases(
    predictor: Any,
    cases: list[ImageCase],
    output: Path,
    min_confidence: float,
    min_flip_dice: float,
    flip: bool,
    unoriented: str,
    postprocess: tuple[str, int] = ("none", 1),
) -> Iterator[dict]:
    rows: list[dict] = []
    for case in cases:
        image = load_volume(case.image)
        require_orientation(image, case.image, unoriented)
        label, row = score_case(predictor, image, flip=flip)
        flip_ok = not flip or row["flip_dice"] >= min_flip_dice
        kept = row["mean_max_prob"] >= min_confidence and flip_ok
        row = {"case_id": case.case_id, "image": str(case.image), **row, "kept": kept}
        image_out, label_out = _paths(output, case.case_id)
        if kept:
            label = postprocess_labels(label, *postprocess)[0]  # the confidences: before it
            _link_or_copy(case, image, image_out)
            save_label(label, image, label_out)
        rows.append(row)
        write_table(rows, output / CSV_NAME)
        yield row
