"""CutMix for the distillation terms (``distill.mix: cutmix``): N-D boxes that pair each image
with another of the batch, labels and stored teacher probabilities mixed with the same boxes,
a seeded stream of its own that checkpoints carry, and a module whose teacher sees the mix while
L_seg sees the clean batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from test_distill_module import Probe, _module_with_fake_teacher

from kdseg.distill.mix import MixGenerator, check_mix, cutmix_boxes, paste


@pytest.mark.parametrize("spatial", [(16, 20), (6, 8, 10)])
def test_cutmix_pastes_one_box_of_a_partner_in_any_rank(spatial: tuple[int, ...]) -> None:
    b = 6
    images = (
        torch.arange(b, dtype=torch.float32).view(b, 1, *[1] * len(spatial)).expand(b, 1, *spatial)
        + 0.5
    )
    labels = images.long()
    gen = torch.Generator().manual_seed(3)
    perm, mask = cutmix_boxes(b, spatial, gen)
    assert sorted(perm.tolist()) == list(range(b)) and mask.shape == (b, 1, *spatial)
    mixed, mixed_labels = paste(images, perm, mask), paste(labels, perm, mask)
    for i in range(b):
        assert torch.equal(mixed[i][mask[i]], images[perm[i]][mask[i]])
        assert torch.equal(mixed[i][~mask[i]], images[i][~mask[i]])
        assert torch.equal(mixed_labels[i], mixed[i].long())  # labels follow the same box
        where = mask[i, 0].nonzero()
        if len(where):  # one axis-aligned box: its bounding box is full
            lo, hi = where.min(0).values, where.max(0).values + 1
            assert int(mask[i, 0].sum()) == int(torch.prod(hi - lo))
    assert torch.equal(images.flatten(1)[:, 0], torch.arange(b) + 0.5)  # not changed in place


def test_cutmix_box_area_is_uniform_before_clipping_and_seeded() -> None:
    gen = torch.Generator().manual_seed(0)
    fractions = torch.cat(
        [cutmix_boxes(8, (32, 32), gen)[1].float().mean((1, 2, 3)) for _ in range(100)]
    )
    # uniform area, then clipped at the border by a uniform centre: mean about 0.5 * 0.75^2
    assert 0.2 < float(fractions.mean()) < 0.4
    assert float(fractions.max()) > 0.8 and float(fractions.min()) < 0.05
    a, b = MixGenerator("cutmix", 7), MixGenerator("cutmix", 7)
    batch = {"image": torch.randn(4, 1, 8, 8), "label": torch.randint(0, 3, (4, 1, 8, 8))}
    assert torch.equal(a(batch)["image"], b(batch)["image"])
    assert not torch.equal(a(batch)["image"], MixGenerator("cutmix", 8)(batch)["image"])


def test_mix_keeps_teacher_targets_and_labeled_flags_with_their_images() -> None:
    b = 8
    batch = {
        "image": torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, 12, 12),
        "label": torch.zeros(b, 1, 12, 12, dtype=torch.long),
        "teacher": torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 12, 12),
        "labeled": torch.tensor([True, False] * 4),
        "case": list("abcdefgh"),
    }
    out = MixGenerator("cutmix", 1)(batch)
    assert out["case"] is batch["case"]
    assert torch.equal(out["teacher"][:, :1], out["image"])  # the same box in every channel
    for i in range(b):  # labeled only where both sources are
        sources = {int(v) for v in out["image"][i].unique()}
        assert bool(out["labeled"][i]) == all(bool(batch["labeled"][s]) for s in sources) or (
            len(sources) == 1  # an empty box after rounding leaves the image alone
        )


def test_check_mix_accepts_off_and_cutmix_only() -> None:
    assert check_mix(None) is None and check_mix("none") is None
    assert check_mix("cutmix") == "cutmix"
    with pytest.raises(ValueError, match="distill.mix must be null or one of"):
        check_mix("mixup")


class SeenByTeacher(Probe):
    """Probe, plus the clean batch and what the teacher was given at each step."""

    def __init__(self) -> None:
        super().__init__()
        self.clean: list[torch.Tensor] = []
        self.teacher_inputs: list[torch.Tensor] = []

    def on_fit_start(self, trainer: pl.Trainer, module: Any) -> None:
        module.teacher.register_forward_pre_hook(
            lambda _m, args: self.teacher_inputs.append(args[0].detach().clone())
        )

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, *a: Any) -> None:
        super().on_train_batch_start(trainer, module, batch, *a)
        self.clean.append(batch["image"].detach().clone())


def test_cutmix_preset_trains_the_student_on_what_the_frozen_teacher_sees(
    phantom_lits: Path, tmp_path: Path
) -> None:
    module, setup = _module_with_fake_teacher(
        phantom_lits, tmp_path, "enet", ["distill=emkd_balanced_region_cutmix"]
    )
    assert module.mix is not None and module.mix.kind == "cutmix"
    probe = SeenByTeacher()
    trainer = pl.Trainer(
        accelerator="cpu",
        fast_dev_run=3,
        callbacks=[probe],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    trainer.fit(module, datamodule=setup.datamodule(seed=1))
    assert len(probe.teacher_inputs) == len(probe.clean) == 3
    changed = 0
    for clean, seen in zip(probe.clean, probe.teacher_inputs, strict=True):
        assert seen.shape == clean.shape
        changed += int(not torch.equal(seen, clean))
        for i in range(clean.shape[0]):  # every pixel is the image's own or a batch partner's
            own = seen[i] == clean[i]
            other = (seen[i].unsqueeze(0) == clean).any(0)
            assert bool((own | other).all())
    assert changed >= 2
    for check in probe.checks:
        assert not any(check["teacher_grads"]) and not check["teacher_training"]
        assert sum(check["student_grads"]) > 0.9 * len(check["student_grads"])
    for term in ("pmd", "imd_low", "rad_high", "kd_region"):
        assert torch.isfinite(trainer.callback_metrics[f"distill/{term}"]), term

    saved: dict[str, Any] = {}  # the mix's stream travels with the checkpoint
    module.on_save_checkpoint(saved)
    batch = {"image": torch.randn(4, 1, 16, 16), "label": torch.zeros(4, 1, 16, 16).long()}
    first = module.mix(batch)["image"]
    module.on_load_checkpoint(saved)
    assert torch.equal(module.mix(batch)["image"], first)


def test_presets_without_mix_build_no_mix(phantom_lits: Path, tmp_path: Path) -> None:
    module, _ = _module_with_fake_teacher(phantom_lits, tmp_path, "enet", ["distill=kd"])
    assert module.mix is None
