"""Study v11's comparisons (docs/study_v11/protocol.md, written 2026-12-05 13:13 UTC before any
v11 run): ENet alone with ``loss.mix=cutmix`` (CutMix on its own labels, the control), seeds
1-5, against study v10's ENet alone and ``emkd_balanced_region_cutmix`` rows on v10's 24
endpoint cases 228-251, paired per seed.

    PYTHONPATH=. python docs/study_v11/score.py --dir /work/v11 [--interim]

1. v10's ``emkd_balanced_region_cutmix`` minus the control, paired Student-t 95%: the scored
   comparison, read as the protocol fixed it (see :func:`reading`);
2. the control minus ENet alone and its share of the alone -> teacher gap (information).

v10's rows and teacher are read from their committed records (``docs/study_v10/eval``, the run
summaries in ``docs/study_v10/runs`` and ``docs/unlabeled_v9/runs``): their run folders were
lost between sessions 17 and 18. Every evaluation must have scored the same reference voxels
per case, which checks that the rebuilt case folder (``rebuild.sh``) equals v10's.
Writes ``endpoint.json`` and ``endpoint.md`` into ``--dir``; refuses before all five seeds of
the control are scored, unless ``--interim``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import paired_endpoint  # noqa: E402

#: v10's committed evaluations (teacher, ENet alone, the cutmix row) on cases 228-251
V10_EVAL = REPO / "docs" / "study_v10" / "eval"
#: where v10's case folder was (and is rebuilt): every evaluation names it
V10_DATA = Path("/work/v10/data/fresh")
#: the run folders v10's evaluations name, and the committed copies of their summaries
ALONE_RUNS, ALONE_RECORDS = (
    Path("/work/ul6/runs/alone-8192"),
    REPO / "docs" / "unlabeled_v9" / "runs" / "alone-8192",
)
CUTMIX_RUNS, CUTMIX_RECORDS = (
    Path("/work/v10/runs/cutmix-8192"),
    REPO / "docs" / "study_v10" / "runs" / "cutmix-8192",
)
TEACHER_RUN = Path("/work/ul6/runs/teacher/s1")
SCORED = ("emkd_balanced_region_cutmix", "labelmix")


def spec(study: Path) -> paired_endpoint.EndpointSpec:
    """Study v11's rows, read when called (so a test can point them elsewhere)."""
    Row = paired_endpoint.Row
    return paired_endpoint.EndpointSpec(
        name="study v11",
        first_case=228,
        n_cases=24,
        data_root=V10_DATA,
        teacher_run=TEACHER_RUN,
        teacher_label="teacher RA-UNet w0.5 (42 labeled, study v4's; v10's evaluation)",
        teacher_eval=V10_EVAL / "teacher-s1",
        rows={
            "alone": Row(
                "alone-8192",
                ALONE_RUNS,
                "ENet w0.25 alone, 6 labeled, 8,192 steps (v10's)",
                eval_dir=V10_EVAL,
                records=ALONE_RECORDS,
            ),
            "emkd_balanced_region_cutmix": Row(
                "cutmix-8192",
                CUTMIX_RUNS,
                "+ `emkd_balanced_region_cutmix` (v10's scored row)",
                eval_dir=V10_EVAL,
                records=CUTMIX_RECORDS,
            ),
            "labelmix": Row(
                "labelmix-8192",
                study / "runs" / "labelmix-8192",
                "**ENet alone + `loss.mix=cutmix`** (v11's control)",
            ),
        },
        target=None,
        contrasts=(SCORED,),
    )


def reading(result: dict) -> str:
    """Comparison 1 read by the protocol's rule (tumor, the issue's class); not read when a
    seed's rows did not start from the same weights (the design pairs them)."""
    if not result["same_start"]:
        return "Comparison 1 NOT read: the rows of a seed did not all start from the same weights."
    _, low, high = result["tumor"]["contrasts"][" - ".join(SCORED)]
    if low > 0:
        verdict = "above zero: the teacher adds to what CutMix on the labels alone gives"
    elif high < 0:
        verdict = "below zero: CutMix on the labels alone does better than with the teacher"
    else:
        verdict = "holds zero: v10's gain is not shown to need the teacher"
    return f"Comparison 1 (tumor), by the protocol's rule: the interval {verdict}."


def table(study: Path, seeds: tuple[int, ...]) -> dict:
    return paired_endpoint.table(spec(study), study, seeds)


def main(argv: list[str] | None = None) -> None:
    paired_endpoint.main(spec, Path("/work/v11"), __doc__.split("\n\n")[0], argv, reading)


if __name__ == "__main__":
    main()
