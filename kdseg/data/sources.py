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
import unicodedata
from collections.abc import Callable, Iterable
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
    both exist are refused: which one holds the case is not for kdseg to guess, and so is a
    link to nothing or a symlink loop (:func:`~kdseg.data.io.broken_link`), not missing."""
    from kdseg.data.io import broken_link

    for path in candidates:
        if (problem := broken_link(path)) is not None:
            raise InputError(path, problem)
    found = [p for p in candidates if p.exists()]
    if len(found) > 1:
        raise InputError(found[1], f"is the same file of the case as {found[0].name}: keep one")
    return found[0] if found else None


#: KiTS19's test cases (case_00210 to case_00299) were published without segmentations
KITS19_FIRST_UNLABELED = 210


def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


_LITS_NAME = r"(volume|segmentation)-(\d+)\.nii(\.gz)?"
_MSD_NAME = r"liver_[^/]+\.nii(\.gz)?"


def _refuse_capitals(folder: Path, pattern: str, layout: str, reads: str) -> None:
    """Refuse a file of ``folder`` whose name is a ``layout`` name (``pattern``) but for its
    capitals (LiTS ``Volume-3.nii.gz``, ``volume-3.NII.GZ``; Decathlon ``Liver_1.nii.gz``):
    the layout's names are matched as written, so it would be left out without a word.
    ``reads``: the names kdseg reads, for the message."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if re.fullmatch(pattern, path.name, re.IGNORECASE) and not re.fullmatch(pattern, path.name):
            raise InputError(path, f"a {layout} name with capitals; kdseg reads {reads}")


def _refuse_lits_capitals(root: Path) -> None:
    """Refuse ``Volume-3.nii.gz`` or ``volume-3.NII.GZ`` in a LiTS folder: left out otherwise."""
    _refuse_capitals(root, _LITS_NAME, "LiTS", "volume-N.nii[.gz] and segmentation-N.nii[.gz]")


def _lits(root: Path) -> list[Case]:
    _refuse_lits_capitals(root)
    cases = []
    for image in root.glob("volume-*.nii*"):
        number = re.fullmatch(_LITS_NAME, image.name)
        if not number:
            continue
        n = number[2]
        label = _only_existing(root / f"segmentation-{n}.nii", root / f"segmentation-{n}.nii.gz")
        if label is None:
            raise InputError(image, f"missing label segmentation-{n}.nii[.gz] beside it")
        cases.append(Case(f"volume-{n}", image, label))
    labels = [p for p in root.glob("segmentation-*.nii*") if re.fullmatch(_LITS_NAME, p.name)]
    _refuse_unpaired(labels, cases, lambda p: f"volume-{re.split('[-.]', p.name)[1]}.nii[.gz]")
    return cases


def _refuse_unpaired(labels: list[Path], cases: list[Case], image: Callable[[Path], str]) -> None:
    """Refuse a label whose case has no image (``image`` names the file it lacks): the scan
    is gone, and its case would be left out without a word (a KiTS19 case is refused so)."""
    paired = {case.label for case in cases}
    for label in sorted(labels):
        if label not in paired and not label.name.startswith("."):
            raise InputError(label, f"missing image {image(label)} for this label")


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
    for folder in ("imagesTr", "labelsTr"):  # Liver_1.nii.gz: left out otherwise
        _refuse_capitals(root / folder, _MSD_NAME, "Decathlon", f"{folder}/liver_N.nii[.gz]")
    cases = []
    for image in (root / "imagesTr").glob("liver_*.nii*"):
        if image.name.startswith("._"):
            continue
        label = _only_existing(root / "labelsTr" / image.name)
        if label is None:
            raise InputError(image, f"missing label labelsTr/{image.name}")
        cases.append(Case(image.name.split(".")[0], image, label))
    labels = list((root / "labelsTr").glob("liver_*.nii*"))
    _refuse_unpaired(labels, cases, lambda p: f"imagesTr/{p.name}")
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
    labels = list((root / "labelsTr").glob(f"*{ending}"))
    _refuse_unpaired(labels, cases, lambda p: f"imagesTr/{p.name[: -len(ending)]}_0000{ending}")
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
    # volume-0.nii beside volume-0.nii.gz: a split would put "volume-0" in train and test
    check_distinct_names((c.case_id, c.image) for c in cases)
    return cases


def _plain_images(root: Path, notes: list[str]) -> list[ImageCase]:
    """NIfTI files and DICOM series in ``root`` (:func:`folder_inputs`); nnU-Net's ``_0000``
    channel suffix is dropped from the ids when every file has it (an ``imagesTs`` folder), as
    its predictions drop it. What the folder holds besides is added to ``notes``."""
    from kdseg.data.io import nifti_stem

    inputs, note = folder_inputs(root)
    if inputs == [root]:
        raise InputError(
            root, "is one DICOM series, not a folder of scans; pass a folder holding it"
        )
    if note is not None:
        notes.append(f"{root}: {note}")
    images = [ImageCase(nifti_stem(p), p) for p in inputs]
    if images and all(i.case_id.endswith("_0000") and i.image.is_file() for i in images):
        images = [ImageCase(i.case_id[: -len("_0000")], i.image) for i in images]
    return images


#: What an operating system leaves in any folder (the Finder's ``.DS_Store`` and ``._`` forks,
#: Windows' ``Thumbs.db`` and ``desktop.ini``): never a scan, passed over without a word.
OS_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
_LISTED = 3


def _os_file(name: str) -> bool:
    return name in OS_FILES or name.startswith("._")


def folder_inputs(root: Path) -> tuple[list[Path], str | None]:
    """The scans of a folder and a note of what else it holds, or None when nothing does.

    ``[root]`` itself when it is one DICOM series folder (slices in it); else its NIfTI files
    and DICOM series folders, sorted by name. Passed over, and counted in the note: hidden
    entries, files that are not NIfTI, folders without a DICOM series (the operating system's
    own files, :data:`OS_FILES`, without a word). Refused, since a scan would be lost: a NIfTI
    suffix of mixed case, which nibabel cannot read; an empty NIfTI file, a link to nothing;
    DICOM slices beside other scans (which was meant is not for kdseg to guess); a folder of
    nothing but a DICOMDIR and folders without a series in them (a CD's root, whose series lie
    deeper: DICOM/ST0/SE0), naming the series folder to pass. A DICOMDIR beside series folders
    is no slice: it is passed over."""
    from kdseg.data.dicom_files import dicomdir_index, dicomdir_refusal, is_dicom_folder
    from kdseg.data.io import broken_link, is_nifti, mixed_case_nifti

    entries = [p for p in sorted(root.iterdir()) if not _os_file(p.name)]
    visible = [p for p in entries if not p.name.startswith(".")]
    folders = [p for p in visible if p.is_dir()]
    files = [p for p in visible if not p.is_dir()]
    for path in files:
        if (refusal := mixed_case_nifti(path)) is not None:
            raise refusal  # b.Nii.gz beside a.nii.gz: it would be left out without a word
    series = [p for p in folders if is_dicom_folder(p)]
    niftis = [p for p in files if is_nifti(p)]
    if is_dicom_folder(root):
        if niftis or series:
            others = [p.name for p in (*niftis, *series)]
            raise InputError(
                root,
                f"holds DICOM slices beside {len(others)} other scan(s) ({_names(others)}); "
                "move the slices into a series folder of their own",
            )
        return [root], None
    if not niftis and not series and dicomdir_index(root) is not None:
        raise dicomdir_refusal(root)
    for path in niftis:
        if (problem := broken_link(path)) is not None:
            raise InputError(path, problem)
        if path.stat().st_size == 0:
            raise InputError(path, "an empty file (0 bytes); copy it again or move it out")
    passed = {
        ("hidden", "hidden"): [p.name for p in entries if p.name.startswith(".")],
        ("not NIfTI", "not NIfTI"): [p.name for p in files if p not in niftis],
        ("folder without a DICOM series", "folders without a DICOM series"): [
            p.name for p in folders if p not in series
        ],
    }
    counts = [
        f"{len(names)} {why[len(names) > 1]} ({_names(names)})"
        for why, names in passed.items()
        if names
    ]
    total = sum(len(names) for names in passed.values())
    note = f"passed over {total} entr{'y' if total == 1 else 'ies'}: {', '.join(counts)}"
    return sorted([*niftis, *series]), note if counts else None


def _names(names: list[str]) -> str:
    return ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")


def check_distinct_names(items: Iterable[tuple[str, Path]], what: str = "case id") -> None:
    """Refuse two inputs of one name (``what``: the case id, the output a name gives), even
    names that differ only in case (``a`` and ``A``) or in Unicode normalisation: their
    outputs would be one file on macOS and Windows, whatever this filesystem does."""
    seen: dict[str, tuple[str, Path]] = {}
    for name, path in items:
        first_name, first = seen.setdefault(_fold(name), (name, path))
        if first == path:
            continue
        if first_name == name:
            raise InputError(path, f"shares the {what} {name!r} with {first.name}; rename one")
        raise InputError(
            path,
            f"{what} {name!r} and {first.name}'s {first_name!r} differ only in case, "
            "one file on macOS and Windows; rename one",
        )


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


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


def _layout_images(root: Path, notes: list[str]) -> list[ImageCase] | None:
    """Images of a dataset-layout folder (labels ignored), or None when it is no layout; what
    it passes over is added to ``notes``."""
    if _nnunet_v2(root):
        from kdseg.data.nnunet import read_dataset_json

        ending = read_dataset_json(root).file_ending
        return [
            ImageCase(case_id, path)
            for folder in ("imagesTr", "imagesTs")
            for case_id, path in _nnunet_images(root / folder, ending)
        ]
    msd = [root / f for f in ("imagesTr", "imagesTs") if (root / f).is_dir()]
    if msd:  # MSD-style
        return [i for folder in msd for i in _plain_images(folder, notes)]
    kits = [
        _only_existing(f / "imaging.nii.gz", f / "imaging.nii") for f in sorted(root.glob("case_*"))
    ]
    if any(kits):
        return [ImageCase(p.parent.name, p) for p in kits if p is not None]
    lits = [p for p in root.glob("volume-*.nii*") if re.fullmatch(_LITS_NAME, p.name)]
    if lits:
        from kdseg.data.io import is_nifti, nifti_stem

        _refuse_lits_capitals(root)
        others = [
            p.name
            for p in sorted(root.iterdir())
            if is_nifti(p) and not re.fullmatch(_LITS_NAME, p.name) and not p.name.startswith(".")
        ]
        if others:  # scan.nii.gz beside volume-0.nii.gz
            n = len(others)
            notes.append(
                f"{root}: read as LiTS (volume-N); passed over {n} other NIfTI "
                f"file{'s' if n > 1 else ''} ({_names(others)})"
            )
        return [ImageCase(nifti_stem(p), p) for p in lits]
    return None


def discover_images(root: str | Path, notes: list[str] | None = None) -> list[ImageCase]:
    """CT volumes without labels in ``root``, sorted naturally by id.

    ``root`` is a dataset-layout folder (nnU-Net raw: ``imagesTr`` and ``imagesTs``; MSD;
    KiTS19 ``case_*/imaging.nii.gz``; LiTS ``volume-N.nii``: the labels beside are ignored), or
    a plain folder of NIfTI files and DICOM series folders (:func:`folder_inputs`: what it
    passes over is added to ``notes``, one line per folder). Two images whose ids differ only
    in case are refused as two of one id are (:func:`check_distinct_names`).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "image folder not found")
    found: list[str] = []
    images = _layout_images(root, found)
    if images is None:
        images = _plain_images(root, found)
    if not images:  # a note on ``root`` itself drops its name: the error names it once
        said = [n.removeprefix(f"{root}: ") for n in found]
        held = f" ({'; '.join(said)})" if said else ""
        raise InputError(
            root, f"no NIfTI files, DICOM series or dataset layout in this folder{held}"
        )
    check_distinct_names((i.case_id, i.image) for i in images)
    if notes is not None:
        notes.extend(found)
    return sorted(images, key=lambda c: (_natural_key(c.case_id), c.case_id))
