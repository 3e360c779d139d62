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
