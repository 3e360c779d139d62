"""Statistics of the comparison report, checked on small hand-computed examples."""

from __future__ import annotations

import math
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
    # a student-alone seed without a score (not evaluated, or NaN) is not shared either: the
    # distilled mean over seeds 1-3 against the alone mean over 1-2 said 49%, seed for seed 24%
    distilled = {1: 0.65, 2: 0.66, 3: 0.80}
    for missing in (None, math.nan):
        records = [_run("teacher", 1, 0.80, model="raunet (w 0.5)")]
        records += [_run("student", s, v) for s, v in {1: 0.60, 2: 0.62, 3: 0.0}.items()]
        records[-1].scores = {} if missing is None else {"tumor": missing}
        records += [
            _run("distilled", s, v, method="emkd", teacher="raunet (w 0.5)")
            for s, v in distilled.items()
        ]
        row = next(r for r in group_runs(records) if r.role == "distilled")
        assert row.paired["lits", "tumor"].seeds == (1, 2)
        assert row.gap["lits"] == pytest.approx(((0.65 + 0.66) / 2 - 0.61) / (0.80 - 0.61))


def test_gap_closed_with_no_shared_seed_uses_each_rows_own_seeds() -> None:
    records = [_run("teacher", 1, 0.80, model="raunet (w 0.5)")]
    records += [_run("student", s, 0.6) for s in (1, 2)]
    records += [_run("distilled", 7, 0.7, method="kd", teacher="raunet (w 0.5)")]
    row = next(r for r in group_runs(records) if r.role == "distilled")
    assert row.gap["lits"] == pytest.approx(0.5)
    assert row.paired["lits", "tumor"] is None


def test_gap_closed_is_measured_against_the_teacher_that_taught() -> None:
    """Teacher runs of seeds 1-3 read with the same runs=, where only seed 1's checkpoint
    taught every distilled seed: the gap used the mean of all three teachers (0.667), 90%
    closed where against the teacher that taught (0.80) it is 50%. Per-seed teachers, each
    teaching its own seed, still pair by seed."""
    teachers = {1: 0.80, 2: 0.60, 3: 0.60}
    records = [_run("teacher", s, v, model="raunet (w 0.5)") for s, v in teachers.items()]
    records += [_run("student", s, 0.50) for s in (1, 2, 3)]
    distilled = [
        _run("distilled", s, 0.65, method="kd", teacher="raunet (w 0.5)") for s in (1, 2, 3)
    ]
    for run in distilled:
        run.teacher_run = records[0].path
    row = next(r for r in group_runs(records + distilled) if r.role == "distilled")
    assert row.gap["lits"] == pytest.approx(0.5)
    for run in distilled:  # each seed taught by its own teacher: the mean of the three
        run.teacher_run = records[run.seed - 1].path
    row = next(r for r in group_runs(records + distilled) if r.role == "distilled")
    assert row.gap["lits"] == pytest.approx(0.15 / (sum(teachers.values()) / 3 - 0.5))


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


# -- the two-level paired bootstrap over seeds and cases ----------------------------------------
def _table(diff: list[list[float]], base: float = 0.5) -> tuple[dict, dict]:
    """Treated and control per-case tables (seed -> case -> Dice) whose differences are
    ``diff`` (seeds x cases), the control varying by case so the pairing matters."""
    control = {
        s + 1: {f"c{c}": base + 0.01 * c for c in range(len(row))} for s, row in enumerate(diff)
    }
    treated = {
        s + 1: {f"c{c}": control[s + 1][f"c{c}"] + d for c, d in enumerate(row)}
        for s, row in enumerate(diff)
    }
    return treated, control


def _reference_bootstrap(diff, resamples: int, seed: int) -> tuple[float, float]:
    """The slow loop: draw seeds then cases, take the sub-table's mean difference."""
    import numpy as np

    d = np.asarray(diff, dtype=float)
    rng = np.random.default_rng(seed)
    seed_draw = rng.integers(0, d.shape[0], (resamples, d.shape[0]))
    case_draw = rng.integers(0, d.shape[1], (resamples, d.shape[1]))
    means = [d[np.ix_(s, c)].mean() for s, c in zip(seed_draw, case_draw, strict=True)]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def test_paired_bootstrap_matches_the_slow_reference_loop() -> None:
    from kdseg.eval.paired import paired_bootstrap

    diff = [[0.10, -0.05, 0.20, 0.00], [0.05, 0.02, -0.10, 0.30], [0.00, 0.15, 0.05, -0.02]]
    treated, control = _table(diff)
    boot = paired_bootstrap(treated, control, resamples=2000, seed=7)
    low, high = _reference_bootstrap(diff, 2000, 7)
    assert (boot.low, boot.high) == pytest.approx((low, high), abs=1e-12)
    assert boot.mean == pytest.approx(sum(map(sum, diff)) / 12)
    assert boot.low < boot.mean < boot.high
    assert boot.seeds == (1, 2, 3) and boot.cases == ("c0", "c1", "c2", "c3")


def test_paired_bootstrap_collapses_when_every_difference_is_equal() -> None:
    from kdseg.eval.paired import paired_bootstrap

    treated, control = _table([[0.04] * 5] * 4)
    boot = paired_bootstrap(treated, control)
    assert boot.mean == pytest.approx(0.04)
    assert boot.low == pytest.approx(0.04, abs=1e-12)
    assert boot.high == pytest.approx(0.04, abs=1e-12)


def test_paired_bootstrap_is_deterministic() -> None:
    from kdseg.eval.paired import paired_bootstrap

    diff = [[math.sin(7 * s + c) / 5 for c in range(9)] for s in range(4)]
    treated, control = _table(diff)
    first, again = paired_bootstrap(treated, control), paired_bootstrap(treated, control)
    assert (first.low, first.high) == (again.low, again.high)  # same digits, bit for bit
    other = paired_bootstrap(treated, control, seed=1)
    assert (other.low, other.high) != (first.low, first.high)


def test_paired_bootstrap_leaves_out_cases_without_the_class_as_the_headline_does() -> None:
    """A tumor-free case (None, or NaN) is out of each run's mean Dice (the headline,
    ``dice_per_case_nonempty``); the bootstrap leaves it out too, so its mean is the reported
    paired difference of those per-run means."""
    from kdseg.eval.paired import paired_bootstrap, paired_difference

    treated = {1: {"a": 0.8, "b": 0.6, "free": None}, 2: {"a": 0.7, "b": 0.9, "free": math.nan}}
    control = {1: {"a": 0.5, "b": 0.6, "free": None}, 2: {"a": 0.6, "b": 0.5, "free": None}}

    def run_mean(scores):
        values = [v for v in scores.values() if v is not None and math.isfinite(v)]
        return sum(values) / len(values)

    headline = paired_difference(
        {s: run_mean(v) for s, v in treated.items()}, {s: run_mean(v) for s, v in control.items()}
    )
    boot = paired_bootstrap(treated, control)
    assert boot.cases == ("a", "b")
    assert boot.mean == pytest.approx(headline.mean)
    # a run that scored a case the others lack is no paired table
    control[2]["c"] = 0.4
    with pytest.raises(ValueError, match="other cases"):
        paired_bootstrap(treated, control)
    # no case holds the class, or no common seed: no interval
    empty = {1: {"free": None}}
    assert paired_bootstrap(empty, empty) is None
    assert paired_bootstrap(treated, {9: {"a": 0.1}}) is None


def test_report_shows_the_bootstrap_beside_the_t_interval() -> None:
    """kdseg-report's paired column keeps its t interval; the seeds x cases interval stands
    beside it, in report.md (with the footnote saying which is which) and report.csv."""
    import csv
    import io

    from kdseg.eval.report import Report

    diff = [[0.10, -0.05, 0.20], [0.05, 0.02, -0.10], [0.00, 0.15, 0.05]]
    treated, control = _table(diff)
    records = []
    for s in (1, 2, 3):
        for role, table in (("student", control), ("distilled", treated)):
            method = "kd" if role == "distilled" else None
            run = _run(role, s, sum(table[s].values()) / 3, method=method, teacher="t")
            run.per_case = {"tumor": {**table[s], "free": None}}
            records.append(run)
    row = next(r for r in group_runs(records) if r.role == "distilled")
    boot, t = row.bootstrap["lits", "tumor"], row.paired["lits", "tumor"]
    assert boot.mean == pytest.approx(t.mean)
    report = Report([row], [("lits", "tumor")], {("lits", "tumor"): "Liver tumor"}, "e", "dice")
    text = report.markdown()
    assert "Paired Δ Liver tumor [95% CI]" in text
    assert "Δ Liver tumor, seeds × cases [95% bootstrap]" in text
    assert f"| {t.text(show_n=False)} | {boot.text()} |" in text
    assert "also resamples the cases" in text
    line = next(csv.DictReader(io.StringIO(report.csv_text())))
    assert float(line["lits_tumor_paired_boot_low"]) == pytest.approx(boot.low)
    assert float(line["lits_tumor_paired_boot_high"]) == pytest.approx(boot.high)
    # without per-case scores for one seed: n/a, never an interval over other seeds
    records[0].per_case = {}
    row = next(r for r in group_runs(records) if r.role == "distilled")
    assert row.bootstrap["lits", "tumor"] is None


def test_read_per_case_refuses_a_table_that_is_not_its_summary(tmp_path: Path) -> None:
    from kdseg.errors import InputError
    from kdseg.eval.runs import read_per_case

    folder = tmp_path / "eval-test-full"
    folder.mkdir()
    (folder / "per_case.csv").write_text(
        "case,class,gt_empty,dice\nv1,tumor,False,0.6\nv2,tumor,False,0.8\nv3,tumor,True,1.0\n"
    )
    got = read_per_case(tmp_path, "eval-test-full", None, {"tumor": 0.7})
    assert got == {"tumor": {"v1": 0.6, "v2": 0.8, "v3": None}}
    with pytest.raises(InputError, match="not summary.json's"):
        read_per_case(tmp_path, "eval-test-full", None, {"tumor": 0.75})
    assert read_per_case(tmp_path, "eval-test-full", "dice_mean", {"tumor": 0.7}) == {}


def test_a_paper_protocol_evaluation_is_reported_without_the_bootstrap(tmp_path: Path) -> None:
    """kdseg-report refused runs evaluated with the paper's protocol (``eval-test-paper``):
    their per_case.csv holds voxel counts, not per-case Dice, and was read as the full
    protocol's ("not a kdseg-eval per_case.csv ('gt_empty')"). They are reported by their
    ``dice``, named so, with no per-case scores (the bootstrap column n/a)."""
    import numpy as np

    from kdseg.eval.evaluate import summarize_rows, write_results
    from kdseg.eval.metrics import paper_protocol_case
    from kdseg.eval.report import build_report

    for seed in (1, 2):
        run = tmp_path / f"enet-s{seed}"
        run.mkdir()
        (run / "config.yaml").write_text(
            f"seed: {seed}\ndata: {{name: lits, organ: liver, task: tumor}}\n"
            "model: {name: enet, in_channels: 1, num_classes: 2, width: 0.25}\n"
        )
        (run / "summary.json").write_text("{}")
        rng = np.random.default_rng(seed)
        rows = [
            {
                "case": f"c{i}",
                "tumor": paper_protocol_case(rng.random((3, 8, 8)), rng.random((3, 8, 8)) > 0.7),
            }
            for i in range(3)
        ]
        summary = summarize_rows(rows, "paper")
        write_results(rows, summary, run / "eval-test-paper", {"protocol": "paper"})
    assert "gt_empty" not in (run / "eval-test-paper" / "per_case.csv").read_text()
    report = build_report([tmp_path], eval_dir="eval-test-paper")
    (row,) = report.rows
    assert [r.per_case for r in row.runs] == [{}, {}]
    assert row.cells["lits", "tumor"].n == 2 and report.metric == "dice"
    scores = {r.seed: r.scores["tumor"] for r in row.runs}
    assert scores[2] == pytest.approx(summary["tumor"]["dice"])  # the last seed written
    assert row.cells["lits", "tumor"].mean == pytest.approx((scores[1] + scores[2]) / 2)
    assert "Dice: `dice` from each run's `eval-test-paper/summary.json`" in report.markdown()


def test_paired_bootstrap_script_prints_the_documented_v4_digits(capsys) -> None:
    """README's v4 row, from the committed per-case records: the t interval of
    ``kdseg-report`` and the seeds x cases interval that crosses zero, digit for digit."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("pb", root / "scripts" / "paired_bootstrap.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    v4 = root / "docs" / "study_v4"
    line = script.main(
        [
            str(v4 / "main/raunet-enet-w0.25-emkd_balanced-s{seed}/eval-test-per_case.csv"),
            str(v4 / "students/enet-w0.25-s{seed}/eval-test-per_case.csv"),
        ]
    )
    assert "5 seeds x 12 cases: +0.054 [+0.011, +0.097] (95% t over seeds)" in line
    assert "[-0.006, +0.126] (95% bootstrap over seeds and cases" in line
    assert "[-0.006, +0.126]" in (root / "README.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        script.main(["a.csv", "b{seed}.csv"])
    assert exit_.value.code == 2 and "a.csv: no {seed} in the path" in capsys.readouterr().err


def test_a_failed_report_write_leaves_no_mismatched_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.md and report.csv are one group: a failure while writing report.csv left the
    new report.md beside no (or an older) report.csv. Now neither new file lands, and an
    earlier pair is kept as it was."""
    import kdseg.errors as errors
    from kdseg.eval.report import Report, write_report

    records = [_run("student", 1, 0.6), _run("distilled", 1, 0.7, method="kd", teacher="t")]
    report = Report(group_runs(records), [("lits", "tumor")], {("lits", "tumor"): "T"}, "e", "dice")
    real_commit = errors._commit

    def failing_csv(tmp: Path, target: Path) -> None:
        if target.name == "report.csv":
            raise OSError(28, "No space left on device")
        real_commit(tmp, target)

    monkeypatch.setattr(errors, "_commit", failing_csv)
    out = tmp_path / "report"
    with pytest.raises(OSError):
        write_report(report, out)
    assert not out.exists()  # neither file, no temporaries, not the folder it made
    out.mkdir()
    (out / "report.md").write_text("old md")
    (out / "report.csv").write_text("old csv")
    with pytest.raises(OSError):
        write_report(report, out)
    assert (out / "report.md").read_text() == "old md"
    assert (out / "report.csv").read_text() == "old csv"
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.md"]
    monkeypatch.setattr(errors, "_commit", real_commit)
    paths = write_report(report, out)
    assert paths["markdown"].read_text() == report.markdown()
    assert paths["csv"].read_text() == report.csv_text()
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.md"]
