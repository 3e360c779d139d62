"""Study v8's endpoint table (docs/study_v8/protocol.md, written 2026-12-05 08:42 UTC before
any v8 run): ENet alone against ENet + ``emkd_balanced_region``, both 6 labeled cases and
8,192 steps, seeds 1-5 paired, on the 24 new cases 204-227 (``run.sh eval`` scores them).

    PYTHONPATH=. python docs/study_v8/score.py --dir /work/v8few [--interim]

Refuses to compute the endpoint before all five seeds are scored, unless ``--interim`` (the
protocol's label for an earlier look, which it then carries). Writes ``endpoint.json`` and
``endpoint.md`` into ``--dir``. The scoring itself is ``scripts/paired_endpoint.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import paired_endpoint  # noqa: E402

#: the unlabeled study v9's ENet-alone runs (6 labeled cases, 8,192 steps, seeds 1-5)
ALONE_RUNS = Path("/work/ul6/runs/alone-8192")
#: study v4's teacher as the unlabeled study holds it (copied from study v4's teachers stage)
TEACHER_RUN = Path("/work/ul6/runs/teacher/s1")


def spec(study: Path) -> paired_endpoint.EndpointSpec:
    """Study v8's rows, read when called (so a test can point them elsewhere)."""
    Row = paired_endpoint.Row
    return paired_endpoint.EndpointSpec(
        name="study v8",
        first_case=204,
        n_cases=24,
        data_root=study / "data" / "fresh",
        teacher_run=TEACHER_RUN,
        teacher_label="teacher RA-UNet w0.5 (42 labeled, study v4's)",
        rows={
            "alone": Row("alone-8192", ALONE_RUNS, "ENet w0.25 alone, 6 labeled, 8,192 steps"),
            "emkd_balanced_region": Row(
                "region-8192",
                study / "runs" / "region-8192",
                "+ `emkd_balanced_region`, 8,192 steps",
            ),
        },
        target="emkd_balanced_region",
    )


def table(study: Path, seeds: tuple[int, ...]) -> dict:
    return paired_endpoint.table(spec(study), study, seeds)


def main(argv: list[str] | None = None) -> None:
    paired_endpoint.main(spec, Path("/work/v8few"), __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
