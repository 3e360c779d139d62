"""docs/study_v11/score.py: study v11's comparisons (v10's cutmix row minus the control, the
control against ENet alone), v10's rows read from their committed records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_study_v8 import ALONE, _eval, _run, load_score

ROOT = Path(__file__).resolve().parents[1]
V10_EVAL = ROOT / "docs" / "study_v10" / "eval"


@pytest.fixture
def score(monkeypatch):
    return load_score(monkeypatch, "study_v11")


def _synthetic(score, monkeypatch, tmp: Path, cutmix: list[float], control: list[float]) -> Path:
    """v10's records as synthetic folders (ENet alone ALONE, the cutmix row ALONE + ``cutmix``,
    the teacher 0.95 / 0.75) and v11's control at ALONE + ``control``, all on cases 228-251."""
    v10, data = tmp / "v10eval", tmp / "v10" / "data" / "fresh"
    for name, value in {
        "V10_EVAL": v10,
        "V10_DATA": data,
        "ALONE_RUNS": tmp / "alone",
        "ALONE_RECORDS": tmp / "alone-records",
        "CUTMIX_RUNS": tmp / "cutmix",
        "CUTMIX_RECORDS": tmp / "cutmix-records",
        "TEACHER_RUN": tmp / "teacher",
    }.items():
        monkeypatch.setattr(score, name, value)
    study = tmp / "v11"
    _eval(v10 / "teacher-s1", tmp / "teacher", 0.95, 0.75, first=228, data_root=data)
    for s in range(1, 6):
        _run(tmp / "alone-records" / f"s{s}", f"h{s}")
        _run(tmp / "cutmix-records" / f"s{s}", f"h{s}")
        _run(study / "runs" / "labelmix-8192" / f"s{s}", f"h{s}")
        rows = {
            "alone-8192": (v10, tmp / "alone", 0.92, ALONE[s - 1]),
            "cutmix-8192": (v10, tmp / "cutmix", 0.94, ALONE[s - 1] + cutmix[s - 1]),
            "labelmix-8192": (
                study / "eval",
                study / "runs" / "labelmix-8192",
                0.93,
                ALONE[s - 1] + control[s - 1],
            ),
        }
        for prefix, (where, runs, organ, tumor) in rows.items():
            _eval(where / f"{prefix}-s{s}", runs / f"s{s}", organ, tumor, 24, 228, data)
    return study


@pytest.mark.parametrize(
    ("control", "verdict"),
    [
        ([0.02, 0.01, 0.03, 0.02, 0.01], "above zero: the teacher adds"),
        ([0.11, 0.10, 0.12, 0.10, 0.12], "holds zero: v10's gain is not shown to need"),
        ([0.15, 0.16, 0.17, 0.15, 0.16], "below zero: CutMix on the labels alone does better"),
    ],
)
def test_the_scored_contrast_is_read_by_the_protocols_rule(
    score, monkeypatch, tmp_path, control, verdict
) -> None:
    cutmix = [0.11, 0.09, 0.12, 0.10, 0.13]
    study = _synthetic(score, monkeypatch, tmp_path, cutmix, control)
    score.main(["--dir", str(study)])
    out = json.loads((study / "endpoint.json").read_text())
    diff = out["tumor"]["contrasts"]["emkd_balanced_region_cutmix - labelmix"]
    assert diff[0] == pytest.approx(sum(c - k for c, k in zip(cutmix, control, strict=True)) / 5)
    # comparison 2: the control's share of the alone -> teacher gap (0.20)
    assert out["tumor"]["labelmix"]["gap_closed"] == pytest.approx(sum(control) / 5 / 0.20)
    assert out["target_met"] is None and out["same_start"]
    text = (study / "endpoint.md").read_text()
    assert text.startswith("study v11, 24 new cases (228-251)")
    assert "Scored contrast, emkd_balanced_region_cutmix - labelmix" in text
    assert "Target (" not in text and verdict in text.splitlines()[-1]


def test_it_waits_for_five_control_seeds_and_paired_starts(score, monkeypatch, tmp_path) -> None:
    study = _synthetic(score, monkeypatch, tmp_path, [0.1] * 5, [0.05] * 5)
    (study / "eval" / "labelmix-8192-s5" / "summary.json").unlink()
    with pytest.raises(SystemExit, match=r"study v11: seeds \(1, 2, 3, 4\) scored"):
        score.main(["--dir", str(study)])
    shutil.rmtree(study / "eval" / "labelmix-8192-s5")
    _eval(
        study / "eval" / "labelmix-8192-s5",
        study / "runs" / "labelmix-8192" / "s5",
        0.93,
        0.6,
        24,
        228,
        score.V10_DATA,
    )
    (study / "runs" / "labelmix-8192" / "s3" / "summary.json").write_text(
        json.dumps({"init_weights_sha256": "elsewhere"})
    )
    assert not score.table(study, (1, 2, 3, 4, 5))["same_start"]
    score.main(["--dir", str(study)])
    assert "Comparison 1 NOT read" in (study / "endpoint.md").read_text()
    shutil.rmtree(tmp_path / "v10eval" / "cutmix-8192-s2")  # a committed record gone
    with pytest.raises(SystemExit, match="no evaluation in .*cutmix-8192-s2"):
        score.table(study, (1, 2, 3, 4, 5))


def test_a_rebuilt_case_folder_that_differs_from_v10s_is_refused(
    score, monkeypatch, tmp_path
) -> None:
    """The control is scored on cases drawn again; their reference voxels must equal those
    v10's committed evaluations scored."""
    study = _synthetic(score, monkeypatch, tmp_path, [0.1] * 5, [0.05] * 5)
    folder = study / "eval" / "labelmix-8192-s4"
    shutil.rmtree(folder)
    run = study / "runs" / "labelmix-8192" / "s4"
    _eval(folder, run, 0.93, 0.6, 24, 228, score.V10_DATA, redrawn=3)
    with pytest.raises(SystemExit, match="labelmix-8192-s4 scored other reference voxels"):
        score.table(study, (1, 2, 3, 4, 5))


def test_v10s_committed_records_pair_and_agree(score) -> None:
    """What the scorer reads from the repository: v10's teacher, ENet-alone and cutmix
    evaluations scored the same reference voxels on cases 228-251, and ENet alone and the
    cutmix row started each seed from the same weights."""
    spec = score.spec(Path("/nonexistent"))
    rows = [spec.rows["alone"], spec.rows["emkd_balanced_region_cutmix"]]
    import paired_endpoint

    evaluations = [
        spec.teacher_eval,
        *(r.evaluation(Path("/x"), s) for r in rows for s in range(1, 6)),
    ]
    paired_endpoint.same_references(spec, evaluations)
    for s in range(1, 6):
        assert rows[0].start(s) is not None and rows[0].start(s) == rows[1].start(s)
        for folder in evaluations:
            assert paired_endpoint.dice(spec, folder, _named_run(folder, spec))["organ"] > 0.8


def _named_run(folder: Path, spec) -> Path:
    """The run an evaluation folder belongs to, by the spec's row prefixes."""
    if folder == spec.teacher_eval:
        return spec.teacher_run
    prefix, seed = folder.name.rsplit("-s", 1)
    row = next(r for r in spec.rows.values() if r.prefix == prefix)
    return row.runs / f"s{seed}"
