"""``kdseg-distill``: distil a teacher checkpoint into a student with a configured method."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from kdseg.cli import checkpoint_run, command, data_inputs, save_run_config
from kdseg.lit.distill import DistillationModule
from kdseg.lit.train import fit_from_config


def _module(cfg: dict, data: dict) -> DistillationModule:
    return DistillationModule(
        model=cfg["student"],
        data=data,
        optim=cfg["optim"],
        loss=cfg["loss"],
        teacher=cfg["teacher"],
        distill=cfg["distill"],
    )


@command("kdseg-distill", "distill")
def main(cfg: DictConfig) -> float | None:
    teacher = (cfg.teacher.ckpt, OmegaConf.select(cfg, "teacher.predictions", default=None))
    inputs = (*data_inputs(cfg), *teacher, checkpoint_run(cfg.teacher.ckpt))
    out, plain = save_run_config(cfg, inputs=inputs)
    return fit_from_config(plain, _module, out)["best_score"]
