"""Dataset layouts -> one case list.

Each reader turns a folder in a public dataset's own layout into ``Case`` records, so the rest
of the pipeline never knows which dataset it reads. Phantom folders use the same layouts.

- ``lits``: ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]`` (LiTS 2017; 0/1 liver/2 tumor)
- ``kits19``: ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (0/1 kidney/2 tumor)
- ``msd_liver``: Medical Segmentation Decathlon ``Task03_Liver/imagesTr|labelsTr/liver_N.nii.gz``
- ``nnunet``: nnU-Net v2 raw dataset ``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz``
  with the label names in ``dataset.json`` (:mod:`kdseg.data.nnunet` maps them to 0/1/2)

:func:`discover_images` lists the images alone (labels absent or ignored) of the same layouts or
of a plain folder of NIfTI files and DICOM series: the unlabeled scans and pseudo-label inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdseg.errors import ConfigError, InputError, read_json


@dataclass(frozen=True)
class Case:
    """One labelled CT volume: a stable id plus image and label paths.

    ``label_map`` ((stored value, kdseg label) pairs) maps a layout's own label values to
    kdseg's 0 background / 1 organ / 2 tumor; ``None`` means they are kdseg's already.
    """

    case_id: str
    image: Path
    label: Path
    label_map: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class ImageCase:
    """One CT volume without a label (a NIfTI file or a DICOM series folder).

    ``roi_label``: a label map on the image's grid whose foreground (> 0) is the organ (a stage
    1's or a teacher's prediction, ``data.unlabeled_roi_labels``). It sets the organ box and
    level of an organ-ROI config; its classes are never used as targets.
    """

    case_id: str
    image: Path
    roi_label: Path | None = None


def _only_existing(*candidates: Path) -> Path | None:
    """The one of ``candidates`` (one file as ``.nii`` and ``.nii.gz``) that exists; two that
    both exist are refused: which one holds the case is not for kdseg to guess."""
    found = [p for p in candidates if p.exists()]
    if len(found) > 1:
        raise InputError(found[1], f"is the same file of the case as {found[0].name}: keep one")
    return found[0] if found else None


#: KiTS19's test cases (case_00210 to case_00299) were published without segmentations
KITS19_FIRST_UNLABELED = 210


def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _refuse_orphans(labels: dict[str, Path], cases: set[str], image: str) -> None:
    """Refuse the first label of ``labels`` (by case key) whose key is not among ``cases``:
    its case (a scan gone, or misnamed ``Volume-3.nii``) would be left out of the dataset
    without a word. ``image`` names the missing file, ``{}`` standing for the key. Hidden
    files (macOS ``._*`` forks) are no labels."""
    for key, label in sorted(labels.items(), key=lambda item: _natural_key(item[0])):
        if key not in cases and not label.name.startswith("."):
            raise InputError(label, f"a label without its image {image.format(key)}")


def _lits(root: Path) -> list[Case]:
    cases = []
    pattern = r"(volume|segmentation)-(\d+)\.nii(\.gz)?"
    found = [m for p in root.iterdir() if (m := re.fullmatch(pattern, p.name))]
    _refuse_orphans(
        {m.group(2): root / m.group(0) for m in found if m.group(1) == "segmentation"},
        {m.group(2) for m in found if m.group(1) == "volume"},
        "volume-{}.nii[.gz] beside it",
    )
    for image in root.glob("volume-*.nii*"):
        number = re.fullmatch(r"volume-(\d+)\.nii(\.gz)?", image.name)
        if not number:
            continue
        n = number.group(1)
        label = _only_existing(root / f"segmentation-{n}.nii", root / f"segmentation-{n}.nii.gz")
        if label is None:
            raise InputError(image, f"missing label segmentation-{n}.nii[.gz] beside it")
        cases.append(Case(f"volume-{n}", image, label))
    return cases


def _kits19(root: Path) -> list[Case]:
    cases = []
    for folder in root.glob("case_*"):
        if not folder.is_dir():
            continue
        image = _only_existing(folder / "imaging.nii.gz", folder / "imaging.nii")
        label = _only_existing(folder / "segmentation.nii.gz", folder / "segmentation.nii")
        if image is None:
            if label is not None:  # a case whose scan is gone: never dropped without a word
                raise InputError(label, "missing image imaging.nii.gz in the same case folder")
            continue
        if label is None:
            number = re.fullmatch(r"case_(\d+)", folder.name)
            if number and int(number.group(1)) >= KITS19_FIRST_UNLABELED:
                continue  # KiTS19's unlabeled test cases: images only, not training cases
            raise InputError(image, "missing label segmentation.nii.gz in the same case folder")
        cases.append(Case(folder.name, image, label))
    return cases


def _msd_liver(root: Path) -> list[Case]:
    cases = []
    for image in (root / "imagesTr").glob("liver_*.nii*"):
        if image.name.startswith("._"):
            continue
        label = root / "labelsTr" / image.name
        if not label.exists():
            raise InputError(image, f"missing label labelsTr/{image.name}")
        cases.append(Case(image.name.split(".")[0], image, label))
    labels = {p.name: p for p in (root / "labelsTr").glob("liver_*.nii*")}
    _refuse_orphans(labels, {c.image.name for c in cases}, "imagesTr/{}")
    return cases


def _nnunet(root: Path) -> list[Case]:
    from kdseg.data.nnunet import read_dataset_json

    info = read_dataset_json(root)
    cases = []
    for case_id, image in _nnunet_images(root / "imagesTr", info.file_ending):
        label = root / "labelsTr" / f"{case_id}{info.file_ending}"
        if not label.exists():
            raise InputError(image, f"missing label labelsTr/{label.name}")
        cases.append(Case(case_id, image, label, info.label_map))
    ending = info.file_ending
    labels = {p.name[: -len(ending)]: p for p in (root / "labelsTr").glob(f"*{ending}")}
    _refuse_orphans(labels, {c.case_id for c in cases}, f"imagesTr/{{}}_0000{ending}")
    return cases


def _nnunet_images(folder: Path, file_ending: str) -> list[tuple[str, Path]]:
    """``(case id, path)`` of the first channel (``_0000``) of each case in ``folder``."""
    suffix = f"_0000{file_ending}"
    return [
        (p.name[: -len(suffix)], p)
        for p in sorted(folder.glob(f"*{suffix}"))
        if not p.name.startswith(".")
    ]


LAYOUTS: dict[str, Callable[[Path], list[Case]]] = {
    "lits": _lits,
    "kits19": _kits19,
    "msd_liver": _msd_liver,
    "nnunet": _nnunet,
}


def discover_cases(layout: str, root: str | Path) -> list[Case]:
    """List the labelled cases of ``root`` in the named ``layout``, sorted naturally by id."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown data.layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise InputError(root, "data folder not found")
    cases = sorted(LAYOUTS[layout](root), key=lambda c: (_natural_key(c.case_id), c.case_id))
    if not cases:
        raise InputError(root, f"no cases in the {layout} layout found in this folder")
    seen: dict[str, Case] = {}
    for case in cases:  # volume-0.nii beside volume-0.nii.gz: a split would put "volume-0" in
        first = seen.setdefault(case.case_id, case)  # train and test, one scan each
        if first is not case:
            raise InputError(
                case.image, f"shares the case id {case.case_id!r} with {first.image.name}"
            )
    return cases


def _plain_images(root: Path) -> list[ImageCase]:
    """NIfTI files and DICOM series in ``root``; nnU-Net's ``_0000`` channel suffix is dropped
    from the ids when every file has it (an ``imagesTs`` folder), as its predictions drop it."""
    from kdseg.data.dicom import is_dicom_folder
    from kdseg.data.io import is_nifti, nifti_stem

    images = [
        ImageCase(nifti_stem(p), p)
        for p in sorted(root.iterdir())
        if not p.name.startswith(".") and (is_nifti(p) or (p.is_dir() and is_dicom_folder(p)))
    ]
    if images and all(i.case_id.endswith("_0000") and i.image.is_file() for i in images):
        images = [ImageCase(i.case_id[: -len("_0000")], i.image) for i in images]
    return images


def _nnunet_v2(root: Path) -> bool:
    """Whether ``root`` is an nnU-Net v2 raw dataset: ``imagesTr/`` and a ``dataset.json``
    whose labels map names to values. The Decathlon's own (v1) file maps values to names
    (``{"0": "background"}``), and its ``imagesTr/`` holds plain NIfTI files."""
    if not ((root / "dataset.json").exists() and (root / "imagesTr").is_dir()):
        return False
    data = read_json(root / "dataset.json")
    labels = data.get("labels") if isinstance(data, dict) else None
    msd = isinstance(labels, dict) and labels and all(isinstance(v, str) for v in labels.values())
    return not msd


def _layout_images(root: Path) -> list[ImageCase] | None:
    """Images of a dataset-layout folder (labels ignored), or None when it is no layout."""
    if _nnunet_v2(root):
        from kdseg.data.nnunet import read_dataset_json

        ending = read_dataset_json(root).file_ending
        return [
            ImageCase(case_id, path)
            for folder in ("imagesTr", "imagesTs")
            for case_id, path in _nnunet_images(root / folder, ending)
        ]
    for folder in ("imagesTr", "imagesTs"):  # MSD-style
        if (root / folder).is_dir():
            return [
                i
                for f in ("imagesTr", "imagesTs")
                if (root / f).is_dir()
                for i in _plain_images(root / f)
            ]
    kits = [
        _only_existing(f / "imaging.nii.gz", f / "imaging.nii") for f in sorted(root.glob("case_*"))
    ]
    if any(kits):
        return [ImageCase(p.parent.name, p) for p in kits if p is not None]
    lits = [
        p for p in root.glob("volume-*.nii*") if re.fullmatch(r"volume-\d+\.nii(\.gz)?", p.name)
    ]
    if lits:
        from kdseg.data.io import nifti_stem

        return [ImageCase(nifti_stem(p), p) for p in lits]
    return None


def discover_images(root: str | Path) -> list[ImageCase]:
    """CT volumes without labels in ``root``, sorted naturally by id.

    ``root`` is a dataset-layout folder (nnU-Net raw: ``imagesTr`` and ``imagesTs``; MSD;
    KiTS19 ``case_*/imaging.nii.gz``; LiTS ``volume-N.nii``: the labels beside are ignored), or
    a plain folder of NIfTI files and DICOM series folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "image folder not found")
    images = _layout_images(root)
    if images is None:
        images = _plain_images(root)
    if not images:
        raise InputError(root, "no NIfTI files, DICOM series or dataset layout in this folder")
    ids = [i.case_id for i in images]
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise InputError(root, f"two images share the case id {duplicates[0]!r}")
    return sorted(images, key=lambda c: (_natural_key(c.case_id), c.case_id))
