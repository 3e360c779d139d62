"""nnU-Net v2's file formats: ``dataset.json`` label names, ``--save_probabilities`` files.

nnU-Net users keep their data in its raw layout (``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``dataset.json``) and get predictions as ``<case>.nii.gz`` plus,
with ``--save_probabilities``, ``<case>.npz`` and ``<case>.pkl``. This module reads them
without nnU-Net installed, so its datasets and predictions plug into kdseg as they are.

What nnU-Net v2 writes (``nnunetv2/inference/export_prediction.py``, checked against files
made by its own export code: ``tests/fixtures/nnunet/make_fixture.py``):

- ``<case>.npz``: one array ``probabilities``, float, shape ``(C, *image shape)`` with the
  image axes in the order SimpleITK's ``GetArrayFromImage`` returns them, i.e. ``(z, y, x)``,
  the reverse of nibabel's ``(i, j, k)`` array of the same file. Channel ``c`` is label value
  ``c`` of ``dataset.json`` (region-based datasets are not supported).
- ``<case>.pkl``: the image properties, among them ``sitk_stuff`` with ITK's ``spacing``,
  ``origin`` and ``direction`` (LPS world coordinates), used here to check the geometry.

A dataset is read through its first input channel (``_0000``) only: a ``dataset.json`` that
names more channels is one warning line; nnU-Net's ``ignore`` label (sparse annotation) is
refused.

The ``.pkl`` is read by a restricted unpickler (plain containers and numpy arrays only), so
no code from a file ever runs.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kdseg.errors import InputError, first_process, read_json

DATASET_JSON = "dataset.json"
TUMOR_WORDS = ("tumor", "tumour", "lesion", "cancer", "metasta")
NIFTI_ENDINGS = (".nii.gz", ".nii")
#: LPS (ITK) <-> RAS (nibabel) world coordinates: the first two axes change sign.
LPS = np.diag([-1.0, -1.0, 1.0])
#: the label name nnU-Net v2 reserves for voxels left unannotated (sparse annotation)
IGNORE_LABEL = "ignore"

log = logging.getLogger(__name__)
_NOTED: set[str] = set()  # dataset.json files whose extra channels were named (once each)


@dataclass(frozen=True)
class NnunetDataset:
    """What kdseg needs from a ``dataset.json``: file ending, label names, the label mapping."""

    file_ending: str
    labels: dict[str, int]
    label_map: tuple[tuple[int, int], ...] | None  # (nnU-Net value, kdseg label); None: same

    @property
    def num_labels(self) -> int:
        """Number of label values (the channels of a probability file)."""
        return max(self.labels.values()) + 1


def label_kind(name: object) -> Literal["background", "ignore", "tumor", "organ"]:
    """What a ``dataset.json`` label name is to kdseg, by its lowercased name: ``background``;
    ``ignore`` (nnU-Net's :data:`IGNORE_LABEL`); ``tumor`` where it contains one of
    :data:`TUMOR_WORDS`; else ``organ``. One rule for :func:`kdseg_label_map` (which refuses
    ``ignore``) and :func:`dataset_organ`, so the organ one names is the label the other maps
    to 1."""
    lowered = str(name).lower()
    if lowered == "background":
        return "background"
    if lowered == IGNORE_LABEL:
        return "ignore"
    if any(word in lowered for word in TUMOR_WORDS):
        return "tumor"
    return "organ"


def kdseg_label_map(labels: dict[str, Any], where: Path) -> tuple[tuple[int, int], ...] | None:
    """Map nnU-Net label values to kdseg's 0 background / 1 organ / 2 tumor by their names.

    ``background`` is 0; names containing tumor, tumour, lesion, cancer or metasta are the
    tumor (2); the one remaining label is the organ (1). Anything else (two organs, regions)
    is refused with a message, since kdseg's tasks know one organ and its tumor.
    """
    mapping: dict[int, int] = {}
    organs = []
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(
                where, f"label {name!r} is {value!r}: region-based labels are not supported"
            )
        if value < 0:
            raise InputError(where, f"label {name!r} is {value}: label values are 0 or more")
        kind = label_kind(name)
        if kind == "ignore":
            raise InputError(
                where,
                f"label {name!r} ({value}) is nnU-Net's ignore label (voxels left "
                "unannotated); kdseg trains on fully annotated labels and does not support it",
            )
        if kind == "background":
            if value != 0:
                raise InputError(where, f"background must be label 0, got {value}")
            mapping[value] = 0
        elif kind == "tumor":
            mapping[value] = 2
        else:
            organs.append((name, value))
    if len(organs) > 1:
        names = ", ".join(n for n, _ in organs)
        raise InputError(where, f"labels {names} are all organs; kdseg needs one organ label")
    for _, value in organs:
        mapping[value] = 1
    if 0 not in mapping:
        raise InputError(where, "no 'background' label (value 0)")
    if len(set(mapping)) != len(list(labels.values())):
        raise InputError(where, "two label names share one value")
    pairs = tuple(sorted(mapping.items()))
    # None only for kdseg's own 0/1/2: a file naming fewer labels keeps them, so a value it
    # does not name (a tumor 2 beside background and liver) is refused, not read as tumor
    return None if pairs == ((0, 0), (1, 1), (2, 2)) else pairs


def dataset_organ(folder: str | Path) -> str | None:
    """The organ ``<folder>/dataset.json`` names: its one label that is neither background,
    a tumor (:data:`TUMOR_WORDS`) nor ``ignore``, lowercased (``Kidney`` -> ``kidney``), as
    :func:`kdseg_label_map` maps it to label 1. None where the file is missing or unreadable
    or names no single organ: reading the dataset then says what is wrong. ``data=nnunet``'s
    ``data.organ`` (a model's organ: its DICOM SEG segment, how many components
    ``postprocess=largest`` keeps) comes from here unless set."""
    import json

    try:
        labels = json.loads((Path(str(folder)) / DATASET_JSON).read_text()).get("labels")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(labels, dict):
        return None
    organs = [str(name).strip().lower() for name in labels if label_kind(name) == "organ"]
    return organs[0] if len(organs) == 1 and organs[0] else None


#: the keys that mark a ``dataset.json`` written by kdseg-pseudolabel: ``kdseg_pseudolabel``
#: (since 2026-12-08) and ``min_confidence`` (every kdseg-pseudolabel dataset has it)
PSEUDOLABEL_MARKERS = ("kdseg_pseudolabel", "min_confidence")


def is_pseudolabel_dataset(folder: str | Path) -> bool:
    """Whether ``<folder>/dataset.json`` was written by kdseg-pseudolabel (its labels are a
    teacher's, not ground truth); a missing or unreadable file is not."""
    import json

    try:
        data = json.loads((Path(str(folder)) / DATASET_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and any(key in data for key in PSEUDOLABEL_MARKERS)


def read_dataset_json(folder: str | Path) -> NnunetDataset:
    """Read ``<folder>/dataset.json`` (labels and file ending) with clear errors."""
    path = Path(folder) / DATASET_JSON
    data = read_json(path, "missing: an nnU-Net folder needs its dataset.json")
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError(path, "needs a 'labels' mapping of names to values")
    ending = str(data.get("file_ending", ".nii.gz"))
    if ending not in NIFTI_ENDINGS:
        raise InputError(path, f"file_ending {ending!r}: kdseg reads NIfTI (.nii.gz, .nii) only")
    dataset = NnunetDataset(ending, dict(labels), kdseg_label_map(labels, path))
    _note_channels(path, data.get("channel_names"))
    return dataset


def _note_channels(path: Path, channels: Any) -> None:
    """One warning line (once per file, on the first process) when ``channel_names`` names
    more than one input channel: kdseg's networks take one CT channel, the ``_0000`` files,
    and the others are not read."""
    if not isinstance(channels, dict) or len(channels) < 2:
        return
    key = str(path.resolve())
    if key in _NOTED or not first_process():
        return  # said already, or a DDP worker (the first process says it)
    _NOTED.add(key)
    named = sorted(channels.items(), key=lambda item: (len(str(item[0])), str(item[0])))
    (first, first_name), rest = named[0], named[1:]
    ignored = ", ".join(f"{k} ({v})" for k, v in rest)
    log.warning(
        f"{path}: channel_names names {len(named)} input channels; kdseg reads channel "
        f"{first} ({first_name}, the _0000 files) only and ignores {ignored}"
    )


def label_map_of(folder: str | Path) -> tuple[tuple[int, int], ...] | None:
    """The label mapping named by the folder's ``dataset.json`` (none: kdseg's 0/1/2)."""
    folder = Path(folder)
    return read_dataset_json(folder).label_map if (folder / DATASET_JSON).exists() else None


def remap_labels(label: np.ndarray, label_map: tuple[tuple[int, int], ...] | None) -> np.ndarray:
    """Stored label values -> kdseg labels (identity for ``None``)."""
    if label_map is None:
        return label
    lut = np.zeros(max(a for a, _ in label_map) + 1, dtype=np.uint8)
    for stored, kdseg in label_map:
        lut[stored] = kdseg
    return lut[label]


def merge_channels(
    probs: np.ndarray, label_map: tuple[tuple[int, int], ...] | None, where: Path
) -> np.ndarray:
    """``(C, ...)`` probabilities over stored labels -> ``(3, ...)`` over kdseg's 0/1/2."""
    mapping = dict(label_map) if label_map is not None else {c: c for c in range(3)}
    if probs.shape[0] != len(mapping):
        raise InputError(
            where, f"{probs.shape[0]} probability channels, but the labels name {len(mapping)}"
        )
    out = np.zeros((3, *probs.shape[1:]), dtype=np.float32)
    for channel, label in mapping.items():
        out[label] += probs[channel]
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Plain containers and numpy arrays / scalars only: what nnU-Net's properties hold."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "tuple"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "set"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an nnU-Net .pkl")


def read_properties(path: str | Path) -> dict[str, Any]:
    """The image properties nnU-Net saved beside a ``.npz`` (restricted unpickling)."""
    path = Path(path)
    try:
        props = _SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise InputError(path, "missing: nnU-Net writes it beside the .npz") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(path, f"not an nnU-Net properties file ({exc})") from None
    if not isinstance(props, dict) or not isinstance(props.get("sitk_stuff"), dict):
        raise InputError(path, "no 'sitk_stuff' geometry (not written by nnU-Net v2?)")
    return props


def read_probabilities(path: str | Path) -> np.ndarray:
    """The ``probabilities`` array ``(C, z, y, x)`` of an nnU-Net ``.npz``, as float32."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "probabilities" not in npz.files:
                raise InputError(path, f"no 'probabilities' array (has {', '.join(npz.files)})")
            probs = np.asarray(npz["probabilities"], dtype=np.float32)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(path, f"cannot read .npz ({exc})") from None
    if probs.ndim != 4:
        raise InputError(path, f"probabilities must be (C, z, y, x), got {probs.shape}")
    return probs


def sitk_affine(props: dict[str, Any]) -> np.ndarray:
    """The RAS voxel-to-world affine (nibabel's) of the image nnU-Net described in ``props``.

    ITK world = origin + direction @ diag(spacing) @ index, in LPS; nibabel's index order is
    ITK's, its world is RAS.
    """
    sitk = props["sitk_stuff"]
    spacing = np.asarray(sitk["spacing"], dtype=float)
    direction = np.asarray(sitk["direction"], dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS @ np.asarray(sitk["origin"], dtype=float)
    return affine


def probabilities_on_image(
    npz: str | Path, image_shape: tuple[int, ...], image_affine: np.ndarray, tol: float = 1e-3
) -> np.ndarray:
    """An nnU-Net ``.npz`` as ``(C, i, j, k)`` on nibabel's voxel grid of the image.

    Refuses (:class:`InputError`) a file whose shape or geometry (from its ``.pkl``) is not
    the image's.
    """
    npz = Path(npz)
    probs = read_probabilities(npz)
    spatial = tuple(probs.shape[1:][::-1])
    if spatial != tuple(image_shape):
        raise InputError(
            npz, f"probabilities cover {spatial} voxels (x, y, z), the image {tuple(image_shape)}"
        )
    props = read_properties(npz.with_suffix(".pkl"))
    if not np.allclose(sitk_affine(props), image_affine, atol=tol):
        raise InputError(
            npz.with_suffix(".pkl"),
            "geometry (origin / spacing / direction) differs from the image",
        )
    return np.ascontiguousarray(probs.transpose(0, 3, 2, 1))
