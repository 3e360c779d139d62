"""docs/study_v10/score.py: study v10's endpoint (issue 11), three paired rows and a contrast,
scored by scripts/paired_endpoint.py from what kdseg-eval writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_study_v8 import ALONE, _eval, _run, load_score

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def score(monkeypatch, tmp_path):
    return load_score(
        monkeypatch,
        "study_v10",
        ALONE_RUNS=tmp_path / "alone",
        REGION_RUNS=tmp_path / "region",
        TEACHER_RUN=tmp_path / "teacher",
    )


def _study(tmp: Path, region: list[float], cutmix: list[float], hashes=None) -> Path:
    """ENet alone scores ALONE; the two distilled rows ALONE + their gains; organ 0.92,
    0.93 and 0.94; the teacher 0.95 / 0.75 (a tumor gap of 0.20)."""
    study = tmp / "v10"
    _eval(study / "eval" / "teacher-s1", tmp / "teacher", 0.95, 0.75, first=228)
    for s in range(1, 6):
        runs = {
            "alone-8192": (tmp / "alone" / f"s{s}", 0.92, ALONE[s - 1]),
            "region-8192": (tmp / "region" / f"s{s}", 0.93, ALONE[s - 1] + region[s - 1]),
            "cutmix-8192": (
                study / "runs" / "cutmix-8192" / f"s{s}",
                0.94,
                ALONE[s - 1] + cutmix[s - 1],
            ),
        }
        for prefix, (run, organ, tumor) in runs.items():
            _run(run, (hashes or {}).get((prefix, s), f"h{s}"))
            _eval(study / "eval" / f"{prefix}-s{s}", run, organ, tumor, first=228)
    return study


def test_scored_row_share_interval_and_the_information_contrast(score, tmp_path) -> None:
    study = _study(tmp_path, [0.07, 0.08, 0.06, 0.07, 0.07], [0.11, 0.09, 0.12, 0.10, 0.13])
    score.main(["--dir", str(study)])
    out = json.loads((study / "endpoint.json").read_text())
    cut = out["tumor"]["emkd_balanced_region_cutmix"]
    assert cut["gap_closed"] == pytest.approx(0.11 / 0.20)
    assert cut["paired"] == pytest.approx([0.11, 0.0904, 0.1296], abs=1e-3)
    assert out["tumor"]["emkd_balanced_region"]["gap_closed"] == pytest.approx(0.07 / 0.20)
    # cutmix - region per seed: 0.04, 0.01, 0.06, 0.03, 0.06
    contrast = out["tumor"]["contrasts"]["emkd_balanced_region_cutmix - emkd_balanced_region"]
    assert contrast[0] == pytest.approx(0.04) and contrast[1] > 0
    assert out["precondition"]["met"] and out["same_start"] and out["target_met"]
    text = (study / "endpoint.md").read_text()
    assert text.startswith("study v10, 24 new cases (228-251)")
    assert "Information only, emkd_balanced_region_cutmix - emkd_balanced_region" in text
    assert "`emkd_balanced_region_cutmix`** (scored) | 0.940 |" in text


def test_the_target_is_scored_on_the_cutmix_row_only(score, tmp_path) -> None:
    """A region row above half the gap does not meet the target for a cutmix row below it."""
    study = _study(tmp_path, [0.12] * 5, [0.06, 0.07, 0.05, 0.06, 0.06])
    out = score.table(study, (1, 2, 3, 4, 5))
    assert out["same_start"] and out["precondition"]["met"]
    assert out["tumor"]["emkd_balanced_region"]["gap_closed"] > 0.5 and not out["target_met"]


def test_a_region_run_that_started_elsewhere_keeps_the_target_unmet(score, tmp_path) -> None:
    """Every row of a seed must start from the same weights, not only the scored one."""
    study = _study(tmp_path, [0.1] * 5, [0.11, 0.09, 0.12, 0.10, 0.13])
    assert score.table(study, (1, 2, 3, 4, 5))["target_met"]
    _run_hash(tmp_path / "region" / "s2", "elsewhere")
    out = score.table(study, (1, 2, 3, 4, 5))
    assert not out["same_start"] and not out["target_met"]


def _run_hash(run: Path, sha: str) -> None:
    (run / "summary.json").write_text(json.dumps({"init_weights_sha256": sha}))


def test_v10_endpoint_waits_for_five_cutmix_seeds(score, tmp_path) -> None:
    study = _study(tmp_path, [0.1] * 5, [0.1] * 5)
    for s in (4, 5):
        (study / "eval" / f"cutmix-8192-s{s}" / "summary.json").unlink()
    with pytest.raises(SystemExit, match="study v10: seeds \\(1, 2, 3\\) scored"):
        score.main(["--dir", str(study)])


def test_interim_on_a_study_with_no_scored_seed_is_refused(score, tmp_path) -> None:
    """``--interim`` before any seed is scored (the teacher's evaluation alone): a one-line
    refusal, not a ZeroDivisionError."""
    study = tmp_path / "v10"
    _eval(study / "eval" / "teacher-s1", tmp_path / "teacher", 0.95, 0.75, first=228)
    with pytest.raises(SystemExit) as refused:
        score.main(["--dir", str(study), "--interim"])
    assert str(refused.value) == f"study v10: no seed is scored yet in {study}"
    assert not (study / "interim.json").exists() and not (study / "interim.md").exists()
