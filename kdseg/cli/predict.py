"""``kdseg-predict``: CT volume(s) in, label NIfTI out with the input's exact geometry.

Every output path is checked before the model loads (never over an input, never inside an
input folder: :mod:`kdseg.guards`). One case's files (lesion report, overlay, label) are
written to temporaries and renamed together, the label last: a label on disk always has its
report beside it (:func:`kdseg.errors.atomic_group`). When a kdseg label is replaced, the
earlier run's report or overlay that this run does not write goes with it
(:func:`stale_siblings`): numbers or a picture from another model never sit beside the label.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdseg.cli import (
    build_predictor,
    command,
    format_timings,
    number,
    require_paths,
    require_whole_volume,
    stage_list,
    timed,
)
from kdseg.errors import (
    InputError,
    atomic_group,
    removing_new_folders,
    warning_line,
)

# nibabel, pydicom, scipy and the runtimes are imported where used, not here, so that
# `kdseg-predict --help` starts in well under a second.


def plan_outputs(
    source: Path, output: Path, notes: list[str] | None = None
) -> list[tuple[Path, Path]]:
    """Pairs (input, output file): one file or DICOM series, or every volume in a folder
    (:func:`~kdseg.data.sources.folder_inputs`; what it passes over is added to ``notes``).
    A label is named ``<stem>.nii.gz`` after its input, whose suffix may be in capitals
    (``B.NII.GZ`` -> ``B.nii.gz``); two inputs of one stem, or of stems that differ only in
    case, are refused (their outputs would be one file). An output of a NIfTI suffix of mixed
    case (``out.Nii.Gz``) is refused as such an input is: it was taken for a folder name."""
    from kdseg.data.io import is_nifti, mixed_case_nifti
    from kdseg.data.sources import check_distinct_names, folder_inputs

    if not source.exists():
        raise InputError(source, "input not found")
    if (refusal := mixed_case_nifti(output)) is not None:
        raise refusal
    inputs, note = ([source], None) if source.is_file() else folder_inputs(source)
    if inputs == [source]:  # one file or DICOM series
        if is_nifti(output) or _is_dcm(output):  # .dcm: output_format=dicom-seg
            return [(source, output)]
        stem = _stem(source if source.name not in ("", "..") else source.resolve())
        if not stem:  # `input=/`: nothing to name the label after
            raise InputError(source, "no name to give the output; pass output=<name>.nii.gz")
        return [(source, output / f"{stem}.nii.gz")]
    if not inputs:
        held = "" if note is None else f" ({note})"
        raise InputError(source, f"no NIfTI files or DICOM series in this folder{held}")
    if is_nifti(output) or _is_dcm(output):
        raise InputError(output, "a folder of inputs needs an output folder, not a file name")
    check_distinct_names(((f"{_stem(p)}.nii.gz", p) for p in inputs), "output")
    if note is not None and notes is not None:
        notes.append(f"{source}: {note}")
    return [(p, output / f"{_stem(p)}.nii.gz") for p in inputs]


def _is_dcm(path: Path) -> bool:
    """Whether ``path`` names a DICOM SEG file (``.dcm``, in any case: ``x.DCM`` too)."""
    return path.suffix.lower() == ".dcm"


def _stem(path: Path) -> str:
    from kdseg.data.io import nifti_stem

    name = path.name
    for suffix in (".seg.dcm", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return nifti_stem(name)


def _seg_path(target: Path) -> Path:
    """Where ``output_format=dicom-seg`` writes: ``<stem>.seg.dcm``, or ``target`` if ``.dcm``."""
    return target if _is_dcm(target) else target.parent / f"{_stem(target)}.seg.dcm"


def _write_seg(label, source: Path, path: Path, task, data: dict, image: Any = None) -> Path:
    """``output_format=dicom-seg``: a DICOM SEG of ``source`` (a series folder) at ``path``,
    from the slice headers read with ``image`` (the series as loaded)."""
    from kdseg.data.dicom_seg import write_dicom_seg
    from kdseg.data.tasks import organ_name

    organ = organ_name(data)
    return write_dicom_seg(label, source, path, labels=task.output_labels, organ=organ, image=image)


def _siblings(target: Path) -> tuple[list[Path], list[Path]]:
    """The lesion report's two files and the overlay that go beside the label ``target``."""
    stem = target.parent / _stem(target)
    return [Path(f"{stem}.lesions.json"), Path(f"{stem}.lesions.txt")], [Path(f"{stem}.png")]


def planned_files(target: Path, cfg: DictConfig) -> list[Path]:
    """Every file one prediction writes, in commit order: the label (NIfTI or DICOM SEG), the
    file whose presence means "complete", comes last."""
    report, overlay = _siblings(target)
    files = [*(report if cfg.report else []), *(overlay if cfg.overlay else [])]
    return [*files, _seg_path(target) if cfg.output_format == "dicom-seg" else target]


def stale_siblings(files: list[Path]) -> list[Path]:
    """The report and overlay files an earlier prediction of this case left that this run
    (``files``, :func:`planned_files`) does not write, where the label it replaces is
    kdseg's: they would sit beside the new label with another model's numbers or picture.
    Only those exact names, only plain files, and only beside a kdseg label."""
    from kdseg.data.io import written_by_kdseg

    label = files[-1]
    if not label.is_file() or not written_by_kdseg(label):
        return []
    report, overlay = _siblings(label)
    return [f for f in (*report, *overlay) if f not in files and f.is_file() and not f.is_symlink()]


def _warm(argv: list[str]) -> Callable[[], None]:
    """Before the config is composed: start reading the ``.nii.gz`` named by ``input=`` (the
    last one, as Hydra takes the last); what is not taken is dropped when the command ends."""
    from kdseg.data.niigz import forget_prefetched, prefetch

    inputs = [arg.removeprefix("input=") for arg in argv if arg.startswith("input=")]
    if inputs:
        prefetch(inputs[-1])
    return forget_prefetched


@command(
    "kdseg-predict",
    "predict",
    one_shot=True,
    warm=_warm,
    paths=("input", "output", "ckpt", "artifact"),
    null_paths=("ckpt", "artifact"),  # ckpt=null: an artifact alone; input/output never null
)
def main(cfg: DictConfig) -> None:
    from kdseg.data.io import (
        HU_CHECK,
        NONFINITE,
        check_choice,
        check_unoriented,
        is_nifti,
        load_volume,
        require_orientation,
    )
    from kdseg.data.niigz import forget_prefetched, prefetch
    from kdseg.eval.postprocess import check_postprocess, plan
    from kdseg.guards import check_output, check_outputs

    require_paths(cfg, "input", "output")
    if cfg.overlay:  # the lean runtime has no matplotlib: say so before the model loads
        _require_matplotlib()
    threshold = number(cfg, "threshold", float)  # its range: build_predictor
    postprocess = check_postprocess(cfg.postprocess)
    source, output = Path(cfg.input), Path(cfg.output)
    notes: list[str] = []
    pairs = plan_outputs(source, output, notes)
    if cfg.output_format not in ("nifti", "dicom-seg"):
        raise InputError(None, f"output_format={cfg.output_format}: use nifti or dicom-seg")
    check_choice("nonfinite", cfg.nonfinite, NONFINITE)  # before the model loads and any
    check_unoriented(cfg.unoriented)  # case is written
    check_choice("hu_check", cfg.hu_check, HU_CHECK)
    if cfg.output_format == "dicom-seg" and not all(source.is_dir() for source, _ in pairs):
        raise InputError(cfg.input, "output_format=dicom-seg needs DICOM series folders as input")
    if cfg.output_format == "nifti" and _is_dcm(output):
        raise InputError(
            output, "a .dcm output needs output_format=dicom-seg; name a .nii.gz file otherwise"
        )
    ckpts = stage_list(None if OmegaConf.is_missing(cfg, "ckpt") else cfg.ckpt)
    inputs = [source, *(s for s, _ in pairs), *ckpts, *stage_list(cfg.artifact)]
    if not is_nifti(output) and not _is_dcm(output):
        check_output(output, inputs, folder=True)
    plans = [planned_files(target, cfg) for _, target in pairs]
    check_outputs([f for files in plans for f in (files[-1], *files[:-1])], inputs)
    if not cfg.overwrite:
        for files in plans:
            _check_replaceable(files)
    for note in notes:  # what the input folder holds besides scans: once nothing is refused
        print(warning_line(note), file=sys.stderr)
    steps: dict[str, float] = {}
    # A .nii.gz input is read and decompressed in a daemon thread (kdseg.data.niigz.prefetch,
    # which releases the GIL) while the model loads; the next input of a folder while this
    # one's report and label are written. Every check runs on the real read (load_volume).
    # folders this run creates for its outputs: removed again, if still empty, on any failure
    # (a folder with finished cases stays)
    try:
        with removing_new_folders(f.parent for files in plans for f in files):
            prefetch(pairs[0][0])
            with timed(steps, "load model"):
                predictor, bundle, *_ = build_predictor(cfg, threshold=threshold, progress=True)
            require_whole_volume(predictor, cfg)
            pair = plan(  # a cascade: stage 2's, whose labels are written
                postprocess,
                predictor.task,
                predictor.pre.config.roi_components,
                bundle.data.get("organ"),
            )
            for i, ((source, _), files) in enumerate(zip(pairs, plans, strict=True)):
                with timed(steps, "read (wait)"):
                    image = load_volume(
                        source, nonfinite=cfg.nonfinite, dicom_int16=True, hu_check=cfg.hu_check
                    )
                require_orientation(image, source, cfg.unoriented)
                following = pairs[i + 1][0] if i + 1 < len(pairs) else None
                _predict_one(cfg, predictor, bundle, image, source, files, steps, following, pair)
    finally:
        forget_prefetched()
    if cfg.verbose:
        print(format_timings(steps))


def _require_matplotlib() -> None:
    """``overlay=true`` draws with matplotlib, which ``requirements-runtime.txt`` leaves out:
    refused in one line (exit code 2) before anything loads, not after the inference."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(None, "overlay=true needs matplotlib: pip install matplotlib") from None


def _check_replaceable(files: list[Path]) -> None:
    """Refuse to replace existing files unless they are an earlier kdseg prediction (its label,
    the last of ``files``, or that case's label in the other output format, marked as
    kdseg's): a scan or a reference mask that happens to sit where an output goes is
    somebody's data (``overwrite=true`` replaces it anyway)."""
    from kdseg.data.io import written_by_kdseg

    existing = [f for f in files if os.path.lexists(f)]
    label = files[-1]
    # the label decides; with none yet, the other output format's label (a rerun as NIfTI
    # after a DICOM SEG run finds that run's report)
    labels = [label] if os.path.lexists(label) else _other_labels(label)
    if existing and not any(written_by_kdseg(f) for f in labels if os.path.lexists(f)):
        raise InputError(
            existing[0],
            "exists and is not a kdseg prediction; choose another output "
            "(overwrite=true replaces it)",
        )


def _other_labels(label: Path) -> list[Path]:
    """The label the other ``output_format`` writes for the same case (its report's sibling)."""
    stem = label.parent / _stem(label)
    return [Path(f"{stem}.nii.gz")] if _is_dcm(label) else [Path(f"{stem}.seg.dcm")]


def _predict_one(
    cfg: DictConfig,
    predictor: Any,
    bundle: Any,
    image: Any,
    source: Path,
    files: list[Path],
    steps: dict[str, float],
    following: Path | None = None,
    postprocess: tuple[str, int] = ("none", 1),
) -> None:
    """Predict one loaded input and write its files (report, overlay, label last); the
    ``following`` input starts to be read once the network is done with this one.
    ``postprocess``: the mode as checked by :func:`main` and how many components it keeps."""
    from kdseg.data.io import geometry_only

    label = _predict_label(predictor, image, steps, following)
    for note in predictor.notes:  # on stderr too: the report may be off, or unread
        print(warning_line(f"{source}: {note}"), file=sys.stderr)
    if not cfg.get("overlay"):  # the input's voxels are freed before the outputs are written
        image = geometry_only(image)
    _write_case(cfg, predictor, bundle, label, image, source, files, steps, postprocess)


def _predict_label(
    predictor: Any, image: Any, steps: dict[str, float], following: Path | None = None
) -> Any:
    """The label volume of one loaded input, its step timings added to ``steps``; the
    ``following`` input starts to be read once the network is done with this one."""
    from kdseg.data.niigz import prefetch

    label = predictor.predict(image)
    if following is not None:
        prefetch(following)
    for name, seconds in predictor.timings.items():
        steps[name] = steps.get(name, 0.0) + seconds
    return label


def _write_case(
    cfg: DictConfig,
    predictor: Any,
    bundle: Any,
    label: Any,
    image: Any,
    source: Path,
    files: list[Path],
    steps: dict[str, float],
    postprocess: tuple[str, int] = ("none", 1),
) -> None:
    """Write one case's files (report, overlay, label last) for ``label``, predicted from
    ``image`` (whose voxels only the overlay needs); ``postprocess`` as in :func:`_predict_one`."""
    from kdseg.data.io import label_image, voxel_sizes
    from kdseg.data.niigz import save_nifti

    post: dict[str, Any] = {}
    mode, keep = postprocess
    if mode != "none":  # on the final labels (a cascade's stage 2's): what is written
        from kdseg.eval.postprocess import postprocess_labels

        with timed(steps, "postprocess"):
            label, post = postprocess_labels(label, mode, keep)
    # renamed in order: report, overlay, label last; then an earlier run's report or overlay
    # that this run does not write is removed
    with atomic_group(files, remove=stale_siblings(files)) as temps:
        if cfg.report:
            with timed(steps, "report"):
                from kdseg.eval.lesions import lesion_report, report_labels, write_lesion_report
                from kdseg.eval.postprocess import note as postprocess_note

                organ, tumor = report_labels(predictor.task.output_labels)
                report = lesion_report(
                    label, list(voxel_sizes(image)), organ, tumor, affine=image.affine
                )
                report.update({"cascade": predictor.last} if predictor.last else {})
                line = postprocess_note(post)  # none for an empty prediction
                notes = [*predictor.notes, *([line] if line else [])]
                report.update({"notes": notes} if notes else {})
                report.update({} if predictor.tta == "none" else {"tta": predictor.tta})
                report.update({"postprocess": post} if post else {})
                write_lesion_report(report, temps[0], temps[1])
        if cfg.overlay:
            from kdseg.data.preprocess import Preprocessor
            from kdseg.data.preprocess_config import PreprocessConfig
            from kdseg.eval.lesions import report_labels
            from kdseg.eval.overlay import save_overlay  # matplotlib: only when asked for

            # the montage draws RAS arrays (anterior up, the patient's right on the left),
            # whatever canonical orientation the model itself works in; each panel is titled
            # with the label's own array index of its slice, as the report's centroids are
            ras = Preprocessor(PreprocessConfig(axcodes="RAS"))
            axis, index = ras.input_indices(image, 2)
            organ, tumor = report_labels(predictor.task.output_labels)
            save_overlay(
                ras.reorient(image),
                ras.reorient(image, label),
                temps[-2],
                title=source.name,
                spacing=ras.spacing(image),
                slice_titles=[f"{'xyz'[axis]} = {i}" for i in index],
                organ_labels=organ,
                tumor_label=tumor,
            )
        with timed(steps, "write"):
            if cfg.output_format == "dicom-seg":
                _write_seg(label, source, temps[-1], predictor.task, bundle.data, image)
            else:
                save_nifti(label_image(label, image), temps[-1])
    print(f"{source} -> {files[-1]}")
    if cfg.report:
        from kdseg.eval.lesions import format_lesion_report

        print(format_lesion_report(report))
        print(f"lesion report: {files[1]} and {files[0].name}")
    if cfg.overlay:
        print(f"overlay: {files[-2]}")


if __name__ == "__main__":
    main()
