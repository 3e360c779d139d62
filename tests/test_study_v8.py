"""docs/study_v8/score.py: the endpoint of study v8 (issue 11), from what kdseg-eval writes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def score(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    path = ROOT / "docs" / "study_v8" / "score.py"
    spec = importlib.util.spec_from_file_location("study_v8_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("study_v8_score", None)


def _eval(folder: Path, organ: float, tumor: float) -> None:
    folder.mkdir(parents=True)
    summary = {
        "summary": {
            "organ": {"dice_per_case_nonempty": organ},
            "tumor": {"dice_per_case_nonempty": tumor},
        }
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def _run(folder: Path, sha: str) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"init_weights_sha256": sha}))


def _study(tmp: Path, region_tumor: list[float], seeds=(1, 2, 3, 4, 5), teacher=0.75) -> Path:
    study = tmp / "v8"
    _eval(study / "eval" / "teacher-s1", 0.95, teacher)
    for s in seeds:
        _eval(study / "eval" / f"alone-8192-s{s}", 0.92, 0.55)
        _eval(study / "eval" / f"region-8192-s{s}", 0.94, region_tumor[s - 1])
        _run(tmp / "alone" / f"s{s}", f"h{s}")
        _run(study / "runs" / "region-8192" / f"s{s}", f"h{s}")
    return study


def test_endpoint_shares_interval_and_target(score, tmp_path, monkeypatch) -> None:
    """Share = (distilled - alone) / (teacher - alone) on the means; the target needs the
    precondition, half the gap and the paired interval above zero."""
    study = _study(tmp_path, [0.66, 0.64, 0.65, 0.67, 0.63])
    monkeypatch.setattr(score, "ALONE_RUNS", tmp_path / "alone")
    score.main(["--dir", str(study)])
    out = json.loads((study / "endpoint.json").read_text())
    row = out["tumor"]["emkd_balanced_region"]
    assert row["gap_closed"] == pytest.approx(0.10 / 0.20)
    assert row["paired"][0] == pytest.approx(0.10) and row["paired"][1] > 0
    assert out["precondition"]["met"] and out["same_start"] and out["target_met"]
    assert out["organ"]["emkd_balanced_region"]["gap_closed"] == pytest.approx(0.02 / 0.03)
    assert (
        "Target (>= 50% of the tumor gap, interval above zero): met"
        in (study / "endpoint.md").read_text()
    )


def test_no_target_without_a_real_gap_or_above_zero(score, tmp_path, monkeypatch) -> None:
    """A teacher only 0.10 ahead fails the precondition, whatever the share; a share under
    half fails the target."""
    monkeypatch.setattr(score, "ALONE_RUNS", tmp_path / "alone")
    small = _study(tmp_path, [0.62, 0.61, 0.63, 0.62, 0.62], teacher=0.65)
    out = score.table(small, (1, 2, 3, 4, 5))
    assert out["tumor"]["emkd_balanced_region"]["gap_closed"] > 0.5
    assert not out["precondition"]["met"] and not out["target_met"]


def test_endpoint_waits_for_five_seeds(score, tmp_path, monkeypatch) -> None:
    """Before all five seeds are scored the endpoint is refused; ``--interim`` labels it."""
    study = _study(tmp_path, [0.7, 0.7, 0.7], seeds=(1, 2, 3))
    monkeypatch.setattr(score, "ALONE_RUNS", tmp_path / "alone")
    with pytest.raises(SystemExit, match="needs"):
        score.main(["--dir", str(study)])
    score.main(["--dir", str(study), "--interim"])
    assert not (study / "endpoint.json").exists()
    assert (study / "interim.md").read_text().startswith("INTERIM")
    assert json.loads((study / "interim.json").read_text())["seeds"] == [1, 2, 3]
