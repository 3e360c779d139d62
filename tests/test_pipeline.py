"""End to end on tiny phantoms: prepare, train, resume, DDP, evaluate, predict back to geometry."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BIN, TINY_DATA, TINY_PHANTOM, kdseg, kdseg_here
from omegaconf import OmegaConf

from kdseg.data.dataset import resolve_data, split_store
from kdseg.data.phantom import PhantomConfig, generate_case
from kdseg.errors import InputError
from kdseg.eval.checkpoint import load_bundle
from kdseg.lit.resume import wandb_history


def _data_cfg(root: Path, **overrides) -> dict:
    from hydra import compose, initialize_config_dir

    import kdseg.config  # noqa: F401
    from kdseg.cli import CONFIG_PATH, to_dict

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY_DATA,
                f"data.root={root}",
                *[f"{k}={v}" for k, v in overrides.items()],
            ],
        )
    return to_dict(cfg.data)


def test_prepare_is_idempotent_and_cache_is_complete(phantom_lits: Path) -> None:
    first = kdseg_here("prepare", *TINY_DATA, f"data.root={phantom_lits}")
    assert "5 case(s) prepared" in first.stdout
    setup = resolve_data(_data_cfg(phantom_lits))
    metas = sorted(setup.cache_dir.glob("cases/*/meta.json"))
    assert len(metas) == 5
    stamp = [m.stat().st_mtime_ns for m in metas]
    kdseg_here("prepare", *TINY_DATA, f"data.root={phantom_lits}")
    assert [m.stat().st_mtime_ns for m in metas] == stamp  # nothing redone
    assert not (phantom_lits / "kdseg_split.json").exists()  # nothing written into the data
    assert not (phantom_lits / ".kdseg_cache").exists()
    split = json.loads(split_store(setup.cfg).read_text())  # persisted in the cache root
    assert split == {**split, **setup.split}
    assert {len(split[s]) for s in ("val", "test")} == {1}
    assert not set(split["train"]) & set(split["val"]) and not set(split["val"]) & set(
        split["test"]
    )


def test_datamodule_delivers_context_slices_and_task_labels(phantom_lits: Path) -> None:
    cfg = _data_cfg(
        phantom_lits, **{"data.context": 1, "data.task": "tumor", "data.sampling": "target"}
    )
    setup = resolve_data(cfg)
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=7)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 48, 48) and batch["image"].dtype == torch.float32
    assert set(batch["label"].unique().tolist()) <= {0, 1}
    assert all(
        b["label"].sum() > 0 for b in [dm.train_set[i] for i in range(len(dm.train_set))][:5]
    )
    again = setup.datamodule(seed=7)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))["image"], batch["image"])  # seeded


def test_multiclass_task_can_oversample_tumor_slices(phantom_lits: Path) -> None:
    setup = resolve_data(_data_cfg(phantom_lits, **{"data.target_slices": "tumor"}))
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=0)
    dm.setup("fit")
    tumor = {(c.case_id, z) for c in dm.train_set.cases for z in c.tumor_slices}
    flagged = {
        (dm.train_set.cases[ci].case_id, z)
        for (ci, z), target in zip(dm.train_set.index, dm.train_set.is_target, strict=True)
        if target
    }
    assert flagged == tumor and tumor  # multiclass labels, tumor slices as the targets
    with pytest.raises(InputError, match="target_slices"):
        resolve_data(_data_cfg(phantom_lits, **{"data.target_slices": "kidney"})).datamodule(0)


def test_oversampling_without_a_tumor_slice_says_its_draws_are_uniform(
    tmp_path: Path, caplog
) -> None:
    """``sampling=oversample`` of tumor slices on a training split without one draws every
    slice alike: one warning line, once (``sampling=target`` refuses the same split)."""
    from kdseg.data.phantom import write_dataset

    root = tmp_path / "lits"
    config = PhantomConfig(
        dataset="lits", size_range=(64, 64), slices_range=(10, 12), p_no_tumor=1.0
    )
    write_dataset(root, config, n_cases=3, seed=1, progress=False)
    setup = resolve_data(_data_cfg(root, **{"data.target_slices": "tumor"}))
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=0)
    with caplog.at_level("WARNING", logger="kdseg.data.datamodule"):
        dm.setup("fit")
        dm.setup("test")
    # (the datamodule's own records: in a whole-suite run a second record was caught here,
    # from a test run before this one in the same worker)
    said = [r.getMessage() for r in caplog.records if r.name == "kdseg.data.datamodule"]
    assert len(said) == 1, [f"{r.name}: {r.getMessage()}" for r in caplog.records]
    assert said[0] == (
        "data.sampling=oversample: no training slice holds the tumor "
        "(data.target_slices=tumor), so nothing is oversampled: slices are drawn uniformly, "
        "as data.sampling=all draws them"
    )
    caplog.clear()
    organ = resolve_data(_data_cfg(root, **{"data.target_slices": "organ"})).datamodule(0)
    with caplog.at_level("WARNING", logger="kdseg.data.datamodule"):
        organ.setup("fit")
    assert not [r for r in caplog.records if r.name == "kdseg.data.datamodule"]


def test_val_target_slices_are_the_tasks_own_whatever_target_slices_says(
    phantom_lits: Path,
) -> None:
    """``val_sampling=target`` validates on the slices holding the task's target (the organ
    for the multiclass task), as ``kdseg-eval protocol=paper`` scores; ``target_slices=tumor``
    changes the training draws only."""
    overrides = {"data.target_slices": "tumor", "data.val_sampling": "target"}
    setup = resolve_data(_data_cfg(phantom_lits, **overrides))
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=0)
    dm.setup("fit")
    for part in (dm.val_set, dm.test_set):
        organ = {(c.case_id, z) for c in part.cases for z in c.organ_slices}
        kept = {(part.cases[ci].case_id, z) for ci, z in part.index}
        tumor = {(c.case_id, z) for c in part.cases for z in c.tumor_slices}
        assert kept == organ and tumor < organ  # organ slices, more than the tumor's


def test_lesion_slice_weights_give_each_tumor_the_same_share() -> None:
    """A 1-slice tumor and a 4-slice tumor, one slice shared with a third 2-slice tumor: the
    weights sum to 1 per tumor, and a slice cut by two tumors carries both shares."""
    from kdseg.data.slices import lesion_slice_weights

    label = np.zeros((8, 16, 16), dtype=np.uint8)
    label[:, 2:14, 2:14] = 1  # organ
    label[1, 3:5, 3:5] = 2  # one slice
    label[3:7, 8:12, 8:12] = 2  # four slices
    label[6:8, 3:5, 10:12] = 2  # two slices, apart in-plane from the four-slice one
    weights = lesion_slice_weights(label)
    assert weights == pytest.approx({1: 1.0, 3: 0.25, 4: 0.25, 5: 0.25, 6: 0.75, 7: 0.5})
    assert sum(weights.values()) == pytest.approx(3.0)  # three tumors
    assert lesion_slice_weights(np.ones((3, 4, 4), dtype=np.uint8)) == {}


def test_lesion_weighting_draws_small_tumors_as_often_as_large(phantom_lits: Path) -> None:
    """``data.target_weighting=lesion``: the sampler's weights of each case's tumor slices
    follow lesion_slice_weights, the non-target share is unchanged, and it is refused for
    organ targets; the default keeps every tumor slice alike."""
    from kdseg.data.slices import lesion_slice_weights

    overrides = {"data.target_slices": "tumor", "data.target_fraction": 0.7}
    setup = resolve_data(
        _data_cfg(phantom_lits, **overrides, **{"data.target_weighting": "lesion"})
    )
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=0)
    dm.setup("fit")
    weights = dm._sampler().weights
    flags = torch.tensor(dm.train_set.is_target)
    assert weights[flags].sum() == pytest.approx(0.7) and weights[~flags].sum() == pytest.approx(
        0.3
    )
    expected = {
        (ci, z): w
        for ci, case in enumerate(dm.train_set.cases)
        for z, w in lesion_slice_weights(np.asarray(case.label)).items()
    }
    total = sum(expected.values())
    assert len({round(w, 9) for w in expected.values()}) > 1  # tumors of unequal extent
    for i, key in enumerate(dm.train_set.index):
        if dm.train_set.is_target[i]:
            assert float(weights[i]) == pytest.approx(0.7 * expected[key] / total)
    plain = resolve_data(_data_cfg(phantom_lits, **overrides)).datamodule(seed=0)
    plain.setup("fit")
    target = plain._sampler().weights[flags]
    assert torch.allclose(target, torch.full_like(target, 0.7 / int(flags.sum())))
    organ = {"data.target_slices": "organ", "data.target_weighting": "lesion"}
    fix = "target_weighting=lesion needs tumor target slices: set data.target_slices=tumor"
    with pytest.raises(InputError, match=fix):  # from the config, before any preparation
        resolve_data(_data_cfg(phantom_lits, **organ))
    from kdseg.data.datamodule import SliceDataModule
    from kdseg.data.loader_settings import LoaderConfig
    from kdseg.data.slices import SliceDataset

    loader = LoaderConfig(target_slices="organ", target_weighting="lesion")
    with pytest.raises(InputError, match=fix):  # the loaders check the same
        SliceDataModule(setup.cache_dir, setup.split, loader)
    with pytest.raises(InputError, match=fix):
        SliceDataset(dm.train_set.cases, dm.task, target_weighting="lesion")
    only = {**overrides, "data.sampling": "target", "data.target_weighting": "lesion"}
    targets_only = resolve_data(_data_cfg(phantom_lits, **only)).datamodule(seed=0)
    targets_only.setup("fit")
    drawn = targets_only._sampler().weights  # only tumor slices: each weighs its lesion share
    assert torch.equal(
        drawn, torch.tensor(targets_only.train_set.target_weight, dtype=torch.double)
    )
    assert len({round(float(w), 9) for w in drawn}) > 1
    with pytest.raises(InputError, match="needs data.sampling=oversample or target"):
        every = {"data.sampling": "all", "data.target_weighting": "lesion"}
        resolve_data(_data_cfg(phantom_lits, **every)).datamodule(seed=0)
    with pytest.raises(InputError, match="target_weighting must be"):
        resolve_data(_data_cfg(phantom_lits, **{"data.target_weighting": "size"})).datamodule(0)


def test_training_writes_checkpoints_config_and_metrics(trained_enet: Path) -> None:
    assert (trained_enet / "checkpoints" / "best.ckpt").exists()
    assert (trained_enet / "checkpoints" / "last.ckpt").exists()
    assert (trained_enet / ".hydra" / "config.yaml").exists() and (
        trained_enet / "config.yaml"
    ).exists()
    metrics = (trained_enet / "csv" / "metrics.csv").read_text()
    assert "val/dice_organ" in metrics and "val/dice_tumor" in metrics
    raw = torch.load(trained_enet / "checkpoints" / "best.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["data"]["preprocess"]["in_plane_size"] == [48, 48]


def test_an_offline_wandb_run_ends_with_the_command_that_uploads_it(tmp_path: Path) -> None:
    """The README promises ``wandb sync <run>/wandb/offline-run-*``, but kdseg silences wandb,
    whose own end-of-run line gave that command: a run that logged offline prints it."""
    from kdseg.lit.train import wandb_sync_hint

    run = tmp_path / "my run"
    assert wandb_sync_hint(run, {}) is None  # nothing logged to wandb (logger=csv)
    (run / "wandb" / "offline-run-20261207_103249-j9xcpid5").mkdir(parents=True)
    hint = wandb_sync_hint(run, {"wandb": {"enabled": True, "offline": True}})
    assert hint == f"wandb (offline): wandb sync '{run}/wandb'/offline-run-*"
    assert wandb_sync_hint(run, {"wandb": {"offline": False}}) is None  # online: synced
    assert wandb_sync_hint(run, {"wandb": {"enabled": False}}) is None


def test_eval_writes_per_case_and_summary(trained_enet: Path, phantom_lits: Path) -> None:
    out = trained_enet / "eval-test"
    result = kdseg_here(
        "eval",
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        f"output_dir={out}",
    )
    assert "organ" in result.stdout and "tumor" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["summary"]) == {"organ", "tumor"}
    assert 0.0 <= summary["summary"]["organ"]["dice_mean"] <= 1.0
    rows = (out / "per_case.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + one test case x two classes


def test_predict_restores_geometry_of_flipped_and_permuted_input(
    trained_enet: Path, tmp_path: Path
) -> None:
    cfg = PhantomConfig(dataset="lits", size_range=(64, 72), slices_range=(14, 18))
    plain_img, _, _ = generate_case(replace(cfg, flip_prob=0.0, permute_prob=0.0), 5)
    odd_img, _, _ = generate_case(replace(cfg, flip_prob=1.0, permute_prob=1.0), 5)
    assert nib.aff2axcodes(odd_img.affine) != nib.aff2axcodes(plain_img.affine)
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    preds = {}
    for name, img in (("plain", plain_img), ("odd", odd_img)):
        nib.save(img, str(tmp_path / f"{name}.nii.gz"))
        kdseg_here(
            "predict",
            f"ckpt={ckpt}",
            f"input={tmp_path / name}.nii.gz",
            f"output={tmp_path / name}-pred.nii.gz",
        )
        out = nib.load(str(tmp_path / f"{name}-pred.nii.gz"))
        assert out.shape == img.shape
        np.testing.assert_allclose(out.affine, img.affine, atol=1e-5)
        assert out.get_data_dtype() == np.uint8
        preds[name] = np.asarray(nib.as_closest_canonical(out).dataobj)
    assert (preds["plain"] > 0).mean() > 0.01  # an organ found: the comparison is not vacuous
    np.testing.assert_array_equal(preds["plain"], preds["odd"])
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def _signal_after_first_checkpoint(proc: subprocess.Popen, run: Path, sig: int) -> Path:
    """Send ``sig`` to a training process once its first ``last.ckpt`` exists (mid-run)."""
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be signalled mid-run"
    proc.send_signal(sig)
    return last


def test_killed_training_resumes_from_last_checkpoint(phantom_lits: Path, tmp_path: Path) -> None:
    """SIGKILL mid-run, rerun: the same steps, one continuous CSV log, one wandb run id."""
    run = tmp_path / "killed"
    args = [
        str(BIN / "kdseg-train"),
        *TINY_DATA,
        "logger=default",  # CSV and wandb (offline: run folders under the run dir)
        f"data.root={phantom_lits}",
        "model=enet",
        "model.width=0.25",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    last = _signal_after_first_checkpoint(proc, run, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert "resuming from" in result.stdout + result.stderr
    # 32 samples / batch 8 = 4 steps an epoch; killed mid-run, resumed to the end
    assert 4 <= killed_at < 3 * 4 and summary["global_step"] == 3 * 4
    # one continuous CSV log: every epoch's validation exactly once, steps never going back
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/dice_mean")]
    assert val_epochs == [0, 1, 2], val_epochs
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == 3 * 4 - 1
    # one wandb run: both processes wrote offline-run-*-<id> folders with the stored id
    run_id = (run / "wandb_id.txt").read_text().strip()
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and {f.name.rsplit("-", 1)[1] for f in folders} == {run_id}
    # and together they hold each CSV row once: none the kill lost, none logged twice (the
    # validation overlays are wandb's own: one per epoch)
    logged = sorted(
        (step, sorted(keys))
        for folder in folders
        for step, keys in wandb_history(folder / f"run-{run_id}.wandb")
        if not keys <= {"val/overlay", "val/dice_table"}
    )
    expected = sorted(
        (int(r["step"]), sorted(k for k, v in r.items() if v and k != "step")) for r in rows
    )
    assert logged == expected
    assert (run / "checkpoints" / "last-previous.ckpt").is_file()  # the one before last.ckpt
    assert "GPU available" not in result.stdout + result.stderr
    # best.ckpt is the best validation of the whole run, killed or not, and last.ckpt holds
    # the best callback's state after its own epoch (what a resume compares against)
    best_score = max(float(r["val/dice_mean"]) for r in rows if r.get("val/dice_mean"))
    assert summary["best_score"] == pytest.approx(best_score, abs=1e-6)
    states = torch.load(last, weights_only=True)["callbacks"]
    monitored = [v for k, v in states.items() if "val/dice_mean" in k]
    assert [float(v["best_model_score"]) for v in monitored] == [pytest.approx(best_score)]
    # a rerun of the finished run trains nothing and keeps its summary, log and record as they
    # were, though a setting outside the run's identity differs (its record is the trained run's)
    kept = ("summary.json", "csv/metrics.csv", "config.yaml", ".hydra/config.yaml", "split.json")
    before = {name: (run / name).read_bytes() for name in kept}
    rerun = [*args, "trainer.log_every_n_steps=7"]
    again = subprocess.run(rerun, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "had already finished at step 12: summary.json kept" in again.stdout + again.stderr
    assert {name: (run / name).read_bytes() for name in before} == before
    assert summary["metrics"]  # the summary kept is the one that trained
    # killed after its last checkpoint before its wandb files were written (each cut to its
    # 7-byte header), rerun: nothing is left to train, so the rerun logs nothing; its wandb
    # run catches up with the CSV log when it ends (it held none of its rows)
    for path in (run / "wandb").glob(f"offline-run-*/run-{run_id}.wandb"):
        path.write_bytes(path.read_bytes()[:7])
    again = subprocess.run(args, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "had already finished at step 12" in again.stdout + again.stderr
    caught_up = sorted(
        (step, sorted(keys))
        for path in (run / "wandb").glob(f"offline-run-*/run-{run_id}.wandb")
        for step, keys in wandb_history(path)
    )
    assert caught_up == expected
    # resume= the finished run's last.ckpt into a new folder: nothing is left to train, so no
    # epoch starts (where a run writes its record), yet the run saves its full config there
    new = tmp_path / "new"
    resumed = [*args[:-1], f"resume={last}", f"hydra.run.dir={new}", "logger=csv"]
    resumed.remove("logger=default")
    done = subprocess.run(resumed, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert OmegaConf.load(new / "config.yaml").resume == str(last)
    assert all((new / name).is_file() for name in (".hydra/config.yaml", "split.json"))
    assert json.loads((new / "summary.json").read_text())["global_step"] == 12


def test_ctrl_c_stops_training_with_exit_130(phantom_lits: Path, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) mid-run: exit code 130 and kdseg's one line, not Lightning's exit 1."""
    run = tmp_path / "interrupted"
    args = [
        str(BIN / "kdseg-train"),
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        "model=enet",
        "model.width=0.25",
        "trainer.max_epochs=50",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started in the background by a non-interactive shell (`make test &`) runs
        # with SIGINT ignored, and a child inherits that: give this one Ctrl-C back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _signal_after_first_checkpoint(proc, run, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-3000:]
    assert lines[-1] == (
        "kdseg-train: error: interrupted; unfinished outputs removed; to resume, rerun the same "
        f"command with hydra.run.dir={run}"
    ), err[-3000:]
    assert "Traceback" not in err


def _patched_enet(phantom_lits: Path, *extra: str) -> list[str]:
    """The resume tests' run: ENet w0.25 on the tiny phantoms with label-class patches."""
    return [
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        "model=enet",
        "model.width=0.25",
        "data.patch_size=[32,32]",
        "data.patch_ratios=[1,1,2]",
        *extra,
    ]


def _resume_from_previous(
    args: list[str],
    tmp_path: Path,
    step: int,
    edit: Callable[[dict], None] | None = None,
    command: str = "train",
) -> tuple[dict, str]:
    """Train ``args`` whole, then again from the whole run's ``last-previous.ckpt`` (as a run
    killed after that checkpoint leaves it; its ``global_step`` must be ``step``), and assert
    both end with the same weights bit for bit. ``edit``: changes the checkpoint in place
    before the resume (one as an older kdseg wrote it). Returns that checkpoint and the
    resumed run's output."""
    whole = tmp_path / "whole"
    kdseg(command, *args, f"hydra.run.dir={whole}")
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(whole / "checkpoints" / "last-previous.ckpt", resumed / "checkpoints" / "last.ckpt")
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == step
    if edit is not None:
        edit(ckpt)
        torch.save(ckpt, resumed / "checkpoints" / "last.ckpt")
    done = kdseg(command, *args, f"hydra.run.dir={resumed}")

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return ckpt, done.stdout + done.stderr


def test_resumed_run_draws_what_an_uninterrupted_one_would(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A run resumed from an epoch-end checkpoint ends with the same weights, bit for bit, as
    the run that was never stopped: the samplers, the augmentation and the global random
    streams continue where the checkpoint left them instead of starting again. With training
    patches, whose positions come from the random stream of the cropper inside MONAI's crop
    transform (a stream the transform's own does not move)."""
    args = _patched_enet(phantom_lits, "trainer.max_epochs=3")
    # the epoch-2 checkpoint of the whole run, as a run killed during epoch 3 would leave it
    _resume_from_previous(args, tmp_path, step=8)


def test_run_resumed_mid_epoch_draws_what_an_uninterrupted_one_would(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """The same from a step checkpoint written during an epoch (``every_n_train_steps=3``
    with 4 steps an epoch): the training loader's state in the checkpoint (Lightning's
    stateful-loader interface) sets the samplers back to the epoch's start and skips the
    batch the epoch had delivered, so the rest of the epoch, and every epoch after it, is
    the uninterrupted run's, and Lightning does not warn of a loader that cannot resume."""
    args = _patched_enet(phantom_lits, "trainer.max_epochs=3", "checkpoint.every_n_train_steps=3")
    # step 9: one batch into the third epoch, as a run killed during its second batch leaves it
    ckpt, output = _resume_from_previous(args, tmp_path, step=9)
    assert [s["batches"] for s in ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]] == [1]
    assert "not resumable" not in output

    # the resumed epoch's log line shows the train loss of the run that never stopped: the
    # checkpoint carries the loss of the batch before it (it showed the later batches' mean)
    def last_line(run: Path) -> str:
        lines = (run / "train.log").read_text().splitlines()
        return [line for line in lines if "epoch 3/3 step 12: train loss" in line][-1]

    whole, resumed = last_line(tmp_path / "whole"), last_line(tmp_path / "resumed")
    assert resumed.split(": ", 1)[1].split(", val")[0] == whole.split(": ", 1)[1].split(", val")[0]


@pytest.mark.parametrize(
    ("extra", "step"),
    [  # the epoch-end case in `make test-slow`: the mid-epoch one covers its draws and more
        pytest.param(["trainer.max_epochs=3"], 8, marks=pytest.mark.slow),
        (["trainer.max_epochs=3", "checkpoint.every_n_train_steps=3"], 9),
        (["trainer=ddp_fork", "trainer.max_epochs=2", "checkpoint.every_n_train_steps=1"], 3),
    ],
    ids=["epoch_end", "mid_epoch", "ddp_mid_epoch"],
)
def test_run_with_loader_workers_resumes_with_the_uninterrupted_runs_draws(
    phantom_lits: Path, tmp_path: Path, extra: list[str], step: int
) -> None:
    """With loader workers (``data.num_workers=2``, persistent) too, from an epoch-end
    checkpoint (step 8), from a step checkpoint one batch into the third epoch (step 9), and
    under DDP one batch into the second (step 3): a batch's flips and patch come from its own
    seed (the run's seed, the process, the epoch, the batch), not from the stream of the
    worker that reads it, and the loaders take their workers' seed from a generator of their
    own, not from torch's global stream. Before, the resumed run's workers started their
    streams anew (other flips and patches, max weight difference 0.43) and took a number from
    torch's stream that the uninterrupted run had taken before the checkpoint (other dropout
    masks). Under DDP the resumed workers also drew their first batches' indices before
    Lightning set the epoch of its distributed sampler (other slices; 0.24)."""
    args = _patched_enet(phantom_lits, *extra, "data.num_workers=2")
    _resume_from_previous(args, tmp_path, step=step)


def _without_epochs(ckpt: dict) -> None:
    """A checkpoint as kdseg wrote it before its loaders kept their epoch: no ``epochs`` in
    the data module's state, no ``epoch`` in the training loader's (each process's too)."""
    module = ckpt["SliceDataModule"]
    for state in (module, *module.get("ranks", [])):
        del state["epochs"]
    for loader in ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]:
        for state in (loader, *loader.get("ranks", [])):
            del state["epoch"]


@pytest.mark.parametrize(
    ("extra", "step"),
    [  # old checkpoints: one case in `make test`, the others in `make test-slow`
        pytest.param(["data.num_workers=2", "trainer.max_epochs=3"], 8, marks=pytest.mark.slow),
        (["data.num_workers=2", "trainer.max_epochs=3", "checkpoint.every_n_train_steps=3"], 9),
        pytest.param(
            [
                "data.num_workers=2",
                "trainer=ddp_fork",
                "trainer.max_epochs=2",
                "checkpoint.every_n_train_steps=1",
            ],
            3,
            marks=pytest.mark.slow,
        ),
    ],
    ids=["workers_epoch_end", "workers_mid_epoch", "workers_ddp_mid_epoch"],
)
def test_run_resumed_from_a_checkpoint_without_its_epoch_draws_the_uninterrupted_runs(
    phantom_lits: Path, tmp_path: Path, extra: list[str], step: int
) -> None:
    """A checkpoint from before the loaders kept their epoch (the key of the workers' batch
    seeds, and the epoch the training loader gives its sampler, which under DDP is Lightning's
    shuffling ``DistributedSampler``) resumes with the epoch Lightning runs next: the third
    after the second's end (step 8), the third again one batch into it (step 9), the third
    after a step checkpoint at the second's last batch (step 8, written before Lightning
    counts the epoch processed), the second under DDP one batch into it (step 3). Counting
    from 0 again, the workers augmented the resumed epochs as the first ones, and under DDP
    drew the resumed epoch's indices shuffled as the first's."""
    args = _patched_enet(phantom_lits, *extra)
    _resume_from_previous(args, tmp_path, step=step, edit=_without_epochs)


@pytest.mark.slow  # an old checkpoint under DDP: three runs; `make test-slow`
def test_ddp_run_without_workers_resumed_without_its_epoch_shuffles_the_later_epochs(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """Under DDP without workers Lightning sets the shuffle's epoch of the first resumed epoch
    after the loader (its iterator draws the indices lazily), but the loader sets the later
    epochs' itself: from a checkpoint without ``epochs`` resumed one batch into the second of
    four epochs, counting from 0 again shuffled the third and fourth as the second and third.
    The checkpoint comes from a two-epoch run (a run's ``last-previous.ckpt`` is in its last
    epoch), the same as the four-epoch one up to there with a constant learning rate."""
    args = _patched_enet(
        phantom_lits, "trainer=ddp_fork", "checkpoint.every_n_train_steps=1", "optim.min_lr=1e-2"
    )
    whole, short, resumed = tmp_path / "whole", tmp_path / "short", tmp_path / "resumed"
    kdseg("train", *args, "trainer.max_epochs=4", f"hydra.run.dir={whole}")
    kdseg("train", *args, "trainer.max_epochs=2", f"hydra.run.dir={short}")
    (resumed / "checkpoints").mkdir(parents=True)
    ckpt = torch.load(short / "checkpoints" / "last-previous.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # 2 batches an epoch on each process
    _without_epochs(ckpt)
    torch.save(ckpt, resumed / "checkpoints" / "last.ckpt")
    kdseg("train", *args, "trainer.max_epochs=4", f"hydra.run.dir={resumed}")

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_run_resumed_mid_epoch_draws_what_an_uninterrupted_one_would(
    phantom_lits: Path, trained_enet: Path, tmp_path: Path
) -> None:
    """Two processes, each drawing its own: process 1 draws the unlabeled slices that process
    0 leaves undrawn after its last batch of an epoch, and label-class patches of its own
    slices. The checkpoint (written by process 0) holds every process's samplers and
    augmentation streams; with process 0's alone, process 1 resumed with other draws (max
    weight difference 0.21)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in (0, 3):
        shutil.copy(phantom_lits / f"volume-{i}.nii.gz", scans / f"scan-{i}.nii.gz")
    args = [  # kdseg-distill: unlabeled scans need a teacher (kdseg-train refuses them)
        *(a for a in _patched_enet(phantom_lits) if not a.startswith("model")),
        "student=enet",
        "student.width=0.25",
        "distill=kd",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        f"data.cache_root={tmp_path / 'cache'}",
        "trainer=ddp_fork",
        "trainer.max_epochs=2",
        "checkpoint.every_n_train_steps=1",
        f"data.unlabeled_root={scans}",
        "data.unlabeled_fraction=0.25",
    ]
    # step 3: one batch into the second epoch (2 batches an epoch on each process)
    ckpt, _ = _resume_from_previous(args, tmp_path, step=3, command="distill")
    assert len(ckpt["SliceDataModule"]["ranks"]) == 2


def _ddp_module(setup, world: int, rank: int, stage: str = "fit"):
    """A data module as process ``rank`` of ``world`` DDP processes sees it (no training)."""
    from types import SimpleNamespace

    dm = setup.datamodule(seed=5)
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank) if world > 1 else None
    dm.setup(stage)
    return dm


def _lightning_replaces(loader) -> bool:
    """Whether Lightning's DDP puts a ``DistributedSampler`` of its own in ``loader``."""
    from types import SimpleNamespace

    from pytorch_lightning.trainer.connectors.data_connector import _DataConnector

    connector = SimpleNamespace(use_distributed_sampler=True, is_distributed=True)
    this = SimpleNamespace(trainer=SimpleNamespace(_accelerator_connector=connector))
    return _DataConnector._requires_distributed_sampler(this, loader)


@pytest.mark.parametrize(
    "overrides",
    [{"data.sampling": "all"}, {"data.sampling": "target", "data.samples_per_epoch": "null"}],
    ids=["all", "target_one_pass"],
)
def test_ddp_uniform_sampling_keeps_its_draws(phantom_lits: Path, overrides: dict) -> None:
    """``sampling=all|target`` under DDP: the processes share out the one-process draws
    (``samples_per_epoch`` of them, or one pass without it) from the run's seeded generator,
    and Lightning leaves the sampler as it is. Before, Lightning replaced the
    ``RandomSampler`` with a ``DistributedSampler`` over the dataset: one pass of the training
    slices an epoch whatever ``samples_per_epoch`` said, shuffled from its own seed. One
    process draws as before, bit for bit; a resumed process continues its draws."""
    from torch.utils.data import RandomSampler

    setup = resolve_data(_data_cfg(phantom_lits, **overrides))
    setup.prepare(progress=False)
    one = _ddp_module(setup, 1, 0)
    loader = one.train_dataloader()
    n = len(one.train_set) if overrides.get("data.samples_per_epoch") == "null" else 32
    old = RandomSampler(  # the sampler of the one-process runs before
        one.train_set,
        replacement=n == 32,
        num_samples=n,
        generator=torch.Generator().manual_seed(5),
    )
    single = list(loader.sampler)
    assert single == list(old) and len(single) == n
    if n != 32:
        assert sorted(single) == list(range(n))  # one pass: every slice once
    ranks = [_ddp_module(setup, 2, rank) for rank in (0, 1)]
    loaders = [dm.train_dataloader() for dm in ranks]
    assert not any(_lightning_replaces(loader) for loader in loaders)
    shares = [list(loader.sampler) for loader in loaders]
    assert len(shares[0]) == len(shares[1]) == len(loaders[0].sampler) == -(-n // 2)
    padded = single + single[: len(single) % 2]
    assert shares[0] == padded[0::2] and shares[1] == padded[1::2]
    # the second epoch, and a process resumed at its end (the data module's saved state)
    second = list(loaders[1].sampler)
    state = ranks[1].state_dict()
    resumed = _ddp_module(setup, 2, 1)
    resumed.load_state_dict(state)
    again = resumed.train_dataloader()
    third = list(loaders[1].sampler)
    assert list(again.sampler) == third and third != second


def test_ddp_validation_scores_each_slice_once(phantom_lits: Path) -> None:
    """Under DDP the validation and test slices are shared out unpadded, each scored by one
    process (the gathered Dice counts each once; the shares may differ by a slice), and
    Lightning leaves the samplers as they are. Before, Lightning's padding
    ``DistributedSampler`` scored some slices on two processes."""
    setup = resolve_data(_data_cfg(phantom_lits))
    setup.prepare(progress=False)
    for stage, loader_of in (("fit", "val_dataloader"), ("test", "test_dataloader")):
        one = getattr(_ddp_module(setup, 1, 0, stage), loader_of)()
        n = len(one.dataset)
        assert list(one.sampler) == list(range(n)) and n >= 3
        for world in (2, 3):
            loaders = [
                getattr(_ddp_module(setup, world, r, stage), loader_of)() for r in range(world)
            ]
            assert not any(_lightning_replaces(loader) for loader in loaders)
            shares = [list(loader.sampler) for loader in loaders]
            assert sorted(i for share in shares for i in share) == list(range(n))
            assert [len(share) for share in shares] == [len(loader.sampler) for loader in loaders]


def test_ddp_workers_write_neither_run_config_nor_wandb_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DDP process other than the first (``RANK``/``LOCAL_RANK``/``SLURM_PROCID`` nonzero)
    checks the run dir but leaves ``config.yaml`` to the first, and reads the run's wandb id
    without making one (``None`` while there is none: its ``WandbLogger`` makes no run).
    Before, every process rewrote ``config.yaml``, and processes started together each made
    and stored a wandb id, the last one written winning over the first process's run."""
    from omegaconf import OmegaConf

    import kdseg.cli
    from kdseg.lit.resume import wandb_run_id

    cfg = OmegaConf.create({"seed": 1, "data": {"batch_size": 8}})
    monkeypatch.setattr(kdseg.cli, "run_dir", lambda: tmp_path)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    out, _, record = kdseg.cli.save_run_config(cfg)
    assert out == tmp_path
    record()  # as training starts
    assert wandb_run_id(tmp_path) is None
    assert not list(tmp_path.iterdir())
    monkeypatch.delenv("LOCAL_RANK")
    record = kdseg.cli.save_run_config(cfg)[2]
    assert not list(tmp_path.iterdir())  # written once training starts
    record()
    assert OmegaConf.load(tmp_path / "config.yaml") == cfg
    run_id = wandb_run_id(tmp_path)
    assert run_id and (tmp_path / "wandb_id.txt").read_text() == run_id + "\n"
    monkeypatch.setenv("RANK", "1")
    assert wandb_run_id(tmp_path) == run_id  # the first process's, once written


@pytest.mark.parametrize("sampling", ["oversample", "all"])
def test_ddp_two_cpu_processes(phantom_lits: Path, tmp_path: Path, sampling: str) -> None:
    """``sampling=all`` too: before, Lightning swapped its sampler for one pass of the
    training slices (3 steps, not ``samples_per_epoch``'s 2)."""
    run = tmp_path / "ddp"
    done = kdseg(
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"data.sampling={sampling}",
        "model=enet",
        "model.width=0.25",
        "trainer=ddp_fork",  # forked workers (the other DDP test: the subprocess launcher)
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2  # 32 samples over 2 ranks of batch 8
    # the workers trained: the summary reads their step, epoch and best score, not this
    # process's idle trainer
    assert summary["epochs"] == 1 and summary["best_score"] is not None
    assert summary["best_checkpoint"].endswith("best.ckpt")
    assert load_bundle(run / "checkpoints" / "last.ckpt").model is not None
    out = done.stdout + done.stderr  # quiet as a one-process run: no banners, one summary line
    for noise in ("Initializing distributed", "distributed_backend", "deprecated", "sync_dist"):
        assert noise not in out, out
    assert out.count("best checkpoint:") == 1, out


def test_ddp_throughput_is_the_jobs(phantom_lits: Path, tmp_path: Path) -> None:
    """Past the timer's warm-up (5 steps) under DDP, Lightning's subprocess launcher: each
    process logged ``perf/*`` without ``sync_dist`` (a "It is recommended to use
    self.log(..., sync_dist=True)" line a key) and ``summary.json``'s throughput was rank 0's
    alone. Now the job's: the timed slices of both processes, no warning."""
    run = tmp_path / "ddp-timed"
    done = kdseg(
        "train",
        *TINY_DATA,
        "data.samples_per_epoch=112",  # 7 steps a process: steps 6 and 7 are timed
        "logger=csv",
        f"data.root={phantom_lits}",
        f"data.cache_root={tmp_path / 'cache'}",
        "model=enet",
        "model.width=0.25",
        "trainer=ddp",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    )
    out = done.stdout + done.stderr
    assert "sync_dist" not in out and "recommended" not in out, out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 7
    throughput = summary["throughput"]
    assert throughput["slices"] == 2 * 2 * 8  # both processes' two timed steps of 8 slices
    assert throughput["slices_per_s"] > 0 and 0 <= throughput["data_wait_frac"] <= 1
    assert summary["metrics"]["perf/slices_per_s"] == pytest.approx(
        throughput["slices_per_s"], rel=1e-3
    )  # one epoch: the epoch's figure is the fit's
    (metrics,) = (run / "csv").rglob("metrics.csv")
    assert "perf/slices_per_s" in metrics.read_text().splitlines()[0]


def test_ddp_distill_with_unlabeled_scans(
    phantom_lits: Path, trained_enet: Path, tmp_path: Path
) -> None:
    """Two CPU processes distil with a quarter of every batch from unlabeled scans: the mixed
    sampler is split by batch between them (Lightning does not re-shuffle it)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in (0, 3):
        shutil.copy(phantom_lits / f"volume-{i}.nii.gz", scans / f"scan-{i}.nii.gz")
    run = tmp_path / "ddp-unlabeled"
    kdseg(
        "distill",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"data.cache_root={tmp_path / 'cache'}",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        "student=enet",
        "student.width=0.25",
        "distill=kd",
        f"data.unlabeled_root={scans}",
        "data.unlabeled_fraction=0.25",
        "trainer=ddp",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2  # 32 samples, 4 batches of 8, 2 on each rank


@pytest.mark.parametrize("dataset,layout", [("kits", "kits19")])
def test_same_commands_on_kits_layout(tmp_path: Path, dataset: str, layout: str) -> None:
    root = tmp_path / layout
    kdseg_here("phantom", f"dataset={dataset}", f"root={root}", "n_cases=4", TINY_PHANTOM)
    assert (root / "case_00000" / "imaging.nii.gz").exists()
    run = tmp_path / "run"
    kdseg_here(
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data={layout}",
        f"data.root={root}",
        "model=enet",
        "model.width=0.25",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    )
    bundle = load_bundle(run / "checkpoints" / "last.ckpt")
    assert bundle.data["name"] == "kits19" and bundle.preprocess.window == (-200.0, 300.0)


def test_every_registered_model_trains_through_kdseg_train(
    phantom_lits: Path, tmp_path: Path
) -> None:
    from kdseg.cli import CONFIG_PATH
    from kdseg.models import available_models

    names = sorted(p.stem for p in Path(CONFIG_PATH, "model").glob("*.yaml"))
    assert set(names) <= set(available_models()) and len(names) >= 8
    sweep = tmp_path / "sweep"
    kdseg_here(
        "train",
        "-m",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"model={','.join(names)}",
        "model.width=0.25",
        "trainer.max_epochs=1",
        "data.samples_per_epoch=8",
        "+trainer.limit_val_batches=1",
        f"hydra.sweep.dir={sweep}",
    )
    for i, name in enumerate(names):
        summary = json.loads((sweep / str(i) / "summary.json").read_text())
        assert summary["global_step"] == 1, name
        assert load_bundle(summary["last_checkpoint"]).model_config["name"] == name


def test_patch_training_crops_train_slices_only_and_centres_on_the_weighted_class(
    phantom_lits: Path,
) -> None:
    """``data.patch_size``: training items are patches of that size (image, label and the
    same crop for both), validation items stay whole slices; with ``patch_ratios`` weighting
    only the tumor, every patch of a tumor slice holds tumor; draws are seeded."""
    overrides = {
        "data.patch_size": "[24,16]",
        "data.patch_ratios": "[1e-9,1e-9,1.0]",
        "data.augment.rot90": "false",
        "data.target_slices": "tumor",
        "data.sampling": "target",
    }
    setup = resolve_data(_data_cfg(phantom_lits, **overrides))
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 1, 24, 16) and batch["label"].shape == (8, 1, 24, 16)
    assert all((label == 2).any() for label in batch["label"])  # centred on a tumor voxel
    assert dm.val_set[0]["image"].shape[-2:] == (48, 48)
    again = setup.datamodule(seed=3)
    again.setup("fit")
    repeat = next(iter(again.train_dataloader()))
    assert torch.equal(repeat["image"], batch["image"]) and torch.equal(
        repeat["label"], batch["label"]
    )
    # without flips, a patch is a window of its slice, and its label the same window's
    plain = {**overrides, "data.augment.flip": "false"}
    dm = resolve_data(_data_cfg(phantom_lits, **plain)).datamodule(seed=3)
    dm.setup("fit")
    for i in range(4):
        item = dm.train_set[i]
        ci, z = dm.train_set.index[i]
        case = dm.train_set.cases[ci]
        image = torch.from_numpy(np.asarray(case.image[z], dtype=np.float32))
        label = torch.from_numpy(np.asarray(case.label[z]).astype(np.int64))
        windows = [
            (r, c)
            for r in range(48 - 24 + 1)
            for c in range(48 - 16 + 1)
            if torch.equal(image[r : r + 24, c : c + 16], item["image"][0])
        ]
        assert windows and any(
            torch.equal(label[r : r + 24, c : c + 16], item["label"][0]) for r, c in windows
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.patch_size": "[0,16]"}, "data.patch_size must be"),
        ({"data.patch_size": "[16]"}, "data.patch_size must be"),
        ({"data.patch_ratios": "[1,1,1]"}, "needs data.patch_size"),
        ({"data.patch_size": "[16,16]", "data.patch_ratios": "[1,1]"}, "3 finite numbers > 0"),
        ({"data.patch_size": "[16,16]", "data.patch_ratios": "[1,0,1]"}, "3 finite numbers > 0"),
        ({"data.patch_size": "[16,16]", "data.patch_ratios": "[1,nan,1]"}, "3 finite"),
    ],
)
def test_bad_patch_settings_are_refused(phantom_lits: Path, overrides, message) -> None:
    with pytest.raises(InputError, match=message):
        resolve_data(_data_cfg(phantom_lits, **overrides)).datamodule(0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.context": "-1"}, r"data.context must be a whole number >= 0, got -1"),
        ({"data.sampling": "targets"}, r"data.sampling must be one of"),
        ({"data.val_sampling": "some"}, r"data.val_sampling must be one of"),
        ({"data.target_slices": "liver"}, r"data.target_slices must be one of"),
        ({"data.target_weighting": "lesions"}, r"data.target_weighting must be null, slice"),
        ({"data.batch_size": "0"}, r"data.batch_size must be a whole number >= 1"),
        ({"data.num_workers": "-1"}, r"data.num_workers must be a whole number >= 0"),
        ({"data.unlabeled_fraction": "1.0"}, r"data.unlabeled_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_loader_settings_are_refused_before_the_cache_is_prepared(
    phantom_lits: Path, tmp_path: Path, overrides, message
) -> None:
    """A loader setting no loader can run is one line from the config alone (resolve_data,
    which training runs before preparing the cache), not after hours of preparation."""
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=message):
        resolve_data(_data_cfg(phantom_lits, **overrides, **{"data.cache_root": cache}))
    assert not cache.exists()  # nothing prepared


def test_unlabeled_scans_with_one_slice_batches_are_refused(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """Every batch keeps one labeled slice: with ``batch_size=1`` no unlabeled scan would ever
    be drawn, so ``unlabeled_fraction > 0`` is refused there (and 0 is fine)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    image = next(phantom_lits.rglob("volume-*.nii*"))
    (scans / "scan-0.nii.gz").write_bytes(image.read_bytes())
    base = {"data.batch_size": "1", "data.unlabeled_root": scans, "data.cache_root": tmp_path}
    with pytest.raises(InputError, match=r"data.unlabeled_fraction=0.5 with data.batch_size=1"):
        resolve_data(_data_cfg(phantom_lits, **base, **{"data.unlabeled_fraction": "0.5"}))
    resolve_data(_data_cfg(phantom_lits, **base, **{"data.unlabeled_fraction": "0"}))


def test_a_case_without_slices_is_not_held_against_the_patch(tmp_path: Path) -> None:
    """An organ ROI of an empty label caches a case of no slice ((0, 4, 4)): it is never
    drawn, so its 4 x 4 in-plane size does not refuse a larger patch (as check_one_size)."""
    from kdseg.data.cache import CachedCase
    from kdseg.data.datamodule import check_training_shape
    from kdseg.data.loader_settings import LoaderConfig

    cases = []
    for case_id, shape in (("stub", (0, 4, 4)), ("full", (3, 32, 32))):
        folder = tmp_path / case_id
        folder.mkdir()
        np.save(folder / "image.npy", np.zeros(shape, dtype=np.float32))
        cases.append(CachedCase(case_id, folder, shape[0], (), (), (1.0, 1.0, 1.0)))
    cfg = LoaderConfig(patch_size=[16, 16])
    check_training_shape(cfg, cases)  # the stub is passed over
    with pytest.raises(InputError, match=r"larger than the 32 x 32 slices of case full"):
        check_training_shape(LoaderConfig(patch_size=[64, 64]), cases)


def test_the_cache_records_the_resolved_data_folder(
    phantom_lits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``preprocess.json`` names the data folder resolved: another spelling of it (a trailing
    slash, a relative path) is the same source, so a complete cache is not written again, and
    on a read-only mount it is read as it is."""
    import errno

    from kdseg.data import prepare

    cache = tmp_path / "cache"
    setup = resolve_data(_data_cfg(phantom_lits, **{"data.cache_root": cache}))
    setup.prepare(progress=False)
    record = json.loads((setup.cache_dir / "preprocess.json").read_text())
    assert record["source"] == str(phantom_lits.resolve())

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(prepare, "write_text_atomic", read_only)
    monkeypatch.chdir(phantom_lits.parent)
    for spelling in (f"{phantom_lits}/", phantom_lits.name, f"./{phantom_lits.name}/"):
        again = resolve_data(_data_cfg(phantom_lits, **{"data.cache_root": cache}), read_only=True)
        again.cfg = {**again.cfg, "root": spelling}
        again.prepare(progress=False)  # nothing to prepare, nothing written, no refusal
    # a record an earlier kdseg wrote with the folder as spelled counts as the same folder
    (setup.cache_dir / "preprocess.json").write_text(
        json.dumps({**record, "source": f"{phantom_lits}/"})
    )
    setup.prepare(progress=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.patch_size": "[64,64]"}, r"\[64, 64\] is larger than the 48 x 48 slices the pre"),
        ({"data.patch_size": "[32,16]"}, r"data.patch_size are 32 x 16: set a square size"),
        ({"data.preprocess.in_plane_size": "[48,40]"}, r"the preprocessing makes 48 x 40 slices"),
    ],
)
def test_training_shapes_that_cannot_batch_are_refused_from_the_config(
    phantom_lits: Path, overrides, message
) -> None:
    """A patch larger than the slices, and a non-square patch or slice under rot90 (which
    used to fail in the collate step with a stack error, at random) are refused from the
    config, before any case is prepared; without rot90 a non-square slice trains."""
    with pytest.raises(InputError, match=message):
        resolve_data(_data_cfg(phantom_lits, **overrides))
    if "data.patch_size" in overrides:
        return
    fine = resolve_data(_data_cfg(phantom_lits, **overrides, **{"data.augment.rot90": "false"}))
    fine.prepare(progress=False)
    dm = fine.datamodule(seed=0)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape[-2:] == (48, 40)


def test_a_patch_larger_than_native_slices_is_refused_when_they_are_opened(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """Without a fixed slice size (the native matrix) the patch is checked on the cached
    slices, naming a case."""
    overrides = {
        "data.preprocess.in_plane_size": "null",
        "data.patch_size": "[200,200]",
        "data.augment.rot90": "false",
        "data.cache_root": tmp_path / "cache",
    }
    setup = resolve_data(_data_cfg(phantom_lits, **overrides))
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=0)
    with pytest.raises(InputError, match=r"\[200, 200\] is larger than the \d+ x \d+ slices of"):
        dm.setup("fit")


def test_native_slices_of_several_sizes_are_refused_unless_patches_cut_them(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """The native matrix varies by case (64-72 voxels here): whole-slice batches would fail in
    the collation with a torch error, so they are refused naming two cases; with training
    patches they batch, and the one-case validation and test sets stack alone."""
    overrides = {
        "data.preprocess.in_plane_size": "null",
        "data.augment.rot90": "false",
        "data.cache_root": tmp_path / "cache",
    }
    setup = resolve_data(_data_cfg(phantom_lits, **overrides))
    setup.prepare(progress=False)
    with pytest.raises(InputError, match=r"training slices of case .* batches need one size"):
        setup.datamodule(seed=0).setup("fit")
    # the same check on the cache alone: training runs it before the loggers start
    with pytest.raises(InputError, match=r"training slices of case .* batches need one size"):
        setup.datamodule(seed=0).check_shapes()
    patched = resolve_data(_data_cfg(phantom_lits, **overrides, **{"data.patch_size": "[32,32]"}))
    dm = patched.datamodule(seed=0)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape[-2:] == (32, 32)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's notes on the toy run
@pytest.mark.parametrize(
    ("every", "interval", "kill_at", "killed_at"),
    [
        (4, 1.0, 8, 4),  # step 8 (epoch 1's last batch): was saved before, killed at 8
        (2, 0.5, 6, 4),  # step 6 (mid-epoch 1, validated after it): was saved at 6
        (2, 0.5, 8, 6),  # the save after step 6's validation resumes past it, not again
    ],
)
def test_a_run_killed_during_validation_resumes_with_that_validation(
    tmp_path: Path, every: int, interval: float, kill_at: int, killed_at: int
) -> None:
    """A step save at a batch that a validation follows (an epoch's last batch; with
    ``val_check_interval`` below 1, a mid-epoch one too) came before that validation, and
    Lightning resumes such a checkpoint past it: a run killed during the validation never ran
    it (its CSV row lost, and the best checkpoint's chance at it). That save now waits until
    the validation has run, so what a kill during validation leaves resumes with the
    validation, and a save made after one resumes without running it twice."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from kdseg.lit.resume import RotatingCheckpoint

    class Toy(pl.LightningModule):  # 4 batches an epoch
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.validated: list[tuple[int, int]] = []  # (epoch, global step)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=1)

        def training_step(self, batch: list[torch.Tensor], i: int) -> torch.Tensor:
            return self.layer(batch[0]).sum()

        def val_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=1)

        def validation_step(self, batch: list[torch.Tensor], i: int) -> None:
            pass

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.validated.append((self.current_epoch, self.global_step))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class KillDuringValidation(pl.Callback):  # what a SIGKILL in that validation leaves
        def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if not trainer.sanity_checking and trainer.global_step == kill_at:
                shutil.copy(tmp_path / "ckpt" / "last.ckpt", tmp_path / "killed.ckpt")

    last = RotatingCheckpoint.last(tmp_path / "ckpt", every)  # as kdseg-train builds it
    args = {
        "max_epochs": 3,
        "val_check_interval": interval,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    whole = Toy()
    pl.Trainer(callbacks=[last, KillDuringValidation()], **args).fit(whole)
    per_epoch = round(1 / interval)
    steps = [4 * (i + 1) // per_epoch for i in range(3 * per_epoch)]
    assert whole.validated == [((s - 1) // 4, s) for s in steps]
    killed = torch.load(tmp_path / "killed.ckpt", weights_only=True)
    assert killed["global_step"] == killed_at  # the save before the validation was killed at
    resumed = Toy()
    pl.Trainer(**args).fit(resumed, ckpt_path=tmp_path / "killed.ckpt", weights_only=True)
    assert resumed.validated == [v for v in whole.validated if v[1] > killed_at]
    assert resumed.validated[0][1] == kill_at  # the validation the kill cut short
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 12


def test_step_checkpoints_also_save_at_each_epoch_end(phantom_lits: Path, tmp_path: Path) -> None:
    """``checkpoint.every_n_train_steps=2`` with 4 steps an epoch: ``last.ckpt`` every 2 steps
    and again at each epoch end, after validation (Lightning alone skips that save, as step 4
    was saved before validation), so the finished run's ``last.ckpt`` holds its last step and
    the best callback's state after the last epoch; ``last-previous`` stays one interval back."""
    run = tmp_path / "run"
    kdseg_here(
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        "model=enet",
        "model.width=0.25",
        "trainer.max_epochs=2",
        "checkpoint.every_n_train_steps=2",
        f"hydra.run.dir={run}",
    )
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    previous = torch.load(run / "checkpoints" / "last-previous.ckpt", weights_only=True)
    assert last["global_step"] == 8 and previous["global_step"] == 6  # 2 epochs of 4 steps
    best = [
        v
        for k, v in last["callbacks"].items()
        if k.startswith("ModelCheckpoint") and v.get("monitor") == "val/dice_mean"
    ]
    assert len(best) == 1 and best[0]["best_model_score"] is not None
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 2
    assert json.loads((run / "summary.json").read_text())["last_checkpoint"]
