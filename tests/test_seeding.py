"""Same seed, same run: a seed fixes the student's initial weights in kdseg-train and
kdseg-distill alike (so each seed is a paired comparison), and repeats the first losses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import TINY_DATA, kdseg

STEPS = ["trainer.max_steps=3", "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]
STUDENT = ["model.width=0.25"]


def _losses(run: Path) -> list[float]:
    with open(run / "csv" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_same_seed_same_initial_weights_in_train_and_distill_and_same_first_losses(
    phantom_lits: Path, trained_enet: Path, tmp_path: Path
) -> None:
    common = [*TINY_DATA, "logger=csv", f"data.root={phantom_lits}", *STEPS]
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        runs[name] = tmp_path / f"train-{name}"
        kdseg(
            "train", *common, "model=enet", *STUDENT, f"seed={seed}", f"hydra.run.dir={runs[name]}"
        )
    runs["d"] = tmp_path / "distill"
    kdseg(
        "distill",
        *common,
        "student=enet",
        "student.width=0.25",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'last.ckpt'}",
        "seed=7",
        f"hydra.run.dir={runs['d']}",
    )
    sums = {k: _summary(v)["init_weights_sha256"] for k, v in runs.items()}
    assert sums["a"] and sums["a"] == sums["b"] == sums["d"], sums
    assert sums["c"] != sums["a"]
    first_a, first_b = _losses(runs["a"]), _losses(runs["b"])
    assert len(first_a) == 3 and first_a == first_b
    assert _losses(runs["c"]) != first_a


def test_foreach_adam_equals_the_per_parameter_loop_bit_for_bit() -> None:
    """Training builds Adam with ``foreach=True`` for speed; every recorded run used the loop."""
    import torch

    from kdseg.models import build_from_config

    def train(foreach: bool) -> torch.Tensor:
        torch.manual_seed(0)
        net = build_from_config({"name": "enet", "width": 0.25, "num_classes": 3})
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=foreach)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            loss = net(torch.randn(2, 1, 32, 32, generator=g)).logits.square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(train(False), train(True))


def test_augmentation_on_plain_tensors_draws_and_moves_pixels_as_with_metatensors() -> None:
    """``plain_tensors`` drops MONAI's metadata bookkeeping from the training augmentation; the
    pixels and the random stream stay bit for bit what they were, and the flag is restored."""
    from contextlib import nullcontext

    import torch
    from monai.data import get_track_meta
    from monai.utils import convert_to_tensor

    from kdseg.data.slices import build_augment, plain_tensors

    g = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.randn(3, 12, 10, generator=g), "label": torch.randint(0, 3, (1, 12, 10))}
        for _ in range(40)
    ]

    def augment(plain: bool) -> list[dict]:
        aug = build_augment({"flip": True, "rot90": True})
        aug.set_random_state(seed=7)
        out = []
        for item in items:
            with plain_tensors() if plain else nullcontext():
                out.append(convert_to_tensor(aug(dict(item)), track_meta=False))
        return out

    before, after = augment(False), augment(True)
    assert get_track_meta()  # restored
    assert any(not torch.equal(a["image"], i["image"]) for a, i in zip(after, items, strict=True))
    for a, b in zip(before, after, strict=True):
        for key in a:
            assert type(a[key]) is type(b[key]) is torch.Tensor
            assert torch.equal(a[key], b[key])


def test_class_maps_by_max_indices_equal_argmax_with_ties_and_nan() -> None:
    """Validation and the distillation's label guess take ``max(1).indices`` (several times
    faster on CPU than ``argmax(1)``); the recorded runs used ``argmax``: same first-maximum
    ties, same NaN handling, so the same validation Dice and the same best checkpoint."""
    import torch

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        x = torch.randint(0, 3, (4, 3, 9, 7), generator=g).float()  # many exact ties
        if trial % 3 == 0:
            x[0, 1, 2, 3] = float("nan")
            x[1, :, 0, 0] = float("nan")
        assert torch.equal(x.max(1).indices, x.argmax(1))


def test_global_streams_round_trip_and_a_gpu_checkpoints_cuda_states_on_a_cpu() -> None:
    """The global random streams a checkpoint stores (kdseg.data.rng) come back exactly; a CPU
    process stores no CUDA entry (CPU checkpoints keep their format), and a checkpoint from a
    GPU run, whose CUDA streams this process cannot hold, resumes its CPU streams anyway."""
    import random

    import numpy as np
    import torch

    from kdseg.data.rng import global_states, set_global_states

    states = global_states()
    assert "torch_cuda" not in states or torch.cuda.is_initialized()
    drawn = (random.random(), np.random.rand(), torch.rand(3))
    set_global_states({**states, "torch_cuda": [torch.zeros(16, dtype=torch.uint8)] * 9})
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])
