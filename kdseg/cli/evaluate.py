"""``kdseg-eval``: evaluate a checkpoint (or its exported artefact) on a dataset split."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kdseg.cli import build_predictor, command, number, stage_list, to_dict
from kdseg.cli.options import set_on_command_line
from kdseg.data.dataset import resolve_data
from kdseg.errors import InputError
from kdseg.eval.checkpoint import check_model_no_leak, run_folder
from kdseg.eval.evaluate import (
    check_protocol,
    evaluate_modes,
    print_summary,
    rows_to_csv,
    summarize_rows,
    write_results,
)
from kdseg.eval.postprocess import (
    MODES,
    check_for_protocol,
    check_postprocess,
    choose,
    decision_line,
    plan,
)
from kdseg.guards import check_output

#: ``postprocess=auto``'s per-case scores with ``largest``, beside ``per_case.csv``
LARGEST_CSV = "per_case_largest.csv"


def _written_by_auto(out: Path) -> bool:
    """Whether ``out`` holds a ``per_case_largest.csv`` of kdseg's: beside a ``summary.json``
    of a ``postprocess=auto`` evaluation (a file of another origin is left alone)."""
    if not (out / LARGEST_CSV).is_file():
        return False
    try:
        return json.loads((out / "summary.json").read_text()).get("postprocess") == "auto"
    except (OSError, ValueError, AttributeError):
        return False


@command("kdseg-eval", "eval")
def main(cfg: DictConfig) -> None:
    check_protocol(cfg.protocol)
    postprocess = check_postprocess(cfg.postprocess, (*MODES, "auto"))
    if postprocess == "auto" and cfg.split != "val":
        raise InputError(
            None,
            f"postprocess=auto decides on the validation cases (split=val), not split="
            f"{cfg.split}: a choice made on the test cases is fitted to them; evaluate test "
            "with the postprocess=none or largest that val chose",
        )
    check_for_protocol(cfg.protocol, postprocess)
    ckpts = stage_list(None if OmegaConf.is_missing(cfg, "ckpt") else cfg.ckpt)
    ckpt = ckpts[-1] if ckpts else None  # a cascade's results go beside its stage 2
    stages = ckpts if len(ckpts) > 1 else stage_list(cfg.artifact)
    kind = "cascade-" if len(stages) > 1 else ""
    threshold = number(cfg, "paper_threshold", float) if cfg.protocol == "paper" else None
    # data.task: the model's own (from its checkpoint); one given on the command line is checked
    task = str(cfg.data.task) if set_on_command_line("data.task") else None
    stage_data: list[tuple[dict, str]] = []  # each stage's data section: the leakage check
    predictor, bundle, backend, artifact = build_predictor(
        cfg,
        threshold=threshold,
        threshold_key="paper_threshold",
        binary_only="protocol=paper",
        task=task,
        stage_data=stage_data,
    )
    tta = predictor.tta  # checked by build_predictor
    organ = bundle.data.get("organ")  # stage 2's for a cascade: its labels are scored
    keep = plan(postprocess, bundle.task, predictor.pre.config.roi_components, organ)[1]
    suffix = f"{cfg.split}-{cfg.protocol}" + ("" if tta == "none" else f"-tta-{tta}")
    suffix += "" if postprocess == "none" else f"-pp-{postprocess}"
    # an artefact's results are its own, named by it: beside its checkpoint's (in the run
    # folder) they once went to the checkpoint's eval-<split>-<protocol>/ and replaced those
    named = f"eval-{kind}{Path(artifact).stem}-{suffix}" if artifact else f"eval-{kind}{suffix}"
    default_out = (run_folder(ckpt) if ckpt else Path(artifact).resolve().parent) / named
    inputs = [cfg.data.root, *ckpts, *stage_list(cfg.artifact)]  # every stage's
    out = check_output(cfg.output_dir or default_out, inputs, folder=True, what="output_dir")
    setup = resolve_data(to_dict(cfg.data), read_only=True)
    if cfg.split not in setup.split:
        raise InputError(None, f"unknown split {cfg.split!r}; use train, val or test")
    cases = [setup.cases[c] for c in setup.split[cfg.split]]
    if not cases:
        n = len(setup.cases)
        raise InputError(
            cfg.data.root, f"split {cfg.split!r} holds no cases ({n} case(s) in the folder)"
        )
    for data_info, model in stage_data:  # never score cases a model trained on
        ids = [c.case_id for c in cases]
        check_model_no_leak(data_info, str(cfg.data.name), cfg.split, ids, model, cfg.data.root)
    modes = MODES if postprocess == "auto" else (postprocess,)
    variants = evaluate_modes(predictor, cases, protocol=cfg.protocol, modes=modes, organ=organ)
    summaries = {mode: summarize_rows(rows, cfg.protocol) for mode, rows in variants.items()}
    main_mode = "none" if postprocess == "auto" else postprocess
    rows, summary = variants[main_mode], summaries[main_mode]
    info = {
        "checkpoint": None if ckpt is None else str(ckpt),
        "cascade": stages if kind else None,
        "artifact": artifact,
        "data_root": str(cfg.data.root),
        "split": cfg.split,
        "protocol": cfg.protocol,
        "backend": backend,
        "tta": tta,
        "postprocess": postprocess,
        "postprocess_keep": None if postprocess == "none" else keep,  # components kept, at most
        "model": bundle.model_config,
        "task": bundle.task.name,
        "n_cases": len(cases),
    }
    decision, extra = None, {}
    if postprocess == "auto":  # "summary" is without postprocessing; both are kept, and why
        decision = choose(summaries)
        info["summary_largest"] = summaries["largest"]
        info["postprocess_decision"] = decision
        extra[LARGEST_CSV] = rows_to_csv(variants["largest"])
    stale = postprocess != "auto" and _written_by_auto(out)
    write_results(rows, summary, out, info, extra)  # one group, summary.json last
    if stale:  # an earlier auto run's file in this folder would pass for this run's
        (out / LARGEST_CSV).unlink(missing_ok=True)
    print_summary(
        summary,
        title=f"{'cascade -> ' if kind else ''}{bundle.model_config['name']} on "
        f"{cfg.data.name}/{cfg.split} ({cfg.protocol}"
        f"{'' if tta == 'none' else ', tta ' + tta}"
        f"{'' if postprocess == 'none' else ', postprocess ' + main_mode})",
    )
    if decision is not None:
        print(decision_line(decision, cfg.split, len(cases)))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
