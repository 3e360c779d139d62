"""``kdseg-distill``: distil a teacher checkpoint into a student with a configured method."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdseg.cli import check_data, checkpoint_run, command, data_inputs, save_run_config
from kdseg.cli.boundary import lightning_logging, without_collection
from kdseg.errors import ConfigError


def _module(cfg: dict, data: dict) -> Any:
    """The distillation module; a refusal of the student's network config names the option as
    the user set it (``student.width``), not as the model builder calls it (``model.width``)."""
    from kdseg.lit.distill import DistillationModule

    try:
        return DistillationModule(
            model=cfg["student"],
            data=data,
            optim=cfg["optim"],
            loss=cfg["loss"],
            teacher=cfg["teacher"],
            distill=cfg["distill"],
        )
    except ConfigError as err:
        if not err.message.startswith("model."):
            raise
        raise ConfigError("student." + err.message.removeprefix("model.")) from err


@command("kdseg-distill", "distill")
def main(cfg: DictConfig) -> float | None:
    teacher = (cfg.teacher.ckpt, OmegaConf.select(cfg, "teacher.predictions", default=None))
    inputs = (*data_inputs(cfg), *teacher, checkpoint_run(cfg.teacher.ckpt))
    out, plain, record = save_run_config(cfg, inputs=inputs)
    check_data(plain)  # before Lightning is imported: bad data is refused in seconds
    lightning_logging()
    with without_collection():
        from kdseg.lit.train import fit_from_config

    # config.yaml once training starts: a refused rerun keeps the saved one
    return fit_from_config(plain, _module, out, record=record)["best_score"]


if __name__ == "__main__":
    main()
