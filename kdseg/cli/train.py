"""``kdseg-train``: supervised training of any registered model on a prepared dataset."""

from __future__ import annotations

from omegaconf import DictConfig

from kdseg.cli import check_data, command, data_inputs, save_run_config
from kdseg.cli.boundary import lightning_logging, without_collection


@command("kdseg-train", "train")
def main(cfg: DictConfig) -> float | None:
    out, plain, record = save_run_config(cfg, inputs=data_inputs(cfg))
    check_data(plain, teacher=False)  # before Lightning is imported: refused in seconds
    lightning_logging()
    with without_collection():
        from kdseg.lit.segment import SegmentationModule
        from kdseg.lit.train import fit_from_config

    summary = fit_from_config(
        plain,
        lambda c, data: SegmentationModule(
            model=c["model"], data=data, optim=c["optim"], loss=c["loss"]
        ),
        out,
        record=record,  # config.yaml once training starts: a refused rerun keeps the saved one
    )
    return summary["best_score"]


if __name__ == "__main__":
    main()
