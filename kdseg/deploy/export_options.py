"""What ``kdseg-export`` is asked for, and which files it will write.

:class:`ExportOptions` (with :class:`Int8Options` and :class:`PruneOptions`) is the
``conf/export.yaml`` config as typed options, checked by :func:`validate_options`;
:func:`stage_options` makes one per stage (``ckpt=[stage1, stage2]``: a cascade).
:func:`default_output`, :func:`fp32_twin` and :func:`output_files` name the files an export
writes, and :func:`check_replaceable` refuses to replace one that is not a kdseg export of the
same checkpoint.

Apart from :mod:`kdseg.deploy.export` (which builds, checks, quantizes and times the artefact)
since all of this is settled before that work starts, from the config and the checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.deploy.artifact import made_from, sidecar_path
from kdseg.deploy.quantize import QUANTIZED_OPS
from kdseg.errors import InputError
from kdseg.eval.checkpoint import load_bundle, run_folder
from kdseg.guards import check_count, check_threads

FORMATS = {"onnx": ".onnx", "aoti": ".pt2"}


@dataclass
class Int8Options:
    """ONNX Runtime static quantization settings (:func:`~kdseg.deploy.quantize.quantize_int8`)."""

    calibration_slices: int = 64
    keep_fp32: tuple[str, ...] = ("first", "last")
    per_channel: bool = True
    calibrate_method: str = "minmax"
    activation_type: str = "uint8"
    time_slices: int = 32
    time_batch: int = 16
    repeats: int = 3
    min_speedup: float = 1.0
    op_types: tuple[str, ...] | None = QUANTIZED_OPS
    force: bool = False


@dataclass
class PruneOptions:
    """Channel pruning and its recovery run (``finetune`` is merged into the training config)."""

    method: str = "magnitude"
    finetune: dict[str, Any] = field(
        default_factory=lambda: {"trainer": {"max_epochs": 8}, "optim": {"lr": 1.0e-3}}
    )
    max_dice_drop: float = 0.02  # warn when recovery ends further below the original's val Dice


@dataclass
class ExportOptions:
    """Everything ``kdseg-export`` accepts (``conf/export.yaml``)."""

    ckpt: str
    format: str = "onnx"
    output: str | None = None
    quantize: str | None = None
    prune: float | None = None
    data_root: str | None = None
    spatial: str = "dynamic"
    check_slices: int = 32
    threads: int = 2
    seed: int = 0
    overwrite: bool = False
    int8: Int8Options = field(default_factory=Int8Options)
    pruning: PruneOptions = field(default_factory=PruneOptions)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> ExportOptions:
        """From the (resolved) Hydra config; unknown keys are ignored."""
        known = {
            k: v
            for k, v in cfg.items()
            if k in cls.__dataclass_fields__ and k not in ("int8", "pruning")
        }
        int8 = {
            k: v
            for k, v in (cfg.get("int8") or {}).items()
            if k in Int8Options.__dataclass_fields__
        }
        if "keep_fp32" in int8:
            int8["keep_fp32"] = tuple(int8["keep_fp32"] or ())
        if int8.get("op_types"):
            int8["op_types"] = tuple(int8["op_types"])
        pruning = {
            k: v
            for k, v in (cfg.get("pruning") or {}).items()
            if k in PruneOptions.__dataclass_fields__
        }
        return cls(**known, int8=Int8Options(**int8), pruning=PruneOptions(**pruning))


def default_output(
    ckpt: str | Path, model_name: str, fmt: str, quantize: str | None, prune: float | None
) -> Path:
    """``<run>/export/<model>[-pruned<pct>][.int8].onnx|.pt2`` beside the run's checkpoints
    (for a checkpoint outside a run: ``export/`` beside it)."""
    name = (
        model_name
        + (f"-pruned{round(100 * prune)}" if prune else "")
        + (f".{quantize}" if quantize else "")
    )
    return run_folder(ckpt) / "export" / f"{name}{FORMATS[fmt]}"


def fp32_twin(path: Path) -> Path:
    """The fp32 twin of an int8 artefact: ``a.int8.onnx`` or ``a.onnx`` -> ``a.fp32.onnx``."""
    stem = path.name[: -len(path.suffix)]
    stem = stem[: -len(".int8")] if stem.endswith(".int8") else stem
    return path.with_name(f"{stem}.fp32{path.suffix}")


def validate_options(opts: ExportOptions) -> None:
    """Refuse an unknown value, or options that cannot go together (int8 of a ``.pt2``), or
    more ``threads`` than the CPUs this process may use, or a count below its least (slices,
    batches, repeats), or a ``prune`` fraction outside (0, 1): before any checkpoint or data
    is read."""
    if opts.format not in FORMATS:
        raise InputError(None, f"unknown format {opts.format!r}; use onnx or aoti")
    if opts.quantize not in (None, "int8"):
        raise InputError(None, f"unknown quantize {opts.quantize!r}; use int8 (or leave it null)")
    if opts.quantize and opts.format != "onnx":
        raise InputError(None, "quantize=int8 is ONNX Runtime quantization: use format=onnx")
    if opts.spatial not in ("dynamic", "static"):
        raise InputError(None, f"unknown spatial {opts.spatial!r}; use dynamic or static")
    if opts.output and Path(opts.output).suffix != FORMATS[opts.format]:
        raise InputError(opts.output, f"format={opts.format} writes a {FORMATS[opts.format]} file")
    if not isinstance(opts.overwrite, bool):
        raise InputError(None, f"overwrite={opts.overwrite!r}: use true or false")
    check_count("threads", opts.threads, 1)
    check_threads(opts.threads)  # the int8 timing's ONNX Runtime and torch threads
    check_count("check_slices", opts.check_slices, 0)  # 0: the check is off
    for name in INT8_COUNTS:  # checked whether or not quantize=int8: the config is wrong
        check_count(f"int8.{name}", getattr(opts.int8, name), 1)
    prune = opts.prune
    if prune is not None and prune != 0:  # null or 0: no pruning
        if isinstance(prune, bool) or not isinstance(prune, (int, float)) or not 0 < prune < 1:
            raise InputError(
                None, f"prune={prune!r}: the fraction of channels to remove, in (0, 1), or null"
            )


#: the int8 options that count something (slices, a batch, repetitions): at least 1 each
INT8_COUNTS = ("calibration_slices", "time_slices", "time_batch", "repeats")


def output_files(opts: ExportOptions, out: Path) -> list[Path]:
    """Every file an export to ``out`` writes, in rename order (the artefact last): the fp32
    twin of an int8 file, the sidecar of a ``.pt2`` package."""
    if opts.format == "aoti":
        return [sidecar_path(out), out]
    return [fp32_twin(out), out] if opts.quantize else [out]


def check_replaceable(files: list[Path], ckpt: str | Path) -> None:
    """Refuse to replace an existing file that is not a kdseg export of ``ckpt`` (somebody's
    model, an export of another checkpoint): ``overwrite=true`` replaces it anyway."""
    for path in files:
        if os.path.lexists(path) and not made_from(path, ckpt):
            raise InputError(
                path,
                "exists and is not a kdseg export of this checkpoint; choose another output= "
                "(overwrite=true replaces it)",
            )


def stage_options(cfg: dict[str, Any]) -> list[ExportOptions]:
    """One :class:`ExportOptions` per stage: ``ckpt=[stage1, stage2]`` exports a cascade.

    Both stages get the same options; ``output`` is then a list of two paths or null (each
    stage's default path, with ``-stage2`` added to the second when both would coincide).
    """
    ckpts, outputs = cfg.get("ckpt"), cfg.get("output")
    if not isinstance(ckpts, (list, tuple)):
        if isinstance(outputs, (list, tuple)):
            raise InputError(None, "output= is a list of two for a cascade only: give one path")
        return [load_options(cfg)]
    if len(ckpts) != 2 or not (outputs is None or len(outputs) == 2):
        raise InputError(
            None, "a cascade export is ckpt=[stage1,stage2] (and output=[a,b] or null)"
        )
    opts = [
        load_options({**cfg, "ckpt": c, "output": None if outputs is None else outputs[i]})
        for i, c in enumerate(ckpts)
    ]
    bundles = [load_bundle(o.ckpt) for o in opts]  # both readable before stage 1 is exported
    if outputs is None:
        paths = [
            default_output(o.ckpt, b.model_config["name"], o.format, o.quantize, o.prune)
            for o, b in zip(opts, bundles, strict=True)
        ]
        if paths[0] == paths[1]:
            paths[1] = paths[1].with_name(paths[1].name.replace(".", "-stage2.", 1))
        for o, path in zip(opts, paths, strict=True):
            o.output = str(path)
    # every file a stage writes (with int8, its fp32 twin too) is its own
    written = [_files_written(o) for o in opts]
    if written[0] & written[1]:
        raise InputError(
            min(written[0] & written[1]), "both cascade stages would be written to this one file"
        )
    return opts


def _files_written(opts: ExportOptions) -> set[str]:
    """The real paths an export writes: its artefact and, for int8, the fp32 twin."""
    out = Path(str(opts.output))
    return {os.path.realpath(p) for p in (out, *([fp32_twin(out)] if opts.quantize else []))}


def load_options(cfg: dict[str, Any]) -> ExportOptions:
    """:class:`ExportOptions` from a plain config mapping (the CLI's resolved Hydra config)."""
    if not cfg.get("ckpt"):
        raise InputError(None, "give ckpt=PATH (the checkpoint to export)")
    return ExportOptions.from_dict(cfg)
