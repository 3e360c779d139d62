"""``kdseg-predict``: CT volume(s) in, label NIfTI out with the input's exact geometry."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, build_predictor, fast_help, format_timings, guarded, timed
from kdseg.errors import InputError

# nibabel, pydicom, scipy and the runtimes are imported where used, not here, so that
# `kdseg-predict --help` starts in well under a second.


def plan_outputs(source: Path, output: Path) -> list[tuple[Path, Path]]:
    """Pairs (input, output file): one file or DICOM series, or every volume in a folder."""
    from kdseg.data.dicom import is_dicom_folder
    from kdseg.data.io import is_nifti

    if not source.exists():
        raise InputError(source, "input not found")
    single = source.is_file() or is_dicom_folder(source)
    if single:
        if is_nifti(output) or output.suffix == ".dcm":  # .dcm: output_format=dicom-seg
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
    from kdseg.data.io import NIFTI_SUFFIXES

    name = path.name
    for suffix in (*NIFTI_SUFFIXES[::-1], ".seg.dcm", ".dcm"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _write_seg(label, source: Path, target: Path, task, data: dict) -> Path:
    """``output_format=dicom-seg``: a DICOM SEG of ``source`` (a series folder) beside/at
    ``target`` (``<stem>.seg.dcm``, or ``target`` itself when it ends in ``.dcm``)."""
    from kdseg.data.dicom_seg import write_dicom_seg

    seg = target if target.suffix == ".dcm" else target.parent / f"{_stem(target)}.seg.dcm"
    organ = str(data.get("organ") or "organ")
    return write_dicom_seg(label, source, seg, labels=task.output_labels, organ=organ)


@fast_help("predict")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
@guarded("kdseg-predict")
def main(cfg: DictConfig) -> None:
    from kdseg.data.io import load_volume, save_label

    pairs = plan_outputs(Path(cfg.input), Path(cfg.output))
    if cfg.output_format not in ("nifti", "dicom-seg"):
        raise InputError(None, f"output_format={cfg.output_format}: use nifti or dicom-seg")
    if cfg.output_format == "dicom-seg" and not all(source.is_dir() for source, _ in pairs):
        raise InputError(cfg.input, "output_format=dicom-seg needs DICOM series folders as input")
    steps: dict[str, float] = {}
    with timed(steps, "load model"):
        predictor, bundle, *_ = build_predictor(cfg, threshold=cfg.threshold, progress=True)
    for source, target in pairs:
        with timed(steps, "read"):
            image = load_volume(source)
        label = predictor.predict(image)
        for name, seconds in predictor.timings.items():
            steps[name] = steps.get(name, 0.0) + seconds
        with timed(steps, "write"):
            if cfg.output_format == "dicom-seg":
                target = _write_seg(label, source, target, predictor.task, bundle.data)
            else:
                save_label(label, image, target)
        print(f"{source} -> {target}")
        stem = target.parent / _stem(target)
        if cfg.report:
            with timed(steps, "report"):
                from kdseg.eval.lesions import (
                    format_lesion_report,
                    lesion_report,
                    write_lesion_report,
                )

                report = lesion_report(label, [float(z) for z in image.header.get_zooms()[:3]])
                report.update({"cascade": predictor.last} if predictor.last else {})
                report.update({"notes": predictor.notes} if predictor.notes else {})
                write_lesion_report(report, f"{stem}.lesions.json", f"{stem}.lesions.txt")
            print(format_lesion_report(report))
        if cfg.overlay:
            from kdseg.eval.overlay import save_overlay  # matplotlib: only when asked for

            canonical = predictor.pre
            png = save_overlay(
                canonical.reorient(image),
                canonical.reorient(image, label),
                f"{stem}.png",
                title=source.name,
                spacing=canonical.spacing(image),
            )
            print(f"overlay: {png}")
    if cfg.verbose:
        print(format_timings(steps))
