"""The phantom study script's selection stage reads what ``kdseg-eval`` writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _study_module():
    spec = importlib.util.spec_from_file_location(
        "phantom_study", ROOT / "scripts" / "phantom_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_select_picks_the_best_validation_tumor_dice(tmp_path: Path, monkeypatch) -> None:
    """``select`` ranks the option runs by the validation summaries in the layout
    :func:`kdseg.eval.evaluate.write_results` writes (it once crashed on a wrong key)."""
    from kdseg.eval.evaluate import write_results

    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path)]))
    monkeypatch.setattr(study, "evaluate", lambda *args, **kwargs: None)
    scores = {m: 0.1 + 0.01 * i for i, m in enumerate(ps.NEW_OPTIONS)}
    best = ps.NEW_OPTIONS[2]
    scores[best] = 0.9
    for method, value in scores.items():
        run = (
            study.runs
            / "options"
            / f"{ps.TEACHER}-{ps.STUDENT}-w{ps.STUDENT_WIDTH}-{method}-s{ps.SELECT_SEED}"
        )
        summary = {"tumor": {"dice_per_case_nonempty": value}, "organ": {"dice_mean": 0.8}}
        write_results([], summary, run / ps.VAL_DIR, {"split": "val"})
    study.stage_select()
    selection = json.loads(study.selection_file.read_text())
    assert selection["selected"] == best == study.selected
    assert selection["val_tumor_dice"] == scores


def test_unlabeled_study_v2_commands(tmp_path: Path, monkeypatch) -> None:
    """Protocol v2 of the unlabeled study: the teacher is a cascade whose stage 1 is the
    student-alone run, its stage 2 trains at the organ-window ROI setting, and every student
    row runs at the 96 x 96 single-stage grid for 1,024 steps."""
    spec = importlib.util.spec_from_file_location(
        "unlabeled_study", ROOT / "scripts" / "unlabeled_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    study = module.StudyV2(module.parse_args(["--dir", str(tmp_path), "--protocol", "v2"]))
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    study.train("teacher", 2, module.TEACHER)
    assert calls[0][0] == calls[1][0] == "train"
    assert "data.preprocess={body_crop: true, in_plane_size: [96, 96]}" in calls[0]
    assert "trainer.max_steps=1024" in calls[0] and "model=enet" in calls[0]
    assert {"data.preprocess.window_level=organ", "optim.lr=1e-3", "model=raunet"} <= set(calls[1])
    stage1 = tmp_path / "runs" / "alone" / "s2" / "checkpoints" / "best.ckpt"
    stage2 = tmp_path / "runs" / "teacher" / "s2" / "checkpoints" / "best.ckpt"
    assert study.teacher_ckpt(2) == f"[{stage1},{stage2}]"
    monkeypatch.setattr(study, "predictions", lambda seed: tmp_path / "labels")
    study.soft(2)
    assert calls[-1][0] == "distill" and f"teacher.predictions={tmp_path / 'labels'}" in calls[-1]
    assert "distill=kd" in calls[-1] and "trainer.max_steps=1024" in calls[-1]


def test_unlabeled_study_v3_is_v2_on_whole_15_50_mm_tumors(tmp_path: Path, monkeypatch) -> None:
    """Protocol v3: v2's rows, phantoms with 15-50 mm tumors, a 2,048-step stage 2."""
    spec = importlib.util.spec_from_file_location(
        "unlabeled_study", ROOT / "scripts" / "unlabeled_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v3", "--pilot"])
    study = module.PROTOCOLS[args.protocol](args)
    assert isinstance(study, module.StudyV2) and study.pilot
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    study.train("teacher", 1, module.TEACHER)
    assert "trainer.max_epochs=32" in calls[1] and "trainer.max_epochs=32" not in calls[0]
    monkeypatch.setattr(module.os, "symlink", lambda *a: None)
    study.labeled.mkdir(parents=True)  # kdseg-phantom (not run here) would make it
    study.data()
    phantoms = [c for c in calls if c[0] == "phantom"]
    assert len(phantoms) == 2
    assert all("params={tumor_mm_range: [15, 50]}" in c for c in phantoms)
