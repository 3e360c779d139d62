"""Dataset layouts -> one case list.

Each reader turns a folder in a public dataset's own layout into ``Case`` records, so the rest
of the pipeline never knows which dataset it reads. Phantom folders use the same layouts.

- ``lits``: ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]`` (LiTS 2017; 0/1 liver/2 tumor)
- ``kits19``: ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (0/1 kidney/2 tumor)
- ``msd_liver``: Medical Segmentation Decathlon ``Task03_Liver/imagesTr|labelsTr/liver_N.nii.gz``
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdseg.errors import InputError


@dataclass(frozen=True)
class Case:
    """One labelled CT volume: a stable id plus image and label paths."""

    case_id: str
    image: Path
    label: Path


def _first_existing(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _lits(root: Path) -> list[Case]:
    cases = []
    for image in root.glob("volume-*.nii*"):
        number = re.fullmatch(r"volume-(\d+)\.nii(\.gz)?", image.name)
        if not number:
            continue
        n = number.group(1)
        label = _first_existing(root / f"segmentation-{n}.nii", root / f"segmentation-{n}.nii.gz")
        if label is None:
            raise InputError(image, f"missing label segmentation-{n}.nii[.gz] beside it")
        cases.append(Case(f"volume-{n}", image, label))
    return cases


def _kits19(root: Path) -> list[Case]:
    cases = []
    for folder in root.glob("case_*"):
        image = _first_existing(folder / "imaging.nii.gz", folder / "imaging.nii")
        if not folder.is_dir() or image is None:
            continue
        label = _first_existing(folder / "segmentation.nii.gz", folder / "segmentation.nii")
        if label is None:
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
    return cases


LAYOUTS: dict[str, Callable[[Path], list[Case]]] = {
    "lits": _lits,
    "kits19": _kits19,
    "msd_liver": _msd_liver,
}


def discover_cases(layout: str, root: str | Path) -> list[Case]:
    """List the labelled cases of ``root`` in the named ``layout``, sorted naturally by id."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise InputError(root, "data folder not found")
    cases = sorted(LAYOUTS[layout](root), key=lambda c: _natural_key(c.case_id))
    if not cases:
        raise InputError(root, f"no cases in the {layout} layout found in this folder")
    return cases
