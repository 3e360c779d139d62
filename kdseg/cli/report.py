"""``kdseg-report``: the comparison table (teachers, students alone, distilled) over seeds."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, ListConfig

from kdseg.cli import CONFIG_PATH, guarded
from kdseg.errors import InputError
from kdseg.eval.report import build_report, write_report


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="report")
@guarded("kdseg-report")
def main(cfg: DictConfig) -> None:
    runs = list(cfg.runs) if isinstance(cfg.runs, ListConfig) else [str(cfg.runs)]
    if not runs:
        raise InputError(None, "no runs given; pass runs=[DIR_OR_GLOB,...]")
    report = build_report(runs, eval_dir=cfg.eval_dir, metric=cfg.metric, digits=int(cfg.digits))
    paths = write_report(report, cfg.output_dir, title=cfg.title)
    print(report.markdown(cfg.title))
    print(f"report: {paths['markdown']} and {paths['csv']}")
