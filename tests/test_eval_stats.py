"""Statistics of the comparison report, checked on small hand-computed examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdseg.eval.report import group_runs
from kdseg.eval.runs import RunRecord


def _run(role: str, seed: int, tumor: float, model: str = "enet (w 0.25)", **kw) -> RunRecord:
    method = kw.get("method")
    return RunRecord(
        path=Path(f"/runs/{role}-{method}-s{seed}"),
        role=role,
        model=model,
        method=method,
        seed=seed,
        dataset="lits",
        organ="liver",
        params=1,
        scores={"tumor": tumor},
        teacher=kw.get("teacher"),
    )


def test_gap_closed_compares_the_seeds_the_row_shares_with_the_student_alone() -> None:
    """A distilled row of seeds 1-5 against a student alone of seeds 1-3 was measured with the
    distilled mean over all five seeds and the alone mean over three: seeds 4-5 (easy here)
    made the gap look closed by 41% where seed for seed it is 23%."""
    alone = {1: 0.60, 2: 0.62, 3: 0.58}
    distilled = {1: 0.65, 2: 0.66, 3: 0.63, 4: 0.72, 5: 0.75}
    records = [_run("teacher", 1, 0.80, model="raunet (w 0.5)")]
    records += [_run("student", s, v) for s, v in alone.items()]
    records += [
        _run("distilled", s, v, method="emkd", teacher="raunet (w 0.5)")
        for s, v in distilled.items()
    ]
    row = next(r for r in group_runs(records) if r.role == "distilled")
    shared_mean = (0.65 + 0.66 + 0.63) / 3
    assert row.gap["lits"] == pytest.approx((shared_mean - 0.60) / (0.80 - 0.60))
    # the cell itself still shows every seed of the row, and Δ pairs the three seeds
    assert row.cells["lits", "tumor"].mean == pytest.approx(sum(distilled.values()) / 5)
    assert row.paired["lits", "tumor"].seeds == (1, 2, 3)
    assert row.paired["lits", "tumor"].mean == pytest.approx(shared_mean - 0.60)


def test_gap_closed_with_no_shared_seed_uses_each_rows_own_seeds() -> None:
    records = [_run("teacher", 1, 0.80, model="raunet (w 0.5)")]
    records += [_run("student", s, 0.6) for s in (1, 2)]
    records += [_run("distilled", 7, 0.7, method="kd", teacher="raunet (w 0.5)")]
    row = next(r for r in group_runs(records) if r.role == "distilled")
    assert row.gap["lits"] == pytest.approx(0.5)
    assert row.paired["lits", "tumor"] is None


def test_report_csv_leaves_an_undefined_interval_empty_not_nan() -> None:
    """One pair has no interval: report.csv wrote ``nan`` there, which readers of the CSV
    (scripts/demo.py's study rows) printed as ``[+nan, +nan]``; undefined is empty, as a
    missing cell or gap is."""
    import csv
    import io

    from kdseg.eval.report import Report

    records = [_run("student", 1, 0.6), _run("distilled", 1, 0.7, method="kd", teacher="t")]
    rows = group_runs(records)
    report = Report(rows, [("lits", "tumor")], {("lits", "tumor"): "Liver tumor"}, "e", "dice")
    line = next(r for r in csv.DictReader(io.StringIO(report.csv_text())) if r["method"])
    assert float(line["lits_tumor_paired_mean"]) == pytest.approx(0.1)
    assert (line["lits_tumor_paired_low"], line["lits_tumor_paired_high"]) == ("", "")
    assert line["lits_tumor_paired_n"] == "1"
    assert "nan" not in report.csv_text()
