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

#: the frozen teacher is in eval mode on purpose; steps called outside a Trainer log nowhere
pytestmark = [
    pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode"),
    pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`"),
]


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


@pytest.mark.parametrize(("spatial", "expected"), [((32, 32), 0.321), ((16, 16, 16), 0.244)])
def test_cutmix_box_volume_is_uniform_before_clipping_and_seeded(spatial, expected) -> None:
    """Each side u ** (1 / ndim) of the image's, centre uniform, clipped: the mean kept fraction
    is E[u] times E[clip]^ndim (about 0.321 in 2D and 0.244 in 3D; side = u would give 0.22
    and 0.15)."""
    gen = torch.Generator().manual_seed(0)
    fractions = torch.cat(
        [cutmix_boxes(8, spatial, gen)[1].float().flatten(1).mean(1) for _ in range(200)]
    )
    assert abs(float(fractions.mean()) - expected) < 0.025
    assert float(fractions.max()) > 0.7 and float(fractions.min()) < 0.05


def test_mix_generators_with_one_seed_draw_the_same_boxes() -> None:
    a, b = MixGenerator("cutmix", 7), MixGenerator("cutmix", 7)
    batch = {"image": torch.randn(4, 1, 8, 8), "label": torch.randint(0, 3, (4, 1, 8, 8))}
    assert torch.equal(a(batch)["image"], b(batch)["image"])
    assert not torch.equal(a(batch)["image"], MixGenerator("cutmix", 8)(batch)["image"])


def test_ddp_ranks_mix_differently_from_generators_that_stay_equal() -> None:
    batch = {"image": torch.randn(8, 1, 16, 16), "label": torch.zeros(8, 1, 16, 16).long()}
    ranks = [MixGenerator("cutmix", 5, rank=r, world_size=2) for r in (0, 1)]
    single = MixGenerator("cutmix", 5)
    out = [g(batch)["image"] for g in ranks]
    assert not torch.equal(out[0], out[1])
    assert torch.equal(out[0], single(batch)["image"])  # rank 0 draws what one process draws
    assert torch.equal(ranks[0].state(), ranks[1].state())


def test_mix_keeps_teacher_targets_and_labeled_flags_with_their_images() -> None:
    b = 8
    batch = {
        "image": torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, 12, 12),
        "label": torch.zeros(b, 1, 12, 12, dtype=torch.long),
        "teacher": torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 12, 12),
        "labeled": torch.tensor([True, False] * 4),
        "case": list("abcdefgh"),
    }
    for seed in range(5):
        out = MixGenerator("cutmix", seed)(batch)
        assert out["case"] is batch["case"]
        assert torch.equal(out["teacher"][:, :1], out["image"])  # the same box in every channel
        for i in range(b):  # labeled where every image that gave pixels is
            sources = {int(v) for v in out["image"][i].unique()} | {i}
            assert bool(out["labeled"][i]) == all(bool(batch["labeled"][j]) for j in sources)


def test_check_mix_accepts_off_and_cutmix_only() -> None:
    assert check_mix(None) is None and check_mix("none") is None
    assert check_mix("cutmix") == "cutmix" and check_mix("CutMix") == "cutmix"
    with pytest.raises(ValueError, match="distill.mix must be null or one of"):
        check_mix("mixup")


class SeenByTeacher(Probe):
    """Probe, plus the clean batch and what the teacher was given at each step."""

    def __init__(self) -> None:
        super().__init__()
        self.clean: list[torch.Tensor] = []
        self.teacher_inputs: list[torch.Tensor] = []

        self.student_inputs: list[torch.Tensor] = []

    def on_fit_start(self, trainer: pl.Trainer, module: Any) -> None:
        module.teacher.register_forward_pre_hook(
            lambda _m, args: self.teacher_inputs.append(args[0].detach().clone())
        )
        module.net.register_forward_pre_hook(
            lambda m, args: (
                self.student_inputs.append(args[0].detach().clone()) if m.training else None
            )
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
    # the student: the clean batch first (L_seg), then exactly what the teacher saw (the terms)
    assert len(probe.student_inputs) == 6
    for k, (clean, seen) in enumerate(zip(probe.clean, probe.teacher_inputs, strict=True)):
        assert torch.equal(probe.student_inputs[2 * k], clean)
        assert torch.equal(probe.student_inputs[2 * k + 1], seen)
    for check in probe.checks:
        assert not any(check["teacher_grads"]) and not check["teacher_training"]
        assert sum(check["student_grads"]) > 0.9 * len(check["student_grads"])
    for term in ("pmd", "imd_low", "rad_high", "kd_region"):
        assert torch.isfinite(trainer.callback_metrics[f"distill/{term}"]), term

    saved: dict[str, Any] = {}  # the mix's stream travels with the checkpoint file
    module.on_save_checkpoint(saved)
    torch.save(saved, tmp_path / "state.ckpt")
    batch = {"image": torch.randn(4, 1, 16, 16), "label": torch.zeros(4, 1, 16, 16).long()}
    first = module.mix(batch)["image"]
    module.on_load_checkpoint(torch.load(tmp_path / "state.ckpt", weights_only=True))
    assert torch.equal(module.mix(batch)["image"], first)


def test_unlabeled_mixed_images_take_the_teachers_argmax_as_targets(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """With mix, the label-needing terms get the composite's labels where both sources are
    labeled and the teacher's argmax on the composite elsewhere."""
    module, setup = _module_with_fake_teacher(
        phantom_lits, tmp_path, "enet", ["distill=emkd_balanced_region_cutmix"]
    )
    seen: dict[str, Any] = {}
    module.teacher.register_forward_hook(lambda _m, args, out: seen.update(teacher=out.logits))
    module.criterion.register_forward_pre_hook(lambda _m, args: seen.update(targets=args[2]))
    module.mix.generator.manual_seed(11)
    b = 8
    batch = {
        "image": torch.randn(b, 1, 32, 32),
        "label": torch.randint(1, 3, (b, 1, 32, 32)),
        "labeled": torch.tensor([True, True, True, True, False, False, True, True]),
    }
    expected = MixGenerator("cutmix", 0)
    expected.generator.manual_seed(11)
    mixed = expected(batch)
    assert not bool(mixed["labeled"].all()) and bool(mixed["labeled"].any())
    module.training_step(batch, 0)
    argmax = seen["teacher"].argmax(1)
    for i in range(b):
        want = mixed["label"][i, 0] if bool(mixed["labeled"][i]) else argmax[i]
        assert torch.equal(seen["targets"][i], want), i


def test_without_mix_one_student_and_one_teacher_pass_on_the_clean_batch(
    phantom_lits: Path, tmp_path: Path
) -> None:
    module, _ = _module_with_fake_teacher(phantom_lits, tmp_path, "enet", ["distill=kd"])
    assert module.mix is None
    calls: list[tuple[str, torch.Tensor]] = []
    module.net.register_forward_pre_hook(lambda _m, a: calls.append(("student", a[0])))
    module.teacher.register_forward_pre_hook(lambda _m, a: calls.append(("teacher", a[0])))
    batch = {"image": torch.randn(4, 1, 32, 32), "label": torch.randint(0, 3, (4, 1, 32, 32))}
    module.training_step(batch, 0)
    assert [who for who, _ in calls] == ["student", "teacher"]
    assert all(x is batch["image"] for _, x in calls)


def test_report_names_a_mix_added_to_a_preset() -> None:
    """kdseg-report groups rows by method and model: `distill=kd +distill.mix=cutmix` is not
    plain kd, and a network trained with a speed option is not pooled with default runs."""
    from kdseg.eval.runs import method_label, model_label

    assert model_label({"name": "enet", "width": 0.25, "compile": None}) == "enet (w 0.25)"
    assert model_label({"name": "enet", "width": 0.25, "compile": True}) == (
        "enet (w 0.25, compiled)"
    )
    assert model_label({"name": "raunet", "width": 0.5, "channels_last": True}) == (
        "raunet (w 0.5, channels-last)"
    )

    assert method_label({"name": "kd"}) == "kd"
    assert method_label({"name": "kd", "mix": None}) == "kd"
    assert method_label({"name": "kd", "mix": "cutmix"}) == "kd+cutmix"
    # a live teacher's speed options change the bits: a row of their own; the cache does not
    teacher = {"ckpt": "t.ckpt", "compile": True, "channels_last": None, "cache": "c"}
    assert method_label({"name": "emkd"}, teacher) == "emkd, teacher compiled"
    assert method_label({"name": "emkd"}, {"cache": "c", "compile": False}) == "emkd"
    assert method_label({"name": "emkd_balanced_region_cutmix", "mix": "cutmix"}) == (
        "emkd_balanced_region_cutmix"
    )


def test_loss_mix_adds_seg_on_a_cutmix_with_mixed_labels_in_plain_training(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """The control: ``loss.mix=cutmix`` trains the student alone on the clean batch and on a
    CutMix of it (mixed labels), from a stream of its own saved under its own key."""
    from kdseg.lit.segment import SegmentationModule

    module, _ = _module_with_fake_teacher(
        phantom_lits, tmp_path, "enet", ["distill=emkd_balanced_region_cutmix", "loss.mix=cutmix"]
    )
    plain = SegmentationModule(
        model=module.hparams["model"], data=module.hparams["data"], optim={}, loss={"mix": "cutmix"}
    )
    for m in (module, plain):
        assert m.label_mix is not None and m.label_mix.key != MixGenerator.KEY
    saved: dict[str, Any] = {}
    module.on_save_checkpoint(saved)
    assert set(saved) == {MixGenerator.KEY, module.label_mix.key}

    calls: list[torch.Tensor] = []
    plain.net.register_forward_pre_hook(lambda _m, a: calls.append(a[0]))
    batch = {"image": torch.randn(8, 1, 32, 32), "label": torch.randint(0, 3, (8, 1, 32, 32))}
    plain.label_mix.generator.manual_seed(3)
    twin = MixGenerator("cutmix", 0, stream=1)
    twin.generator.manual_seed(3)
    mixed = twin(batch)
    plain.eval()  # no dropout: the loss can be recomputed
    loss = plain.training_step(batch, 0)
    assert len(calls) == 2 and calls[0] is batch["image"]
    assert torch.equal(calls[1], mixed["image"])
    expected = plain.seg_loss(plain.net(batch["image"]).logits, batch["label"]) + plain.seg_loss(
        plain.net(mixed["image"]).logits, mixed["label"]
    )
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="loss.mix must be null"):
        SegmentationModule(
            model=module.hparams["model"], data=module.hparams["data"], optim={}, loss={"mix": 1}
        )
