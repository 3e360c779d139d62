"""``kdseg-export``: a checkpoint's student -> ONNX (fp32 / int8, optionally pruned) or ``.pt2``."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from kdseg.cli import command, to_dict
from kdseg.deploy.export import ExportResult, export_stages
from kdseg.deploy.export_options import stage_options
from kdseg.errors import warning_line


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@command("kdseg-export", "export")
def main(cfg: DictConfig) -> None:
    # all stages (a cascade's two) written together, or none: see export_stages
    results = export_stages(stage_options(to_dict(cfg)))
    for result in results:
        _print(result)
    if len(results) > 1:
        paths = ",".join(str(r.artifact) for r in results)
        print(f"cascade: kdseg-predict ckpt=null 'artifact=[{paths}]' input=... output=...")


def _print(result: ExportResult) -> None:
    info = result.metadata["export"]
    print(
        f"{result.artifact}: {info['format']} {info['precision']}, {info['params']:,} parameters, "
        f"{info['mult_adds'] / 1e6:.1f} M mult-adds per "
        f"{'x'.join(map(str, info['cost_input_size']))} slice"
    )
    if "pruning" in info:
        p = info["pruning"]
        print(
            f"  pruned {p['ratio']:.0%} ({p['method']}): {p['params_before']:,} -> "
            f"{p['params_after']:,} parameters; val Dice {_score(p['original_best_val_dice'])} "
            f"before, {_score(p['finetune_best_val_dice'])} after "
            f"{p['finetune_epochs']} recovery epochs"
        )
    for key, label in (
        ("check_fp32", "onnx fp32"),
        ("check", f"{info['format']} {info['precision']}"),
    ):
        if info.get(key):
            c = info[key]
            print(
                f"  {label} vs pytorch fp32 on {c['slices']} cache slices: argmax agreement "
                f"{c['argmax_agreement']:.6f}, lowest foreground Dice "
                f"{_score(c.get('foreground_dice'))}, max |diff| {c['max_abs_diff']:.3g}"
            )
    if "int8" in info:
        q = info["int8"]
        print(
            f"  int8 {q['ms_per_slice_int8']:.1f} ms vs fp32 {q['ms_per_slice_fp32']:.1f} ms "
            f"per slice ({q['speedup_vs_fp32']:.2f}x, {q['timing_threads']} threads, "
            f"batch {q['timing_batch']}); "
            f"fp32 twin: {result.extra_files[0]}"
        )
    for warning in result.warnings:
        print(warning_line(warning), file=sys.stderr)


if __name__ == "__main__":
    main()
