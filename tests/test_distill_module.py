"""The distillation engine: a frozen teacher, gradients to the student only, any tap pair,
resume after a kill, a student that loads without its teacher, and a clear mismatch error."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import BIN, TINY_DATA, kdseg, kdseg_here

from kdseg.data.dataset import resolve_data
from kdseg.errors import ConfigError, InputError
from kdseg.eval.checkpoint import NET_PREFIX, load_bundle
from kdseg.lit.distill import DistillationModule
from kdseg.models import build_from_config

STUDENT = ["student=enet", "student.width=0.25"]
EPOCHS = 4  # of the killed and resumed run
#: Extra terms beyond EMKD whose taps differ in channels (so a 1x1 adapter is needed) and in
#: spatial size: the student's stride-8 tap against the teacher's stride-4 and stride-2 maps.
MISALIGNED_TERMS = [
    "+distill.terms.cwd_x={loss: cwd, weight: 1.0, student_tap: high, teacher_tap: x2_0}",
    "+distill.terms.imd_x={loss: imd, weight: 1.0, student_tap: high, teacher_tap: low}",
]


def _compose(name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    import kdseg.config  # noqa: F401
    from kdseg.cli import CONFIG_PATH, to_dict

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return to_dict(compose(name, overrides=[*TINY_DATA, *overrides]))


def _fake_teacher(path: Path, model: dict[str, Any], data: dict[str, Any]) -> Path:
    """A checkpoint in kdseg's format around an untrained network: what load_bundle reads."""
    net = build_from_config(model)
    state = {f"{NET_PREFIX}{k}": v for k, v in net.state_dict().items()}
    torch.save({"hyper_parameters": {"model": model, "data": data}, "state_dict": state}, path)
    return path


def _module_with_fake_teacher(
    phantom_lits: Path, tmp_path: Path, teacher: str, overrides: list[str]
) -> tuple[DistillationModule, Any]:
    """A DistillationModule on the tiny phantom data around an untrained ``teacher`` network."""
    cfg = _compose(
        "distill", [f"data.root={phantom_lits}", "teacher.ckpt=unused", *STUDENT, *overrides]
    )
    setup = resolve_data(cfg["data"])
    setup.prepare(progress=False)
    teacher_model = {"name": teacher, "in_channels": 1, "num_classes": 3, "width": 0.25}
    ckpt = _fake_teacher(tmp_path / f"{teacher}.ckpt", teacher_model, setup.info())
    module = DistillationModule(
        model=cfg["student"],
        data=setup.info(),
        optim=cfg["optim"],
        loss=cfg["loss"],
        teacher={"ckpt": str(ckpt)},
        distill=cfg["distill"],
    )
    return module, setup


class Probe(pl.Callback):
    """Inside real training steps: the teacher's mode, and where gradients went."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: DistillationModule, *args: Any
    ) -> None:
        self.checks.append(
            {
                "teacher_training": any(m.training for m in module.teacher.modules()),
                "student_training": module.net.training,
            }
        )

    def on_after_backward(self, trainer: pl.Trainer, module: DistillationModule) -> None:
        def grads(part: torch.nn.Module) -> list[bool]:
            return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in part.parameters()]

        self.checks[-1].update(
            teacher_grads=[p.grad is not None for p in module.teacher.parameters()],
            teacher_requires_grad=[p.requires_grad for p in module.teacher.parameters()],
            student_grads=grads(module.net),
            adapter_grads=grads(module.criterion.adapters),
        )


def test_teacher_frozen_and_gradients_reach_student_and_adapters_with_misaligned_taps(
    phantom_lits: Path, tmp_path: Path
) -> None:
    module, setup = _module_with_fake_teacher(
        phantom_lits, tmp_path, "unetpp", ["distill=emkd", *MISALIGNED_TERMS]
    )
    s_info, t_info = module.net.tap_info, module.teacher.tap_info
    assert s_info["low"].channels != t_info["low"].channels  # channels differ on every EMKD tap
    assert s_info["high"].channels != t_info["high"].channels
    assert s_info["high"].stride != t_info["x2_0"].stride  # and these two differ in size
    assert set(module.criterion.adapters) == {"cwd_x"}  # 32 -> 96 channels, dropped at export
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}

    probe = Probe()
    trainer = pl.Trainer(
        accelerator="cpu",
        fast_dev_run=3,
        callbacks=[probe],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    trainer.fit(module, datamodule=setup.datamodule(seed=1))

    assert len(probe.checks) == 3
    for check in probe.checks:
        assert check["student_training"] and not check["teacher_training"]
        assert not any(check["teacher_requires_grad"]) and not any(check["teacher_grads"])
        assert all(check["adapter_grads"])
        assert sum(check["student_grads"]) > 0.9 * len(check["student_grads"])
    for key, value in module.teacher.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, teacher_before[key]), key
    metrics = trainer.callback_metrics
    for term in ("pmd", "imd_low", "imd_high", "rad_low", "rad_high", "cwd_x", "imd_x"):
        assert torch.isfinite(metrics[f"distill/{term}"]), term


#: The new logit terms (beyond the paper) beside a balanced EMKD, all in one criterion.
NEW_TERMS = [
    "+distill.terms.kd_bal={loss: kd_balanced, weight: 1.0, student_tap: logits}",
    "+distill.terms.kd_reg={loss: kd_region, weight: 1.0, student_tap: logits}",
    "+distill.terms.dist={loss: dist, weight: 1.0, student_tap: logits}",
    "+distill.terms.dkd={loss: dkd, weight: 1.0, student_tap: logits}",
]


class RampProbe(pl.Callback):
    """After each real step: the logged warm-up factor and whether the teacher got gradients."""

    def __init__(self) -> None:
        self.ramp: list[float] = []
        self.teacher_grads: list[bool] = []

    def on_after_backward(self, trainer: pl.Trainer, module: DistillationModule) -> None:
        self.teacher_grads.append(any(p.grad is not None for p in module.teacher.parameters()))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.ramp.append(float(trainer.callback_metrics["distill/warmup"]))


def test_warmup_ramps_over_the_trainers_steps_with_the_new_logit_terms(
    phantom_lits: Path, tmp_path: Path
) -> None:
    module, setup = _module_with_fake_teacher(
        phantom_lits,
        tmp_path,
        "enet",
        # half of the 4 steps: the full weights from step 2 on
        ["distill=emkd_balanced", "distill.warmup=0.5", *NEW_TERMS],
    )
    assert module.criterion.warmup == 0.5
    probe = RampProbe()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        max_steps=4,
        limit_val_batches=0,
        callbacks=[probe],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    trainer.fit(module, datamodule=setup.datamodule(seed=1))
    assert trainer.global_step == 4
    assert probe.ramp == [0.0, 0.5, 1.0, 1.0]
    assert not any(probe.teacher_grads)
    for term in ("pmd", "kd_bal", "kd_reg", "dist", "dkd"):
        assert torch.isfinite(trainer.callback_metrics[f"distill/{term}"]), term


def test_a_loss_that_turns_nan_stops_the_run_before_the_update(
    phantom_lits: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """NaN is refused, not trained on: the step stops before the optimizer spreads it into
    the weights, and the message names the step and each term's value."""
    from kdseg.cli.boundary import report
    from kdseg.errors import TrainingDiverged

    module, setup = _module_with_fake_teacher(phantom_lits, tmp_path, "enet", [])
    with torch.no_grad():
        module.teacher.fullconv.weight.fill_(float("nan"))  # the teacher's logits: NaN
    before = {k: v.clone() for k, v in module.net.named_parameters()}
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit(module, datamodule=setup.datamodule(seed=1))
    message = str(caught.value)
    assert "training loss is nan at step 0 (epoch 0;" in message
    assert "pmd nan" in message and "seg " in message and "seg nan" not in message
    after = dict(module.net.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update was made
    assert report("kdseg-distill", caught.value, verbose=False) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("kdseg-distill: error: training loss is nan") and "\n" not in line


def test_a_misspelled_distill_key_is_refused(phantom_lits: Path, tmp_path: Path) -> None:
    """``+distill.warmpu=0.2`` would train without a warm-up and say nothing."""
    from kdseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"distill.warmpu: unknown key; valid: mix, name"):
        _module_with_fake_teacher(phantom_lits, tmp_path, "enet", ["+distill.warmpu=0.2"])
    module, _ = _module_with_fake_teacher(
        phantom_lits, tmp_path, "enet", ["distill=kd", "+distill.warmup=0.2"]
    )
    assert module.criterion.warmup == 0.2


def test_a_teacher_smaller_than_the_student_is_accepted_with_one_warning(
    phantom_lits: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A teacher with fewer parameters than its student (self-distillation and small teachers
    are legitimate, a swapped pair is not) distils, with one warning line giving both counts;
    a teacher as large as the student gets none."""
    with caplog.at_level(logging.WARNING, logger="kdseg.lit.distill"):
        module, _ = _module_with_fake_teacher(phantom_lits, tmp_path, "enet", [])  # same size
    assert not [r for r in caplog.records if r.name == "kdseg.lit.distill"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdseg.lit.distill"):
        module, _ = _module_with_fake_teacher(phantom_lits, tmp_path, "enet", ["student.width=0.5"])
    (record,) = [r for r in caplog.records if r.name == "kdseg.lit.distill"]
    n_teacher = sum(p.numel() for p in module.teacher.parameters())
    n_student = sum(p.numel() for p in module.net.parameters())
    assert n_teacher < n_student
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert f"fewer parameters ({n_teacher:,}) than the student ({n_student:,})" in (
        record.getMessage()
    )


def test_the_cosine_spans_the_steps_the_run_trains_and_a_longer_resume(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """``max_epochs=-1`` with ``max_steps`` (Lightning's step budget) anneals over those steps,
    not over one epoch; a resume with more epochs stretches the cosine to the new end instead
    of restarting it after the old one."""
    module, setup = _module_with_fake_teacher(phantom_lits, tmp_path, "enet", [])

    def fit(ckpt: Path | None = None, **limits: int) -> pl.Trainer:
        trainer = pl.Trainer(
            accelerator="cpu",
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            **limits,
        )
        trainer.fit(module, datamodule=setup.datamodule(seed=1), ckpt_path=ckpt)
        return trainer

    trainer = fit(max_epochs=-1, max_steps=8)  # 4 steps an epoch: 2 epochs
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.num_training_batches == 4 and scheduler.T_max == 2
    assert scheduler.get_last_lr()[0] == pytest.approx(scheduler.eta_min)  # annealed at the end
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    resumed = fit(tmp_path / "two.ckpt", max_epochs=4)
    scheduler = resumed.lr_scheduler_configs[0].scheduler
    assert scheduler.T_max == 4 and scheduler.last_epoch == 4
    assert scheduler.get_last_lr()[0] == pytest.approx(scheduler.eta_min)  # not restarted
    with pytest.raises(ConfigError, match="needs an end"):
        fit(max_epochs=-1, max_steps=-1)


def test_short_distillation_run_with_a_new_preset(trained_enet: Path, phantom_lits: Path) -> None:
    run = trained_enet.parent / "emkd-balanced"
    kdseg_here(
        "distill",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        *STUDENT,
        "distill=emkd_balanced",
        "distill.warmup=2",  # steps
        "trainer.max_epochs=1",
        "trainer.max_steps=3",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={run}",
    )
    assert json.loads((run / "summary.json").read_text())["global_step"] == 3
    saved = (run / "config.yaml").read_text()
    assert "name: emkd_balanced" in saved and "loss: pmd_balanced" in saved
    with open(run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("distill/warmup")]
    assert [float(r["distill/warmup"]) for r in rows] == [0.0, 0.5, 1.0]
    assert all(float(r["distill/pmd"]) >= 0 for r in rows)


@pytest.fixture(scope="module")
def killed_and_resumed(
    trained_enet: Path, tmp_path_factory: pytest.TempPathFactory, phantom_lits: Path
) -> dict[str, Any]:
    """A distillation run SIGKILLed once ``last.ckpt`` exists, then rerun in the same folder.

    Four short epochs leave the kill (after the first epoch's ``last.ckpt``) ample time to land
    mid-run even on busy cores. The teacher is a private copy of the ``trained_enet``
    checkpoint, so a test may delete it.
    """
    work = tmp_path_factory.mktemp("distill")
    teacher = work / "teacher.ckpt"
    shutil.copy(trained_enet / "checkpoints" / "best.ckpt", teacher)
    run = work / "run"
    args = [
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"teacher.ckpt={teacher}",
        *STUDENT,
        "distill=emkd",
        f"trainer.max_epochs={EPOCHS}",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(
        [str(BIN / "kdseg-distill"), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint written before the kill"
    killed_at = torch.load(last, weights_only=True)["global_step"]
    result = kdseg("distill", *args)
    return {
        "run": run,
        "teacher": teacher,
        "killed_at": killed_at,
        "output": result.stdout + result.stderr,
    }


def test_killed_distillation_resumes(killed_and_resumed: dict[str, Any]) -> None:
    run = killed_and_resumed["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert "resuming from" in killed_and_resumed["output"]
    assert summary["global_step"] == EPOCHS * 4  # 32 samples / batch 8 = 4 steps an epoch
    assert 4 <= killed_and_resumed["killed_at"] < EPOCHS * 4  # the kill really interrupted it
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "distill/pmd" in metrics and "distill/rad_high" in metrics


def test_exported_student_loads_without_teacher(killed_and_resumed: dict[str, Any]) -> None:
    killed_and_resumed["teacher"].unlink()  # the teacher is gone; the student must not need it
    ckpt = killed_and_resumed["run"] / "checkpoints" / "best.ckpt"
    bundle = load_bundle(ckpt)
    assert bundle.model_config["name"] == "enet" and bundle.model_config["width"] == 0.25
    raw = torch.load(ckpt, weights_only=True)["state_dict"]
    net = {k[len(NET_PREFIX) :]: v for k, v in raw.items() if k.startswith(NET_PREFIX)}
    loaded = bundle.model.state_dict()
    assert loaded.keys() == net.keys()
    assert all(torch.equal(loaded[k], net[k]) for k in net)
    assert not any(
        name.startswith(("teacher", "criterion")) for name, _ in bundle.model.named_modules()
    )
    with torch.no_grad():
        out = bundle.model(torch.zeros(1, 1, 48, 48))
    assert out.logits.shape == (1, 3, 48, 48)


def test_teacher_trained_on_other_preprocessing_exits_2_with_one_line(
    trained_enet: Path, phantom_lits: Path
) -> None:
    result = kdseg_here(
        "distill",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        *STUDENT,
        "data.preprocess.in_plane_size=[40,40]",
        "trainer.max_epochs=1",
        f"hydra.run.dir={trained_enet.parent / 'mismatch'}",
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdseg-distill: error:"), result.stderr
    assert "preprocess.in_plane_size: teacher [48, 48] vs data [40, 40]" in lines[0]
    assert "window" not in lines[0] and "Traceback" not in result.stderr  # only what differs


def test_a_teacher_of_another_organ_is_refused(phantom_lits: Path, tmp_path: Path) -> None:
    """A kidney teacher is not distilled into a liver student, whatever the window says."""
    cfg = _compose("distill", [f"data.root={phantom_lits}", "teacher.ckpt=unused", *STUDENT])
    data = resolve_data(cfg["data"]).info()
    model = {"name": "enet", "in_channels": 1, "num_classes": 3, "width": 0.25}
    ckpt = _fake_teacher(tmp_path / "kidney.ckpt", model, {**data, "organ": "kidney"})
    with pytest.raises(InputError, match="organ: teacher 'kidney' vs data 'liver'"):
        DistillationModule(
            model=cfg["student"],
            data=data,
            optim=cfg["optim"],
            loss=cfg["loss"],
            teacher={"ckpt": str(ckpt)},
            distill=cfg["distill"],
        )


def _fake_run(root: Path, name: str, cfg: dict[str, Any], scores: dict[str, float] | None) -> Path:
    """A run folder as kdseg-train/distill + kdseg-eval leave it (config, summary, eval summary)."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    (run / "summary.json").write_text("{}")
    if scores is not None:
        summary = {c: {"dice_per_case_nonempty": v} for c, v in scores.items()}
        (run / "eval-test-full").mkdir()
        (run / "eval-test-full" / "summary.json").write_text(
            json.dumps({"protocol": "full", "summary": summary})
        )
    return run


def test_report_groups_seeds_and_computes_gap_closed(tmp_path: Path) -> None:
    from kdseg.eval.report import build_report, write_report

    data = {"name": "lits", "organ": "liver"}
    net = lambda name, width: {"name": name, "in_channels": 1, "num_classes": 3, "width": width}  # noqa: E731
    teacher = _fake_run(
        tmp_path / "teachers",
        "raunet-s1",
        {"data": data, "seed": 1, "model": net("raunet", 0.25)},
        {"organ": 0.9, "tumor": 0.6},
    )

    def distilled_run(name: str, seed: int, method: str, tumor: float) -> None:
        config = {
            "data": data,
            "seed": seed,
            "student": net("enet", 0.25),
            "distill": {"name": method},
            "teacher": {"ckpt": str(teacher / "checkpoints" / "best.ckpt")},
        }
        _fake_run(tmp_path / "distilled", name, config, {"organ": 0.85, "tumor": tumor})

    for seed, (student, distilled) in enumerate([(0.30, 0.50), (0.40, 0.50)], start=1):
        _fake_run(
            tmp_path / "students",
            f"enet-s{seed}",
            {"data": data, "seed": seed, "model": net("enet", 0.25)},
            {"organ": 0.8, "tumor": student},
        )
        distilled_run(f"raunet-enet-s{seed}", seed, "emkd", distilled)
    # a method run on seed 1 only: its gap is measured against seed 1 alone
    distilled_run("raunet-enet-kd-s1", 1, "kd", 0.45)
    for seed, tumor in ((1, 0.4), (3, 0.9)):  # seed 3 has no student alone: 1 pair of 2 runs
        distilled_run(f"raunet-enet-at-s{seed}", seed, "at", tumor)
    _fake_run(
        tmp_path / "students",
        "enet-s9",
        {"data": data, "seed": 9, "model": net("enet", 0.25)},
        None,
    )

    report = build_report([str(tmp_path / "*")])
    rows = {r.label: r for r in report.rows}
    assert [r.role for r in report.rows] == ["teacher", "student", *["distilled"] * 3]
    one_seed = rows["enet (w 0.25) + raunet (w 0.25) (kd)"]
    assert one_seed.gap["lits"] == pytest.approx((0.45 - 0.30) / (0.6 - 0.30))  # not 0.35
    distilled = rows["enet (w 0.25) + raunet (w 0.25) (emkd)"]
    assert distilled.seeds == [1, 2] and distilled.cells["lits", "tumor"].mean == pytest.approx(0.5)
    student = rows["enet (w 0.25)"].cells["lits", "tumor"]
    assert (student.mean, student.n) == (pytest.approx(0.35), 2)  # the unevaluated seed is left out
    assert distilled.gap["lits"] == pytest.approx((0.5 - 0.35) / (0.6 - 0.35))
    paired = distilled.paired["lits", "tumor"]  # seed 1: +0.20, seed 2: +0.10
    assert paired.seeds == (1, 2) and paired.mean == pytest.approx(0.15)
    half = 12.7062 * 0.0707107 / 2**0.5  # t(0.975, 1) * sd / sqrt(n)
    assert (paired.low, paired.high) == (
        pytest.approx(0.15 - half, abs=1e-4),
        pytest.approx(0.15 + half, abs=1e-4),
    )
    assert report.missing_eval and report.missing_eval[0].name == "enet-s9"
    paths = write_report(report, tmp_path / "report")
    text = paths["markdown"].read_text()
    assert "| Liver tumor | Liver |" in text and "0.500 ± 0.000" in text and "60%" in text
    assert "| teacher | 1 | 0.600 | 0.900 |" in text  # one run: its value, no "± 0.000"
    # the student's cells are over seeds 1 and 2: the Seeds column lists seed 9 apart (it
    # listed 1,2,9 over a mean of two, with no "(n=2)")
    assert "| enet (w 0.25) | student | 1,2 (9: no evaluation) | 0.350 ± " in text
    # (n=k) only where fewer than the row's runs are paired, as in the Dice cells
    assert "| +0.150 [-0.485, +0.785] |" in text and "| +0.150 |" in text  # all seeds paired
    assert "| +0.100 (n=1) |" in text  # "at": seed 3 has no student alone
    assert paths["csv"].read_text().splitlines()[0].startswith("label,role,model,teacher,method")


def test_report_names_an_unnamed_organ_organ_not_none(tmp_path: Path) -> None:
    """``data=nnunet`` leaves ``data.organ`` None where dataset.json names no single organ (a
    user may set it null too): the report's headers read "Organ tumor", not "None tumor"."""
    from kdseg.data.tasks import organ_name
    from kdseg.eval.report import build_report

    assert [organ_name(d) for d in ({"organ": None}, {}, None, {"organ": " "})] == ["organ"] * 4
    assert organ_name({"organ": "kidney"}) == "kidney"
    net = {"name": "enet", "in_channels": 1, "num_classes": 3, "width": 0.25}
    for name, organ in (("unnamed", None), ("missing", ...)):
        data = {"name": name} if organ is ... else {"name": name, "organ": organ}
        config = {"data": data, "seed": 1, "model": net}
        _fake_run(tmp_path, name, config, {"organ": 0.9, "tumor": 0.6})
    report = build_report([str(tmp_path / "*")])
    assert sorted(report.headers.values()) == [
        "Organ (missing)", "Organ (unnamed)", "Organ tumor (missing)", "Organ tumor (unnamed)",
    ]  # fmt: skip


def test_report_pairs_a_network_beyond_the_papers_with_its_distilled_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network the paper's table of roles (``kdseg.models.cost.ROLES``) does not know, a
    newly registered student, trained alone was a "model": no student-alone reference, so
    its distilled rows had no gap closed and no paired difference. Trained alone and distilled
    in the same report, it is that report's student alone; a paper teacher (RA-UNet) that is
    the student of another run is too, and one whose checkpoint taught stays a teacher."""
    from kdseg.eval.report import build_report
    from kdseg.models.cost import ROLES

    monkeypatch.delitem(ROLES, "enet")  # enet as a network registered after the paper's
    data = {"name": "lits", "organ": "liver"}
    net = lambda name, width: {"name": name, "in_channels": 1, "num_classes": 3, "width": width}  # noqa: E731
    teacher = _fake_run(
        tmp_path, "teacher-s1", {"data": data, "seed": 1, "model": net("raunet", 0.5)},
        {"organ": 0.9, "tumor": 0.6},
    )  # fmt: skip
    ckpt = str(teacher / "checkpoints" / "best.ckpt")
    for student, width in (("enet", 0.25), ("raunet", 0.25)):
        for seed, (alone, distilled) in enumerate([(0.30, 0.50), (0.40, 0.45)], start=1):
            config = {"data": data, "seed": seed, "model": net(student, width)}
            _fake_run(tmp_path, f"{student}-s{seed}", config, {"organ": 0.8, "tumor": alone})
            config = {
                "data": data,
                "seed": seed,
                "student": net(student, width),
                "distill": {"name": "kd"},
                "teacher": {"ckpt": ckpt},
            }
            _fake_run(tmp_path, f"{student}-kd-s{seed}", config, {"tumor": distilled})
    rows = {r.label: r for r in build_report([str(tmp_path / "*")]).rows}
    assert {label: r.role for label, r in rows.items()} == {
        "raunet (w 0.5)": "teacher",
        "enet (w 0.25)": "student",
        "enet (w 0.25) + raunet (w 0.5) (kd)": "distilled",
        "raunet (w 0.25)": "student",
        "raunet (w 0.25) + raunet (w 0.5) (kd)": "distilled",
    }
    for student in ("enet", "raunet"):
        distilled = rows[f"{student} (w 0.25) + raunet (w 0.5) (kd)"]
        assert distilled.gap["lits"] == pytest.approx((0.475 - 0.35) / (0.6 - 0.35))
        assert distilled.paired["lits", "tumor"].mean == pytest.approx(0.125)


def test_report_names_a_stored_prediction_teacher(tmp_path: Path) -> None:
    """A student distilled from an nnU-Net's saved predictions (``teacher.predictions``, no
    ``teacher.ckpt``: what the run's config holds) was labelled ``enet (w 0.25) + ? (kd)``.
    Its teacher is now named by its folder: ``nnunet:`` for nnU-Net's own output (the
    ``--save_probabilities`` files, or a ``plans.json``), ``predictions:`` for other saved
    predictions; the student's seeds share the row, and no run is taken for its teacher."""
    from test_nnunet import FIXTURE

    from kdseg.eval.report import build_report, write_report

    data = {"name": "lits", "organ": "liver"}
    student = {"name": "enet", "in_channels": 1, "num_classes": 3, "width": 0.25}
    nnunet = tmp_path / "Dataset003_Liver" / "preds_3d"
    nnunet.mkdir(parents=True)
    for name in ("fix_001.npz", "fix_001.pkl", "dataset.json"):
        shutil.copy(FIXTURE / name, nnunet / name)
    plans = tmp_path / "plans_only"  # hard labels only, with the plans nnUNetv2_predict writes
    plans.mkdir()
    (plans / "plans.json").write_text(json.dumps({"dataset_name": "Dataset003_Liver"}))
    labels = tmp_path / "labels"  # label NIfTIs of some other tool
    labels.mkdir()
    shutil.copy(FIXTURE / "fix_001.nii.gz", labels / "fix_001.nii.gz")
    for folder, seeds in (
        (nnunet, (1, 2)),
        (plans, (1,)),
        (labels, (1,)),
        (tmp_path / "gone", (1,)),
    ):
        for seed in seeds:
            teacher = {"ckpt": None, "predictions": str(folder), "compile": None, "cache": None}
            config = {
                "data": data,
                "seed": seed,
                "student": student,
                "distill": {"name": "kd"},
                "teacher": teacher,
            }
            _fake_run(tmp_path / "runs", f"{folder.name}-s{seed}", config, {"tumor": 0.5})
    report = build_report([str(tmp_path / "runs")])
    labels_seen = {r.label: r for r in report.rows}
    assert sorted(labels_seen) == [
        "enet (w 0.25) + nnunet:plans_only (kd)",
        "enet (w 0.25) + nnunet:preds_3d (kd)",
        "enet (w 0.25) + predictions:gone (kd)",
        "enet (w 0.25) + predictions:labels (kd)",
    ]
    row = labels_seen["enet (w 0.25) + nnunet:preds_3d (kd)"]
    assert row.role == "distilled" and row.seeds == [1, 2] and row.teacher == "nnunet:preds_3d"
    assert all(r.role == "distilled" for r in report.rows)
    text = write_report(report, tmp_path / "report")["markdown"].read_text()
    assert "nnunet:preds_3d" in text and "+ ?" not in text


def test_paired_difference_interval_and_sign() -> None:
    from kdseg.eval.paired import paired_difference

    diff = paired_difference({1: 0.5, 2: 0.6, 3: 0.7, 9: 0.1}, {1: 0.4, 2: 0.45, 3: 0.5})
    assert diff.seeds == (1, 2, 3) and diff.differences == pytest.approx((0.1, 0.15, 0.2))
    assert diff.above_zero and diff.low == pytest.approx(0.15 - 4.3027 * 0.05 / 3**0.5, abs=1e-4)
    assert not paired_difference({1: 0.5, 2: 0.4}, {1: 0.4, 2: 0.5}).above_zero
    assert paired_difference({1: 0.5}, {2: 0.5}) is None


def test_gap_closed_follows_the_direction_of_the_metric() -> None:
    """A distance (HD95, lower is better) closes its gap downwards; a signed RVD has none."""
    from kdseg.eval.report import Cell, gap_closed, metric_direction

    def cell(mean: float) -> Cell:
        return Cell(mean, 0.0, 1)

    assert [metric_direction(m) for m in ("dice_per_case_nonempty", "hd95_mean", "rvd_mean")] == [
        1,
        -1,
        0,
    ]
    assert gap_closed(cell(0.5), cell(0.6), cell(0.3)) == pytest.approx(2 / 3)
    assert gap_closed(cell(20.0), cell(10.0), cell(40.0), direction=-1) == pytest.approx(2 / 3)
    assert gap_closed(cell(20.0), cell(10.0), cell(40.0)) is None  # read as a Dice: no gap
    assert gap_closed(cell(0.1), cell(0.0), cell(0.2), direction=0) is None


def test_a_teacher_saved_before_the_label_and_box_keys_matches_its_data() -> None:
    """A teacher checkpoint from before ``label_resize`` / ``roi_components`` existed (kits19
    now sets roi_components: 2) is the same preprocessing: neither key changes the slices a
    teacher sees in distillation; a key that does (the window) still counts."""
    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.lit.distill import _differences

    data = PreprocessConfig(window=(-200.0, 300.0)).to_dict()
    old = {k: v for k, v in data.items() if k not in ("label_resize", "roi_components")}
    new = {**data, "roi_components": 2, "label_resize": "nearest-exact"}
    assert _differences("preprocess", {"preprocess": old}, {"preprocess": new}) == []
    moved = {**new, "window": [-100.0, 100.0]}
    assert _differences("preprocess", {"preprocess": old}, {"preprocess": moved}) == [
        "preprocess.window: teacher [-200.0, 300.0] vs data [-100.0, 100.0]"
    ]


def test_a_teacher_with_no_organ_named_matches_any_organ() -> None:
    """A teacher whose data named no organ (an older checkpoint: None; a newer one records
    ``"organ"``, as an nnU-Net dataset.json without one organ gives) passes the organ key, as
    before organs were recorded; a named organ that differs still counts."""
    from kdseg.lit.distill import _differences

    for unnamed in (None, "organ"):
        assert _differences("organ", {"organ": unnamed}, {"organ": "liver"}) == []
    assert _differences("organ", {"organ": "kidney"}, {"organ": "liver"}) == [
        "organ: teacher 'kidney' vs data 'liver'"
    ]
    assert _differences("organ", {"organ": "liver"}, {"organ": "liver"}) == []
