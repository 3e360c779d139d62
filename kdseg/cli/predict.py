"""``kdseg-predict``: CT volume(s) in, label NIfTI out with the input's exact geometry."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, build_predictor, guarded
from kdseg.data.dicom import is_dicom_folder
from kdseg.data.io import NIFTI_SUFFIXES, is_nifti, load_volume, save_label
from kdseg.errors import InputError
from kdseg.eval.lesions import format_lesion_report, lesion_report, write_lesion_report
from kdseg.eval.overlay import save_overlay


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


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
@guarded("kdseg-predict")
def main(cfg: DictConfig) -> None:
    pairs = plan_outputs(Path(cfg.input), Path(cfg.output))
    predictor, *_ = build_predictor(cfg, threshold=cfg.threshold, progress=True)
    for source, target in pairs:
        image = load_volume(source)
        label = predictor.predict(image)
        save_label(label, image, target)
        print(f"{source} -> {target}")
        stem = target.parent / _stem(target)
        if cfg.report:
            report = lesion_report(label, [float(z) for z in image.header.get_zooms()[:3]])
            report.update({"cascade": predictor.last} if predictor.last else {})
            report.update({"notes": predictor.notes} if predictor.notes else {})
            write_lesion_report(report, f"{stem}.lesions.json", f"{stem}.lesions.txt")
            print(format_lesion_report(report))
        if cfg.overlay:
            canonical = predictor.pre
            png = save_overlay(
                canonical.reorient(image),
                canonical.reorient(image, label),
                f"{stem}.png",
                title=source.name,
                spacing=canonical.spacing(image),
            )
            print(f"overlay: {png}")
