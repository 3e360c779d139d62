"""``kdseg-predict``: CT volume(s) in, label NIfTI out with the input's exact geometry.

Every output path is checked before the model loads (never over an input, never inside an
input folder). One case's files (lesion report, overlay, label) are written to temporaries
and renamed together, the label last: a label on disk always has its report beside it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
from omegaconf import DictConfig, OmegaConf

from kdseg.cli import build_predictor, command, stage_list
from kdseg.data.dicom import is_dicom_folder
from kdseg.data.io import NIFTI_SUFFIXES, is_nifti, label_image, load_volume, nifti_suffix
from kdseg.errors import InputError, atomic_group
from kdseg.eval.lesions import format_lesion_report, lesion_report, write_lesion_report
from kdseg.eval.overlay import save_overlay
from kdseg.guards import check_output, check_outputs


def plan_outputs(source: Path, output: Path) -> list[tuple[Path, Path]]:
    """Pairs (input, output file): one file or DICOM series, or every volume in a folder."""
    if not source.exists():
        raise InputError(source, "input not found")
    single = source.is_file() or is_dicom_folder(source)
    if single:
        if is_nifti(output):
            return [(source, output)]
        return [(source, output / f"{_stem(source)}.nii.gz")]
    inputs = sorted(
        p for p in source.iterdir() if is_nifti(p) or (p.is_dir() and is_dicom_folder(p))
    )
    if not inputs:
        raise InputError(source, "no NIfTI files or DICOM series in this folder")
    if is_nifti(output):
        raise InputError(output, "a folder of inputs needs an output folder, not a file name")
    return [(p, output / f"{_stem(p)}.nii.gz") for p in inputs]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def planned_files(target: Path, report: bool, overlay: bool) -> list[Path]:
    """Every file one prediction writes, in commit order: the label, the file that means
    "complete", comes last (see :func:`kdseg.errors.atomic_group`)."""
    stem = target.parent / _stem(target)
    files = [Path(f"{stem}.lesions.json"), Path(f"{stem}.lesions.txt")] if report else []
    return [*files, *([Path(f"{stem}.png")] if overlay else []), target]


@command("kdseg-predict", "predict")
def main(cfg: DictConfig) -> None:
    source, output = Path(cfg.input), Path(cfg.output)
    pairs = plan_outputs(source, output)
    ckpts = stage_list(None if OmegaConf.is_missing(cfg, "ckpt") else cfg.ckpt)
    inputs = [source, *(s for s, _ in pairs), *ckpts, *stage_list(cfg.artifact)]
    if not is_nifti(output):
        check_output(output, inputs, folder=True)
    plans = [planned_files(t, bool(cfg.report), bool(cfg.overlay)) for _, t in pairs]
    check_outputs([f for files in plans for f in (files[-1], *files[:-1])], inputs)
    predictor, *_ = build_predictor(cfg, threshold=cfg.threshold, progress=True)
    for (source, target), files in zip(pairs, plans, strict=True):
        image = load_volume(source, nonfinite=cfg.nonfinite)
        label = predictor.predict(image)
        suffixes = [None] * (len(files) - 1) + [nifti_suffix(target)]
        with atomic_group(files, suffixes) as temps:
            if cfg.report:
                report = lesion_report(label, [float(z) for z in image.header.get_zooms()[:3]])
                report.update({"cascade": predictor.last} if predictor.last else {})
                report.update({"notes": predictor.notes} if predictor.notes else {})
                write_lesion_report(report, temps[0], temps[1])
            if cfg.overlay:
                canonical = predictor.pre
                save_overlay(
                    canonical.reorient(image),
                    canonical.reorient(image, label),
                    temps[-2],
                    title=source.name,
                    spacing=canonical.spacing(image),
                )
            nib.save(label_image(label, image), str(temps[-1]))
        print(f"{source} -> {target}")
        if cfg.report:
            print(format_lesion_report(report))
        if cfg.overlay:
            print(f"overlay: {files[-2]}")
