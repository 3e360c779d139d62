"""``kdseg-pseudolabel``: a teacher labels a folder of scans into a dataset to train on."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from kdseg.cli import build_predictor, command, number, require_paths, require_whole_volume
from kdseg.data.io import check_unoriented
from kdseg.data.sources import discover_images
from kdseg.data.tasks import organ_name
from kdseg.errors import InputError, warning_line
from kdseg.eval.postprocess import check_postprocess, plan
from kdseg.eval.pseudolabel import (
    CSV_NAME,
    check_destination,
    check_organ_label,
    pseudolabel_folder,
)


@command("kdseg-pseudolabel", "pseudolabel", one_shot=True)
def main(cfg: DictConfig) -> None:
    require_paths(cfg, "input", "output")
    check_destination(Path(cfg.input), Path(cfg.output))  # before the model loads
    notes: list[str] = []
    cases = discover_images(cfg.input, notes)  # a refused scan costs no model load
    check_unoriented(cfg.unoriented)
    postprocess = check_postprocess(cfg.postprocess)  # none | largest (auto: kdseg-eval's)
    min_confidence = number(cfg, "min_confidence", float, minimum=0, maximum=1)
    min_flip_dice = number(cfg, "min_flip_dice", float, minimum=0, maximum=1)
    if min_flip_dice and not cfg.flip_check:  # no flip Dice to filter on: not silently ignored
        raise InputError(
            None, "min_flip_dice needs the flip check; set flip_check=true or min_flip_dice=0"
        )
    if cfg.organ is not None:  # the checkpoint's organ: checked once it loads
        check_organ_label(organ_name({"organ": cfg.organ}))
    predictor, bundle, *_ = build_predictor(cfg, threshold=number(cfg, "threshold", float))
    require_whole_volume(predictor, cfg)
    if predictor.tta != "none" and cfg.flip_check:
        # an average over every mirroring answers the same for an image and its mirror: the
        # flip check would pass every case at 1.0, for 8x the network time
        raise InputError(None, "tta=flip makes the flip check meaningless; set flip_check=false")
    recorded = cfg.organ or bundle.data.get("organ")  # None: "organ" in dataset.json
    # a cascade: stage 2's, whose labels are written
    pair = plan(postprocess, predictor.task, predictor.pre.config.roi_components, recorded)
    for note in notes:  # what the input folder holds besides scans: once nothing is refused
        print(warning_line(note), file=sys.stderr)
    kept = total = 0
    for row in pseudolabel_folder(
        predictor,
        cfg.input,
        cfg.output,
        min_confidence=min_confidence or 0.0,
        min_flip_dice=min_flip_dice or 0.0,
        flip=bool(cfg.flip_check),
        organ=recorded,
        unoriented=cfg.unoriented,
        cases=cases,
        postprocess=pair,
    ):
        total += 1
        kept += bool(row["kept"])
        flip = "not checked" if not cfg.flip_check else f"{row['flip_dice']:.3f}"
        print(
            f"{row['case_id']}: confidence {row['mean_max_prob']:.3f}, "
            f"flip Dice {flip}, {'kept' if row['kept'] else 'filtered out'}"
        )
    print(f"{kept}/{total} case(s) kept in {cfg.output} (table: {cfg.output}/{CSV_NAME})")


if __name__ == "__main__":
    main()
