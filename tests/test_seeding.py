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
