"""``kdseg-export``: a checkpoint's student -> ONNX (fp32 or int8) or an AOTInductor package.

One function, :func:`export_checkpoint`, runs the whole recipe for one checkpoint:

1. load the network alone (``net.*`` weights: a distilled checkpoint yields the student);
2. optionally prune channels and recover with a short fine-tuning run (:mod:`.prune`);
3. export (:mod:`.onnx_export` or :mod:`.aoti`) with the checkpoint's data info and model
   config embedded, so the artefact runs with no checkpoint (:mod:`.artifact`);
4. check the artefact against the eager network on real slices of the training cache;
5. for ``quantize=int8``: quantize the fp32 export (:mod:`.quantize`), time fp32 against int8
   on this machine and warn when int8 is not faster.

int8 policy (documented choice): the fp32 twin is always written (``<name>.fp32.onnx``); the
int8 file only when it agrees with that twin on the check slices (argmax agreement and lowest
foreground Dice, the thresholds of :mod:`.onnx_export`); otherwise the export refuses it with
the numbers, unless ``int8.force=true``. When int8 is not at least ``min_speedup``
times faster, the export prints a warning naming the fp32 file, and the int8 metadata records
``"slower_than_fp32": true`` (``kdseg-bench`` reports the same measurement per model).

Every file (the artefact, the fp32 twin, a ``.pt2``'s sidecar; both stages of a cascade) is
built, checked, timed and given its final metadata under a temporary name beside its output,
and all are renamed together at the very end (:func:`~kdseg.errors.atomic_group`): a refused,
failed or interrupted export leaves the files that were there before, and no new one (except
the fp32 twin of a refused int8 file, which passed its own check), no pruning fine-tune run
folder (kept beside a written artefact only, whose metadata names it) and no empty folder it
created for its outputs (:func:`~kdseg.errors.removing_new_folders`). An existing file is
replaced only when it is a kdseg export of the same checkpoint, or with ``overwrite=true``.
Its options, and the names of the files it writes, come from :mod:`.export_options`.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

import kdseg.deploy.backends  # noqa: F401  (registers the aoti backend used by the check)
from kdseg.data.dataset import DataSetup
from kdseg.deploy.aoti import export_aoti
from kdseg.deploy.artifact import artifact_metadata, sidecar_path, sidecar_text
from kdseg.deploy.export_options import (
    ExportOptions,
    check_replaceable,
    default_output,
    fp32_twin,
    output_files,
    validate_options,
)
from kdseg.deploy.onnx_export import (
    MIN_AGREEMENT,
    MIN_AGREEMENT_INT8,
    MIN_FOREGROUND_DICE,
    MIN_FOREGROUND_DICE_INT8,
    compare,
    example_input,
    export_onnx,
    input_dims,
    onnx_runner,
    torch_reference,
    update_onnx_metadata,
)
from kdseg.deploy.prune import finetune, prune_channels
from kdseg.deploy.quantize import quantize_int8, time_alternating
from kdseg.deploy.samples import (
    export_data_setup,
    original_val_dice,
    run_config,
    sample_positions,
    sample_slices,
    slices_at,
)
from kdseg.errors import InputError, atomic_group, commit_temp, removing_new_folders
from kdseg.eval.checkpoint import Bundle, load_bundle
from kdseg.eval.inference import BACKENDS
from kdseg.guards import check_output
from kdseg.models.cost import model_cost
from kdseg.models.memory_format import set_channels_last

log = logging.getLogger(__name__)
#: export-size fallback when neither data nor a fixed preprocessing size is known
FALLBACK_SIZE = (256, 256)


@dataclass
class ExportResult:
    """The artefact written, its metadata, and warnings the user must see."""

    artifact: Path
    metadata: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    extra_files: list[Path] = field(default_factory=list)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``update`` wins), for config overrides."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def finetune_config(run_cfg: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The recovery run's config: the original run's, shortened, one process, no wandb."""
    base = {
        "seed": 123,
        "optim": {"lr": 1.0e-3, "weight_decay": 0.0, "min_lr": 1.0e-6},
        "loss": {},
        "trainer": {"accelerator": "cpu", "max_epochs": 8, "num_sanity_val_steps": 0},
    }
    if run_cfg:
        base = _merge(
            base,
            {
                k: run_cfg[k]
                for k in ("seed", "optim", "loss", "trainer", "checkpoint")
                if k in run_cfg
            },
        )
    cfg = _merge(base, overrides)
    # the fine-tune runs in this one process, whatever the run's DDP or nodes were
    single = {"devices": 1, "num_nodes": 1}
    cfg["trainer"] = {k: v for k, v in cfg["trainer"].items() if k != "strategy"} | single
    cfg["logger"] = {"wandb": {"enabled": False}}
    cfg.pop("resume", None)
    return cfg


def model_input_size(bundle: Bundle, check: np.ndarray | None) -> tuple[int, int]:
    """The in-plane size the network sees: real slices', the preprocessing's, or 256x256."""
    if check is not None:
        return (int(check.shape[-2]), int(check.shape[-1]))
    pre = bundle.preprocess
    fixed = pre.crop_size or pre.in_plane_size
    return tuple(fixed) if fixed else FALLBACK_SIZE  # type: ignore[return-value]


@dataclass
class _Job:
    """State shared by the export steps of one checkpoint."""

    opts: ExportOptions
    bundle: Bundle
    out: Path
    setup: DataSetup | None
    run_cfg: dict[str, Any] | None
    check: np.ndarray | None
    model: nn.Module
    facts: dict[str, Any]
    warnings: list[str]
    #: pruning's fine-tune run folders: kept only when the export succeeds (its metadata
    #: records the run as ``finetune_run``), removed on every other exit
    finetune_runs: list[Path] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        return int(self.bundle.data.get("in_channels", 2 * self.bundle.context + 1))

    @property
    def static(self) -> bool:
        return self.opts.spatial == "static"

    def metadata(self) -> dict[str, Any]:
        return artifact_metadata(self.bundle, **self.facts)

    def verify(
        self, backend: Any, minimum: float = MIN_AGREEMENT, min_dice: float = MIN_FOREGROUND_DICE
    ) -> None:
        """Compare ``backend`` with the eager network on the check slices (when there are any);
        warn when their argmax agreement or lowest foreground Dice is below the minimum."""
        if self.check is None:
            return
        result = compare(backend, torch_reference(self.model), self.check, "pytorch fp32")
        if not result.acceptable(minimum, min_dice):
            self.warnings.append(
                f"exported model disagrees with PyTorch ({result}; minimums: agreement "
                f"{minimum}, foreground Dice {min_dice}): measure it with kdseg-eval before "
                "deploying it"
            )
        self.facts["check"] = result.as_dict()


def export_checkpoint(opts: ExportOptions) -> ExportResult:
    """Run the export recipe of the module docstring for ``opts``; return what was written."""
    return export_stages([opts])[0]


def export_stages(stages: list[ExportOptions]) -> list[ExportResult]:
    """Export one checkpoint, or the two stages of a cascade, all or nothing.

    Every stage's outputs are checked (writable, replaceable) before any work starts; the
    files are built under temporary names and renamed together once every stage passed. An
    int8 file refused by its check still leaves its fp32 twin, as the refusal says.
    """
    jobs = [_start(opts) for opts in stages]
    for job in jobs:
        _draw_check_slices(job)
    plans = [output_files(job.opts, job.out) for job in jobs]
    targets = [path for files in plans for path in files]
    results: list[ExportResult] = []
    # the folders made for the outputs go again, if still empty, on any failure or signal
    with removing_new_folders(path.parent for path in targets):
        try:
            with atomic_group(targets) as temps:
                finals = {  # as given and as resolved (ONNX Runtime's errors name the real path)
                    name: f
                    for t, f in zip(temps, targets, strict=True)
                    for name in (str(t), str(t.resolve()))
                }
                try:
                    for job, files in zip(jobs, plans, strict=True):
                        mine = [temps[targets.index(f)] for f in files]
                        try:
                            results.append(_build(job, mine))
                        except Int8Refused:
                            commit_temp(mine[0], files[0])  # the fp32 twin: checked, named above
                            job.finetune_runs.clear()  # which records its fine-tune run
                            raise
                except InputError as exc:  # a check's error names the temporary: name the output
                    if exc.path not in finals:
                        raise
                    raise InputError(finals[exc.path], exc.message) from None
        except BaseException:  # SIGTERM's Terminated and Ctrl-C too: no fine-tune run left
            for job in jobs:
                for run_dir in job.finetune_runs:
                    shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return results


class Int8Refused(InputError):
    """The int8 file disagrees with its fp32 twin (and ``int8.force`` is off)."""


def _build(job: _Job, temps: list[Path]) -> ExportResult:
    """Prune, export, check and (int8) quantize and time ``job`` into ``temps``, the
    temporaries of :func:`output_files` (metadata and messages name the final files)."""
    opts = job.opts
    if opts.prune:
        _prune(job)
    size = model_input_size(job.bundle, job.check)
    cost = model_cost(job.model, size, job.in_channels)
    job.facts.update(
        params=int(cost["params"]),
        mult_adds=int(cost["mult_adds"]),
        cost_input_size=list(size),
        in_channels=job.in_channels,
        spatial=opts.spatial,
    )
    example = example_input(job.in_channels, size)
    if opts.format == "aoti":
        sidecar, package = temps
        export_aoti(job.model, package, example, static=job.static)
        job.verify(BACKENDS["aoti"](package))
        meta = job.metadata()
        sidecar.write_text(sidecar_text(meta))
        return ExportResult(job.out, meta, job.warnings, [sidecar_path(job.out)])
    fp32_path = temps[0]
    export_onnx(job.model, fp32_path, example, job.metadata(), static=job.static)
    job.facts["input_dims"] = input_dims(fp32_path)
    job.verify(onnx_runner(fp32_path))
    update_onnx_metadata(fp32_path, job.metadata())
    if not opts.quantize:
        return ExportResult(job.out, job.metadata(), job.warnings)
    return _quantize(job, fp32_path, temps[1])


def _start(opts: ExportOptions) -> _Job:
    """Load the checkpoint, find its training data and draw the check slices."""
    validate_options(opts)
    bundle = load_bundle(opts.ckpt)
    set_channels_last(bundle.model, False)  # ONNX, int8 and AOTI choose their own layouts
    name = bundle.model_config["name"]
    out = Path(
        opts.output or default_output(opts.ckpt, name, opts.format, opts.quantize, opts.prune)
    )
    if opts.data_root and not Path(opts.data_root).is_dir():
        raise InputError(opts.data_root, "data_root= folder not found")
    run_cfg = run_config(opts.ckpt)
    notes: list[str] = []  # recorded cases no longer in the folder
    setup = export_data_setup(bundle, opts.data_root, run_cfg, notes)
    # the dataset actually read (data_root=, else the training run's) is an input too
    inputs = [opts.ckpt, opts.data_root, None if setup is None else setup.cfg.get("root")]
    for path in output_files(opts, out):
        check_output(path, inputs)
    if not opts.overwrite:
        check_replaceable(output_files(opts, out), opts.ckpt)
    if setup is None and (opts.quantize or opts.prune):
        what = "int8 calibration" if opts.quantize else "pruning recovery"
        raise InputError(
            opts.ckpt,
            f"{what} needs the training data, whose folder was not found: pass data_root=DIR",
        )
    if opts.spatial == "static" and not (
        bundle.preprocess.crop_size or bundle.preprocess.in_plane_size
    ):
        raise InputError(
            opts.ckpt,
            "spatial=static needs a fixed model input size (preprocess in_plane_size or "
            "crop_size); this checkpoint sees native-size slices",
        )
    if setup is not None and (opts.quantize or opts.prune) and not setup.split.get("train"):
        what = "int8 calibration" if opts.quantize else "pruning recovery"
        raise InputError(
            opts.ckpt,
            f"{what} draws from this checkpoint's training cases, and none of them is in "
            f"{setup.cfg.get('root')}: pass data_root= the folder it was trained on",
        )
    if setup is not None and opts.prune and not setup.split.get("val"):
        raise InputError(  # its recovery picks and checks the pruned network on them
            opts.ckpt,
            "pruning recovery validates on this checkpoint's validation cases, and none of "
            f"them is in {setup.cfg.get('root')}: pass data_root= the folder it was trained on",
        )
    facts = {"format": opts.format, "precision": "fp32"}
    return _Job(opts, bundle, out, setup, run_cfg, None, bundle.model, facts, notes)


def _draw_check_slices(job: _Job) -> None:
    """The real slices the export is checked on (val and train cases), when there are data."""
    opts = job.opts
    splits = ("val", "train")
    if opts.check_slices <= 0:  # the user turned the check off
        return
    if job.setup is None:
        job.warnings.append(
            "no training data found (pass data_root=DIR): export not checked on real slices"
        )
    elif not any(job.setup.split.get(s) for s in splits):
        job.warnings.append(
            f"none of the checkpoint's cases is in {job.setup.cfg.get('root')}: export not "
            "checked on real slices"
        )
    else:
        job.check = sample_slices(
            job.setup, splits, opts.check_slices, job.bundle.context, opts.seed, owner=opts.ckpt
        )


def _prune(job: _Job) -> None:
    """Prune ``job.model``, then fine-tune it on the training data (run dir beside the output)."""
    opts = job.opts
    small = example_input(job.in_channels, (32, 32), batch=1)
    classes = int(job.bundle.data["num_classes"])
    job.model, report = prune_channels(
        job.model, float(opts.prune), small, classes, opts.pruning.method
    )
    log.info("%s", report)
    cfg = finetune_config(job.run_cfg, opts.pruning.finetune)
    assert job.setup is not None
    summary = finetune(
        job.model, job.bundle.model_config, job.setup, cfg, job.out.parent, job.finetune_runs
    )
    recovered, original = summary.get("best_score"), original_val_dice(opts.ckpt)
    job.facts["pruning"] = {
        **report.as_dict(),
        "original_best_val_dice": original,
        "finetune_best_val_dice": recovered,
        "finetune_epochs": summary.get("epochs"),
        "finetune_run": summary.get("run_dir"),
    }
    if original is not None and recovered is not None:
        if original - recovered > opts.pruning.max_dice_drop:
            job.warnings.append(
                f"pruning cost {original - recovered:.3f} validation Dice ({original:.3f} -> "
                f"{recovered:.3f} after {summary.get('epochs')} recovery epochs): recover longer "
                "(pruning.finetune.trainer.max_epochs=N) or prune less before deploying it"
            )


def _quantize(job: _Job, fp32_path: Path, out: Path) -> ExportResult:
    """int8 copy of the fp32 export, checked against both, timed against fp32 (warns if slower).

    ``fp32_path`` and ``out`` are temporaries; metadata and messages name the final files."""
    o = job.opts.int8
    fp32_final = fp32_twin(job.out)
    setup, context, ckpt = job.setup, job.bundle.context, job.opts.ckpt
    assert setup is not None
    calibrated = sample_positions(setup, ("train",), o.calibration_slices, job.opts.seed + 1)
    calibration = slices_at(setup, calibrated, context, owner=ckpt)
    report = quantize_int8(
        fp32_path,
        out,
        calibration,
        o.keep_fp32,
        o.per_channel,
        o.calibrate_method,
        o.activation_type,
        o.op_types,
    )
    slices, source = _int8_check_slices(job, calibrated, calibration)
    files = {"fp32": fp32_path, "int8": out}
    timed = slices[: max(o.time_slices, 1)]
    batch = min(o.time_batch, len(timed))  # what ran, not what was asked for
    times = time_alternating(files, timed, job.opts.threads, o.repeats, batch)
    speedup = times["fp32"] / times["int8"]
    job.facts.update(
        precision="int8",
        int8={
            **report.as_dict(),
            "ms_per_slice_fp32": 1e3 * times["fp32"],
            "ms_per_slice_int8": 1e3 * times["int8"],
            "speedup_vs_fp32": speedup,
            "slower_than_fp32": speedup < o.min_speedup,
            "fp32_artifact": fp32_final.name,
            "timing_threads": job.opts.threads,
            "timing_batch": batch,
            "timing_slices": len(timed),
            "check_slices_from": source,
        },
    )
    if "check" in job.facts:
        job.facts["check_fp32"] = job.facts.pop("check")
    job.check = slices
    job.verify(onnx_runner(out), MIN_AGREEMENT_INT8, MIN_FOREGROUND_DICE_INT8)
    fp32_vs_int8 = compare(onnx_runner(out), onnx_runner(fp32_path), slices, "onnx fp32")
    job.facts["check_vs_onnx_fp32"] = fp32_vs_int8.as_dict()
    if not fp32_vs_int8.acceptable(MIN_AGREEMENT_INT8, MIN_FOREGROUND_DICE_INT8):
        reason = (
            f"int8 disagrees with its fp32 twin ({fp32_vs_int8}; minimums: agreement "
            f"{MIN_AGREEMENT_INT8}, foreground Dice {MIN_FOREGROUND_DICE_INT8})"
        )
        if not o.force:  # nothing is written but the fp32 twin (export_stages)
            raise Int8Refused(
                job.out,
                f"int8 refused: {reason}; deploy the fp32 export {fp32_final}, or write the "
                "int8 file anyway with int8.force=true",
            )
        job.warnings.append(f"int8 forced although {reason}")
        job.facts["int8"]["forced"] = True
    if speedup < o.min_speedup:
        job.warnings.append(
            f"int8 is not faster than fp32 on this machine ({1e3 * times['int8']:.1f} vs "
            f"{1e3 * times['fp32']:.1f} ms per slice, {speedup:.2f}x, {job.opts.threads} threads, "
            f"batch {batch}): "
            f"deploy {fp32_final} instead (ONNX Runtime has no int8 kernel for some layers, "
            "e.g. PReLU, and each quantize/dequantize pair around them costs time)"
        )
    meta = job.metadata()
    update_onnx_metadata(out, meta)
    return ExportResult(job.out, meta, job.warnings, [fp32_final])


def _int8_check_slices(
    job: _Job, calibrated: list[tuple[str, int]], calibration: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """The slices int8 is checked (and timed) on, and where they came from: as many as the
    fp32 check's, drawn the same way but never one of the calibration slices (int8 judged on
    the slices it was calibrated on would look better than it is). Without a check (or when
    calibration took every slice): the calibration slices, said so."""
    if job.check is not None:
        assert job.setup is not None
        splits = ("val", "train")
        positions = sample_positions(
            job.setup, splits, len(job.check), job.opts.seed, exclude=set(calibrated)
        )
        if positions:
            source = {"splits": list(splits), "disjoint_from_calibration": True}
            slices = slices_at(job.setup, positions, job.bundle.context, owner=job.opts.ckpt)
            return slices, {**source, "slices": len(slices)}
    source = {"splits": ["train"], "disjoint_from_calibration": False}
    return calibration, {**source, "slices": len(calibration), "calibration_slices": True}
