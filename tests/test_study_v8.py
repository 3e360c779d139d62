"""docs/study_v8/score.py: the endpoint of study v8 (issue 11), from what kdseg-eval writes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALONE = [0.50, 0.55, 0.60, 0.52, 0.58]  # mean 0.55


def load_score(monkeypatch, study: str, **paths: Path):
    """``docs/<study>/score.py`` imported as a module (``scripts/`` on the path), with its
    module-level paths (``ALONE_RUNS``, ...) pointed at ``paths``."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(
        f"{study}_score", ROOT / "docs" / study / "score.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in paths.items():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setitem(sys.modules, f"{study}_score", module)  # removed again after the test
    return module


@pytest.fixture
def score(monkeypatch, tmp_path):
    return load_score(
        monkeypatch, "study_v8", ALONE_RUNS=tmp_path / "alone", TEACHER_RUN=tmp_path / "teacher"
    )


def _eval(
    folder: Path,
    run: Path,
    organ: float,
    tumor: float,
    n_cases: int = 24,
    first: int = 204,
    data_root: Path | None = None,
    redrawn: int = 0,
) -> None:
    """What kdseg-eval writes for ``run`` on cases volume-<first>.. of the study's data (or of
    ``data_root``); ``redrawn``: that many more reference voxels in each case's tumor."""
    folder.mkdir(parents=True)
    record = {
        "checkpoint": str(run / "checkpoints" / "best.ckpt"),
        "data_root": str(data_root or folder.parents[1] / "data" / "fresh"),
        "split": "test",
        "n_cases": n_cases,
        "summary": {
            "organ": {"dice_per_case_nonempty": organ},
            "tumor": {"dice_per_case_nonempty": tumor},
        },
    }
    (folder / "summary.json").write_text(json.dumps(record))
    rows = [
        f"volume-{i},{c},0.5,{1000 + i if c == 'organ' else 10 + i + redrawn}"
        for i in range(first, first + n_cases)
        for c in ("organ", "tumor")
    ]
    (folder / "per_case.csv").write_text("case,class,dice,gt_voxels\n" + "\n".join(rows) + "\n")


def _run(folder: Path, sha: str) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"init_weights_sha256": sha}))


def _study(tmp: Path, gains: list[float], teacher: float = 0.75, hashes=None) -> Path:
    """Study folder: ENet alone scores ALONE, the distilled row ALONE + ``gains`` (seed by
    seed, as many seeds as gains), organ 0.92 and 0.94, the teacher 0.95 / ``teacher``."""
    study = tmp / "v8"
    _eval(study / "eval" / "teacher-s1", tmp / "teacher", 0.95, teacher)
    for s, gain in enumerate(gains, start=1):
        alone, region = tmp / "alone" / f"s{s}", study / "runs" / "region-8192" / f"s{s}"
        _run(alone, f"h{s}")
        _run(region, (hashes or {}).get(s, f"h{s}"))
        _eval(study / "eval" / f"alone-8192-s{s}", alone, 0.92, ALONE[s - 1])
        _eval(study / "eval" / f"region-8192-s{s}", region, 0.94, ALONE[s - 1] + gain)
    return study


def test_endpoint_shares_interval_and_target(score, tmp_path) -> None:
    """Share = (distilled - alone) / (teacher - alone) on seed-paired means; the target needs
    the precondition, half the gap, the interval above zero and paired starts."""
    study = _study(tmp_path, [0.11, 0.09, 0.12, 0.10, 0.13])
    score.main(["--dir", str(study)])
    out = json.loads((study / "endpoint.json").read_text())
    row = out["tumor"]["emkd_balanced_region"]
    assert row["gap_closed"] == pytest.approx(0.11 / 0.20)
    # differences 0.11, 0.09, 0.12, 0.10, 0.13: sd 0.0158, t(4) 2.776 -> half-width 0.0196
    assert row["paired"] == pytest.approx([0.11, 0.0904, 0.1296], abs=1e-3)
    assert out["precondition"]["lead"] == pytest.approx(0.20)
    assert out["precondition"]["met"] and out["same_start"] and out["target_met"]
    assert out["organ"]["emkd_balanced_region"]["gap_closed"] == pytest.approx(0.02 / 0.03)
    text = (study / "endpoint.md").read_text()
    assert "Target (>= 50% of the tumor gap, interval above zero): met" in text


@pytest.mark.parametrize(
    ("gains", "teacher", "hashes", "why"),
    [
        ([0.08, 0.07, 0.09, 0.08, 0.08], 0.75, None, "share 40%"),
        ([0.40, -0.20, 0.30, -0.10, 0.12], 0.75, None, "interval includes zero"),
        ([0.11, 0.09, 0.12, 0.10, 0.13], 0.75, {3: "other"}, "seed 3 started elsewhere"),
        ([0.07, 0.06, 0.08, 0.07, 0.07], 0.65, None, "teacher only 0.10 ahead"),
    ],
)
def test_each_condition_of_the_target_counts(score, tmp_path, gains, teacher, hashes, why):
    """Every one of the four conditions alone keeps the target unmet."""
    out = score.table(_study(tmp_path, gains, teacher, hashes), (1, 2, 3, 4, 5))
    assert not out["target_met"], why
    if why == "teacher only 0.10 ahead":
        assert out["tumor"]["emkd_balanced_region"]["gap_closed"] > 0.5
        assert not out["precondition"]["met"]
    if why == "interval includes zero":
        assert out["tumor"]["emkd_balanced_region"]["gap_closed"] > 0.5
        assert out["tumor"]["emkd_balanced_region"]["paired"][1] < 0


def test_an_evaluation_of_another_checkpoint_or_split_is_refused(score, tmp_path) -> None:
    """score.py scores only evaluations of the expected run's best checkpoint on 24 cases."""
    study = _study(tmp_path, [0.1] * 5)
    swapped = study / "eval" / "region-8192-s2"
    record = json.loads((swapped / "summary.json").read_text())
    record["checkpoint"] = record["checkpoint"].replace("/s2/", "/s1/")
    (swapped / "summary.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="not .*s2's best.ckpt"):
        score.table(study, (1, 2, 3, 4, 5))
    record["checkpoint"] = record["checkpoint"].replace("/s1/", "/s2/")
    record["n_cases"] = 12
    (swapped / "summary.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="12 test cases"):
        score.table(study, (1, 2, 3, 4, 5))


@pytest.mark.parametrize("change", ["data_root", "cases", "nan", "redrawn"])
def test_an_evaluation_of_other_cases_or_with_nan_is_refused(score, tmp_path, change) -> None:
    """The right checkpoint on 24 test cases is not enough: the endpoint cases of this study's
    data folder, with finite scores (v10's folders hold evaluations named like v8's)."""
    study = _study(tmp_path, [0.1] * 5)
    folder = study / "eval" / "alone-8192-s3"
    record = json.loads((folder / "summary.json").read_text())
    if change == "data_root":
        record["data_root"] = "/work/v10/data/fresh"
    elif change == "nan":
        record["summary"]["tumor"]["dice_per_case_nonempty"] = float("nan")
    elif change == "redrawn":  # the same case ids, other reference voxels: not the same cases
        shutil.rmtree(folder)
        _eval(folder, tmp_path / "alone" / "s3", 0.92, ALONE[2], redrawn=1)
        record = json.loads((folder / "summary.json").read_text())
    else:
        text = (folder / "per_case.csv").read_text()
        (folder / "per_case.csv").write_text(text.replace("volume-204,", "volume-228,"))
    (folder / "summary.json").write_text(json.dumps(record))
    why = {
        "data_root": "not .*data/fresh",
        "cases": "other cases than 204-227",
        "nan": "non-finite",
        "redrawn": "alone-8192-s3 scored other reference voxels",
    }
    with pytest.raises(SystemExit, match=why[change]):
        score.table(study, (1, 2, 3, 4, 5))


def test_endpoint_waits_for_five_seeds(score, tmp_path) -> None:
    """Before all five seeds are scored the endpoint is refused; ``--interim`` labels it."""
    study = _study(tmp_path, [0.15, 0.15, 0.15])
    with pytest.raises(SystemExit, match="needs"):
        score.main(["--dir", str(study)])
    score.main(["--dir", str(study), "--interim"])
    assert not (study / "endpoint.json").exists()
    assert (study / "interim.md").read_text().startswith("INTERIM")
    assert json.loads((study / "interim.json").read_text())["seeds"] == [1, 2, 3]
