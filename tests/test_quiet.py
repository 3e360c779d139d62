"""Lightning's banners are dropped where they come from, GPU runs included; other lines pass."""

from __future__ import annotations

import logging

from kdseg.cli.boundary import quiet_libraries


def _passes(name: str, message: str) -> bool:
    logger = logging.getLogger(name)
    return bool(
        logger.filter(logger.makeRecord(name, logging.INFO, __file__, 0, message, (), None))
    )


def test_lightning_gpu_banners_are_dropped_and_other_lines_kept() -> None:
    quiet_libraries()
    quiet_libraries()  # idempotent: one filter per logger
    assert not _passes("pytorch_lightning.utilities.rank_zero", "GPU available: True (cuda)")
    assert not _passes(
        "pytorch_lightning.utilities.rank_zero", "Using 16bit Automatic Mixed Precision (AMP)"
    )
    assert not _passes(
        "pytorch_lightning.accelerators.cuda", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"
    )
    assert _passes("pytorch_lightning.utilities.rank_zero", "`Trainer.fit` stopped: `max_epochs=2`")
    assert len(logging.getLogger("pytorch_lightning.accelerators.cuda").filters) == 1


def test_distill_teacher_in_eval_mode_warning_is_dropped() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn(
            "Found 194 module(s) in eval mode at the start of training. This may lead to "
            "unexpected behavior during training.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("a warning kdseg does not know", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning kdseg does not know"]
