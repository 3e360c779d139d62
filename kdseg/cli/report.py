"""``kdseg-report``: the comparison table (teachers, students alone, distilled) over seeds."""

from __future__ import annotations

import glob

from omegaconf import DictConfig, ListConfig

from kdseg.cli import command
from kdseg.errors import InputError
from kdseg.eval.report import build_report, write_report
from kdseg.guards import check_output


@command("kdseg-report", "report")
def main(cfg: DictConfig) -> None:
    runs = list(cfg.runs) if isinstance(cfg.runs, ListConfig) else [str(cfg.runs)]
    if not runs:
        raise InputError(None, "no runs given; pass runs=[DIR_OR_GLOB,...]")
    # the run folders it reads, matched as kdseg.eval.runs.find_run_dirs matches them: with
    # ``**`` across folders (runs/**/enet-s1 names runs/enet-s1 too, where a report went)
    read = [p for run in runs for p in glob.glob(run, recursive=True)]
    check_output(cfg.output_dir, read, folder=True, what="output_dir")
    report = build_report(runs, eval_dir=cfg.eval_dir, metric=cfg.metric, digits=int(cfg.digits))
    paths = write_report(report, cfg.output_dir, title=cfg.title)
    print(report.markdown(cfg.title))
    print(f"report: {paths['markdown']} and {paths['csv']}")


if __name__ == "__main__":
    main()
